//! Palmer penguins: species from four measurements plus island and sex.
//!
//! The tidymodels-style recipe: drop rows with `NA`, stratified 75/25 split,
//! standardize the numeric columns on the training rows only, one-hot the
//! categorical ones; then Dense(12, relu) -> Dropout(0.1) -> Dense(12, relu) ->
//! Dropout(0.1) -> Dense(3, softmax) with adam.
//!
//! ```text
//! cargo run --release --example penguins [-- --epochs 100 --seed 1]
//! ```

use horn::prelude::*;
use horn::preprocessing::{stratified_split, OneHotEncoder, Recipe};
use ndarray::Axis;

pub const NUMERIC: [&str; 4] = [
    "bill_length_mm",
    "bill_depth_mm",
    "flipper_length_mm",
    "body_mass_g",
];

/// Test accuracy of one run.
pub fn run(epochs: usize, seed: u64, verbose: u8) -> Result<f32, Box<dyn std::error::Error>> {
    let table = horn::datasets::penguins::load()?.drop_na();
    let species = table.categorical("species")?;
    let species_enc = OneHotEncoder::fit(&species);
    let labels = species_enc.indices(&species)?;
    let (train, test) = stratified_split(&labels, 0.25, seed)?;

    // The recipe learns means, standard deviations and categories from the
    // training rows only, then bakes any rows into the model matrix.
    let recipe = Recipe::new()
        .normalize(&NUMERIC)
        .dummy(&["island", "sex"])
        .prep(&table.select_rows(&train)?)?;
    let baked = recipe.bake(&table.select_rows(&train)?)?;
    let x_train = baked.x;
    let x_test = recipe.bake(&table.select_rows(&test)?)?.x;
    let y_all = species_enc.transform(&species)?;
    let (y_train, y_test) = (y_all.select(Axis(0), &train), y_all.select(Axis(0), &test));

    let mut model = Sequential::new()
        .seed(seed)
        .input(x_train.ncols())
        .dense(12, Relu)
        .dropout(0.1)
        .dense(12, Relu)
        .dropout(0.1)
        .dense(3, Softmax);
    model.compile(
        Adam::default(),
        CategoricalCrossentropy::default(),
        &[Metric::Accuracy],
    )?;
    if verbose > 0 {
        println!("{}", model.summary());
        println!(
            "{} training rows, {} test rows, {} features: {}",
            x_train.nrows(),
            x_test.nrows(),
            x_train.ncols(),
            baked.columns.join(", ")
        );
    }
    let history = model.fit(
        &x_train,
        &y_train,
        FitOptions {
            epochs,
            batch_size: 12,
            validation_split: 0.2,
            seed: Some(seed),
            verbose,
            ..Default::default()
        },
    )?;
    let scores = model.evaluate(&x_test, &y_test)?;
    if verbose > 0 {
        println!("{history}");
        println!(
            "Test loss: {:.4} - test accuracy: {:.4}",
            scores["loss"], scores["accuracy"]
        );
        let pred = species_enc.inverse_transform(model.predict(&x_test)?.view())?;
        println!("First test predictions: {:?}", &pred[..5.min(pred.len())]);
    }
    Ok(scores["accuracy"])
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut epochs = 100;
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
