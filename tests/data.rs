//! Data loading and preprocessing.

use std::io::Write;

use horn::datasets::mnist;
use horn::preprocessing::{stratified_split, to_categorical, OneHotEncoder, StandardScaler, Table};
use horn::Error;
use ndarray::array;

#[test]
fn mnist_reads_the_shipped_files() {
    let m = mnist::load_default().unwrap();
    assert_eq!(m.train.x.dim(), (60000, 28, 28));
    assert_eq!(m.test.x.dim(), (10000, 28, 28));
    assert_eq!(
        m.train.y.slice(ndarray::s![..10]).to_vec(),
        vec![5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    );
    let mut counts = [0usize; 10];
    for &l in m.train.y.iter() {
        counts[l as usize] += 1;
    }
    assert_eq!(
        counts,
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    let flat = m.test.flat_scaled();
    assert_eq!(flat.dim(), (10000, 784));
    // Row-major flattening: pixel (r, c) lands at r * 28 + c.
    assert_eq!(flat[[0, 7 * 28 + 10]], m.test.x[[0, 7, 10]] as f32 / 255.0);
    assert!(flat.iter().all(|&v| (0.0..=1.0).contains(&v)));
}

fn write(dir: &std::path::Path, name: &str, bytes: &[u8]) {
    std::fs::File::create(dir.join(name))
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

fn idx(magic: u32, dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut v = magic.to_be_bytes().to_vec();
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(payload);
    v
}

#[test]
fn mnist_rejects_corrupt_files() {
    let dir = std::env::temp_dir().join(format!("horn-idx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let images = dir.join("i");
    let labels = dir.join("l");
    // Wrong magic.
    write(&dir, "i", &idx(0x0000_0801, &[1, 2, 2], &[0; 4]));
    assert!(mnist::read_images(&images)
        .unwrap_err()
        .to_string()
        .contains("bad magic"));
    // Truncated payload.
    write(&dir, "i", &idx(0x0000_0803, &[2, 2, 2], &[0; 5]));
    assert!(mnist::read_images(&images)
        .unwrap_err()
        .to_string()
        .contains("truncated"));
    // Truncated header.
    write(&dir, "i", &[0, 0, 8]);
    assert!(matches!(
        mnist::read_images(&images).unwrap_err(),
        Error::Format { .. }
    ));
    // Corrupt gzip.
    write(&dir, "l", &[0x1f, 0x8b, 1, 2, 3, 4]);
    assert!(mnist::read_labels(&labels)
        .unwrap_err()
        .to_string()
        .contains("gzip"));
    // A label that is not a digit.
    write(&dir, "l", &idx(0x0000_0801, &[2], &[3, 12]));
    assert!(mnist::read_labels(&labels)
        .unwrap_err()
        .to_string()
        .contains("12"));
    // Image and label counts that differ.
    let split = dir.join("split");
    std::fs::create_dir_all(&split).unwrap();
    for (name, bytes) in [
        (
            "train-images-idx3-ubyte",
            idx(0x0000_0803, &[2, 1, 1], &[0, 1]),
        ),
        (
            "train-labels-idx1-ubyte",
            idx(0x0000_0801, &[3], &[0, 1, 2]),
        ),
        ("t10k-images-idx3-ubyte", idx(0x0000_0803, &[1, 1, 1], &[0])),
        ("t10k-labels-idx1-ubyte", idx(0x0000_0801, &[1], &[0])),
    ] {
        write(&split, name, &bytes);
    }
    let e = mnist::load(&split).unwrap_err().to_string();
    assert!(e.contains("2 images but 3 labels"), "{e}");
    assert!(matches!(
        mnist::load(dir.join("nowhere")).unwrap_err(),
        Error::Io { .. }
    ));
}

#[test]
fn csv_table_with_missing_values() {
    let t = Table::from_csv_str("species,mass,sex\nA,3.5,male\nB,NA,female\nA,4.0,\nB,5.0,male\n")
        .unwrap();
    assert_eq!(t.nrows(), 4);
    let clean = t.drop_na();
    assert_eq!(clean.nrows(), 2);
    assert_eq!(clean.numeric("mass").unwrap(), vec![3.5, 5.0]);
    assert!(t.numeric("mass").is_err());
    assert!(t.numeric("species").is_err());
    assert!(t
        .column("weight")
        .unwrap_err()
        .to_string()
        .contains("no column"));
    assert!(Table::from_csv_str("a,b\n1\n").is_err());
    let penguins =
        Table::read_csv(concat!(env!("CARGO_MANIFEST_DIR"), "/data/penguins.csv")).unwrap();
    assert_eq!(penguins.nrows(), 344);
    assert_eq!(penguins.drop_na().nrows(), 333);
}

#[test]
fn stratified_split_keeps_class_proportions() {
    let labels: Vec<usize> = (0..200)
        .map(|i| {
            if i < 120 {
                0
            } else if i < 180 {
                1
            } else {
                2
            }
        })
        .collect();
    let (train, test) = stratified_split(&labels, 0.25, 3).unwrap();
    assert_eq!(train.len() + test.len(), 200);
    let count = |idx: &[usize], c| idx.iter().filter(|&&i| labels[i] == c).count();
    assert_eq!(
        (count(&test, 0), count(&test, 1), count(&test, 2)),
        (30, 15, 5)
    );
    let mut all: Vec<usize> = train.iter().chain(&test).copied().collect();
    all.sort();
    assert_eq!(all, (0..200).collect::<Vec<_>>());
    assert_eq!(
        stratified_split(&labels, 0.25, 3).unwrap(),
        (train.clone(), test.clone())
    );
    assert_ne!(stratified_split(&labels, 0.25, 4).unwrap().1, test);
    assert!(stratified_split(&labels, 1.0, 3).is_err());
}

#[test]
fn scaler_uses_training_rows_and_sample_sd() {
    let train = array![[1.0f32, 5.0], [2.0, 5.0], [3.0, 5.0]];
    let s = StandardScaler::fit(train.view()).unwrap();
    assert_eq!(s.mean.to_vec(), vec![2.0, 5.0]);
    // Sample SD of 1, 2, 3 is 1 (n - 1); a constant column keeps SD 1.
    assert_eq!(s.std.to_vec(), vec![1.0, 1.0]);
    let test = array![[4.0f32, 6.0]];
    assert_eq!(s.transform(test.view()).unwrap(), array![[2.0, 1.0]]);
    assert!(s.transform(array![[1.0f32]].view()).is_err());
    assert!(StandardScaler::fit(array![[1.0f32]].view()).is_err());
}

#[test]
fn encoders() {
    let enc = OneHotEncoder::fit(&["Torgersen", "Biscoe", "Dream", "Biscoe"]);
    assert_eq!(enc.categories(), &["Biscoe", "Dream", "Torgersen"]);
    let e = enc.transform(&["Atlantis"]).unwrap_err().to_string();
    assert!(e.contains("Atlantis") && e.contains("not seen"), "{e}");
    assert_eq!(
        to_categorical(&[1, 0], Some(3)).unwrap(),
        array![[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    );
}
