//! The reference workload: MNIST, 784 -> Dense(512, relu) -> Dense(10, softmax),
//! rmsprop, categorical cross-entropy, 10 epochs, batch 128, validation_split 0.25.
//!
//! ```text
//! cargo run --release --example mnist
//! cargo run --release --example mnist -- --epochs 3 --batch-size 128 --threads 2 --seed 1 --json
//! ```
//! `--limit N` trains on the first N training rows (quick runs), `--history-csv F`
//! writes the History, `--plot history.svg` plots it (R's `plot(history)`), `--json` ends with one line of timings in the format of the
//! reference scripts in `../shared/bench/` (for `compare.sh`).

use std::time::Instant;

use horn::callbacks::{Callback, CallbackContext};
use horn::datasets::mnist;
use horn::prelude::*;
use horn::preprocessing::to_categorical;

struct Args {
    epochs: usize,
    batch_size: usize,
    threads: Option<usize>,
    seed: u64,
    json: bool,
    limit: Option<usize>,
    history_csv: Option<String>,
    plot: Option<String>,
    verbose: u8,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        epochs: 10,
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
                println!("usage: mnist [--epochs N] [--batch-size N] [--threads N] [--seed N] [--limit N] [--history-csv FILE] [--plot history.svg] [--verbose 0|1|2] [--json]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

/// Records each epoch's wall time (validation included), as the reference scripts do.
struct EpochTimer {
    start: Option<Instant>,
    times: Vec<f64>,
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

fn peak_rss_mib() -> f64 {
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    if let Some(t) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()?;
    }

    // dataset_mnist(), array_reshape(x, c(n, 784)) / 255, to_categorical(y, 10)
    let data = mnist::load_default()?;
    let mut x_train = data.train.flat_scaled();
    let mut y_train = to_categorical(&data.train.labels(), Some(10))?;
    if let Some(n) = args.limit {
        let n = n.min(x_train.nrows());
        x_train = x_train.slice(ndarray::s![..n, ..]).to_owned();
        y_train = y_train.slice(ndarray::s![..n, ..]).to_owned();
    }
    let x_test = data.test.flat_scaled();
    let y_test = to_categorical(&data.test.labels(), Some(10))?;
    drop(data);

    let mut model = Sequential::new()
        .seed(args.seed)
        .input(784)
        .dense(512, Relu)
        .dense(10, Softmax);
    model.compile(
        RmsProp::default(),
        CategoricalCrossentropy::default(),
        &[Metric::Accuracy],
    )?;
    if !args.json {
        println!("{}", model.summary());
    }

    let mut timer = EpochTimer {
        start: None,
        times: Vec::new(),
    };
    let fit_start = Instant::now();
    let history = model.fit_with_callbacks(
        &x_train,
        &y_train,
        FitOptions {
            epochs: args.epochs,
            batch_size: args.batch_size,
            validation_split: 0.25,
            seed: Some(args.seed),
            verbose: if args.json { 0 } else { args.verbose },
            ..Default::default()
        },
        &mut [&mut timer],
    )?;
    let fit_s = fit_start.elapsed().as_secs_f64();

    let t = Instant::now();
    let scores = model.evaluate(&x_test, &y_test)?;
    let evaluate_s = t.elapsed().as_secs_f64();

    // Predict timings: batch 32 (Keras' default, one row at a time in blocks of 32)
    // and the whole test set at once.
    let t = Instant::now();
    for start in (0..x_test.nrows()).step_by(32) {
        let end = (start + 32).min(x_test.nrows());
        model.predict(x_test.slice(ndarray::s![start..end, ..]))?;
    }
    let predict_b32_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    model.predict(&x_test)?;
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
