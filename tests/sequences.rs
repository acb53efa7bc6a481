//! Sequence models through the public API: Embedding on integer token ids,
//! SimpleRNN, LSTM, GRU and Bidirectional; summaries, files, resuming,
//! weights by Keras name, and clear errors.

mod common;

use horn::prelude::*;
use ndarray::{Array2, Array3};

/// Sequences whose class is the sign of the sum of feature 0 over the
/// first half minus the second half (needs memory across steps).
fn sequences(n: usize, steps: usize) -> (Array3<f32>, Array2<f32>) {
    let x = Array3::from_shape_fn((n, steps, 3), |(i, t, f)| {
        (((i * 31 + t * 7 + f * 13) % 19) as f32 / 19.0 - 0.5) * if f == 0 { 2.0 } else { 1.0 }
    });
    let y = Array2::from_shape_fn((n, 2), |(i, j)| {
        let s: f32 = (0..steps)
            .map(|t| x[[i, t, 0]] * if t < steps / 2 { 1.0 } else { -1.0 })
            .sum();
        ((s > 0.0) == (j == 1)) as u8 as f32
    });
    (x, y)
}

/// Token ids in 0..20 with a class that depends on which ids occur.
fn tokens(n: usize) -> (Array2<i32>, Array2<f32>) {
    let x = Array2::from_shape_fn((n, 8), |(i, t)| ((i * 7 + t * 3 + i * t) % 20) as i32);
    let y = Array2::from_shape_fn((n, 2), |(i, j)| {
        let has = x.row(i).iter().any(|&v| v < 3);
        (has == (j == 1)) as u8 as f32
    });
    (x, y)
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
    let dir = std::env::temp_dir().join(format!("horn-seq-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Every recurrent layer and option in one model: a stacked
/// LSTM with return_sequences and input dropout, a backwards SimpleRNN with
/// relu, a Bidirectional GRU summing its directions.
fn stacked(seed: u64) -> Sequential {
    let mut m = Sequential::new()
        .seed(seed)
        .input_shape(&[10, 3])
        .add(LSTM::new(6).return_sequences(true).dropout(0.2))
        .add(
            SimpleRNN::new(5)
                .activation(Relu)
                .go_backwards(true)
                .return_sequences(true),
        )
        .add(Bidirectional::new(GRU::new(4)).merge_mode(MergeMode::Sum))
        .dense(2, Softmax);
    m.compile(Adam::default(), "categorical_crossentropy", &["accuracy"])
        .unwrap();
    m
}

#[test]
fn recurrent_models_learn_and_summarize_like_keras() {
    let (x, y) = sequences(96, 10);
    let mut m = Sequential::new()
        .seed(1)
        .input_shape(&[10, 3])
        .lstm(16)
        .dense(2, Softmax);
    m.compile(
        Adam {
            learning_rate: 0.01,
            ..Default::default()
        },
        "categorical_crossentropy",
        &["accuracy"],
    )
    .unwrap();
    let h = m.fit(&x, &y, opts(30, 0)).unwrap();
    let acc = h.get("accuracy").unwrap();
    assert!(
        *acc.last().unwrap() > 0.9,
        "an LSTM learns a sign over time: {acc:?}"
    );
    let s = m.summary();
    assert!(s.contains("lstm (LSTM)") && s.contains("(None, 16)"), "{s}");
    assert!(s.contains("1,280"), "4 * (16 * (3 + 16) + 16) params: {s}");

    let s = stacked(1).summary();
    for want in [
        "(None, 10, 6)",
        "simple_rnn (SimpleRNN)",
        "(None, 10, 5)",
        "bidirectional (Bidirectional)",
        "(None, 4)",
    ] {
        assert!(s.contains(want), "{want} in {s}");
    }
}

#[test]
fn embedding_models_take_integer_ids() {
    let (x, y) = tokens(64);
    let mut m = Sequential::new()
        .seed(2)
        .input_shape(&[8])
        .embedding(20, 6)
        .gru(8)
        .dense(2, Softmax);
    m.compile(
        Adam {
            learning_rate: 0.02,
            ..Default::default()
        },
        "categorical_crossentropy",
        &["accuracy"],
    )
    .unwrap();
    let h = m.fit(&x, &y, opts(25, 0)).unwrap();
    assert!(
        *h.get("accuracy").unwrap().last().unwrap() > 0.9,
        "{:?}",
        h.get("accuracy")
    );
    // The same ids as f32, i64 or u8 give the same predictions.
    let p = m.predict(&x).unwrap();
    assert_eq!(m.predict(x.mapv(|v| v as f32)).unwrap(), p);
    assert_eq!(m.predict(x.mapv(|v| v as i64)).unwrap(), p);
    assert_eq!(m.predict(x.mapv(|v| v as u8)).unwrap(), p);
    let s = m.summary();
    assert!(
        s.contains("embedding (Embedding)") && s.contains("(None, 8, 6)") && s.contains("120"),
        "{s}"
    );
}

#[test]
fn bad_token_ids_are_clear_errors() {
    let mut m = Sequential::new()
        .input_shape(&[4])
        .embedding(10, 3)
        .lstm(2)
        .dense(1, Sigmoid);
    m.compile("adam", "binary_crossentropy", Metric::NONE)
        .unwrap();
    let y = Array2::<f32>::zeros((2, 1));
    for (bad, what) in [(10.0f32, "10"), (-1.0, "-1"), (2.5, "2.5")] {
        let mut x = Array2::<f32>::zeros((2, 4));
        x[[1, 2]] = bad;
        let e = m.predict(&x).unwrap_err().to_string();
        assert!(
            e.contains("x[1, 2]") && e.contains("0..10") && e.contains(what),
            "{e}"
        );
        let e = m.fit(&x, &y, opts(1, 0)).unwrap_err().to_string();
        assert!(e.contains("x[1, 2]"), "{e}");
        let e = m.evaluate(&x, &y).unwrap_err().to_string();
        assert!(e.contains("x[1, 2]"), "{e}");
    }
    let e = m
        .predict(&ndarray::array![[1i64, 2, 3, 1 << 40]])
        .unwrap_err()
        .to_string();
    assert!(e.contains("x[0, 3]"), "{e}");
}

#[test]
fn bad_recurrent_configurations_are_clear_errors() {
    // A recurrent layer on flat rows.
    let mut m = Sequential::new().input(8).lstm(4);
    let e = m
        .compile("adam", "mse", Metric::NONE)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("(timesteps, features)") && e.contains("(None, 8)"),
        "{e}"
    );
    // Options outside their range.
    for layer in [
        Box::new(LSTM::new(0)) as Box<dyn Layer>,
        Box::new(GRU::new(3).dropout(1.0)),
        Box::new(SimpleRNN::new(3).activation(Softmax)),
        Box::new(Embedding::new(0, 4)),
    ] {
        let shape: &[usize] = if layer.class_name() == "Embedding" {
            &[5]
        } else {
            &[5, 2]
        };
        let mut m = Sequential::new().input_shape(shape).add_boxed(layer);
        let e = m.compile("adam", "mse", Metric::NONE).unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument { .. }),
            "{e:?} for {shape:?}"
        );
    }
    // Sequences of the wrong length for a built model.
    let m = stacked(1);
    let e = m
        .predict(Array3::<f32>::zeros((2, 9, 3)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("[2, 10, 3]") && e.contains("[2, 9, 3]"), "{e}");
}

#[test]
fn recurrent_files_round_trip_and_resume_bit_identically() {
    let (x, y) = sequences(48, 10);
    let mut straight = stacked(4);
    straight.fit(&x, &y, opts(4, 0)).unwrap();

    let mut first = stacked(4);
    first.fit(&x, &y, opts(2, 0)).unwrap();
    let path = tmp("rnn.safetensors");
    first.save(&path).unwrap();
    let mut resumed = Sequential::load(&path).unwrap();
    assert_eq!(resumed.summary(), first.summary());
    assert_eq!(resumed.predict(&x).unwrap(), first.predict(&x).unwrap());
    resumed.fit(&x, &y, opts(4, 2)).unwrap();
    assert_eq!(
        common::fingerprint(&resumed),
        common::fingerprint(&straight)
    );

    // Weights by Keras name and layout.
    let wpath = tmp("rnn.weights.safetensors");
    straight.save_weights(&wpath).unwrap();
    let bytes = std::fs::read(&wpath).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(
        st.tensor("lstm/lstm_cell/kernel").unwrap().shape(),
        &[3, 24]
    );
    assert_eq!(
        st.tensor("lstm/lstm_cell/recurrent_kernel")
            .unwrap()
            .shape(),
        &[6, 24]
    );
    assert_eq!(
        st.tensor("bidirectional/backward_gru/gru_cell/bias")
            .unwrap()
            .shape(),
        &[2, 12]
    );
    assert_eq!(
        st.tensor("simple_rnn/simple_rnn_cell/kernel")
            .unwrap()
            .shape(),
        &[6, 5]
    );
    let mut fresh = stacked(9);
    fresh.load_weights(&wpath).unwrap();
    assert_eq!(fresh.predict(&x).unwrap(), straight.predict(&x).unwrap());

    // Embedding models too, with every merge mode.
    for mode in [MergeMode::Concat, MergeMode::Mul, MergeMode::Ave] {
        let (x, y) = tokens(32);
        let mut m = Sequential::new()
            .seed(5)
            .input_shape(&[8])
            .embedding(20, 4)
            .add(Bidirectional::new(LSTM::new(3).return_sequences(true)).merge_mode(mode))
            .add(GlobalAveragePooling1D::new())
            .dense(2, Softmax);
        m.compile("rmsprop", "categorical_crossentropy", Metric::NONE)
            .unwrap();
        m.fit(&x, &y, opts(1, 0)).unwrap();
        let path = tmp("emb.safetensors");
        m.save(&path).unwrap();
        let back = Sequential::load(&path).unwrap();
        assert_eq!(back.predict(&x).unwrap(), m.predict(&x).unwrap());
    }
}

/// Sequence tagging: a label per step from an LSTM with `return_sequences`
/// and a Dense softmax on each step (Keras' per-position losses).
#[test]
fn sequence_tagging_learns_a_label_per_step() {
    // Tag each step with whether feature 0 rose since the previous step.
    let (x, _) = sequences(64, 10);
    let tags = ndarray::Array2::<f32>::from_shape_fn((64, 10), |(i, t)| {
        (t > 0 && x[[i, t, 0]] > x[[i, t - 1, 0]]) as u8 as f32
    });
    let mut m = Sequential::new()
        .seed(4)
        .input_shape(&[10, 3])
        .add(LSTM::new(16).return_sequences(true))
        .dense(2, Softmax);
    m.compile(
        Adam {
            learning_rate: 0.01,
            ..Default::default()
        },
        "sparse_categorical_crossentropy",
        &["accuracy"],
    )
    .unwrap();
    let h = m.fit(&x, &tags, opts(40, 0)).unwrap();
    let acc = h.get("accuracy").unwrap();
    assert!(*acc.last().unwrap() > 0.9, "{acc:?}");
    assert_eq!(m.predict_nd(&x).unwrap().shape(), &[64, 10, 2]);
}

/// TimeDistributed passes the same memory on as more rows: the wrapped
/// Dense gives Dense's own numbers, a wrapped convolution trains under an
/// LSTM, and the wrapper saves and loads.
#[test]
fn time_distributed_wraps_any_layer() {
    let (x, _) = sequences(8, 10);
    let mut plain = Sequential::new()
        .seed(1)
        .input_shape(&[10, 3])
        .dense(4, Tanh);
    let mut wrapped = Sequential::new()
        .seed(2)
        .input_shape(&[10, 3])
        .add(TimeDistributed::new(Dense::new(4, Tanh)));
    wrapped.set_weights(&plain.get_weights().unwrap()).unwrap();
    assert_eq!(
        wrapped.predict_nd(&x).unwrap(),
        plain.predict_nd(&x).unwrap()
    );
    let s = wrapped.summary();
    assert!(s.contains("time_distributed (TimeDistribu…"), "{s}");
    let _ = &mut plain;

    // Frames of small images, a convolution per frame, an LSTM over frames.
    let frames = ndarray::Array5::<f32>::from_shape_fn((12, 4, 5, 5, 1), |(i, t, r, c, _)| {
        ((i * 3 + t * 5 + r * 7 + c) % 9) as f32 / 9.0
    });
    let y = Array2::from_shape_fn((12, 2), |(i, j)| (i % 2 == j) as u8 as f32);
    let mut m = Sequential::new()
        .seed(3)
        .input_shape(&[4, 5, 5, 1])
        .add(TimeDistributed::new(Conv2D::new(2, 3, Relu)))
        .add(TimeDistributed::new(Flatten::new()))
        .lstm(4)
        .dense(2, Softmax);
    m.compile("adam", "categorical_crossentropy", &["accuracy"])
        .unwrap();
    assert!(m.summary().contains("(None, 4, 18)"), "{}", m.summary());
    m.fit(&frames, &y, opts(2, 0)).unwrap();
    let path = tmp("td.safetensors");
    m.save(&path).unwrap();
    let back = Sequential::load(&path).unwrap();
    assert_eq!(back.predict(&frames).unwrap(), m.predict(&frames).unwrap());
    // A wrapper needs a time axis.
    let mut bad = Sequential::new()
        .input(6)
        .add(TimeDistributed::new(Dense::new(2, Linear)));
    let e = bad
        .compile("adam", "mse", Metric::NONE)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("TimeDistributed") && e.contains("(None, 6)"),
        "{e}"
    );
}
