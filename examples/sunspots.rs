//! Forecasting a real time series: next month's sunspot number from the last
//! 24 months, with an `LSTM` and a `GRU`, against the naive forecast "next
//! month equals this month".
//!
//! Data: `data/sunspots_monthly.csv`, the monthly mean sunspot numbers of
//! January 1749 to June 2009 (NOAA National Geophysical Data Center, public
//! domain; as shipped by statsmodels 0.15.0, `datasets/sunspots/src`).
//!
//! The series is scaled by the training part's standard deviation and cut
//! into windows of 24 months; the first 80% of the windows (in time order)
//! train, the last 20% (1957 onwards) test. Errors are mean absolute errors
//! in sunspot numbers on the test windows.
//!
//! ```text
//! cargo run --release --example sunspots [-- --epochs 40 --seed 1]
//! ```

use horn::prelude::*;
use horn::preprocessing::Table;
use ndarray::{s, Array2, Array3};

/// Months of history per forecast.
const WINDOW: usize = 24;

/// The monthly series, in time order.
pub fn series() -> Result<Vec<f32>, Box<dyn std::error::Error>> {
    let table = Table::read_csv(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/sunspots_monthly.csv"
    ))?;
    Ok(table
        .numeric("sunspots")?
        .into_iter()
        .map(|v| v as f32)
        .collect())
}

/// Test MAEs `(lstm, gru, last value)`, in sunspot numbers.
pub fn run(epochs: usize, seed: u64, verbose: u8) -> Result<[f32; 3], Box<dyn std::error::Error>> {
    let s = series()?;
    let n = s.len() - WINDOW;
    let n_train = n * 4 / 5;
    // Scale by the training months' spread (no test month leaks into it).
    let train_months = &s[..n_train + WINDOW];
    let mean = train_months.iter().sum::<f32>() / train_months.len() as f32;
    let sd = (train_months
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum::<f32>()
        / train_months.len() as f32)
        .sqrt();
    let x = Array3::from_shape_fn((n, WINDOW, 1), |(i, t, _)| s[i + t] / sd);
    let y = Array2::from_shape_fn((n, 1), |(i, _)| s[i + WINDOW] / sd);
    let (x_train, y_train) = (x.slice(s![..n_train, .., ..]), y.slice(s![..n_train, ..]));
    let (x_test, y_test) = (x.slice(s![n_train.., .., ..]), y.slice(s![n_train.., ..]));

    let mae = |pred: &Array2<f32>| {
        pred.iter()
            .zip(y_test.iter())
            .map(|(p, t)| (p - t).abs() * sd)
            .sum::<f32>()
            / y_test.len() as f32
    };
    let mut errors = [0.0f32; 3];
    for (k, name) in ["LSTM", "GRU"].into_iter().enumerate() {
        let recurrent: Box<dyn Layer> = if k == 0 {
            Box::new(LSTM::new(32))
        } else {
            Box::new(GRU::new(32))
        };
        let mut model = Sequential::new()
            .seed(seed)
            .input_shape(&[WINDOW, 1])
            .add_boxed(recurrent)
            .dense(1, Linear);
        model.compile(Adam::default(), "mse", &["mae"])?;
        if verbose > 0 && k == 0 {
            println!("{}", model.summary());
        }
        let history = model.fit(
            x_train,
            y_train,
            FitOptions {
                epochs,
                batch_size: 32,
                validation_split: 0.1,
                seed: Some(seed),
                verbose: 0,
                ..Default::default()
            },
        )?;
        errors[k] = mae(&model.predict(x_test)?);
        if verbose > 0 {
            let val = history.get("val_mae").and_then(|v| v.last()).copied();
            println!(
                "{name}: {epochs} epochs, last val_mae {:.3} (scaled); test MAE {:.2}",
                val.unwrap_or(f32::NAN),
                errors[k]
            );
        }
    }
    // The naive forecast: next month = the window's last month.
    let last = x_test.slice(s![.., WINDOW - 1, ..]).to_owned();
    errors[2] = mae(&last);
    if verbose > 0 {
        println!(
            "Test MAE over {} months (sunspot number): LSTM {:.2}, GRU {:.2}, last value {:.2}",
            y_test.len(),
            errors[0],
            errors[1],
            errors[2]
        );
    }
    Ok(errors)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut epochs = 40;
    let mut seed = 1;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--epochs" => epochs = args.next().ok_or("--epochs needs a value")?.parse()?,
            "--seed" => seed = args.next().ok_or("--seed needs a value")?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    run(epochs, seed, 1)?;
    Ok(())
}
