//! Regression: a penguin's body mass (g) from its bill, flipper, species and sex.
//!
//! mse loss, mae metric, target standardized for training; the error is reported
//! in grams against a predict-the-training-mean baseline.
//!
//! ```text
//! cargo run --release --example regression [-- --epochs 200 --seed 1]
//! ```

use horn::prelude::*;
use horn::preprocessing::{stratified_split, OneHotEncoder, StandardScaler};
use ndarray::{concatenate, Axis};

/// `(model MAE, baseline MAE)` on the test rows, in grams.
pub fn run(
    epochs: usize,
    seed: u64,
    verbose: u8,
) -> Result<(f32, f32), Box<dyn std::error::Error>> {
    let table = horn::datasets::penguins::load()?.drop_na();
    let species = table.categorical("species")?;
    let species_enc = OneHotEncoder::fit(&species);
    let (train, test) = stratified_split(&species_enc.indices(&species)?, 0.25, seed)?;

    let num = table.numeric_matrix(&["bill_length_mm", "bill_depth_mm", "flipper_length_mm"])?;
    let mass = table.numeric_matrix(&["body_mass_g"])?;
    let sex = OneHotEncoder::fit(&table.categorical("sex")?);
    let cat = concatenate(
        Axis(1),
        &[
            species_enc.transform(&species)?.view(),
            sex.transform(&table.categorical("sex")?)?.view(),
        ],
    )?;
    let x_scaler = StandardScaler::fit(num.select(Axis(0), &train).view())?;
    let y_scaler = StandardScaler::fit(mass.select(Axis(0), &train).view())?;
    let x_all = concatenate(
        Axis(1),
        &[x_scaler.transform(num.view())?.view(), cat.view()],
    )?;
    let y_all = y_scaler.transform(mass.view())?;
    let (x_train, x_test) = (x_all.select(Axis(0), &train), x_all.select(Axis(0), &test));
    let (y_train, grams_test) = (y_all.select(Axis(0), &train), mass.select(Axis(0), &test));

    let mut model = Sequential::new()
        .seed(seed)
        .input(x_train.ncols())
        .dense(16, Relu)
        .dense(16, Relu)
        .dense(1, Linear);
    model.compile(
        Adam {
            learning_rate: 0.01,
            ..Default::default()
        },
        MeanSquaredError,
        &[Metric::MeanAbsoluteError],
    )?;
    if verbose > 0 {
        println!("{}", model.summary());
    }
    let history = model.fit(
        &x_train,
        &y_train,
        FitOptions {
            epochs,
            batch_size: 16,
            validation_split: 0.2,
            seed: Some(seed),
            verbose,
            ..Default::default()
        },
    )?;
    let pred = y_scaler.inverse_transform(model.predict(&x_test)?.view())?;
    let mae = (&pred - &grams_test)
        .mapv(f32::abs)
        .mean()
        .unwrap_or(f32::NAN);
    let train_mean = mass.select(Axis(0), &train).mean().unwrap_or(0.0);
    let baseline = grams_test
        .mapv(|v| (v - train_mean).abs())
        .mean()
        .unwrap_or(f32::NAN);
    if verbose > 0 {
        println!("{history}");
        println!("Test MAE: {mae:.0} g (predicting the training mean: {baseline:.0} g)");
    }
    Ok((mae, baseline))
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut epochs = 200;
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
