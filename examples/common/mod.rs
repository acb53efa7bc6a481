//! What the MNIST examples share: their command-line flags, the epoch timer
//! and the JSON line that `../shared/bench/compare.sh` reads.

use std::time::Instant;

use horn::callbacks::{Callback, CallbackContext};
use horn::prelude::*;

pub struct Args {
    pub epochs: usize,
    pub batch_size: usize,
    pub threads: Option<usize>,
    pub seed: u64,
    pub json: bool,
    pub limit: Option<usize>,
    pub history_csv: Option<String>,
    pub plot: Option<String>,
    pub verbose: u8,
}

/// Parses the flags; `name` and `default_epochs` differ per example.
pub fn parse_args(name: &str, default_epochs: usize) -> Result<Args, String> {
    let mut a = Args {
        epochs: default_epochs,
        batch_size: 128,
        threads: std::env::var("ANCHOR_THREADS")
            .ok()
            .and_then(|v| v.parse().ok()),
        seed: 1,
        json: false,
        limit: None,
        history_csv: None,
        plot: None,
        verbose: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--epochs" => {
                a.epochs = val("--epochs")?
                    .parse()
                    .map_err(|e| format!("--epochs: {e}"))?
            }
            "--batch-size" => {
                a.batch_size = val("--batch-size")?
                    .parse()
                    .map_err(|e| format!("--batch-size: {e}"))?
            }
            "--threads" => {
                a.threads = Some(
                    val("--threads")?
                        .parse()
                        .map_err(|e| format!("--threads: {e}"))?,
                )
            }
            "--seed" => a.seed = val("--seed")?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--limit" => {
                a.limit = Some(
                    val("--limit")?
                        .parse()
                        .map_err(|e| format!("--limit: {e}"))?,
                )
            }
            "--history-csv" => a.history_csv = Some(val("--history-csv")?),
            "--plot" => a.plot = Some(val("--plot")?),
            "--verbose" => {
                a.verbose = val("--verbose")?
                    .parse()
                    .map_err(|e| format!("--verbose: {e}"))?
            }
            "--json" => a.json = true,
            "-h" | "--help" => {
                println!("usage: {name} [--epochs N] [--batch-size N] [--threads N] [--seed N] [--limit N] [--history-csv FILE] [--plot history.svg] [--verbose 0|1|2] [--json]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if let Some(t) = a.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .map_err(|e| e.to_string())?;
    }
    Ok(a)
}

/// Records each epoch's wall time (validation included), as the reference scripts do.
#[derive(Default)]
pub struct EpochTimer {
    start: Option<Instant>,
    pub times: Vec<f64>,
}

impl Callback for EpochTimer {
    fn on_epoch_begin(
        &mut self,
        _epoch: usize,
        _ctx: &mut CallbackContext<'_>,
    ) -> horn::Result<()> {
        self.start = Some(Instant::now());
        Ok(())
    }
    fn on_epoch_end(
        &mut self,
        _e: usize,
        _logs: &mut Logs,
        _ctx: &mut CallbackContext<'_>,
    ) -> horn::Result<()> {
        if let Some(s) = self.start {
            self.times.push(s.elapsed().as_secs_f64());
        }
        Ok(())
    }
}

pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Evaluates on the test set, times `predict` at batch 32 and on the whole
/// set, writes the History files the flags ask for, and prints either the
/// History and test scores or the JSON line of the reference scripts.
pub fn report<'a, D: ndarray::Dimension + ndarray::RemoveAxis>(
    model: &Sequential,
    history: &History,
    args: &Args,
    timer: &EpochTimer,
    fit_s: f64,
    x_test: ndarray::ArrayView<'a, f32, D>,
    y_test: &ndarray::Array2<f32>,
) -> Result<(), Box<dyn std::error::Error>> {
    let t = Instant::now();
    let scores = model.evaluate(x_test.view(), y_test)?;
    let evaluate_s = t.elapsed().as_secs_f64();

    // Predict timings: batch 32 (Keras' default) and the whole test set at once.
    let n = y_test.nrows();
    let t = Instant::now();
    for start in (0..n).step_by(32) {
        let end = (start + 32).min(n);
        model.predict(x_test.slice_axis(ndarray::Axis(0), (start..end).into()))?;
    }
    let predict_b32_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    model.predict(x_test.view())?;
    let predict_b10000_s = t.elapsed().as_secs_f64();

    if let Some(path) = &args.history_csv {
        std::fs::write(path, history.to_csv())?;
    }
    if let Some(path) = &args.plot {
        history.write_svg(path)?;
    }

    if args.json {
        let mut later: Vec<f64> = timer.times.iter().skip(1).copied().collect();
        later.sort_by(|a, b| a.total_cmp(b));
        let median = if later.is_empty() {
            timer.times.first().copied().unwrap_or(0.0)
        } else {
            later[later.len() / 2]
        };
        println!(
            "{}",
            serde_json::json!({
                "system": "horn",
                "epoch_s": timer.times,
                "epoch_median_2_10": median,
                "fit_s": fit_s,
                "test_loss": scores["loss"],
                "test_acc": scores["accuracy"],
                "evaluate_s": evaluate_s,
                "predict_b32_s": predict_b32_s,
                "predict_b10000_s": predict_b10000_s,
                "peak_rss_mib": peak_rss_mib(),
            })
        );
    } else {
        println!("{history}");
        println!(
            "Test loss: {:.4} - test accuracy: {:.4}",
            scores["loss"], scores["accuracy"]
        );
        println!(
            "Fit took {fit_s:.1} s ({:.2} s per epoch)",
            fit_s / args.epochs.max(1) as f64
        );
    }
    Ok(())
}
