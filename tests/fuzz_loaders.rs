//! Bounded mutation fuzzing of every loader on stable Rust, so CI exercises
//! them on each run (the coverage-guided twins live in `fuzz/`, for
//! `cargo +nightly fuzz run <target>`).
//!
//! Each loader gets valid seed inputs, then `HORN_FUZZ_ITERS` (default 20,000)
//! mutants of them from a fixed-seed generator: bit flips, interesting bytes,
//! truncations, deletions, duplications, and, for the JSON inside model files,
//! numbers replaced by extreme ones. A mutant may load or fail, but it may not
//! panic, abort or hang; every result that loads is used (a prediction), so a
//! half-checked model would show here too.

mod common;

use horn::datasets::mnist;
use horn::prelude::*;
use horn::preprocessing::Table;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::io::Write;

fn iterations() -> usize {
    std::env::var("HORN_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

const INTERESTING: &[u8] = &[0, 1, 0x7f, 0x80, 0xff, b'9', b'-', b'{', b'"', b'e', b'.'];
const NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1e39",
    "-1e39",
    "18446744073709551615",
    "9223372036854775807",
    "4294967296",
    "1000000000000",
    "0.5",
    "3",
    "null",
    "\"x\"",
];

/// One to four random edits of `input`.
fn mutate(input: &[u8], rng: &mut StdRng) -> Vec<u8> {
    let mut b = input.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        if b.is_empty() {
            b.push(rng.random());
            continue;
        }
        let i = rng.random_range(0..b.len());
        match rng.random_range(0..6) {
            0 => b[i] ^= 1 << rng.random_range(0..8),
            1 => b[i] = INTERESTING[rng.random_range(0..INTERESTING.len())],
            2 => b.truncate(i),
            3 => {
                let end = (i + rng.random_range(1..64)).min(b.len());
                b.drain(i..end);
            }
            4 => {
                let end = (i + rng.random_range(1..64)).min(b.len());
                let chunk = b[i..end].to_vec();
                let at = rng.random_range(0..=b.len());
                b.splice(at..at, chunk);
            }
            _ => b[i] = rng.random(),
        }
    }
    b
}

/// Replaces one to three numbers of a JSON text with extreme values.
fn mutate_numbers(json: &str, rng: &mut StdRng) -> String {
    let mut s = json.to_string();
    for _ in 0..rng.random_range(1..=3) {
        let starts: Vec<usize> = s
            .char_indices()
            .filter(|&(i, c)| {
                (c.is_ascii_digit() || c == '-')
                    && !s[..i].ends_with(|p: char| p.is_ascii_digit() || p == '.' || p == 'e')
            })
            .map(|(i, _)| i)
            .collect();
        if starts.is_empty() {
            break;
        }
        let a = starts[rng.random_range(0..starts.len())];
        let len = s[a..]
            .find(|c: char| !(c.is_ascii_digit() || "-+.eE".contains(c)))
            .unwrap_or(s.len() - a);
        let with = NUMBERS[rng.random_range(0..NUMBERS.len())];
        s.replace_range(a..a + len, with);
    }
    s
}

/// A model file with the model JSON of `bytes` replaced by `f(json)`.
fn with_model_json(bytes: &[u8], f: impl FnOnce(&str) -> String) -> Vec<u8> {
    let (mut header, data) = common::split_safetensors(bytes);
    let json = header["__metadata__"]["model"]
        .as_str()
        .unwrap()
        .to_string();
    header["__metadata__"]["model"] = serde_json::Value::String(f(&json));
    common::join_safetensors(&header, &data)
}

/// A trained model with every layer type and optimizer state.
fn seed_model() -> Sequential {
    let mut m = Sequential::new()
        .seed(5)
        .input(5)
        .add(Dense::new(6, Elu(0.5)).kernel_regularizer(Regularizer::l2(1e-3)))
        .dropout(0.25)
        .dense(4, Linear)
        .activation(Softmax);
    m.compile_with(
        Optimizer::from(Nadam::default()).with_clipnorm(1.0),
        "categorical_crossentropy",
        CompileOptions::new()
            .metrics(&["accuracy", "mae"])
            .weighted_metrics(&["acc"]),
    )
    .unwrap();
    let (x, y) = common::blobs(20, 5, 3);
    let y = ndarray::concatenate![ndarray::Axis(1), y, ndarray::Array2::zeros((20, 1))];
    m.fit(&x, &y, common::quiet(1)).unwrap();
    m
}

/// Uses a loaded model the way a user would.
fn exercise(m: &Sequential) {
    if let Some(d) = m.input_dim() {
        if d <= 4096 && m.output_dim() <= 4096 {
            let _ = m.predict(ndarray::Array2::<f32>::ones((2, d)));
        }
    }
    let _ = m.summary();
    let _ = m.to_bytes();
}

#[test]
fn model_files_survive_mutation() {
    let seed = seed_model().to_bytes().unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    let (mut loaded, n) = (0, iterations());
    for i in 0..n {
        let input = if i % 2 == 0 {
            mutate(&seed, &mut rng)
        } else {
            with_model_json(&seed, |j| mutate_numbers(j, &mut rng))
        };
        if let Ok(m) = Sequential::from_bytes(&input) {
            exercise(&m);
            loaded += 1;
        }
    }
    println!("model files: {n} mutants, {loaded} loaded");
}

#[test]
fn weights_files_survive_mutation() {
    let model = seed_model();
    let path = std::env::temp_dir().join(format!("horn-fuzz-w-{}.st", std::process::id()));
    model.save_weights(&path).unwrap();
    let seed = std::fs::read(&path).unwrap();
    let mut target = seed_model();
    let mut rng = StdRng::seed_from_u64(2);
    let (mut loaded, n) = (0, iterations());
    for _ in 0..n {
        if target
            .load_weights_from_bytes(&mutate(&seed, &mut rng))
            .is_ok()
        {
            loaded += 1;
            for w in target.get_weights().unwrap() {
                assert!(w.iter().all(|v| v.is_finite()));
            }
        }
    }
    println!("weights files: {n} mutants, {loaded} loaded");
}

#[test]
fn idx_files_survive_mutation() {
    let mut images = vec![0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5];
    images.extend((0..60).map(|i| (i * 7) as u8));
    let labels = vec![0, 0, 8, 1, 0, 0, 0, 3, 1, 7, 9];
    let gz = |b: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    };
    let seeds = [images.clone(), gz(&images), labels.clone(), gz(&labels)];
    let mut rng = StdRng::seed_from_u64(3);
    let (mut loaded, n) = (0, iterations());
    for i in 0..n {
        let input = mutate(&seeds[i % 4], &mut rng);
        loaded += mnist::parse_images(&input).is_ok() as usize;
        loaded += mnist::parse_labels(&input).is_ok() as usize;
    }
    println!("IDX files: {n} mutants, {loaded} loaded");
}

#[test]
fn csv_tables_survive_mutation() {
    let seed = "species,island,bill_length_mm,body_mass_g,sex\n\
                Adelie,Torgersen,39.1,3750,male\n\
                Gentoo,Biscoe,NA,5000,female\n\
                \"Chin,strap\",Dream,49.5,NaN,NA\n";
    let mut rng = StdRng::seed_from_u64(4);
    let (mut loaded, n) = (0, iterations());
    for _ in 0..n {
        let input = mutate(seed.as_bytes(), &mut rng);
        if let Ok(t) = Table::from_csv_str(&String::from_utf8_lossy(&input)) {
            loaded += 1;
            let names: Vec<String> = t.names().to_vec();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let _ = t.drop_na().numeric_matrix(&refs);
            for name in &refs {
                let _ = t.categorical(name);
            }
        }
    }
    println!("CSV tables: {n} mutants, {loaded} loaded");
}

#[cfg(feature = "keras")]
#[path = "common/keras_use.rs"]
mod keras_use;

#[cfg(feature = "keras")]
#[test]
fn keras_files_survive_mutation() {
    use horn::saving::load_keras_bytes;
    let fixture = |name: &str| {
        std::fs::read(format!(
            "{}/tests/fixtures/keras-files/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    };
    // Keras' own files (functional with a shared layer and merges; text;
    // signals) and horn's.
    let mut seeds: Vec<Vec<u8>> = ["functional.keras", "sequences.keras", "signals.keras"]
        .iter()
        .map(|n| fixture(n))
        .collect();
    let mut horn = Sequential::new()
        .seed(6)
        .input(5)
        .dense(6, Relu)
        .batch_normalization()
        .dropout(0.25)
        .dense(4, Softmax);
    horn.compile("adam", "categorical_crossentropy", &["accuracy"])
        .unwrap();
    let (x, y) = common::blobs(20, 5, 3);
    let y = ndarray::concatenate![ndarray::Axis(1), y, ndarray::Array2::zeros((20, 1))];
    horn.fit(&x, &y, common::quiet(1)).unwrap();
    seeds.push(horn.to_keras_bytes().unwrap());
    let seeds: Vec<Vec<(String, Vec<u8>)>> = seeds.iter().map(|s| common::unzip(s)).collect();
    let mut rng = StdRng::seed_from_u64(5);
    // A `.keras` load costs more than the other formats': a quarter of
    // the iterations.
    let (mut loaded, n) = (0, iterations() / 4);
    for i in 0..n {
        let parts = &seeds[i % seeds.len()];
        // Mutate one entry (the config's bytes or numbers, or the weights),
        // inside a valid archive; now and then the archive itself.
        let which = rng.random_range(0..parts.len());
        let how = rng.random_range(0..3);
        let entries: Vec<(String, Vec<u8>)> = parts
            .iter()
            .enumerate()
            .map(|(k, (name, data))| {
                let data = if k != which {
                    data.clone()
                } else if how == 0 && name == "config.json" {
                    mutate_numbers(&String::from_utf8_lossy(data), &mut rng).into_bytes()
                } else {
                    mutate(data, &mut rng)
                };
                (name.clone(), data)
            })
            .collect();
        let refs: Vec<(&str, &[u8])> = entries.iter().map(|(n, d)| (n.as_str(), &d[..])).collect();
        let mut input = common::archive(&refs);
        if i % 8 == 7 {
            input = mutate(&input, &mut rng);
        }
        if let Ok(m) = load_keras_bytes(&input) {
            keras_use::exercise(m);
            loaded += 1;
        }
    }
    println!("keras files: {n} mutants, {loaded} loaded");
    assert!(loaded > 0, "no mutant loaded: the mutations are too coarse");
}
