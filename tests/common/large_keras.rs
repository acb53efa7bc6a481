//! `.keras` files with very many layers, written as Keras 3 writes them
//! (the layers' configs trimmed to the keys that matter): a Sequential
//! chain, a functional chain with its layers listed last-first, and one
//! shared layer called many times. Each ends in `Dense(2)` on `(4,)` inputs
//! after ReLU activations, so the model computes `relu(x) @ KERNEL + BIAS`.
//! Used by `tests/large_models.rs` (correctness) and `benches/loading.rs`
//! (time).
#![allow(dead_code)]

use std::io::Write;

use serde_json::{json, Value};

/// The final Dense layer's kernel `(4, 2)` and bias.
pub const KERNEL: [f32; 8] = [0.5, -1.0, 0.25, 2.0, -0.75, 1.5, 1.0, -0.5];
pub const BIAS: [f32; 2] = [0.1, -0.2];

fn input_layer() -> Value {
    json!({"module": "keras.layers", "class_name": "InputLayer",
           "config": {"name": "x", "batch_shape": [null, 4], "dtype": "float32"},
           "registered_name": null, "name": "x", "inbound_nodes": []})
}

fn tensor(layer: &str, call: usize) -> Value {
    json!({"class_name": "__keras_tensor__",
           "config": {"shape": [null, 4], "dtype": "float32", "keras_history": [layer, call, 0]}})
}

fn call(layer: &str, call: usize) -> Value {
    json!({"args": [tensor(layer, call)], "kwargs": {}})
}

fn activation(name: &str) -> Value {
    json!({"module": "keras.layers", "class_name": "Activation",
           "config": {"name": name, "trainable": true, "dtype": "float32", "activation": "relu"},
           "registered_name": null, "name": name})
}

fn dense() -> Value {
    json!({"module": "keras.layers", "class_name": "Dense",
           "config": {"name": "dense", "trainable": true, "dtype": "float32", "units": 2,
                      "activation": "linear", "use_bias": true},
           "registered_name": null, "name": "dense"})
}

/// The archive of a `config.json` and the Dense layer's weights.
fn archive(config: &Value) -> Vec<u8> {
    use hdf5_writer::{DatasetBuilder, Hdf5Builder, WriteOptions};
    let h5 = Hdf5Builder::new()
        .dataset(DatasetBuilder::typed_data("layers/dense/vars/0", vec![4u64, 2], &KERNEL).unwrap())
        .dataset(DatasetBuilder::typed_data("layers/dense/vars/1", vec![2u64], &BIAS).unwrap())
        .into_plan()
        .unwrap()
        .encode(WriteOptions::default())
        .unwrap();
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for (name, data) in [
            ("metadata.json", br#"{"keras_version": "3.15.1"}"#.to_vec()),
            ("config.json", serde_json::to_vec(config).unwrap()),
            ("model.weights.h5", h5),
        ] {
            zip.start_file(name, opts).unwrap();
            zip.write_all(&data).unwrap();
        }
        zip.finish().unwrap();
    }
    buf.into_inner()
}

/// A Sequential model of `n` ReLU activations and the Dense layer.
pub fn chain(n: usize) -> Vec<u8> {
    let mut layers = vec![input_layer()];
    for i in 0..n {
        layers.push(activation(&format!("activation_{i}")));
    }
    layers.push(dense());
    archive(&json!({"module": "keras", "class_name": "Sequential",
                    "config": {"name": "chain", "layers": layers}}))
}

fn functional(name: &str, mut layers: Vec<Value>, last: (&str, usize)) -> Vec<u8> {
    let mut d = dense();
    d["inbound_nodes"] = json!([call(last.0, last.1)]);
    layers.push(d);
    // Listed last-first: the worst order for a loader that scans for
    // calls whose inputs exist.
    layers.reverse();
    archive(
        &json!({"module": "keras.src.models.functional", "class_name": "Functional",
                    "config": {"name": name, "layers": layers,
                               "input_layers": [["x", 0, 0]], "output_layers": [["dense", 0, 0]]}}),
    )
}

/// A functional chain of `n` ReLU activations and the Dense layer, its
/// layers listed last-first.
pub fn graph(n: usize) -> Vec<u8> {
    let mut layers = vec![input_layer()];
    let mut prev = "x".to_string();
    for i in 0..n {
        let name = format!("activation_{i}");
        let mut a = activation(&name);
        a["inbound_nodes"] = json!([call(&prev, 0)]);
        layers.push(a);
        prev = name;
    }
    functional("graph", layers, (&prev, 0))
}

/// One ReLU activation called `n` times in a chain, then the Dense layer,
/// listed last-first.
pub fn shared(n: usize) -> Vec<u8> {
    let mut a = activation("shared");
    let calls: Vec<Value> = (0..n)
        .map(|j| {
            if j == 0 {
                call("x", 0)
            } else {
                call("shared", j - 1)
            }
        })
        .collect();
    a["inbound_nodes"] = Value::Array(calls);
    functional("shared", vec![input_layer(), a], ("shared", n - 1))
}

/// What every one of these models predicts for `x` (rows of 4).
pub fn expected(x: &[[f32; 4]]) -> Vec<[f32; 2]> {
    x.iter()
        .map(|r| {
            let mut out = BIAS;
            for (i, &v) in r.iter().enumerate() {
                for (j, o) in out.iter_mut().enumerate() {
                    *o += v.max(0.0) * KERNEL[i * 2 + j];
                }
            }
            out
        })
        .collect()
}
