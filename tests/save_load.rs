//! Model files: round trips, resuming, Keras interop and bad files.

mod common;

use horn::prelude::*;
use ndarray::Array2;
use safetensors::SafeTensors;

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("horn-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn model(seed: u64) -> Sequential {
    let mut m = Sequential::new()
        .seed(seed)
        .input(6)
        .dense(16, Relu)
        .dropout(0.2)
        .dense(3, Softmax);
    m.compile(Adam::default(), "categorical_crossentropy", &["accuracy"])
        .unwrap();
    m
}

fn opts(epochs: usize, initial_epoch: usize) -> FitOptions {
    FitOptions {
        epochs,
        initial_epoch,
        batch_size: 16,
        seed: Some(9),
        verbose: 0,
        ..Default::default()
    }
}

#[test]
fn save_load_predicts_bit_identically() {
    let (x, y) = common::blobs(80, 6, 4);
    let mut m = model(1);
    m.fit(&x, &y, opts(2, 0)).unwrap();
    let path = tmp("roundtrip.safetensors");
    m.save(&path).unwrap();
    let loaded = Sequential::load(&path).unwrap();
    assert_eq!(m.predict(&x).unwrap(), loaded.predict(&x).unwrap());
    assert_eq!(loaded.layer_names(), m.layer_names());
    assert_eq!(loaded.summary(), m.summary());
    assert_eq!(
        loaded.optimizer().unwrap().iterations(),
        m.optimizer().unwrap().iterations()
    );
}

#[test]
fn resumed_fit_matches_uninterrupted_fit() {
    let (x, y) = common::blobs(80, 6, 4);
    let mut straight = model(1);
    straight.fit(&x, &y, opts(4, 0)).unwrap();

    let mut first = model(1);
    first.fit(&x, &y, opts(2, 0)).unwrap();
    let path = tmp("resume.safetensors");
    first.save(&path).unwrap();
    let mut resumed = Sequential::load(&path).unwrap();
    resumed.fit(&x, &y, opts(4, 2)).unwrap();
    assert_eq!(
        common::fingerprint(&straight),
        common::fingerprint(&resumed)
    );
}

#[test]
fn weights_only_files_use_keras_names() {
    let m = model(2);
    let path = tmp("weights.safetensors");
    m.save_weights(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "dense/bias",
            "dense/kernel",
            "dense_1/bias",
            "dense_1/kernel"
        ]
    );
    assert_eq!(st.tensor("dense/kernel").unwrap().shape(), &[6, 16]);
    let mut other = model(3);
    assert_ne!(common::fingerprint(&other), common::fingerprint(&m));
    other.load_weights(&path).unwrap();
    assert_eq!(common::fingerprint(&other), common::fingerprint(&m));
    // Another layout: shape mismatch, nothing changed.
    let mut wide = Sequential::new().input(6).dense(8, Relu).dense(3, Softmax);
    let before = common::fingerprint(&wide);
    let e = wide.load_weights(&path).unwrap_err().to_string();
    assert!(
        e.contains("dense/kernel") && e.contains("[6, 8]") && e.contains("[6, 16]"),
        "{e}"
    );
    assert_eq!(common::fingerprint(&wide), before);
}

#[test]
fn keras_trained_model_reproduces_keras_predictions() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/keras-mnist-mlp"
    );
    let mut m = Sequential::new()
        .input(784)
        .dense(512, Relu)
        .dense(10, Softmax);
    m.load_weights(format!("{dir}/weights.safetensors"))
        .unwrap();
    let bytes = std::fs::read(format!("{dir}/predictions.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let get = |name: &str| -> Vec<f32> {
        st.tensor(name)
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    let x = Array2::from_shape_vec((256, 784), get("x")).unwrap();
    let probs = Array2::from_shape_vec((256, 10), get("probs")).unwrap();
    let labels = get("labels");
    let ours = m.predict(&x).unwrap();
    let max_diff = ours
        .iter()
        .zip(probs.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(max_diff < 1e-5, "max difference {max_diff}");
    let acc = |p: &Array2<f32>| {
        p.rows()
            .into_iter()
            .zip(&labels)
            .filter(|(r, &l)| {
                let am = r
                    .iter()
                    .enumerate()
                    .fold(0, |b, (i, &v)| if v > r[b] { i } else { b });
                am == l as usize
            })
            .count()
    };
    assert_eq!(acc(&ours), acc(&probs));
    assert!(acc(&ours) > 240);
}

#[test]
fn bad_files_give_clear_errors() {
    let m = model(1);
    let path = tmp("good.safetensors");
    m.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();

    let truncated = tmp("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let e = Sequential::load(&truncated).unwrap_err().to_string();
    assert!(e.contains("not a valid safetensors file"), "{e}");

    let garbage = tmp("garbage.safetensors");
    std::fs::write(&garbage, b"hello, not a model").unwrap();
    assert!(matches!(
        Sequential::load(&garbage).unwrap_err(),
        Error::Format { .. }
    ));

    let missing = tmp("does-not-exist.safetensors");
    assert!(matches!(
        Sequential::load(&missing).unwrap_err(),
        Error::Io { .. }
    ));

    // Edit the JSON header: a newer version, and an unknown layer type.
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + header_len])
        .unwrap()
        .to_string();
    let rewrite = |from: &str, to: &str, name: &str| {
        let h = header.replacen(from, to, 1);
        assert_ne!(h, header, "{from} not found in header");
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&bytes[8 + header_len..]);
        let p = tmp(name);
        std::fs::write(&p, out).unwrap();
        Sequential::load(&p).unwrap_err().to_string()
    };
    let e = rewrite(
        "\"format_version\":\"2\"",
        "\"format_version\":\"9\"",
        "newer.safetensors",
    );
    assert!(e.contains("newer"), "{e}");
    let e = rewrite(
        "\\\"class_name\\\":\\\"Dropout\\\"",
        "\\\"class_name\\\":\\\"Conv9D\\\"",
        "unknown.safetensors",
    );
    assert!(
        e.contains("unreadable architecture") && e.contains("Conv9D"),
        "{e}"
    );
}

#[test]
fn every_layer_option_survives_a_round_trip() {
    let (x, y) = common::blobs(40, 6, 4);
    let mut m = Sequential::new()
        .seed(5)
        .input(6)
        .add(
            Dense::new(8, Elu(0.5))
                .kernel_initializer(Initializer::Constant(0.1))
                .bias_initializer(Initializer::RandomUniform {
                    minval: -0.1,
                    maxval: 0.1,
                })
                .kernel_regularizer(Regularizer::l1_l2(1e-3, 1e-4)),
        )
        .dense(8, LeakyRelu(0.1))
        .add(Dense::new(8, Gelu { approximate: true }).use_bias(false))
        .dropout(0.3)
        .dense(3, Linear)
        .activation(Softmax);
    m.compile(
        Optimizer::from(Sgd {
            learning_rate: 0.05,
            momentum: 0.9,
            nesterov: true,
        })
        .with_clipnorm(1.0),
        CategoricalCrossentropy {
            from_logits: false,
            label_smoothing: 0.1,
        },
        &[Metric::Accuracy, Metric::TopKCategoricalAccuracy { k: 2 }],
    )
    .unwrap();
    m.fit(&x, &y, opts(2, 0)).unwrap();
    let path = tmp("options.safetensors");
    m.save(&path).unwrap();
    let loaded = Sequential::load(&path).unwrap();
    assert_eq!(m.predict(&x).unwrap(), loaded.predict(&x).unwrap());
    assert_eq!(loaded.metrics(), m.metrics());
    assert_eq!(loaded.loss(), m.loss());
    assert_eq!(
        format!("{:?}", loaded.optimizer().unwrap().rule()),
        format!("{:?}", m.optimizer().unwrap().rule())
    );
    assert_eq!(
        m.evaluate(&x, &y).unwrap(),
        loaded.evaluate(&x, &y).unwrap()
    );
}
