//! Timings of horn's hot paths (plain harness, best of several rounds, since the
//! machines are shared and noisy).
//!
//! `cargo bench --bench training` (all); `cargo bench --bench training -- epoch` (one).
//! `HORN_BENCH_THREADS=1` runs everything on one rayon thread.

use std::time::Instant;

use horn::datasets::mnist;
use horn::optimizers::Optimizer;
use horn::prelude::*;
use horn::preprocessing::to_categorical;
use ndarray::{s, Array2};

/// Best (minimum) seconds per call over `rounds` rounds of `reps` calls.
fn best(rounds: usize, reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..rounds)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            t.elapsed().as_secs_f64() / reps as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn fmt(secs: f64) -> String {
    if secs >= 1.0 {
        format!("{secs:.3} s")
    } else if secs >= 1e-3 {
        format!("{:.3} ms", secs * 1e3)
    } else {
        format!("{:.2} us", secs * 1e6)
    }
}

/// Best seconds of one reference epoch (batch 128, validation_split 0.25,
/// seed 1) on `x`, and the weights after it.
fn epoch(x: &Array2<f32>, y: &Array2<f32>) -> (f64, Vec<ndarray::ArrayD<f32>>) {
    let mut m = mnist_model(1);
    let mut weights = Vec::new();
    let t = best(3, 1, || {
        m.fit(
            x,
            y,
            FitOptions {
                epochs: 1,
                batch_size: 128,
                validation_split: 0.25,
                seed: Some(1),
                verbose: 0,
                ..Default::default()
            },
        )
        .unwrap();
        weights = m.get_weights().unwrap();
    });
    (t, weights)
}

fn mnist_model(seed: u64) -> Sequential {
    let mut m = Sequential::new()
        .seed(seed)
        .input(784)
        .dense(512, Relu)
        .dense(10, Softmax);
    m.compile(
        RmsProp::default(),
        CategoricalCrossentropy::default(),
        &[Metric::Accuracy],
    )
    .unwrap();
    m
}

fn main() {
    if let Some(t) = std::env::var("HORN_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .unwrap();
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    println!("rayon threads: {}", rayon::current_num_threads());

    let data = mnist::load_default().unwrap();
    let x = data.train.flat_scaled();
    let y = to_categorical(&data.train.labels(), Some(10)).unwrap();
    let x_test = data.test.flat_scaled();

    if want("dense_step") {
        // One training step at the reference shapes (batch 128): forward, fused
        // softmax + cross-entropy, backward, RMSprop, as `fit` runs it.
        let xb = x.slice(s![..128, ..]).to_owned();
        let yb = y.slice(s![..128, ..]).to_owned();
        let mut m = mnist_model(1);
        let t = best(5, 20, || {
            m.fit(
                &xb,
                &yb,
                FitOptions {
                    epochs: 1,
                    batch_size: 128,
                    shuffle: false,
                    verbose: 0,
                    ..Default::default()
                },
            )
            .unwrap();
        });
        println!(
            "dense_step      one training step, 784-512-10, batch 128: {}",
            fmt(t)
        );
    }
    if want("optimizer") {
        let mut opt = Optimizer::from(RmsProp::default());
        let mut w1 = vec![0.01f32; 784 * 512];
        let mut b1 = vec![0.0f32; 512];
        let mut w2 = vec![0.01f32; 512 * 10];
        let mut b2 = vec![0.0f32; 10];
        let mut g = [
            vec![1e-3f32; 784 * 512],
            vec![1e-3f32; 512],
            vec![1e-3f32; 5120],
            vec![1e-3f32; 10],
        ];
        let t = best(5, 50, || {
            let [g1, g2, g3, g4] = &mut g;
            opt.apply(
                &mut [&mut w1, &mut b1, &mut w2, &mut b2],
                &mut [g1, g2, g3, g4],
            )
            .unwrap();
        });
        println!(
            "optimizer       one RMSprop step over 407,050 parameters: {}",
            fmt(t)
        );
    }
    if want("epoch") {
        // One epoch of the reference workload: 45,000 training rows, 15,000 validation rows.
        let (t, weights) = epoch(&x, &y);
        let sum: f64 = weights
            .iter()
            .flat_map(|w| w.iter())
            .map(|&v| v as f64)
            .sum();
        println!(
            "epoch           one MNIST epoch (fit + validation): {}   (weights checksum {sum:.6})",
            fmt(t)
        );
    }
    if want("dense_epoch") {
        // The same epoch on a dense input (pixels mapped to 2x - 1, no zeros
        // for the kernels to skip): the engine's speed on standardized
        // features and hidden layers (issue 11).
        let (t, _) = epoch(&x.mapv(|v| 2.0 * v - 1.0), &y);
        println!(
            "dense_epoch     one MNIST epoch on a dense input (2x - 1): {}",
            fmt(t)
        );
    }
    if want("predict_10k") {
        let m = mnist_model(1);
        let t = best(5, 5, || {
            m.predict(&x_test).unwrap();
        });
        println!("predict_10k     predict on 10,000 rows: {}", fmt(t));
    }
    if want("predict_one") {
        let m = mnist_model(1);
        let one = x_test.slice(s![..1, ..]).to_owned();
        let t = best(10, 1000, || {
            m.predict(&one).unwrap();
        });
        println!("predict_one     one-sample predict latency: {}", fmt(t));
        // The same with a dense input row (no zero pixel to skip).
        let dense = one.mapv(|v| v + 0.5);
        let t = best(10, 1000, || {
            m.predict(&dense).unwrap();
        });
        println!(
            "predict_one     one-sample predict latency, dense row: {}",
            fmt(t)
        );
        // Small batches of dense rows (issue 11 asks for 8 and 32).
        for rows in [8usize, 32] {
            let block =
                Array2::from_shape_fn((rows, 784), |(i, j)| ((i * 7 + j) % 13) as f32 / 13.0 + 0.1);
            let t = best(10, 200, || {
                m.predict(&block).unwrap();
            });
            println!(
                "predict_one     predict latency, {rows} dense rows: {}",
                fmt(t)
            );
        }
    }
    if want("tabular") {
        // The penguins-sized model: 10 -> 12 -> 12 -> 3, batch 12, 250 rows, 10 epochs.
        let xt = Array2::from_shape_fn((250, 10), |(i, j)| ((i * 7 + j * 3) % 11) as f32 / 11.0);
        let yt = Array2::from_shape_fn((250, 3), |(i, j)| (i % 3 == j) as u8 as f32);
        let t = best(5, 3, || {
            let mut m = Sequential::new()
                .seed(1)
                .input(10)
                .dense(12, Relu)
                .dropout(0.1)
                .dense(12, Relu)
                .dropout(0.1)
                .dense(3, Softmax);
            m.compile(
                Adam::default(),
                CategoricalCrossentropy::default(),
                &[Metric::Accuracy],
            )
            .unwrap();
            m.fit(
                &xt,
                &yt,
                FitOptions {
                    epochs: 10,
                    batch_size: 12,
                    validation_split: 0.2,
                    verbose: 0,
                    ..Default::default()
                },
            )
            .unwrap();
        });
        println!(
            "tabular         10-epoch fit, 10-12-12-3, batch 12, 250 rows: {}",
            fmt(t)
        );
    }
}
