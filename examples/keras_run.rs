//! Runs a Keras 3 `.keras` file in Rust: loads it (no Python), prints its
//! `summary()`, and predicts on inputs from `.npy` or `.csv` files.
//!
//! ```text
//! cargo run --release --example keras_run -- MODEL.keras INPUT.npy|csv [INPUT2 ...] [--out predictions.csv]
//! cargo run --release --example keras_run -- tests/fixtures/keras-mnist-cnn/model.keras data/mnist-sample.npy
//! ```
//!
//! A model with several inputs takes one file per input, in the order of
//! its inputs. A `.csv` file holds one sample per line (a header line of
//! names is skipped), flattened to the input's size; a `.npy` file holds
//! the samples in their own shape (`(n, 28, 28, 1)`) or flattened.

use std::error::Error;
use std::path::Path;
use std::process::ExitCode;

use horn::datasets::npy;
use horn::saving::load_keras;
use ndarray::{ArrayD, Axis, IxDyn};

/// Rows of numbers from a CSV file (a first line that is not all numbers is
/// a header).
fn read_csv(path: &Path) -> Result<ArrayD<f32>, Box<dyn Error>> {
    let text = std::fs::read_to_string(path)?;
    let mut rows: Vec<Vec<f32>> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Result<Vec<f32>, _> =
            line.split(',').map(|v| v.trim().parse::<f32>()).collect();
        match parsed {
            Ok(r) => rows.push(r),
            Err(_) if i == 0 => continue,
            Err(e) => return Err(format!("{}: line {}: {e}", path.display(), i + 1).into()),
        }
    }
    let width = rows.first().map_or(0, Vec::len);
    if rows.is_empty() || rows.iter().any(|r| r.len() != width) {
        return Err(format!("{}: expected rows of equal length", path.display()).into());
    }
    let n = rows.len();
    Ok(ArrayD::from_shape_vec(IxDyn(&[n, width]), rows.concat())?)
}

fn read_input(path: &str) -> Result<ArrayD<f32>, Box<dyn Error>> {
    let p = Path::new(path);
    match p.extension().and_then(|e| e.to_str()) {
        Some("npy") => Ok(npy::read(p)?),
        Some("csv") => read_csv(p),
        _ => Err(format!("{path}: give a .npy or .csv file").into()),
    }
}

/// An error as the line the example prints: its `Display` form (horn's
/// errors say what was wrong and what was expected), never the `Debug`
/// dump `fn main() -> Result` would print.
pub fn error_line(e: &dyn Error) -> String {
    format!("error: {e}")
}

fn main() -> ExitCode {
    match run(std::env::args().skip(1)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", error_line(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// The example with its arguments (without the program's name).
pub fn run(args: impl IntoIterator<Item = String>) -> Result<(), Box<dyn Error>> {
    let mut args = args.into_iter();
    let model_path = args
        .next()
        .ok_or("usage: keras_run MODEL.keras INPUT.npy|csv [INPUT2 ...] [--out predictions.csv]")?;
    let mut inputs = Vec::new();
    let mut out = None;
    while let Some(a) = args.next() {
        if a == "--out" {
            out = Some(args.next().ok_or("--out needs a file")?);
        } else {
            inputs.push(a);
        }
    }
    let loaded = load_keras(&model_path)?;
    println!("{}", loaded.summary());
    if inputs.is_empty() {
        return Ok(());
    }
    let model = loaded.into_model();
    let mut xs = Vec::new();
    for (path, shape) in inputs.iter().zip(model.input_shapes()) {
        let x = read_input(path)?;
        // Flat rows are reshaped to the input's shape.
        let n = x.shape()[0];
        let mut full = vec![n];
        full.extend_from_slice(shape.dims());
        let x = if x.shape()[1..] == full[1..] {
            x
        } else {
            x.into_shape_with_order(IxDyn(&full))
                .map_err(|_| format!("{path}: samples do not have the input's size {shape}"))?
        };
        println!("{path}: {n} samples of shape {shape}");
        xs.push(x);
    }
    let refs: Vec<&ArrayD<f32>> = xs.iter().collect();
    let predictions = model.predict(refs)?;
    for (name, p) in model.output_names().iter().zip(&predictions) {
        let rows = p.shape()[0];
        let flat = p
            .view()
            .into_shape_with_order((rows, p.len() / rows.max(1)))?;
        println!("output `{name}`: {:?}", p.shape());
        for (i, row) in flat.axis_iter(Axis(0)).take(5).enumerate() {
            let values: Vec<String> = row.iter().take(10).map(|v| format!("{v:.4}")).collect();
            let class = if row.len() > 1 {
                let best = row
                    .iter()
                    .enumerate()
                    .fold(0, |b, (j, &v)| if v > row[b] { j } else { b });
                format!("  -> class {best}")
            } else {
                String::new()
            };
            println!(
                "  [{i}] {}{}{class}",
                values.join(" "),
                if row.len() > 10 { " ..." } else { "" }
            );
        }
        if rows > 5 {
            println!("  ... {} more rows", rows - 5);
        }
    }
    if let Some(path) = out {
        let mut text = String::new();
        for p in &predictions {
            let rows = p.shape()[0];
            let flat = p
                .view()
                .into_shape_with_order((rows, p.len() / rows.max(1)))?;
            for row in flat.axis_iter(Axis(0)) {
                let line: Vec<String> = row.iter().map(|v| v.to_string()).collect();
                text.push_str(&line.join(","));
                text.push('\n');
            }
        }
        std::fs::write(&path, text)?;
        println!("predictions written to {path}");
    }
    Ok(())
}
