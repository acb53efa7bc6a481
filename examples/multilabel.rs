//! Multi-label classification: three independent yes/no properties of an MNIST
//! digit, "even", "greater than 4" and "has a closed loop" (0, 6, 8, 9), from its
//! pixels. Sigmoid outputs, binary cross-entropy, binary accuracy per label.
//!
//! Note Keras' rule: with several sigmoid outputs, `"accuracy"` resolves to
//! *categorical* accuracy; ask for `binary_accuracy` explicitly, as here.
//!
//! ```text
//! cargo run --release --example multilabel [-- --epochs 5 --train-rows 60000]
//! ```

use horn::datasets::mnist;
use horn::prelude::*;
use ndarray::{s, Array2};

pub const LABELS: [&str; 3] = ["even", "greater_than_4", "closed_loop"];

fn targets(digits: &[usize]) -> Array2<f32> {
    Array2::from_shape_fn((digits.len(), 3), |(i, j)| {
        let d = digits[i];
        let yes = match j {
            0 => d % 2 == 0,
            1 => d > 4,
            _ => matches!(d, 0 | 6 | 8 | 9),
        };
        yes as u8 as f32
    })
}

/// Per-label test accuracy.
pub fn run(
    epochs: usize,
    train_rows: usize,
    verbose: u8,
) -> Result<Vec<f32>, Box<dyn std::error::Error>> {
    let data = mnist::load_default()?;
    let n = train_rows.min(data.train.len());
    let x_train = data.train.flat_scaled().slice(s![..n, ..]).to_owned();
    let y_train = targets(&data.train.labels()[..n]);
    let x_test = data.test.flat_scaled();
    let y_test = targets(&data.test.labels());

    let mut model = Sequential::new()
        .seed(1)
        .input(784)
        .dense(128, Relu)
        .dense(3, Sigmoid);
    model.compile(
        RmsProp::default(),
        BinaryCrossentropy::default(),
        &[Metric::BinaryAccuracy { threshold: 0.5 }],
    )?;
    if verbose > 0 {
        println!("{}", model.summary());
    }
    let history = model.fit(
        &x_train,
        &y_train,
        FitOptions {
            epochs,
            batch_size: 128,
            validation_split: 0.2,
            seed: Some(1),
            verbose,
            ..Default::default()
        },
    )?;
    let pred = model.predict(&x_test)?;
    let per_label: Vec<f32> = (0..3)
        .map(|j| {
            let hits = (0..pred.nrows())
                .filter(|&i| ((pred[[i, j]] > 0.5) as u8 as f32) == y_test[[i, j]])
                .count();
            hits as f32 / pred.nrows() as f32
        })
        .collect();
    if verbose > 0 {
        println!("{history}");
        println!("Test scores: {}", model.evaluate(&x_test, &y_test)?);
        for (name, acc) in LABELS.iter().zip(&per_label) {
            println!("  {name:>15}: {acc:.4}");
        }
    }
    Ok(per_label)
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut epochs = 5;
    let mut rows = 60000;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--epochs" => epochs = args.next().ok_or("--epochs needs a value")?.parse()?,
            "--train-rows" => rows = args.next().ok_or("--train-rows needs a value")?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    run(epochs, rows, 1)?;
    Ok(())
}
