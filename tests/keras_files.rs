//! Keras' own `.keras` files, read natively: the MNIST MLP and convnet that
//! Keras trained (shared parity fixtures), and three models written by
//! `scripts/keras_files_fixture.py` (a functional model with a shared layer
//! and merges, an Embedding-Bidirectional(LSTM)-GRU text model, a
//! Conv1D-BatchNorm-SimpleRNN-TimeDistributed signal model), each with
//! Keras' predictions and one more epoch of Keras training after the save.
#![cfg(feature = "keras")]

mod common;

use common::{archive, fixture_array as arr, unzip};
use horn::prelude::*;
use horn::saving::{load_keras, load_keras_bytes, KerasModel};
use ndarray::{Array2, ArrayD};
use safetensors::SafeTensors;
use serde_json::Value;

fn fixture(path: &str) -> String {
    format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"))
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn predictions(dir: &str) -> (ArrayD<f32>, Vec<f32>) {
    let bytes = std::fs::read(fixture(&format!("{dir}/predictions.safetensors"))).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let get = |name: &str| -> (Vec<usize>, Vec<f32>) {
        let t = st.tensor(name).unwrap();
        let v = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (t.shape().to_vec(), v)
    };
    let (shape, x) = get("x");
    let (_, probs) = get("probs");
    (ArrayD::from_shape_vec(shape, x).unwrap(), probs)
}

#[test]
fn the_keras_mnist_mlp_and_convnet_predict_as_keras() {
    for dir in ["keras-mnist-mlp", "keras-mnist-cnn"] {
        let model = Sequential::load_keras(fixture(&format!("{dir}/model.keras"))).unwrap();
        let (x, probs) = predictions(dir);
        let p = model.predict_nd(&x).unwrap();
        let d = max_diff(p.as_slice().unwrap(), &probs);
        assert!(d < 1e-5, "{dir}: max difference {d}");
        // The compile settings came along: evaluate works, with Keras' keys.
        assert!(model.optimizer().is_some(), "{dir}: optimizer restored");
        assert_eq!(model.metric_keys(), ["accuracy"], "{dir}");
    }
    let mlp = Sequential::load_keras(fixture("keras-mnist-mlp/model.keras")).unwrap();
    assert_eq!(mlp.layer_names(), ["dense", "dense_1"]);
    assert_eq!(mlp.learning_rate(), Some(0.001));
    let cnn = Sequential::load_keras(fixture("keras-mnist-cnn/model.keras")).unwrap();
    let s = cnn.summary();
    assert!(
        s.contains("conv2d (Conv2D)") && s.contains("(None, 26, 26, 32)") && s.contains("34,826"),
        "{s}"
    );
}

fn json(name: &str) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(fixture(&format!("keras-files/{name}.json"))).unwrap(),
    )
    .unwrap()
}

fn two_d(a: &ArrayD<f32>) -> Array2<f32> {
    let n = a.shape()[0];
    a.clone().into_shape_with_order((n, a.len() / n)).unwrap()
}

fn keras_weights(list: &Value) -> Vec<Vec<f32>> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|w| arr(&w["value"]).iter().copied().collect())
        .collect()
}

#[test]
fn a_functional_keras_model_predicts_and_resumes_as_keras() {
    let f = json("functional");
    let KerasModel::Functional(model) =
        load_keras(fixture("keras-files/functional.keras")).unwrap()
    else {
        panic!("a functional model");
    };
    let mut model = *model;
    assert_eq!(model.input_names(), ["a", "b"]);
    assert_eq!(model.output_names(), ["out_class", "out_value"]);
    assert_eq!(
        model.layer_names(),
        [
            "shared",
            "mul",
            "concat",
            "pa",
            "pb",
            "add",
            "out_class",
            "out_value"
        ]
    );
    // Weights in Keras' order, with Keras' values.
    let w: Vec<Vec<f32>> = model
        .get_weights()
        .unwrap()
        .iter()
        .map(|a| a.iter().copied().collect())
        .collect();
    assert_eq!(w.len(), keras_weights(&f["weights"]).len());
    for (i, (ours, theirs)) in w.iter().zip(keras_weights(&f["weights"])).enumerate() {
        assert_eq!(ours, &theirs, "weight {i}");
    }
    let xa = two_d(&arr(&f["inputs"][0]));
    let xb = two_d(&arr(&f["inputs"][1]));
    let p = model.predict([&xa, &xb]).unwrap();
    for (o, want) in f["predictions"].as_array().unwrap().iter().enumerate() {
        let d = max_diff(p[o].as_slice().unwrap(), arr(want).as_slice().unwrap());
        assert!(d < 1e-5, "output {o}: max difference {d}");
    }
    // One more epoch continues Keras' run: Adam's state, the step count,
    // the losses, loss weights and metrics all came from the file.
    let yc = two_d(&arr(&f["targets"][0]));
    let yv = two_d(&arr(&f["targets"][1]));
    let h = model
        .fit(
            [&xa, &xb],
            [&yc, &yv],
            FitOptions {
                epochs: 1,
                batch_size: f["batch_size"].as_u64().unwrap() as usize,
                shuffle: false,
                verbose: 0,
                ..Default::default()
            },
        )
        .unwrap();
    let want = &f["one_more_epoch"];
    for (k, v) in want["history"].as_object().unwrap() {
        let got = h.get(k).unwrap_or_else(|| panic!("History has no `{k}`"))[0];
        let w = v[0].as_f64().unwrap() as f32;
        assert!(
            (got - w).abs() < 1e-4 * (1.0 + w.abs()),
            "{k}: horn {got}, Keras {w}"
        );
    }
    let after: Vec<Vec<f32>> = model
        .get_weights()
        .unwrap()
        .iter()
        .map(|a| a.iter().copied().collect())
        .collect();
    assert_eq!(after.len(), keras_weights(&want["weights"]).len());
    for (i, (ours, theirs)) in after
        .iter()
        .zip(keras_weights(&want["weights"]))
        .enumerate()
    {
        let d = max_diff(ours, &theirs);
        assert!(
            d < 1e-4,
            "weight {i} after one more epoch: max difference {d}"
        );
    }
}

#[test]
fn a_keras_text_model_predicts_and_resumes_as_keras() {
    let f = json("sequences");
    let mut model = Sequential::load_keras(fixture("keras-files/sequences.keras")).unwrap();
    let ids = two_d(&arr(&f["inputs"][0]));
    let p = model.predict(&ids).unwrap();
    let d = max_diff(
        p.as_slice().unwrap(),
        arr(&f["predictions"][0]).as_slice().unwrap(),
    );
    assert!(d < 1e-5, "max difference {d}");
    let y = two_d(&arr(&f["targets"][0]));
    let h = model
        .fit(
            &ids,
            &y,
            FitOptions {
                epochs: 1,
                batch_size: f["batch_size"].as_u64().unwrap() as usize,
                shuffle: false,
                verbose: 0,
                ..Default::default()
            },
        )
        .unwrap();
    let want = &f["one_more_epoch"];
    let wl = want["history"]["loss"][0].as_f64().unwrap() as f32;
    let got = h.get("loss").unwrap()[0];
    assert!((got - wl).abs() < 1e-4, "loss: horn {got}, Keras {wl}");
    let after: Vec<Vec<f32>> = model
        .get_weights()
        .unwrap()
        .iter()
        .map(|a| a.iter().copied().collect())
        .collect();
    assert_eq!(after.len(), keras_weights(&want["weights"]).len());
    for (i, (ours, theirs)) in after
        .iter()
        .zip(keras_weights(&want["weights"]))
        .enumerate()
    {
        let d = max_diff(ours, &theirs);
        assert!(
            d < 1e-4,
            "weight {i} after one more epoch: max difference {d}"
        );
    }
}

#[test]
fn a_keras_signal_model_predicts_as_keras() {
    let f = json("signals");
    let model = Sequential::load_keras(fixture("keras-files/signals.keras")).unwrap();
    let x = arr(&f["inputs"][0]);
    let p = model.predict_nd(&x).unwrap();
    let d = max_diff(
        p.as_slice().unwrap(),
        arr(&f["predictions"][0]).as_slice().unwrap(),
    );
    assert!(d < 1e-5, "max difference {d}");
    // BatchNormalization's moving statistics are non-trainable weights that
    // came from the file too.
    let names = model.layer_names();
    assert!(names.contains(&"batch_normalization".to_string()));
}

#[test]
fn hostile_keras_files_are_clear_errors() {
    let good = std::fs::read(fixture("keras-files/functional.keras")).unwrap();
    let parts = unzip(&good);
    let get = |n: &str| parts.iter().find(|(m, _)| m == n).unwrap().1.clone();
    let (config, weights, meta) = (
        get("config.json"),
        get("model.weights.h5"),
        get("metadata.json"),
    );
    let text = String::from_utf8(config.clone()).unwrap();
    let err = |bytes: &[u8]| load_keras_bytes(bytes).unwrap_err().to_string();

    assert!(err(b"not a zip").contains("zip archive"));
    assert!(err(&good[..good.len() / 2]).contains("zip"));
    let e = err(&archive(&[
        ("config.json", &config),
        ("metadata.json", &meta),
    ]));
    assert!(e.contains("no `model.weights.h5`"), "{e}");
    let e = err(&archive(&[
        ("../config.json", &config),
        ("model.weights.h5", &weights),
    ]));
    assert!(e.contains("outside the archive"), "{e}");
    // An unsupported layer class, named with its layer.
    let e = err(&archive(&[
        (
            "config.json",
            text.replace("\"Multiply\"", "\"Attention\"").as_bytes(),
        ),
        ("model.weights.h5", &weights),
    ]));
    assert!(e.contains("Attention") && e.contains("mul"), "{e}");
    // A custom object.
    let e = err(&archive(&[
        (
            "config.json",
            text.replacen(
                "\"module\": \"keras.layers\"",
                "\"module\": \"my_package.layers\"",
                3,
            )
            .as_bytes(),
        ),
        ("model.weights.h5", &weights),
    ]));
    assert!(e.contains("custom objects"), "{e}");
    // A shape that does not match the config: the weights are for 4 units.
    let e = err(&archive(&[
        (
            "config.json",
            text.replacen("\"units\": 4", "\"units\": 5", 1).as_bytes(),
        ),
        ("model.weights.h5", &weights),
    ]));
    assert!(
        e.contains("layers/dense/vars/0") && e.contains("[5, 5]"),
        "{e}"
    );
    // A truncated weights file.
    let e = err(&archive(&[
        ("config.json", &config),
        ("model.weights.h5", &weights[..weights.len() / 3]),
    ]));
    assert!(e.contains("model.weights.h5"), "{e}");
    // Features horn does not have are refused by name.
    let e = err(&archive(&[
        (
            "config.json",
            text.replacen(
                "\"kernel_constraint\": null",
                "\"kernel_constraint\": {\"class_name\": \"MaxNorm\"}",
                1,
            )
            .as_bytes(),
        ),
        ("model.weights.h5", &weights),
    ]));
    assert!(e.contains("kernel_constraint"), "{e}");
    // A decompression bomb: 64 MiB of zeros deflated to about 64 KB.
    let bomb = {
        use std::io::Write;
        let mut buf = std::io::Cursor::new(Vec::new());
        let mut zip = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("config.json", opts).unwrap();
        let zeros = vec![b' '; 1 << 20];
        for _ in 0..64 {
            zip.write_all(&zeros).unwrap();
        }
        zip.finish().unwrap();
        buf.into_inner()
    };
    assert!(
        bomb.len() < 1 << 20,
        "the bomb is small: {} bytes",
        bomb.len()
    );
    let e = err(&bomb);
    assert!(e.contains("decompression bomb"), "{e}");
    // A failed load leaves nothing behind, and the good file still loads.
    assert!(load_keras_bytes(&good).is_ok());
}

#[test]
fn thousands_of_mutated_keras_files_never_panic() {
    // 3,000 mutated `.keras` archives and 1,000 mutated Keras 2 `.h5` files.
    let good = std::fs::read(fixture("keras-files/functional.keras")).unwrap();
    let parts = unzip(&good);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut loaded = 0;
    for round in 0..3000 {
        // Mutate either the raw archive or one entry inside a valid archive.
        let bytes = if round % 2 == 0 {
            let mut b = good.clone();
            for _ in 0..1 + next() % 4 {
                let i = (next() % b.len() as u64) as usize;
                b[i] = next() as u8;
            }
            b
        } else {
            let which = (next() % parts.len() as u64) as usize;
            let entries: Vec<(String, Vec<u8>)> = parts
                .iter()
                .enumerate()
                .map(|(k, (n, d))| {
                    let mut d = d.clone();
                    if k == which && !d.is_empty() {
                        for _ in 0..1 + next() % 4 {
                            let i = (next() % d.len() as u64) as usize;
                            d[i] = next() as u8;
                        }
                    }
                    (n.clone(), d)
                })
                .collect();
            let refs: Vec<(&str, &[u8])> = entries
                .iter()
                .map(|(n, d)| (n.as_str(), d.as_slice()))
                .collect();
            archive(&refs)
        };
        if load_keras_bytes(&bytes).is_ok() {
            loaded += 1;
        }
    }
    // Keras 2 `.h5` model files go through the HDF5 decoder directly.
    let h5 = std::fs::read(fixture("keras-files/keras2_functional.h5")).unwrap();
    for _ in 0..1000 {
        let mut b = h5.clone();
        for _ in 0..1 + next() % 4 {
            let i = (next() % b.len() as u64) as usize;
            b[i] = next() as u8;
        }
        let _ = load_keras_bytes(&b);
    }
    // Most mutations hit bytes that matter; some (padding, names) do not.
    println!("{loaded} of 3000 mutated files loaded");
    assert!(loaded < 3000, "every mutation loaded");
}

#[test]
fn weighted_metrics_travel_through_keras_files() {
    let mut m = Sequential::new().seed(1).input(4).dense(3, Softmax);
    m.compile_with(
        "adam",
        "categorical_crossentropy",
        CompileOptions::new()
            .metrics(&["accuracy"])
            .weighted_metrics(&["accuracy", "mae"]),
    )
    .unwrap();
    let back = Sequential::load_keras_bytes(&m.to_keras_bytes().unwrap()).unwrap();
    assert_eq!(back.metric_keys(), ["accuracy", "weighted_accuracy", "mae"]);
    assert_eq!(back.metric_keys(), m.metric_keys());
}

#[test]
fn save_keras_round_trips_through_horn() {
    // Every fixture: load, save with horn, load again: same weights, same
    // predictions, same compile settings.
    for name in ["functional", "sequences", "signals"] {
        let original = load_keras(fixture(&format!("keras-files/{name}.keras"))).unwrap();
        let f = json(name);
        match original {
            KerasModel::Functional(m) => {
                let bytes = m.to_keras_bytes().unwrap();
                let KerasModel::Functional(back) = load_keras_bytes(&bytes).unwrap() else {
                    panic!("functional")
                };
                assert_eq!(
                    back.get_weights().unwrap(),
                    m.get_weights().unwrap(),
                    "{name}"
                );
                assert_eq!(back.summary(), m.summary(), "{name}");
                let xs: Vec<Array2<f32>> = f["inputs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| two_d(&arr(x)))
                    .collect();
                let refs: Vec<&Array2<f32>> = xs.iter().collect();
                assert_eq!(
                    back.predict(refs.clone()).unwrap(),
                    m.predict(refs).unwrap(),
                    "{name}"
                );
                assert_eq!(
                    back.optimizer().map(|o| o.iterations()),
                    m.optimizer().map(|o| o.iterations())
                );
            }
            KerasModel::Sequential(m) => {
                // Through the file system this time: save_keras writes `.keras` paths.
                let path =
                    std::env::temp_dir().join(format!("horn-{name}-{}.keras", std::process::id()));
                m.save_keras(&path).unwrap();
                let back = Sequential::load_keras(&path).unwrap();
                std::fs::remove_file(&path).ok();
                let bytes = m.to_keras_bytes().unwrap();
                assert_eq!(
                    Sequential::load_keras_bytes(&bytes)
                        .unwrap()
                        .get_weights()
                        .unwrap(),
                    back.get_weights().unwrap()
                );
                assert_eq!(
                    back.get_weights().unwrap(),
                    m.get_weights().unwrap(),
                    "{name}"
                );
                assert_eq!(back.summary(), m.summary(), "{name}");
                let x = arr(&f["inputs"][0]);
                assert_eq!(
                    back.predict_nd(&x).unwrap(),
                    m.predict_nd(&x).unwrap(),
                    "{name}"
                );
                assert_eq!(back.metric_keys(), m.metric_keys());
                assert_eq!(
                    back.optimizer().map(|o| o.iterations()),
                    m.optimizer().map(|o| o.iterations())
                );
            }
        }
    }
}

fn arr_json(a: &ArrayD<f32>) -> Value {
    serde_json::json!({"shape": a.shape(), "data": a.iter().map(|&v| v as f64).collect::<Vec<_>>()})
}

/// Horn models of every layer family, trained one epoch and saved with
/// `save_keras`, beside their inputs and horn's predictions: the files
/// `scripts/keras_roundtrip.py` opens with Keras 3 itself. Written to
/// `$HORN_KERAS_EXPORT_DIR` when it is set (else a temporary directory, and
/// only horn reads them back).
#[test]
fn export_models_for_keras() {
    let dir = std::env::var("HORN_KERAS_EXPORT_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::env::temp_dir().join(format!("horn-keras-export-{}", std::process::id()))
        });
    std::fs::create_dir_all(&dir).unwrap();
    let data = |n: usize, shape: &[usize], seed: u64| -> ArrayD<f32> {
        let mut full = vec![n];
        full.extend_from_slice(shape);
        let len: usize = full.iter().product();
        ArrayD::from_shape_vec(
            full,
            (0..len)
                .map(|k| (((k * 37 + seed as usize * 11) % 97) as f32 / 97.0) * 2.0 - 1.0)
                .collect(),
        )
        .unwrap()
    };
    let quiet = FitOptions {
        epochs: 1,
        batch_size: 8,
        verbose: 0,
        ..Default::default()
    };
    let mut written = Vec::new();
    let mut write =
        |name: &str, bytes: Vec<u8>, inputs: Vec<ArrayD<f32>>, preds: Vec<ArrayD<f32>>| {
            std::fs::write(dir.join(format!("{name}.keras")), bytes).unwrap();
            let j = serde_json::json!({
                "inputs": inputs.iter().map(arr_json).collect::<Vec<_>>(),
                "predictions": preds.iter().map(arr_json).collect::<Vec<_>>(),
            });
            std::fs::write(dir.join(format!("{name}.json")), j.to_string()).unwrap();
            written.push(name.to_string());
        };

    // An MLP, adam.
    let x = data(32, &[6], 1);
    let y = Array2::from_shape_fn((32, 3), |(i, j)| (i % 3 == j) as u8 as f32);
    let mut mlp = Sequential::new()
        .seed(1)
        .input(6)
        .dense(16, Relu)
        .dropout(0.2)
        .dense(3, Softmax);
    mlp.compile("adam", "categorical_crossentropy", &["accuracy"])
        .unwrap();
    mlp.fit(&x, &y, quiet.clone()).unwrap();
    write(
        "mlp",
        mlp.to_keras_bytes().unwrap(),
        vec![x.clone()],
        vec![mlp.predict_nd(&x).unwrap()],
    );

    // A convnet with BatchNormalization, sgd with momentum.
    let x = data(16, &[8, 8, 2], 2);
    let y = Array2::from_shape_fn((16, 2), |(i, j)| (i % 2 == j) as u8 as f32);
    let mut cnn = Sequential::new()
        .seed(2)
        .input_shape(&[8, 8, 2])
        .add(Conv2D::new(4, 3, Relu).padding(Padding::Same))
        .batch_normalization()
        .max_pooling2d(2)
        .add(AveragePooling2D::new(2))
        .flatten()
        .dense(2, Softmax);
    cnn.compile(
        Sgd {
            learning_rate: 0.05,
            momentum: 0.9,
            nesterov: false,
        },
        "categorical_crossentropy",
        &["accuracy"],
    )
    .unwrap();
    cnn.fit(&x, &y, quiet.clone()).unwrap();
    write(
        "cnn",
        cnn.to_keras_bytes().unwrap(),
        vec![x.clone()],
        vec![cnn.predict_nd(&x).unwrap()],
    );

    // Text: Embedding(mask_zero), Bidirectional(LSTM), GRU, LayerNormalization, rmsprop.
    let ids = ArrayD::from_shape_fn(vec![12, 7], |i| {
        let (r, c) = (i[0], i[1]);
        if c >= 5 && r % 2 == 0 {
            0.0
        } else {
            ((r * 7 + c * 3) % 19 + 1) as f32
        }
    });
    let y = Array2::from_shape_fn((12, 1), |(i, _)| (i % 2) as f32);
    let mut text = Sequential::new()
        .seed(3)
        .input_shape(&[7])
        .add(Embedding::new(20, 6).mask_zero(true))
        .add(Bidirectional::new(LSTM::new(5).return_sequences(true)))
        .add(GRU::new(4))
        .add(LayerNormalization::new())
        .dense(1, Sigmoid);
    text.compile("rmsprop", "binary_crossentropy", &["accuracy"])
        .unwrap();
    text.fit(&ids, &y, quiet.clone()).unwrap();
    write(
        "text",
        text.to_keras_bytes().unwrap(),
        vec![ids.clone()],
        vec![text.predict_nd(&ids).unwrap()],
    );

    // Signals: Conv1D causal, SimpleRNN, TimeDistributed, global pooling.
    let x = data(10, &[12, 3], 4);
    let y = data(10, &[1], 5)
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap();
    let mut signals = Sequential::new()
        .seed(4)
        .input_shape(&[12, 3])
        .add(Conv1D::new(5, 3, Relu).padding(Padding::Causal))
        .add(SimpleRNN::new(4).return_sequences(true))
        .add(TimeDistributed::new(Dense::new(3, Tanh)))
        .add(GlobalMaxPooling1D::new())
        .dense(1, Linear);
    signals.compile("adam", "mse", &["mae"]).unwrap();
    signals.fit(&x, &y, quiet.clone()).unwrap();
    write(
        "signals",
        signals.to_keras_bytes().unwrap(),
        vec![x.clone()],
        vec![signals.predict_nd(&x).unwrap()],
    );

    // Functional: two inputs, a shared layer, every merge, two outputs.
    let mut g = Graph::with_seed(5);
    let a = g.input("a", &[5]);
    let b = g.input("b", &[5]);
    let shared = g.layer_named("shared", Dense::new(4, Tanh));
    let sa = g.call(shared, a);
    let sb = g.call(shared, b);
    let merged = [
        g.call(Add::new(), [sa, sb]),
        g.call(Subtract::new(), [sa, sb]),
        g.call(Multiply::new(), [sa, sb]),
        g.call(Average::new(), [sa, sb]),
        g.call(Maximum::new(), [sa, sb]),
        g.call(Minimum::new(), [sa, sb]),
        g.call(Dot::new(1).normalize(true), [sa, sb]),
    ];
    let joined = g.call(Concatenate::new(), merged.to_vec());
    let class = g.call_named("class", Dense::new(3, Softmax), joined);
    let value = g.call_named("value", Dense::new(1, Linear), joined);
    let mut model = Model::new(g, [a, b], [class, value]).unwrap();
    model
        .compile(
            "adam",
            ModelCompile::new()
                .output_loss("class", "categorical_crossentropy")
                .output_loss("value", "mse")
                .loss_weights(&[1.0, 0.5])
                .metrics("class", &["accuracy"])
                .metrics("value", &["mae"]),
        )
        .unwrap();
    let (xa, xb) = (data(16, &[5], 6), data(16, &[5], 7));
    let yc = Array2::from_shape_fn((16, 3), |(i, j)| (i % 3 == j) as u8 as f32);
    let yv = data(16, &[1], 8)
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap();
    model.fit([&xa, &xb], [&yc, &yv], quiet.clone()).unwrap();
    let p = model.predict([&xa, &xb]).unwrap();
    write(
        "functional",
        model.to_keras_bytes().unwrap(),
        vec![xa.clone(), xb.clone()],
        p,
    );

    // horn reads every file back to the same predictions.
    for name in &written {
        let bytes = std::fs::read(dir.join(format!("{name}.keras"))).unwrap();
        let back = load_keras_bytes(&bytes).unwrap().into_model();
        let j: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap(),
        )
        .unwrap();
        let inputs: Vec<ArrayD<f32>> = j["inputs"].as_array().unwrap().iter().map(arr).collect();
        let refs: Vec<&ArrayD<f32>> = inputs.iter().collect();
        let p = back.predict(refs).unwrap();
        for (o, want) in j["predictions"].as_array().unwrap().iter().enumerate() {
            assert_eq!(
                p[o].as_slice().unwrap(),
                arr(want).as_slice().unwrap(),
                "{name} output {o}"
            );
        }
    }
    if std::env::var("HORN_KERAS_EXPORT_DIR").is_err() {
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[test]
fn keras2_h5_model_files_predict_as_keras() {
    // Written by Keras 2 (tf_keras 2.21, scripts/keras2_h5_fixture.py): what
    // `model.save("m.h5")` gives in Keras 2 and R keras.
    for name in ["keras2_sequential", "keras2_functional"] {
        let f = json(&format!("{name}.h5"));
        let model = load_keras(fixture(&format!("keras-files/{name}.h5")))
            .unwrap()
            .into_model();
        let xs: Vec<ArrayD<f32>> = f["inputs"].as_array().unwrap().iter().map(arr).collect();
        let refs: Vec<&ArrayD<f32>> = xs.iter().collect();
        let p = model.predict(refs).unwrap();
        for (o, want) in f["predictions"].as_array().unwrap().iter().enumerate() {
            let d = max_diff(p[o].as_slice().unwrap(), arr(want).as_slice().unwrap());
            assert!(d < 1e-5, "{name} output {o}: max difference {d}");
        }
        assert!(
            model.optimizer().is_some(),
            "{name}: compile settings restored"
        );
    }
    let seq = Sequential::load_keras(fixture("keras-files/keras2_sequential.h5")).unwrap();
    assert_eq!(seq.metric_keys(), ["accuracy"]);
    assert_eq!(seq.layer_names(), ["lstm", "gru", "dense", "dense_1"]);
}

#[test]
fn every_optimizer_resumes_from_its_keras_state() {
    // Saved by Keras after two epochs; one more epoch in horn must give
    // Keras' own third epoch. Once as Keras wrote the file, once after horn
    // wrote it again with save_keras (the writer's layout is the reader's).
    for name in [
        "rmsprop_centered",
        "adam_amsgrad",
        "adamax",
        "adadelta",
        "nadam",
        "adagrad",
        "lion",
        "sgd_nesterov",
        "adamw",
        "adam_schedule",
    ] {
        let f = json(&format!("opt_{name}"));
        let x = two_d(&arr(&f["inputs"][0]));
        let y = two_d(&arr(&f["targets"][0]));
        let original =
            Sequential::load_keras(fixture(&format!("keras-files/opt_{name}.keras"))).unwrap();
        let rewritten = Sequential::load_keras_bytes(&original.to_keras_bytes().unwrap()).unwrap();
        for (which, mut model) in [
            ("as Keras wrote it", original),
            ("rewritten by horn", rewritten),
        ] {
            let h = model
                .fit(
                    &x,
                    &y,
                    FitOptions {
                        epochs: 1,
                        batch_size: 4,
                        shuffle: false,
                        verbose: 0,
                        ..Default::default()
                    },
                )
                .unwrap();
            let want = &f["one_more_epoch"];
            let wl = want["history"]["loss"][0].as_f64().unwrap() as f32;
            let got = h.get("loss").unwrap()[0];
            assert!(
                (got - wl).abs() < 1e-4 * (1.0 + wl.abs()),
                "{name} ({which}): loss horn {got}, Keras {wl}"
            );
            let after: Vec<Vec<f32>> = model
                .get_weights()
                .unwrap()
                .iter()
                .map(|a| a.iter().copied().collect())
                .collect();
            let theirs = keras_weights(&want["weights"]);
            assert_eq!(after.len(), theirs.len());
            for (i, (o, t)) in after.iter().zip(&theirs).enumerate() {
                let d = max_diff(o, t);
                assert!(d < 1e-4, "{name} ({which}): weight {i} differs by {d}");
            }
        }
    }
}
