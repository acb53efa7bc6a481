//! horn's twin of the recurrent reference workload
//! (`../shared/bench/torch_lstm.py`): 20,000 sequences of 50 steps x 8
//! features drawn from a standard normal, target the time-mean of
//! `feature0 * feature1`; `LSTM(64)` (or `GRU(64)`) -> `Dense(1)`, mean
//! squared error, Adam (lr 1e-3, epsilon 1e-7), batch 64, the last 25% for
//! validation after each epoch; then `predict` on all 20,000 sequences in
//! batches of 256.
//!
//! ```text
//! cargo run --release --example sequence_bench -- --rnn lstm --epochs 3 --threads 2 --json
//! ```
//!
//! The data follow the reference's rule with horn's own seeded generator
//! (numpy's stream cannot be reproduced bit for bit), so the timings are
//! comparable and the losses of the same order. `scripts/compare_rnn.sh` runs
//! both side by side.

use std::time::Instant;

use horn::prelude::*;
use ndarray::{s, Array2, Array3, Axis};
use ndarray_rand::rand_distr::StandardNormal;
use ndarray_rand::RandomExt;
use rand::SeedableRng;

// Only the epoch timer and the peak-RSS reader of the MNIST examples' helpers.
#[allow(dead_code)]
mod common;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rnn = "lstm".to_string();
    let mut epochs = 3usize;
    let mut json = false;
    let mut threads = std::env::var("ANCHOR_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok());
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rnn" => rnn = it.next().ok_or("--rnn needs lstm or gru")?,
            "--epochs" => epochs = it.next().ok_or("--epochs needs a value")?.parse()?,
            "--threads" => threads = Some(it.next().ok_or("--threads needs a value")?.parse()?),
            "--json" => json = true,
            other => return Err(format!("unknown argument {other}; usage: sequence_bench [--rnn lstm|gru] [--epochs N] [--threads N] [--json]").into()),
        }
    }
    if let Some(t) = threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()?;
    }

    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let x: Array3<f32> = Array3::random_using((20_000, 50, 8), StandardNormal, &mut rng);
    let y: Array2<f32> = (&x.slice(s![.., .., 0]) * &x.slice(s![.., .., 1]))
        .mean_axis(Axis(1))
        .ok_or("no steps")?
        .insert_axis(Axis(1));

    let recurrent: Box<dyn Layer> = match rnn.as_str() {
        "lstm" => Box::new(LSTM::new(64)),
        "gru" => Box::new(GRU::new(64)),
        other => return Err(format!("--rnn {other}: expected lstm or gru").into()),
    };
    let mut model = Sequential::new()
        .seed(1)
        .input_shape(&[50, 8])
        .add_boxed(recurrent)
        .dense(1, Linear);
    model.compile(
        Adam {
            learning_rate: 1e-3,
            epsilon: 1e-7,
            ..Default::default()
        },
        "mse",
        Metric::NONE,
    )?;
    if !json {
        println!("{}", model.summary());
    }
    let mut timer = common::EpochTimer::default();
    let history = model.fit_with_callbacks(
        &x,
        &y,
        FitOptions {
            epochs,
            batch_size: 64,
            validation_split: 0.25,
            seed: Some(1),
            verbose: if json { 0 } else { 1 },
            ..Default::default()
        },
        &mut [&mut timer],
    )?;
    let t = Instant::now();
    for start in (0..x.len_of(Axis(0))).step_by(256) {
        let end = (start + 256).min(x.len_of(Axis(0)));
        model.predict(x.slice(s![start..end, .., ..]))?;
    }
    let predict_s = t.elapsed().as_secs_f64();
    let val_loss = history
        .get("val_loss")
        .and_then(|v| v.last().copied())
        .unwrap_or(f32::NAN);
    let mut later: Vec<f64> = timer.times.iter().skip(1).copied().collect();
    later.sort_by(f64::total_cmp);
    let median = later
        .get(later.len() / 2)
        .or(timer.times.first())
        .copied()
        .unwrap_or(0.0);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "system": format!("horn {rnn}"),
                "epoch_s": timer.times,
                "epoch_median_2_10": median,
                "val_loss_last": val_loss,
                "predict_b256_s": predict_s,
                "peak_rss_mib": common::peak_rss_mib(),
            })
        );
    } else {
        println!("{history}");
        println!("val_loss {val_loss:.5}; {median:.2} s per epoch; predict 20,000 in batches of 256: {predict_s:.2} s");
    }
    Ok(())
}
