//! Keras `.keras` files as a hostile or careless user hands them over: each
//! ends in a clear error or in the model Keras would build, never in an
//! abort, a panic (overflow checks on in `cargo test`) or a model that
//! computes something else.
#![cfg(feature = "keras")]

use std::io::{Read, Write};

use horn::prelude::*;
use horn::saving::{load_keras_bytes, KerasModel};
use ndarray::{Array2, ArrayD, IxDyn};
use serde_json::{json, Value};

/// The entries of a `.keras` archive.
fn unzip(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    (0..z.len())
        .map(|i| {
            let mut f = z.by_index(i).unwrap();
            let mut v = Vec::new();
            f.read_to_end(&mut v).unwrap();
            (f.name().to_string(), v)
        })
        .collect()
}

/// A `.keras` archive of `entries`, stored uncompressed as Keras does.
fn archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for (name, data) in entries {
            zip.start_file(*name, opts).unwrap();
            zip.write_all(data).unwrap();
        }
        zip.finish().unwrap();
    }
    buf.into_inner()
}

/// `bytes` (a `.keras` file) with its `config.json` edited by `edit`.
fn edit_config(bytes: &[u8], mut edit: impl FnMut(&mut Value)) -> Vec<u8> {
    let mut parts = unzip(bytes);
    for (name, data) in &mut parts {
        if name == "config.json" {
            let mut v: Value = serde_json::from_slice(data).unwrap();
            edit(&mut v);
            *data = serde_json::to_vec(&v).unwrap();
        }
    }
    let refs: Vec<(&str, &[u8])> = parts.iter().map(|(n, d)| (n.as_str(), &d[..])).collect();
    archive(&refs)
}

fn err(bytes: &[u8]) -> String {
    match load_keras_bytes(bytes) {
        Ok(_) => panic!("the file loaded"),
        Err(e) => e.to_string(),
    }
}

/// A zip archive written by hand: each entry stored, with a zip64 extra
/// field that declares `declared` bytes whatever it holds.
fn zip64_archive(entries: &[(&str, &[u8], u64)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data, declared) in entries {
        let offset = out.len() as u32;
        let crc = {
            // CRC-32 (IEEE), bit by bit: the archive is tiny.
            let mut c = 0xffff_ffffu32;
            for &b in *data {
                c ^= b as u32;
                for _ in 0..8 {
                    c = if c & 1 != 0 {
                        (c >> 1) ^ 0xedb8_8320
                    } else {
                        c >> 1
                    };
                }
            }
            !c
        };
        let mut extra = Vec::new();
        extra.extend_from_slice(&1u16.to_le_bytes());
        extra.extend_from_slice(&16u16.to_le_bytes());
        extra.extend_from_slice(&declared.to_le_bytes());
        extra.extend_from_slice(&declared.to_le_bytes());
        let common = |v: &mut Vec<u8>| {
            v.extend_from_slice(&45u16.to_le_bytes()); // version needed
            v.extend_from_slice(&0u16.to_le_bytes()); // flags
            v.extend_from_slice(&0u16.to_le_bytes()); // stored
            v.extend_from_slice(&0u32.to_le_bytes()); // time, date
            v.extend_from_slice(&crc.to_le_bytes());
            v.extend_from_slice(&u32::MAX.to_le_bytes()); // sizes in zip64
            v.extend_from_slice(&u32::MAX.to_le_bytes());
            v.extend_from_slice(&(name.len() as u16).to_le_bytes());
            v.extend_from_slice(&(extra.len() as u16).to_le_bytes());
        };
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        common(&mut out);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&extra);
        out.extend_from_slice(data);
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&45u16.to_le_bytes()); // made by
        common(&mut central);
        central.extend_from_slice(&[0; 6]); // comment, disk, internal attributes
        central.extend_from_slice(&0u32.to_le_bytes()); // external attributes
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
        central.extend_from_slice(&extra);
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

#[test]
fn a_zip64_entry_declaring_16_gib_is_an_error_not_an_abort() {
    let weights = vec![7u8; 4096];
    let bytes = zip64_archive(&[
        ("config.json", b"{}", 2),
        ("model.weights.h5", &weights, 16 << 30),
    ]);
    assert!(bytes.len() < 5000, "{} bytes", bytes.len());
    let e = err(&bytes);
    assert!(
        e.contains("model.weights.h5") && e.contains("17179869184") && e.contains("archive"),
        "{e}"
    );
    // Just under the 16 GiB limit, and a config that claims 60 MiB: the same.
    let e = err(&zip64_archive(&[("config.json", b"{}", 60 << 20)]));
    assert!(e.contains("config.json") && e.contains("62914560"), "{e}");
    // The hand-made archive itself is sound: with true sizes it reads up
    // to the JSON (which is no model).
    let e = err(&zip64_archive(&[
        ("config.json", b"{}", 2),
        ("model.weights.h5", &weights, 4096),
    ]));
    assert!(!e.contains("declares"), "{e}");
}

/// A weights file of `(path, shape)` float datasets (filled with 0.5).
fn h5(datasets: &[(&str, Vec<u64>)]) -> Vec<u8> {
    use hdf5_writer::{DatasetBuilder, Hdf5Builder, WriteOptions};
    let mut b = Hdf5Builder::new();
    for (path, shape) in datasets {
        let n = shape.iter().product::<u64>() as usize;
        b = b.dataset(DatasetBuilder::typed_data(*path, shape.clone(), &vec![0.5f32; n]).unwrap());
    }
    b = b.dataset(
        DatasetBuilder::typed_data("optimizer/vars/0", Vec::<u64>::new(), &[5i64]).unwrap(),
    );
    b.into_plan()
        .unwrap()
        .encode(WriteOptions::default())
        .unwrap()
}

/// Bob Jenkins' lookup3 `hashlittle`, which checksums HDF5 object headers.
fn lookup3(data: &[u8]) -> u32 {
    let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let mut a = 0xdead_beefu32.wrapping_add(data.len() as u32);
    let (mut b, mut c) = (a, a);
    let mut k = data;
    while k.len() > 12 {
        a = a.wrapping_add(word(&k[0..]));
        b = b.wrapping_add(word(&k[4..]));
        c = c.wrapping_add(word(&k[8..]));
        a = a.wrapping_sub(c) ^ c.rotate_left(4);
        c = c.wrapping_add(b);
        b = b.wrapping_sub(a) ^ a.rotate_left(6);
        a = a.wrapping_add(c);
        c = c.wrapping_sub(b) ^ b.rotate_left(8);
        b = b.wrapping_add(a);
        a = a.wrapping_sub(c) ^ c.rotate_left(16);
        c = c.wrapping_add(b);
        b = b.wrapping_sub(a) ^ a.rotate_left(19);
        a = a.wrapping_add(c);
        c = c.wrapping_sub(b) ^ b.rotate_left(4);
        b = b.wrapping_add(a);
        k = &k[12..];
    }
    if k.is_empty() {
        return c;
    }
    let mut t = [0u8; 12];
    t[..k.len()].copy_from_slice(k);
    a = a.wrapping_add(word(&t[0..]));
    b = b.wrapping_add(word(&t[4..]));
    c = c.wrapping_add(word(&t[8..]));
    c = (c ^ b).wrapping_sub(b.rotate_left(14));
    a = (a ^ c).wrapping_sub(c.rotate_left(11));
    b = (b ^ a).wrapping_sub(a.rotate_left(25));
    c = (c ^ b).wrapping_sub(b.rotate_left(16));
    a = (a ^ c).wrapping_sub(c.rotate_left(4));
    b = (b ^ a).wrapping_sub(a.rotate_left(14));
    (c ^ b).wrapping_sub(b.rotate_left(24))
}

/// `file` (HDF5) with the one dataspace of dimensions `from` declaring `to`
/// instead, its object header's checksum renewed: what a crafted file can
/// say, which no writer would write.
fn redeclare(file: &mut [u8], from: &[u64], to: &[u64]) {
    let bytes = |d: &[u64]| d.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let pattern = bytes(from);
    let at: Vec<usize> = (0..file.len() - pattern.len())
        .filter(|&i| file[i..].starts_with(&pattern))
        .collect();
    assert_eq!(at.len(), 1, "dimensions {from:?} found {} times", at.len());
    let p = at[0];
    file[p..p + pattern.len()].copy_from_slice(&bytes(to));
    // The version 2 object header around it: "OHDR", version, flags,
    // optional times and attribute limits, chunk size, messages, checksum.
    let start = (0..p)
        .rev()
        .find(|&i| file[i..].starts_with(b"OHDR"))
        .unwrap();
    let flags = file[start + 5];
    let mut q =
        start + 6 + if flags & 0x20 != 0 { 16 } else { 0 } + if flags & 0x10 != 0 { 4 } else { 0 };
    let width = 1usize << (flags & 3);
    let mut size = [0u8; 8];
    size[..width].copy_from_slice(&file[q..q + width]);
    q += width;
    let end = q + u64::from_le_bytes(size) as usize;
    let sum = lookup3(&file[start..end]);
    file[end..end + 4].copy_from_slice(&sum.to_le_bytes());
}

#[test]
fn dimensions_whose_product_overflows_are_errors() {
    // The checksum helper agrees with the writer's own.
    let plain = h5(&[("a", vec![2, 3])]);
    let mut same = plain.clone();
    redeclare(&mut same, &[2, 3], &[2, 3]);
    assert_eq!(same, plain);

    // A compiled model with momentum, whose first optimizer slot declares
    // 2^33 x 2^33 values: Keras skips optimizer state that does not fit the
    // weights, and so does horn (fresh slots, the saved step count).
    let mut m = Sequential::new().seed(1).input(4).dense(3, Linear);
    let sgd = Sgd {
        learning_rate: 0.1,
        momentum: 0.9,
        nesterov: false,
    };
    m.compile(sgd, "mse", &[] as &[Metric]).unwrap();
    let config = unzip(&m.to_keras_bytes().unwrap())
        .into_iter()
        .find(|(n, _)| n == "config.json")
        .unwrap()
        .1;
    let mut file = h5(&[
        ("layers/dense/vars/0", vec![4, 3]),
        ("layers/dense/vars/1", vec![3]),
        ("optimizer/vars/2", vec![17, 19]),
    ]);
    redeclare(&mut file, &[17, 19], &[1 << 33, 1 << 33]);
    let loaded = Sequential::load_keras_bytes(&archive(&[
        ("config.json", &config),
        ("model.weights.h5", &file),
    ]))
    .unwrap();
    assert!(loaded.get_weights().unwrap()[0].iter().all(|&v| v == 0.5));
    assert_eq!(loaded.optimizer().unwrap().iterations(), 5);

    // A Conv2D whose kernel has 2^20 * 2^20 * 4 * (2^32 - 1) values, and a
    // weights file that declares exactly that.
    let conv = json!({
        "module": "keras", "class_name": "Sequential",
        "config": {"name": "s", "layers": [
            {"module": "keras.layers", "class_name": "InputLayer",
             "config": {"name": "x", "batch_shape": [null, 1 << 20, 1 << 20, 4]}},
            {"module": "keras.layers", "class_name": "Conv2D",
             "config": {"name": "conv2d", "filters": u32::MAX, "kernel_size": [1 << 20, 1 << 20]}}
        ]}
    });
    let mut file = h5(&[
        ("layers/conv2d/vars/0", vec![2, 3, 5, 7]),
        ("layers/conv2d/vars/1", vec![11]),
    ]);
    redeclare(
        &mut file,
        &[2, 3, 5, 7],
        &[1 << 20, 1 << 20, 4, u32::MAX as u64],
    );
    redeclare(&mut file, &[11], &[u32::MAX as u64]);
    let e = err(&archive(&[
        ("config.json", conv.to_string().as_bytes()),
        ("model.weights.h5", &file),
    ]));
    assert!(
        e.contains("layers/conv2d/vars/0") && e.contains("claims"),
        "{e}"
    );
}
