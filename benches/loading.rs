//! Loading time of models with 100,000 layers: `.keras` files (a
//! Sequential chain; a functional chain with its layers listed last-first;
//! one layer shared by 100,000 calls) and horn's own format (a Sequential
//! chain, saved and loaded). Each figure is the best of 3 loads, in
//! seconds, after building the file; the last line is JSON.
//! `tests/large_models.rs` checks the same models' predictions.
//!
//! `cargo bench --bench loading` (`HORN_BENCH_LAYERS=20000` for other sizes)

#[path = "../tests/common/large_keras.rs"]
mod large_keras;

use std::time::Instant;

use horn::prelude::*;
use horn::saving::load_keras_bytes;

/// The best of 3 runs of `f`, in seconds.
fn best(mut f: impl FnMut()) -> f64 {
    (0..3)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let n: usize = std::env::var("HORN_BENCH_LAYERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let mut results = Vec::new();
    for (name, bytes) in [
        ("keras_chain", large_keras::chain(n)),
        ("keras_graph_last_first", large_keras::graph(n)),
        ("keras_shared_layer", large_keras::shared(n)),
    ] {
        let s = best(|| {
            load_keras_bytes(&bytes).expect("the file loads");
        });
        println!(
            "{name:<24} {n} layers  {:>6.1} MB  load {s:.3} s",
            bytes.len() as f64 / 1e6
        );
        results.push((name, s));
    }
    let mut m = Sequential::new().seed(1).input(4);
    for _ in 0..n {
        m = m.add(ActivationLayer::new(Relu));
    }
    let m = m.dense(2, Linear);
    let start = Instant::now();
    let bytes = m.to_bytes().expect("the model saves");
    let save = start.elapsed().as_secs_f64();
    let s = best(|| {
        Sequential::from_bytes(&bytes).expect("the file loads");
    });
    println!(
        "{:<24} {n} layers  {:>6.1} MB  load {s:.3} s  (save {save:.3} s)",
        "horn_chain",
        bytes.len() as f64 / 1e6
    );
    results.push(("horn_chain", s));
    let fields: Vec<String> = results
        .iter()
        .map(|(k, s)| format!("\"{k}\": {s:.4}"))
        .collect();
    println!("{{\"layers\": {n}, {}}}", fields.join(", "));
}
