//! Models with tens of thousands of layers load and predict correctly
//! (their speed is in `benches/loading.rs`: 100,000 layers): Keras files
//! whose functional layers are listed last-first, one layer shared by
//! thousands of calls, and horn's own format.
#![cfg(feature = "keras")]

#[path = "common/large_keras.rs"]
mod large_keras;

use horn::prelude::*;
use horn::saving::{load_keras_bytes, KerasModel};
use ndarray::Array2;

const N: usize = 20_000;

fn rows() -> [[f32; 4]; 3] {
    [
        [1.0, -2.0, 0.5, 3.0],
        [-1.0, 0.0, 2.0, -0.5],
        [0.25, 0.75, -3.0, 1.0],
    ]
}

fn check(model: &Model, layers: usize) {
    assert_eq!(model.layer_names().len(), layers);
    let x = Array2::from_shape_fn((3, 4), |(i, j)| rows()[i][j]);
    let p = model.predict([&x]).unwrap();
    let want = large_keras::expected(&rows());
    for (i, row) in want.iter().enumerate() {
        for (j, &w) in row.iter().enumerate() {
            let got = p[0][[i, j]];
            assert!((got - w).abs() < 1e-5, "row {i}, column {j}: {got} vs {w}");
        }
    }
}

#[test]
fn a_keras_chain_of_20k_layers_loads_and_predicts() {
    let KerasModel::Sequential(m) = load_keras_bytes(&large_keras::chain(N)).unwrap() else {
        panic!("a Sequential model");
    };
    assert_eq!(m.layer_names()[N - 1], format!("activation_{}", N - 1));
    check(&Model::from_sequential(*m), N + 1);
}

#[test]
fn a_keras_graph_listed_last_first_loads_and_predicts() {
    let model = load_keras_bytes(&large_keras::graph(N))
        .unwrap()
        .into_model();
    // The layers keep the file's order; the calls run in the graph's.
    assert_eq!(model.layer_names()[0], "dense");
    check(&model, N + 1);
}

#[test]
fn a_layer_shared_by_20k_calls_loads_and_predicts() {
    let model = load_keras_bytes(&large_keras::shared(N))
        .unwrap()
        .into_model();
    check(&model, 2);
}

#[test]
fn horn_files_of_20k_layers_round_trip() {
    let mut m = Sequential::new().seed(1).input(4);
    for _ in 0..N {
        m = m.add(ActivationLayer::new(Relu));
    }
    let m = m.dense(2, Linear);
    let back = Sequential::from_bytes(&m.to_bytes().unwrap()).unwrap();
    assert_eq!(back.layer_names(), m.layer_names());
    let x = Array2::from_shape_fn((3, 4), |(i, j)| rows()[i][j]);
    assert_eq!(back.predict(&x).unwrap(), m.predict(&x).unwrap());
    // ... and through a `.keras` file, as a functional model too.
    let keras = Sequential::load_keras_bytes(&m.to_keras_bytes().unwrap()).unwrap();
    assert_eq!(keras.predict(&x).unwrap(), m.predict(&x).unwrap());
    let model = Model::from_sequential(back);
    let again = Model::from_bytes(&model.to_bytes().unwrap()).unwrap();
    let keras = load_keras_bytes(&again.to_keras_bytes().unwrap())
        .unwrap()
        .into_model();
    assert_eq!(keras.predict([&x]).unwrap(), model.predict([&x]).unwrap());
}
