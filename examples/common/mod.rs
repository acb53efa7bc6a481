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
    pub show_digits: Option<usize>,
    pub plot_model: Option<String>,
    pub confusion: Option<String>,
    /// `mnist_distributed`: chunks per batch, a checkpoint to write every
    /// epoch, a model file to resume from, and the epoch it resumes at.
    pub chunks: Option<usize>,
    /// `mnist --dense`: pixels mapped to `2x - 1`, an input with no zeros.
    pub dense: bool,
    pub checkpoint: Option<String>,
    pub resume: Option<String>,
    pub initial_epoch: usize,
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
        show_digits: None,
        plot_model: None,
        confusion: None,
        chunks: None,
        dense: false,
        checkpoint: None,
        resume: None,
        initial_epoch: 0,
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
            "--show-digits" => {
                a.show_digits = Some(
                    val("--show-digits")?
                        .parse()
                        .map_err(|e| format!("--show-digits: {e}"))?,
                )
            }
            "--plot-model" => a.plot_model = Some(val("--plot-model")?),
            "--confusion" => a.confusion = Some(val("--confusion")?),
            "--verbose" => {
                a.verbose = val("--verbose")?
                    .parse()
                    .map_err(|e| format!("--verbose: {e}"))?
            }
            "--chunks" => {
                a.chunks = Some(
                    val("--chunks")?
                        .parse()
                        .map_err(|e| format!("--chunks: {e}"))?,
                )
            }
            "--checkpoint" => a.checkpoint = Some(val("--checkpoint")?),
            "--resume" => a.resume = Some(val("--resume")?),
            "--initial-epoch" => {
                a.initial_epoch = val("--initial-epoch")?
                    .parse()
                    .map_err(|e| format!("--initial-epoch: {e}"))?
            }
            "--dense" => a.dense = true,
            "--json" => a.json = true,
            "-h" | "--help" => {
                println!("usage: {name} [--epochs N] [--batch-size N] [--threads N] [--seed N] [--limit N] [--history-csv FILE] [--plot history.svg] [--verbose 0|1|2] [--json] [--show-digits N] [--plot-model model.svg] [--confusion confusion.png] [--dense] [--chunks N] [--checkpoint FILE] [--resume FILE] [--initial-epoch N]");
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
        if path.ends_with(".png") {
            history.write_png(path)?;
        } else {
            history.write_svg(path)?;
        }
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

/// The pictures the flags ask for: the first N test digits with true and
/// predicted labels (`digits.png`, and the first one in the terminal), the
/// model's diagram, the confusion matrix of the test set.
#[allow(dead_code)] // not every MNIST example draws
pub fn pictures<'a, D: ndarray::Dimension + ndarray::RemoveAxis>(
    model: &Sequential,
    args: &Args,
    x_test: ndarray::ArrayView<'a, f32, D>,
    labels: &[usize],
) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(path) = &args.plot_model {
        let d = model.plot_model()?;
        if path.ends_with(".dot") {
            d.write_dot(path)?;
        } else {
            d.write_svg(path)?;
        }
        println!("Model diagram written to {path}");
    }
    let wants_predictions = args.show_digits.is_some() || args.confusion.is_some();
    if !wants_predictions {
        return Ok(());
    }
    let predicted = model.predict_classes(x_test.view())?;
    if let Some(n) = args.show_digits {
        let n = n.clamp(1, labels.len());
        // (n, 28, 28) from flat rows or (n, 28, 28, 1) images alike.
        let images = x_test
            .slice_axis(ndarray::Axis(0), (0..n).into())
            .to_owned()
            .into_shape_with_order((n, 28, 28))?;
        let grid = horn::pictures::ImageGrid::new(images.view())
            .labels(&labels[..n])
            .predicted(&predicted[..n])
            .columns(8)
            .render()?;
        grid.save_png("digits.png")?;
        let first = horn::pictures::Image::from_array(images.index_axis(ndarray::Axis(0), 0))?;
        print!("{}", first.to_terminal());
        let wrong = (0..n).filter(|&i| predicted[i] != labels[i]).count();
        println!(
            "First test digit: label {}, predicted {}; {n} digits with their labels in digits.png ({wrong} wrong, in red)",
            labels[0], predicted[0]
        );
        // The first N digits the model got wrong, in mistakes.png.
        let missed: Vec<usize> = (0..labels.len())
            .filter(|&i| predicted[i] != labels[i])
            .take(n)
            .collect();
        if !missed.is_empty() {
            let images = x_test
                .select(ndarray::Axis(0), &missed)
                .into_shape_with_order((missed.len(), 28, 28))?;
            let truth: Vec<usize> = missed.iter().map(|&i| labels[i]).collect();
            let guess: Vec<usize> = missed.iter().map(|&i| predicted[i]).collect();
            horn::pictures::ImageGrid::new(images.view())
                .labels(&truth)
                .predicted(&guess)
                .columns(8)
                .render()?
                .save_png("mistakes.png")?;
            println!(
                "The first {} misclassified test digits in mistakes.png",
                missed.len()
            );
        }
    }
    if let Some(path) = &args.confusion {
        let cm = confusion_matrix(labels, &predicted, Some(10))?;
        cm.to_image()?.save_png(path)?;
        println!("{cm}");
        println!("Confusion matrix written to {path}");
    }
    Ok(())
}
