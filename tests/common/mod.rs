//! Small synthetic data shared by the integration tests.
#![allow(dead_code)]

use ndarray::Array2;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// `n` rows of `d` features in three classes whose centres differ, with one-hot targets.
pub fn blobs(n: usize, d: usize, seed: u64) -> (Array2<f32>, Array2<f32>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut x = Array2::zeros((n, d));
    let mut y = Array2::zeros((n, 3));
    for i in 0..n {
        let c = rng.random_range(0..3);
        y[[i, c]] = 1.0;
        for j in 0..d {
            let centre = if j % 3 == c { 1.5 } else { 0.0 };
            x[[i, j]] = centre + rng.random_range(-1.0f32..1.0);
        }
    }
    (x, y)
}

/// Bitwise fingerprint of a model's weights.
pub fn fingerprint(model: &horn::Sequential) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for w in model.get_weights().unwrap() {
        for v in w.iter() {
            h ^= v.to_bits() as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Silent `fit` options for `epochs` epochs, Keras defaults otherwise.
pub fn quiet(epochs: usize) -> horn::FitOptions {
    horn::FitOptions {
        epochs,
        verbose: 0,
        ..Default::default()
    }
}

/// The header JSON and the data section of a safetensors file.
pub fn split_safetensors(bytes: &[u8]) -> (serde_json::Value, Vec<u8>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header, bytes[8 + n..].to_vec())
}

/// A safetensors file from a header JSON and a data section.
pub fn join_safetensors(header: &serde_json::Value, data: &[u8]) -> Vec<u8> {
    let h = header.to_string();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out
}

/// A fixture array `{"shape": [...], "data": [...]}` (row-major), as the
/// Keras parity files store them.
pub fn fixture_array(v: &serde_json::Value) -> ndarray::ArrayD<f32> {
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let data: Vec<f32> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_f64().unwrap() as f32)
        .collect();
    ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&shape), data).unwrap()
}

/// The entries of a zip archive (a `.keras` file), in order.
#[cfg(feature = "keras")]
pub fn unzip(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    use std::io::Read;
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

/// A zip archive (a `.keras` file) of `entries`, stored uncompressed as
/// Keras stores them.
#[cfg(feature = "keras")]
pub fn archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
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

/// `bytes` gzipped (fast level), as an IDX file on disk may be.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// An IDX3 image header announcing `(n, r, c)`, then `payload` zero bytes.
pub fn idx_images(n: u32, r: u32, c: u32, payload: usize) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 3];
    for d in [n, r, c] {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.resize(16 + payload, 0);
    b
}
