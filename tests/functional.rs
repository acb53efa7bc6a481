//! The functional API through its public surface: Keras parity of the four
//! two-input, two-output fixtures, graph errors, shared layers, summary,
//! data by name, determinism.

mod common;

use common::fixture_array as arr;
use horn::layers::MergeOp;
use horn::model::Callee;
use horn::prelude::*;
use ndarray::{Array2, ArrayD};
use serde_json::Value;

fn fixtures() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/keras-layer-fixtures.json"
    ))
    .expect("fixture file");
    serde_json::from_str(&text).expect("valid JSON")
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{i}]: horn {g}, Keras {w}"
        );
    }
}

/// The fixtures' model: a->Dense(4, relu, 'da'); b->Dense(4, tanh, 'db');
/// merge; then Dense(3, softmax, 'out_class') and Dense(1, 'out_value').
fn fixture_model(merge: impl Callee) -> Model {
    let mut g = Graph::with_seed(0);
    let a = g.input("a", &[5]);
    let b = g.input("b", &[5]);
    let da = g.call_named("da", Dense::new(4, Relu), a);
    let db = g.call_named("db", Dense::new(4, Tanh), b);
    let m = g.call(merge, [da, db]);
    let class = g.call_named("out_class", Dense::new(3, Softmax), m);
    let value = g.call_named("out_value", Dense::new(1, Linear), m);
    Model::new(g, [a, b], [class, value]).unwrap()
}

fn set_fixture_weights(model: &mut Model, list: &Value) {
    let pairs: Vec<(String, ArrayD<f32>)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["name"].as_str().unwrap().to_string(), arr(&w["value"])))
        .collect();
    model
        .set_weights_by_name(pairs.iter().map(|(n, a)| (n.as_str(), a)))
        .unwrap();
}

fn two_d(a: &ArrayD<f32>) -> Array2<f32> {
    a.clone().into_dimensionality().unwrap()
}

#[test]
fn the_four_keras_functional_cases_match() {
    let f = fixtures();
    let cases = f["functional"].as_object().unwrap();
    assert_eq!(cases.len(), 4);
    for (key, case) in cases {
        let merge: MergeOp = match case["merge"].as_str().unwrap() {
            "Concatenate" => Concatenate::new().into(),
            "Add" => Add::new().into(),
            "Multiply" => Multiply::new().into(),
            "Average" => Average::new().into(),
            other => panic!("unexpected merge {other}"),
        };
        let mut model = match merge {
            MergeOp::Concatenate { .. } => fixture_model(Concatenate::new()),
            MergeOp::Add => fixture_model(Add::new()),
            MergeOp::Multiply => fixture_model(Multiply::new()),
            _ => fixture_model(Average::new()),
        };
        set_fixture_weights(&mut model, &case["initial_weights"]);
        let xa = two_d(&arr(&case["inputs"][0]));
        let xb = two_d(&arr(&case["inputs"][1]));
        let yc = two_d(&arr(&case["targets"][0]));
        let yv = two_d(&arr(&case["targets"][1]));

        let p = model.predict([&xa, &xb]).unwrap();
        for (o, want) in case["predictions"].as_array().unwrap().iter().enumerate() {
            let want = arr(want);
            assert_eq!(p[o].shape(), want.shape(), "{key}: prediction {o} shape");
            assert_close(
                p[o].as_slice().unwrap(),
                want.as_slice().unwrap(),
                1e-5,
                &format!("{key}: prediction {o}"),
            );
        }

        model
            .compile(
                Sgd {
                    learning_rate: 0.1,
                    ..Default::default()
                },
                ModelCompile::new()
                    .losses(["categorical_crossentropy", "mse"])
                    .loss_weights(&[1.0, 0.5]),
            )
            .unwrap();
        let h = model
            .fit(
                [&xa, &xb],
                [&yc, &yv],
                FitOptions {
                    epochs: 3,
                    batch_size: 3,
                    shuffle: false,
                    verbose: 0,
                    ..Default::default()
                },
            )
            .unwrap();
        let mut keys: Vec<&str> = h.keys().collect();
        keys.sort_unstable();
        assert_eq!(keys, ["loss", "out_class_loss", "out_value_loss"], "{key}");
        for k in ["loss", "out_class_loss", "out_value_loss"] {
            let want: Vec<f32> = case["history"][k]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            assert_close(
                h.get(k).unwrap(),
                &want,
                1e-4,
                &format!("{key}: history {k}"),
            );
        }
        let names = model.weight_names();
        let weights = model.get_weights().unwrap();
        for w in case["final_weights"].as_array().unwrap() {
            let name = w["name"].as_str().unwrap();
            let i = names.iter().position(|n| n == name).unwrap();
            assert_close(
                weights[i].as_slice().unwrap(),
                arr(&w["value"]).as_slice().unwrap(),
                1e-4,
                &format!("{key}: final {name}"),
            );
        }
    }
}
