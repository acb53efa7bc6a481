//! Keras' masking (`Embedding(mask_zero=True)`) against values Keras 3
//! itself computed (`tests/fixtures/keras-masking.json`, made by
//! `scripts/keras_masking_fixture.py`): predictions, and a 2-epoch SGD fit
//! whose gradients pass through padded steps, for stacked LSTM/GRU layers
//! and for a Bidirectional SimpleRNN under GlobalAveragePooling1D.

mod common;

use common::fixture_array as arr;
use horn::prelude::*;
use ndarray::ArrayD;
use serde_json::Value;

fn fixture() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/keras-masking.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= tol * (1.0 + b.abs()),
            "{what}[{i}]: horn {a} vs keras {b}"
        );
    }
}

fn weights(case: &Value, key: &str) -> Vec<ArrayD<f32>> {
    case[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| arr(&w["value"]))
        .collect()
}

fn check(name: &str, mut model: Sequential, y: &ArrayD<f32>, f: &Value) {
    let case = &f[name];
    let x = arr(&f["x"]);
    model
        .set_weights(&weights(case, "initial_weights"))
        .unwrap();
    let p = model.predict(&x).unwrap();
    close(
        p.as_slice().unwrap(),
        arr(&case["predictions"]).as_slice().unwrap(),
        1e-5,
        &format!("{name} predictions"),
    );
    model
        .compile(
            Sgd {
                learning_rate: 0.1,
                ..Default::default()
            },
            case["loss"].as_str().unwrap(),
            Metric::NONE,
        )
        .unwrap();
    let h = model
        .fit(
            &x,
            y,
            FitOptions {
                epochs: 2,
                batch_size: 4,
                shuffle: false,
                verbose: 0,
                ..Default::default()
            },
        )
        .unwrap();
    let want: Vec<f32> = case["history"]["loss"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    close(h.get("loss").unwrap(), &want, 1e-4, &format!("{name} loss"));
    for (g, w) in model
        .get_weights()
        .unwrap()
        .iter()
        .zip(weights(case, "final_weights"))
    {
        close(
            g.as_slice().unwrap(),
            w.as_slice().unwrap(),
            1e-4,
            &format!("{name} final weights"),
        );
    }
}

#[test]
fn stacked_recurrent_layers_skip_padding_like_keras() {
    let f = fixture();
    let model = Sequential::new()
        .input_shape(&[6])
        .add(Embedding::new(10, 4).mask_zero(true))
        .add(LSTM::new(5).return_sequences(true))
        .add(GRU::new(3))
        .dense(2, Softmax);
    check("lstm_gru", model, &arr(&f["y_class"]), &f);
}

#[test]
fn bidirectional_and_average_pooling_skip_padding_like_keras() {
    let f = fixture();
    let model = Sequential::new()
        .input_shape(&[6])
        .add(Embedding::new(10, 4).mask_zero(true))
        .add(Bidirectional::new(SimpleRNN::new(3).return_sequences(true)))
        .add(GlobalAveragePooling1D::new())
        .dense(1, Linear);
    check("bidirectional_pooling", model, &arr(&f["y_value"]), &f);
}

/// The mask matters (the fixture's padding changes the outputs), and it
/// survives saving.
#[test]
fn the_mask_changes_predictions_and_is_saved() {
    let f = fixture();
    let case = &f["lstm_gru"];
    let x = arr(&f["x"]);
    let build = |mask: bool| {
        let mut m = Sequential::new()
            .input_shape(&[6])
            .add(Embedding::new(10, 4).mask_zero(mask))
            .add(LSTM::new(5).return_sequences(true))
            .add(GRU::new(3))
            .dense(2, Softmax);
        m.set_weights(&weights(case, "initial_weights")).unwrap();
        m
    };
    let masked = build(true).predict(&x).unwrap();
    let plain = build(false).predict(&x).unwrap();
    assert!(
        masked
            .iter()
            .zip(plain.iter())
            .any(|(a, b)| (a - b).abs() > 1e-3),
        "padding must change the result without the mask"
    );
    let bytes = build(true).to_bytes().unwrap();
    let back = Sequential::from_bytes(&bytes).unwrap();
    assert_eq!(back.predict(&x).unwrap(), masked);
}
