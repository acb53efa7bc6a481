//! Inference latency of the reference model (784 -> 512 relu -> 10 softmax) for
//! the requests a service sends one at a time: one MNIST image, one dense row
//! (MNIST pixels mapped to `2x - 1`, no zero to skip), and blocks of 8 and 32
//! dense rows. Each figure is the median (and 99th percentile) of 10,000 calls
//! of `predict`, in microseconds; the last line is JSON.
//! `scripts/torch_predict_latency.py` times PyTorch on the same inputs.
//!
//! `cargo bench --bench latency` (`HORN_BENCH_THREADS=1` for one thread)

use std::time::Instant;

use horn::datasets::mnist;
use horn::prelude::*;
use ndarray::{s, Array2};

const CALLS: usize = 10_000;

/// Median and 99th percentile of `CALLS` timed calls, in microseconds.
fn latency(mut f: impl FnMut()) -> (f64, f64) {
    for _ in 0..100 {
        f();
    }
    let mut t: Vec<f64> = (0..CALLS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    t.sort_by(f64::total_cmp);
    (t[CALLS / 2], t[CALLS * 99 / 100])
}

fn main() {
    let threads = std::env::var("HORN_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a rayon pool");
    let x_test = mnist::load_default()
        .expect("MNIST ships in data/mnist")
        .test
        .flat_scaled();
    let mut model = Sequential::new()
        .seed(1)
        .input(784)
        .dense(512, Relu)
        .dense(10, Softmax);
    model
        .compile(
            RmsProp::default(),
            CategoricalCrossentropy::default(),
            &[Metric::Accuracy],
        )
        .expect("compile");
    let image = x_test.slice(s![..1, ..]).to_owned();
    let dense =
        |rows: usize| -> Array2<f32> { x_test.slice(s![..rows, ..]).mapv(|v| 2.0 * v - 1.0) };
    let cases: Vec<(&str, Array2<f32>)> = vec![
        ("mnist_1", image),
        ("dense_1", dense(1)),
        ("dense_8", dense(8)),
        ("dense_32", dense(32)),
    ];
    let mut json = Vec::new();
    pool.install(|| {
        for (name, x) in &cases {
            let (median, p99) = latency(|| {
                model.predict(x).expect("predict");
            });
            println!("{name:<10} median {median:8.1} us   p99 {p99:8.1} us");
            json.push(format!("\"{name}_us\":{median:.2}"));
        }
    });
    println!("{{{}}}", json.join(","));
}
