//! Two inputs, two outputs: a functional model on the Palmer penguins.
//!
//! Input `measurements`: bill length, bill depth and flipper length,
//! standardized on the training rows. Input `site`: island and sex, one-hot.
//! Each input has its own Dense branch; the branches are concatenated and
//! shared by two heads: `species` (softmax over the three species,
//! categorical cross-entropy) and `body_mass` (linear, mean squared error on
//! the standardized mass), with loss weights 1 and 0.5.
//!
//! ```text
//! cargo run --release --example multi_io [-- --epochs 150 --seed 1 --plot-model model.svg]
//! ```

use horn::prelude::*;
use horn::preprocessing::{stratified_split, OneHotEncoder, Recipe, StandardScaler};
use ndarray::{Array2, Axis};

const MEASUREMENTS: [&str; 3] = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm"];

/// What one run reports on the test rows.
#[derive(Debug, Clone, Copy)]
pub struct Scores {
    /// Species accuracy.
    pub accuracy: f32,
    /// Mean absolute error of the body mass, in grams.
    pub mass_mae_g: f32,
}

/// Trains the model and scores it on the held-out rows.
pub fn run(epochs: usize, seed: u64, verbose: u8) -> Result<Scores, Box<dyn std::error::Error>> {
    run_with(epochs, seed, verbose, None)
}

/// [`run`], also writing the model's diagram (SVG, or DOT for a `.dot`
/// name) when `plot` is given.
pub fn run_with(
    epochs: usize,
    seed: u64,
    verbose: u8,
    plot: Option<&str>,
) -> Result<Scores, Box<dyn std::error::Error>> {
    let table = horn::datasets::penguins::load()?.drop_na();
    let species = table.categorical("species")?;
    let species_enc = OneHotEncoder::fit(&species);
    let labels = species_enc.indices(&species)?;
    let (train, test) = stratified_split(&labels, 0.25, seed)?;
    let (tr, te) = (table.select_rows(&train)?, table.select_rows(&test)?);

    // Inputs: each recipe learns from the training rows only.
    let numbers = Recipe::new().normalize(&MEASUREMENTS).prep(&tr)?;
    let site = Recipe::new().dummy(&["island", "sex"]).prep(&tr)?;
    let (xm_train, xm_test) = (numbers.bake(&tr)?.x, numbers.bake(&te)?.x);
    let site_train = site.bake(&tr)?;
    let (xs_train, xs_test) = (site_train.x, site.bake(&te)?.x);

    // Targets: one-hot species, and body mass standardized on the training rows.
    let y_species = species_enc.transform(&species)?;
    let (ys_train, ys_test) = (
        y_species.select(Axis(0), &train),
        y_species.select(Axis(0), &test),
    );
    let mass = |t: &horn::preprocessing::Table| -> horn::Result<Array2<f32>> {
        t.numeric_matrix(&["body_mass_g"])
    };
    let mass_scaler = StandardScaler::fit(mass(&tr)?.view())?;
    let ym_train = mass_scaler.transform(mass(&tr)?.view())?;
    let ym_test_g = mass(&te)?;
    let ym_test = mass_scaler.transform(ym_test_g.view())?;

    // The graph: two branches, merged, two heads.
    let mut g = Graph::with_seed(seed);
    let measurements = g.input("measurements", &[xm_train.ncols()]);
    let site_in = g.input("site", &[xs_train.ncols()]);
    let a = g.call(Dense::new(16, Relu), measurements);
    let b = g.call(Dense::new(8, Relu), site_in);
    let joined = g.call(Concatenate::new(), [a, b]);
    let shared = g.call(Dense::new(16, Relu), joined);
    let species_out = g.call_named("species", Dense::new(3, Softmax), shared);
    let mass_out = g.call_named("body_mass", Dense::new(1, Linear), shared);
    let mut model = Model::new(g, [measurements, site_in], [species_out, mass_out])?;
    model.compile(
        Adam::default(),
        ModelCompile::new()
            .output_loss("species", "categorical_crossentropy")
            .output_loss("body_mass", "mse")
            .loss_weights(&[1.0, 0.5])
            .metrics("species", &["accuracy"])
            .metrics("body_mass", &["mae"]),
    )?;
    if let Some(path) = plot {
        let d = model.plot_model();
        if path.ends_with(".dot") {
            d.write_dot(path)?;
        } else {
            d.write_svg(path)?;
        }
    }
    if verbose > 0 {
        println!("{}", model.summary());
        println!(
            "{} training rows, {} test rows; site columns: {}",
            train.len(),
            test.len(),
            site_train.columns.join(", ")
        );
    }
    let history = model.fit(
        [("measurements", &xm_train), ("site", &xs_train)],
        [("species", &ys_train), ("body_mass", &ym_train)],
        FitOptions {
            epochs,
            batch_size: 12,
            validation_split: 0.2,
            seed: Some(seed),
            verbose: if verbose > 0 { 2 } else { 0 },
            ..Default::default()
        },
    )?;
    let scores = model.evaluate([&xm_test, &xs_test], [&ys_test, &ym_test])?;
    // Mass back in grams for a number a reader can judge.
    let pred = model.predict([&xm_test, &xs_test])?;
    let mass_pred: Array2<f32> = pred[1].clone().into_dimensionality()?;
    let mass_g = mass_scaler.inverse_transform(mass_pred.view())?;
    let mae_g = (&mass_g - &ym_test_g)
        .mapv(f32::abs)
        .mean()
        .unwrap_or(f32::NAN);
    if verbose > 0 {
        let last = history.last();
        println!(
            "Last epoch: loss {:.4}, species_loss {:.4}, body_mass_loss {:.4}",
            last.get("loss").unwrap_or(f32::NAN),
            last.get("species_loss").unwrap_or(f32::NAN),
            last.get("body_mass_loss").unwrap_or(f32::NAN)
        );
        println!(
            "Test: loss {:.4} - species_accuracy {:.4} - body_mass_mae {:.4} (standardized) = {:.0} g",
            scores["loss"], scores["species_accuracy"], scores["body_mass_mae"], mae_g
        );
    }
    Ok(Scores {
        accuracy: scores["species_accuracy"],
        mass_mae_g: mae_g,
    })
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut epochs = 150;
    let mut seed = 1;
    let mut plot = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--epochs" => epochs = args.next().ok_or("--epochs needs a value")?.parse()?,
            "--seed" => seed = args.next().ok_or("--seed needs a value")?.parse()?,
            "--plot-model" => plot = Some(args.next().ok_or("--plot-model needs a file")?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    run_with(epochs, seed, 1, plot.as_deref())?;
    Ok(())
}
