//! A seeded `fit` gives bit-identical weights and History whatever the number of
//! rayon threads.

mod common;

use horn::prelude::*;

/// Sparse inputs (about two thirds zeros) and a wide first layer, so that the
/// products take every path of the kernels: row and column splits, dense and
/// sparse panels.
fn data() -> (ndarray::Array2<f32>, ndarray::Array2<f32>) {
    let (x, y) = common::blobs(600, 96, 3);
    (x.mapv(|v| if v > 0.4 { v } else { 0.0 }), y)
}

fn model(seed: u64) -> Sequential {
    let mut model = Sequential::new()
        .seed(seed)
        .input(96)
        .dense(512, Relu)
        .dropout(0.2)
        .dense(128, Tanh)
        .dense(3, Softmax);
    model
        .compile(
            RmsProp::default(),
            CategoricalCrossentropy::default(),
            &[Metric::Accuracy],
        )
        .unwrap();
    model
}

fn fit(model: &mut Sequential) -> History {
    let (x, y) = data();
    model
        .fit(
            &x,
            &y,
            FitOptions {
                epochs: 3,
                batch_size: 64,
                validation_split: 0.2,
                seed: Some(5),
                verbose: 0,
                ..Default::default()
            },
        )
        .unwrap()
}

/// A small convnet over every vision layer with a reduction across the
/// batch: convolutions (same padding, stride 2), batch normalization,
/// pooling, dropout; batches large enough for the parallel paths.
fn cnn_train() -> (u64, Vec<f32>) {
    let n = 240;
    let x = ndarray::Array4::<f32>::from_shape_fn((n, 12, 12, 2), |(i, r, c, ch)| {
        (((i * 31 + r * 7 + c * 3 + ch) % 23) as f32 / 23.0 - 0.3).max(0.0)
    });
    let y = ndarray::Array2::<f32>::from_shape_fn((n, 3), |(i, j)| (i % 3 == j) as u8 as f32);
    let mut model = Sequential::new()
        .seed(4)
        .input_shape(&[12, 12, 2])
        .add(Conv2D::new(16, 3, Relu).padding(Padding::Same))
        .batch_normalization()
        .max_pooling2d(2)
        .add(Conv2D::new(16, 3, Relu).strides(2))
        .add(AveragePooling2D::new(2).padding(Padding::Same))
        .flatten()
        .dropout(0.3)
        .dense(3, Softmax);
    model
        .compile(Adam::default(), "categorical_crossentropy", &["accuracy"])
        .unwrap();
    let h = model
        .fit(
            &x,
            &y,
            FitOptions {
                epochs: 2,
                batch_size: 96,
                validation_split: 0.25,
                seed: Some(9),
                verbose: 0,
                ..Default::default()
            },
        )
        .unwrap();
    let mut hist = h.get("loss").unwrap().to_vec();
    hist.extend_from_slice(h.get("val_loss").unwrap());
    (common::fingerprint(&model), hist)
}

/// A recurrent model over several blocks of sequences per batch (the
/// parallel split of the recurrent layers), with input dropout, an
/// Embedding and both directions.
fn rnn_train() -> (u64, Vec<f32>) {
    let n = 200;
    let x = ndarray::Array2::<f32>::from_shape_fn((n, 12), |(i, t)| ((i * 7 + t * t) % 30) as f32);
    let y = ndarray::Array2::<f32>::from_shape_fn((n, 3), |(i, j)| (i % 3 == j) as u8 as f32);
    let mut model = Sequential::new()
        .seed(6)
        .input_shape(&[12])
        .embedding(30, 8)
        .add(LSTM::new(12).return_sequences(true).dropout(0.2))
        .add(Bidirectional::new(GRU::new(8)))
        .dense(3, Softmax);
    model
        .compile(Adam::default(), "categorical_crossentropy", &["accuracy"])
        .unwrap();
    let h = model
        .fit(
            &x,
            &y,
            FitOptions {
                epochs: 2,
                batch_size: 70,
                validation_split: 0.2,
                seed: Some(2),
                verbose: 0,
                ..Default::default()
            },
        )
        .unwrap();
    let mut hist = h.get("loss").unwrap().to_vec();
    hist.extend_from_slice(h.get("val_loss").unwrap());
    (common::fingerprint(&model), hist)
}

/// The MLP's, the convnet's and the recurrent model's fingerprints and
/// losses together.
fn train() -> (u64, Vec<f32>) {
    let mut model = model(11);
    let h = fit(&mut model);
    let mut hist = h.get("loss").unwrap().to_vec();
    hist.extend_from_slice(h.get("val_loss").unwrap());
    let (cnn_fp, cnn_hist) = cnn_train();
    hist.extend(cnn_hist);
    let (rnn_fp, rnn_hist) = rnn_train();
    hist.extend(rnn_hist);
    (
        common::fingerprint(&model) ^ cnn_fp.rotate_left(17) ^ rnn_fp.rotate_left(31),
        hist,
    )
}

#[test]
fn same_result_on_one_and_four_threads() {
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(train);
    let four = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap()
        .install(train);
    assert_eq!(one.0, four.0, "weights differ between 1 and 4 threads");
    assert_eq!(
        one.1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        four.1.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    // A different seed gives different weights: the fingerprint is sensitive.
    let mut other = model(12);
    fit(&mut other);
    assert_ne!(common::fingerprint(&other), one.0);
}

#[test]
fn concurrent_predicts_match_one_at_a_time() {
    // Threads that share the rayon pool run each other's parallel work while
    // they wait; every call must still get its own, correct result.
    let model = model(3);
    let (x, _) = data();
    let big = ndarray::concatenate![ndarray::Axis(0), x, x, x, x, x];
    let alone = model.predict(&big).unwrap();
    std::thread::scope(|s| {
        let calls: Vec<_> = (0..8)
            .map(|_| s.spawn(|| [(); 4].map(|_| model.predict(&big).unwrap())))
            .collect();
        for call in calls {
            for p in call.join().unwrap() {
                assert!(p
                    .iter()
                    .zip(alone.iter())
                    .all(|(a, b)| a.to_bits() == b.to_bits()));
            }
        }
    });
}

/// Child mode: print the fingerprint (run by `rayon_num_threads_env_1_vs_2`).
#[test]
fn child_print_fingerprint() {
    if std::env::var("HORN_DETERMINISM_CHILD").is_err() {
        return;
    }
    let (fp, hist) = train();
    println!(
        "FINGERPRINT {fp} {:?}",
        hist.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
fn rayon_num_threads_env_1_vs_2() {
    let exe = std::env::current_exe().unwrap();
    let run = |threads: &str| {
        let out = std::process::Command::new(&exe)
            .args([
                "--exact",
                "child_print_fingerprint",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("HORN_DETERMINISM_CHILD", "1")
            .env("RAYON_NUM_THREADS", threads)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let at = text
            .find("FINGERPRINT")
            .unwrap_or_else(|| panic!("no fingerprint in {text}"));
        text[at..].lines().next().unwrap().to_string()
    };
    assert_eq!(run("1"), run("2"));
}
