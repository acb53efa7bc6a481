//! Convolutional models through the public API: shapes, `summary()`, model
//! files (round trip, resume), `load_weights` by Keras names, arrays of any
//! rank in `fit`/`predict`, and the errors a user meets.

mod common;

use horn::prelude::*;
use ndarray::{Array2, Array4};

fn images(n: usize) -> (Array4<f32>, Array2<f32>) {
    let x = Array4::from_shape_fn((n, 8, 8, 1), |(i, r, c, _)| {
        let class = i % 3;
        // Class 0: a bright row, 1: a bright column, 2: a diagonal.
        let on = match class {
            0 => r == 2 + i % 4,
            1 => c == 1 + i % 5,
            _ => r == c,
        };
        if on {
            1.0
        } else {
            ((i * 7 + r * 3 + c) % 10) as f32 * 0.02
        }
    });
    let y = Array2::from_shape_fn((n, 3), |(i, j)| (i % 3 == j) as u8 as f32);
    (x, y)
}

fn convnet(seed: u64) -> Sequential {
    let mut m = Sequential::new()
        .seed(seed)
        .input_shape(&[8, 8, 1])
        .conv2d(6, 3, Relu)
        // Momentum 0.9: with Keras' 0.99 the moving statistics of a run of a
        // hundred steps are still 30% the initial ones, and inference lags.
        .add(BatchNormalization::new().momentum(0.9))
        .max_pooling2d(2)
        .flatten()
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
        seed: Some(3),
        verbose: 0,
        ..Default::default()
    }
}

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("horn-vision-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn a_convnet_learns_and_summarizes_like_keras() {
    let (x, y) = images(120);
    let mut m = convnet(1);
    let s = m.summary();
    assert!(s.contains("conv2d (Conv2D)"), "{s}");
    assert!(s.contains("(None, 6, 6, 6)"), "{s}");
    assert!(s.contains("(None, 3, 3, 6)"), "{s}");
    assert!(s.contains("(None, 54)"), "{s}");
    // 60 conv + 24 batch norm (12 of them moving statistics) + 165 dense.
    assert!(s.contains("Total params: 249"), "{s}");
    assert!(s.contains("Non-trainable params: 12"), "{s}");
    let h = m.fit(&x, &y, opts(15, 0)).unwrap();
    let loss = h.get("loss").unwrap();
    assert!(loss[loss.len() - 1] < loss[0] * 0.5, "{loss:?}");
    let acc = m.evaluate(&x, &y).unwrap()["accuracy"];
    assert!(acc > 0.9, "accuracy {acc}, losses {loss:?}");
    // Flattened rows of the same images are the same input.
    let flat = x.clone().into_shape_with_order((120, 64)).unwrap();
    assert_eq!(m.predict(&x).unwrap(), m.predict(&flat).unwrap());
}

#[test]
fn batch_normalization_moving_statistics_follow_training() {
    let (x, y) = images(48);
    let mut m = convnet(2);
    let before = m.get_weights().unwrap();
    m.fit(&x, &y, opts(1, 0)).unwrap();
    let after = m.get_weights().unwrap();
    // conv kernel, conv bias, gamma, beta, moving_mean, moving_variance, ...
    assert_ne!(before[4], after[4], "moving mean unchanged");
    assert_ne!(before[5], after[5], "moving variance unchanged");
    // Inference uses the moving statistics: evaluate twice gives the same.
    assert_eq!(
        m.evaluate(&x, &y).unwrap()["loss"].to_bits(),
        m.evaluate(&x, &y).unwrap()["loss"].to_bits()
    );
}

#[test]
fn convnet_files_round_trip_and_resume_bit_identically() {
    let (x, y) = images(64);
    let mut straight = convnet(4);
    straight.fit(&x, &y, opts(4, 0)).unwrap();

    let mut first = convnet(4);
    first.fit(&x, &y, opts(2, 0)).unwrap();
    let path = tmp("cnn.safetensors");
    first.save(&path).unwrap();
    let mut resumed = Sequential::load(&path).unwrap();
    assert_eq!(resumed.summary(), first.summary());
    assert_eq!(resumed.predict(&x).unwrap(), first.predict(&x).unwrap());
    resumed.fit(&x, &y, opts(4, 2)).unwrap();
    assert_eq!(
        common::fingerprint(&resumed),
        common::fingerprint(&straight)
    );

    // Weights by Keras name: conv2d/kernel in (kh, kw, in, out).
    let wpath = tmp("cnn.weights.safetensors");
    straight.save_weights(&wpath).unwrap();
    let bytes = std::fs::read(&wpath).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("conv2d/kernel").unwrap().shape(), &[3, 3, 1, 6]);
    assert_eq!(
        st.tensor("batch_normalization/moving_variance")
            .unwrap()
            .shape(),
        &[6]
    );
    let mut fresh = convnet(9);
    fresh.load_weights(&wpath).unwrap();
    assert_eq!(fresh.predict(&x).unwrap(), straight.predict(&x).unwrap());
}

#[test]
fn shapes_that_do_not_fit_are_clear_errors() {
    // A kernel larger than a `valid` input.
    let mut m = Sequential::new().input_shape(&[2, 2, 1]).conv2d(4, 3, Relu);
    let e = m
        .compile("adam", "mse", Metric::NONE)
        .unwrap_err()
        .to_string();
    assert!(e.contains("conv2d") && e.contains("(None, 2, 2, 1)"), "{e}");
    // A pooling window larger than its input.
    let mut m = Sequential::new()
        .input_shape(&[4, 4, 1])
        .conv2d(2, 3, Relu)
        .max_pooling2d(3);
    let e = m
        .compile("adam", "mse", Metric::NONE)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("max_pooling2d") && e.contains("(None, 2, 2, 2)"),
        "{e}"
    );
    // A convolution on flat rows.
    let mut m = Sequential::new().input(64).conv2d(2, 3, Relu);
    let e = m
        .compile("adam", "mse", Metric::NONE)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("(height, width, channels)") && e.contains("(None, 64)"),
        "{e}"
    );
    // Reshape to a size that does not match.
    let mut m = Sequential::new()
        .input_shape(&[4, 4])
        .add(Reshape::new(&[3, -1]));
    let e = m
        .compile("adam", "mse", Metric::NONE)
        .unwrap_err()
        .to_string();
    assert!(e.contains("Reshape") && e.contains("16 values"), "{e}");
    // An unknown activation name is reported, not swallowed.
    let mut m = Sequential::new()
        .input_shape(&[4, 4, 1])
        .conv2d(2, 3, "relux");
    let e = m
        .compile("adam", "mse", Metric::NONE)
        .unwrap_err()
        .to_string();
    assert!(e.contains("relux"), "{e}");

    // Data of the wrong rank or shape for a built convnet.
    let mut m = convnet(1);
    let (x, y) = images(6);
    let wrong = x.clone().into_shape_with_order((6, 8, 4, 2)).unwrap();
    let e = m.fit(&wrong, &y, opts(1, 0)).unwrap_err().to_string();
    assert!(
        e.contains("[6, 8, 8, 1]") && e.contains("[6, 8, 4, 2]"),
        "{e}"
    );
    let e = m
        .predict(Array2::<f32>::zeros((2, 10)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("64"), "{e}");
    // predict on a model whose output is not a vector points to predict_nd.
    let seq = Sequential::new().input_shape(&[5, 3]).dense(2, Linear);
    let e = seq
        .predict(ndarray::Array3::<f32>::zeros((1, 5, 3)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("predict_nd"), "{e}");
    // NaN in an image is found and located.
    let mut bad = x;
    bad[[1, 2, 3, 0]] = f32::NAN;
    let e = m.fit(&bad, &y, opts(1, 0)).unwrap_err().to_string();
    assert!(e.contains("row 1"), "{e}");
}

/// Losses and metrics that read a distribution work per position on an
/// output with several positions, over the last axis, averaged over the
/// positions (Keras' semantics): checked against a hand computation from
/// `predict_nd`, for one-hot and for class-index targets.
#[test]
fn per_position_classification_follows_keras() {
    let x = ndarray::Array3::<f32>::from_shape_fn((6, 5, 3), |(i, t, f)| {
        ((i * 7 + t * 3 + f) % 11) as f32 * 0.1 - 0.4
    });
    let classes = ndarray::Array2::<usize>::from_shape_fn((6, 5), |(i, t)| (i + 2 * t) % 4);
    let onehot = ndarray::Array3::<f32>::from_shape_fn((6, 5, 4), |(i, t, c)| {
        (classes[[i, t]] == c) as u8 as f32
    });
    let mut m = Sequential::new()
        .seed(3)
        .input_shape(&[5, 3])
        .dense(8, Tanh)
        .dense(4, Softmax);
    m.compile("adam", "categorical_crossentropy", &["accuracy"])
        .unwrap();
    let p = m.predict_nd(&x).unwrap();
    let (mut loss, mut right) = (0.0f64, 0.0f64);
    for i in 0..6 {
        for t in 0..5 {
            let row: Vec<f32> = (0..4).map(|c| p[[i, t, c]]).collect();
            loss -= (row[classes[[i, t]]] as f64).ln();
            let best = (0..4).fold(0, |b, c| if row[c] > row[b] { c } else { b });
            right += (best == classes[[i, t]]) as u8 as f64;
        }
    }
    let (loss, acc) = ((loss / 30.0) as f32, (right / 30.0) as f32);
    let scores = m.evaluate(&x, &onehot).unwrap();
    assert!(
        (scores["loss"] - loss).abs() < 1e-5,
        "{} vs {loss}",
        scores["loss"]
    );
    assert!(
        (scores["accuracy"] - acc).abs() < 1e-6,
        "{} vs {acc}",
        scores["accuracy"]
    );

    // Class indices, one per position.
    m.compile("adam", "sparse_categorical_crossentropy", &["accuracy"])
        .unwrap();
    let idx = classes.mapv(|c| c as f32);
    let scores = m.evaluate(&x, &idx).unwrap();
    assert!((scores["loss"] - loss).abs() < 1e-5);
    assert!((scores["accuracy"] - acc).abs() < 1e-6);
    let h = m.fit(&x, &idx, opts(40, 0)).unwrap();
    let l = h.get("loss").unwrap();
    assert!(
        l.last().unwrap() < &(l[0] - 0.02),
        "training lowers the per-position loss: {l:?}"
    );
    // One index per sample is refused, naming the positions.
    let e = m
        .evaluate(&x, ndarray::Array2::<f32>::zeros((6, 1)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("5 class indices per sample"), "{e}");
}
