//! Text classification with an `Embedding` and a recurrent layer: is a word
//! English or Dutch? Each word is a sequence of letter ids (a = 1 ... z = 26,
//! padded in front with 0 to 12 steps, as Keras' `pad_sequences` does), read
//! by `Embedding(27, 16)` and a bidirectional `GRU(32)`.
//!
//! Data: `data/words_en_nl.csv`, 4,000 English and 4,000 Dutch words of 4 to
//! 12 letters that appear in only one of the two lists, sampled across the
//! alphabet from Debian's word lists: `wamerican` (SCOWL, Kevin Atkinson,
//! permissive licence) and `wdutch` (OpenTaal, BSD or CC BY 3.0); notices in
//! `data/`, the rule in `scripts/make_words_dataset.py`. A real corpus a
//! package ships, small enough for the repository and with a clear answer
//! per word, which is why this example uses it instead of a review corpus
//! that would have to be downloaded.
//!
//! ```text
//! cargo run --release --example word_language [-- --epochs 40 --seed 1]
//! ```

use horn::prelude::*;
use horn::preprocessing::{stratified_split, Table};
use ndarray::{Array2, Axis};

/// Letters per word (longer words keep their last 12).
const STEPS: usize = 12;

/// Letter ids of a word (case ignored, other characters dropped), padded
/// in front: `(1, STEPS)`.
pub fn encode(word: &str) -> Array2<i32> {
    let ids: Vec<i32> = word
        .to_ascii_lowercase()
        .bytes()
        .filter(u8::is_ascii_lowercase)
        .map(|b| (b - b'a' + 1) as i32)
        .collect();
    let ids = &ids[ids.len().saturating_sub(STEPS)..];
    let mut row = Array2::<i32>::zeros((1, STEPS));
    for (o, &v) in row.iter_mut().skip(STEPS - ids.len()).zip(ids) {
        *o = v;
    }
    row
}

/// Test accuracy, and the model.
pub fn run(
    epochs: usize,
    seed: u64,
    verbose: u8,
) -> Result<(f32, Sequential), Box<dyn std::error::Error>> {
    let table = Table::read_csv(concat!(env!("CARGO_MANIFEST_DIR"), "/data/words_en_nl.csv"))?;
    let words = table.categorical("word")?;
    let dutch: Vec<usize> = table
        .categorical("language")?
        .iter()
        .map(|l| usize::from(l == "nl"))
        .collect();
    let mut x = Array2::<i32>::zeros((words.len(), STEPS));
    for (mut row, w) in x.outer_iter_mut().zip(&words) {
        row.assign(&encode(w).row(0));
    }
    let y = Array2::from_shape_fn((words.len(), 1), |(i, _)| dutch[i] as f32);
    let (train, test) = stratified_split(&dutch, 0.2, seed)?;
    let (x_train, y_train) = (x.select(Axis(0), &train), y.select(Axis(0), &train));
    let (x_test, y_test) = (x.select(Axis(0), &test), y.select(Axis(0), &test));

    let mut model = Sequential::new()
        .seed(seed)
        .input_shape(&[STEPS])
        .embedding(27, 16)
        .add(Bidirectional::new(GRU::new(32)))
        .dense(1, Sigmoid);
    model.compile(Adam::default(), "binary_crossentropy", &["accuracy"])?;
    if verbose > 0 {
        println!("{}", model.summary());
    }
    let history = model.fit(
        &x_train,
        &y_train,
        FitOptions {
            epochs,
            batch_size: 64,
            validation_split: 0.1,
            seed: Some(seed),
            verbose,
            ..Default::default()
        },
    )?;
    let scores = model.evaluate(&x_test, &y_test)?;
    if verbose > 0 {
        println!("{history}");
        println!(
            "Test accuracy on {} held-out words: {:.4} (loss {:.4})",
            test.len(),
            scores["accuracy"],
            scores["loss"]
        );
    }
    Ok((scores["accuracy"], model))
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
    let (_, model) = run(epochs, seed, 1)?;
    // Words in neither list.
    for w in [
        "keyboard",
        "toetsenbord",
        "weather",
        "weerbericht",
        "horn",
        "hoorn",
    ] {
        let p = model.predict(encode(w))?[[0, 0]];
        println!(
            "{w:>12}: {} ({:.0}% Dutch)",
            if p > 0.5 { "Dutch" } else { "English" },
            100.0 * p
        );
    }
    Ok(())
}
