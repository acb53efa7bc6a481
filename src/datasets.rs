//! Datasets: MNIST from its standard IDX files (Keras `dataset_mnist()`).
//!
//! The four files (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
//! `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`) are read gzipped (`.gz`)
//! or plain. The repository ships them in `data/mnist`.

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use ndarray::{Array1, Array2, Array3};

use crate::error::{Error, Result};

/// Images and labels of one MNIST split.
#[derive(Debug, Clone)]
pub struct MnistSplit {
    /// `(n, 28, 28)` pixels, 0-255.
    pub x: Array3<u8>,
    /// `n` digit labels, 0-9.
    pub y: Array1<u8>,
}

impl MnistSplit {
    /// Rows of 784 pixels in row-major order (R's `array_reshape`), scaled to
    /// `[0, 1]` (the course's `/ 255`).
    ///
    /// ```no_run
    /// let mnist = horn::datasets::mnist::load_default().unwrap();
    /// let x = mnist.train.flat_scaled();
    /// assert_eq!(x.dim(), (60000, 784));
    /// ```
    pub fn flat_scaled(&self) -> Array2<f32> {
        let (n, h, w) = self.x.dim();
        Array2::from_shape_fn((n, h * w), |(i, j)| {
            self.x[[i, j / w, j % w]] as f32 / 255.0
        })
    }

    /// Labels as `usize` class indices.
    pub fn labels(&self) -> Vec<usize> {
        self.y.iter().map(|&v| v as usize).collect()
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// Whether the split is empty.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }
}

/// MNIST's training (60,000) and test (10,000) splits.
#[derive(Debug, Clone)]
pub struct Mnist {
    /// Training images and labels.
    pub train: MnistSplit,
    /// Test images and labels.
    pub test: MnistSplit,
}

/// MNIST loading.
pub mod mnist {
    use super::*;

    /// Environment variable naming a folder with the four IDX files.
    pub const ENV_VAR: &str = "HORN_MNIST_DIR";

    /// Loads from `$HORN_MNIST_DIR` if set, else from the repository's `data/mnist`.
    pub fn load_default() -> Result<Mnist> {
        let dir = std::env::var_os(ENV_VAR)
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist"));
        load(dir)
    }

    /// Loads the four files from a folder (each gzipped or plain).
    pub fn load(dir: impl AsRef<Path>) -> Result<Mnist> {
        let dir = dir.as_ref();
        let split = |img: &str, lab: &str| -> Result<MnistSplit> {
            let x = read_images(find(dir, img)?)?;
            let y = read_labels(find(dir, lab)?)?;
            if x.dim().0 != y.len() {
                return Err(Error::format(
                    dir.join(img),
                    format!("{} images but {} labels in {lab}", x.dim().0, y.len()),
                ));
            }
            Ok(MnistSplit { x, y })
        };
        Ok(Mnist {
            train: split("train-images-idx3-ubyte", "train-labels-idx1-ubyte")?,
            test: split("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")?,
        })
    }

    fn find(dir: &Path, base: &str) -> Result<PathBuf> {
        for name in [format!("{base}.gz"), base.to_string()] {
            let p = dir.join(name);
            if p.exists() {
                return Ok(p);
            }
        }
        Err(Error::io(
            dir.join(format!("{base}.gz")),
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "MNIST file not found (gzipped or plain)",
            ),
        ))
    }

    /// Reads an IDX file's bytes, un-gzipping when it starts with the gzip magic.
    fn read_bytes(path: &Path) -> Result<Vec<u8>> {
        let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        if raw.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::new();
            GzDecoder::new(&raw[..])
                .read_to_end(&mut out)
                .map_err(|e| Error::format(path, format!("corrupt gzip data: {e}")))?;
            Ok(out)
        } else {
            Ok(raw)
        }
    }

    fn header(bytes: &[u8], path: &Path, magic: u32, dims: usize) -> Result<Vec<usize>> {
        let need = 4 + 4 * dims;
        if bytes.len() < need {
            return Err(Error::format(
                path,
                format!("truncated header: {} bytes", bytes.len()),
            ));
        }
        let be =
            |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        if be(0) != magic {
            return Err(Error::format(
                path,
                format!("bad magic number 0x{:08x}, expected 0x{magic:08x}", be(0)),
            ));
        }
        let shape: Vec<usize> = (0..dims).map(|d| be(4 + 4 * d) as usize).collect();
        let expected = need + shape.iter().product::<usize>();
        if bytes.len() != expected {
            return Err(Error::format(
                path,
                format!(
                    "the header announces {shape:?} ({expected} bytes) but the file has {} bytes (truncated or wrong counts)",
                    bytes.len()
                ),
            ));
        }
        Ok(shape)
    }

    /// Reads an IDX3 image file (magic 0x00000803) into `(n, rows, cols)`.
    pub fn read_images(path: impl AsRef<Path>) -> Result<Array3<u8>> {
        let path = path.as_ref();
        let bytes = read_bytes(path)?;
        let s = header(&bytes, path, 0x0000_0803, 3)?;
        Array3::from_shape_vec((s[0], s[1], s[2]), bytes[16..].to_vec())
            .map_err(|e| Error::format(path, e.to_string()))
    }

    /// Reads an IDX1 label file (magic 0x00000801).
    pub fn read_labels(path: impl AsRef<Path>) -> Result<Array1<u8>> {
        let path = path.as_ref();
        let bytes = read_bytes(path)?;
        header(&bytes, path, 0x0000_0801, 1)?;
        if let Some(&bad) = bytes[8..].iter().find(|&&v| v > 9) {
            return Err(Error::format(
                path,
                format!("label {bad} is not a digit 0-9"),
            ));
        }
        Ok(Array1::from(bytes[8..].to_vec()))
    }
}
