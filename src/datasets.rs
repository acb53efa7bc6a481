//! Datasets: MNIST from its standard IDX files (Keras `dataset_mnist()`), and
//! the Palmer penguins table compiled into the crate ([`penguins`]).
//!
//! The four files (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
//! `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`) are read gzipped (`.gz`)
//! or plain. The repository ships them in `data/mnist`.

use std::io::{Read, Seek, SeekFrom};
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

    /// Images as `(n, 28, 28, 1)`, channels last, scaled to `[0, 1]`: the
    /// input of a convolutional network (Keras' MNIST convnet example does
    /// `np.expand_dims(x, -1) / 255`).
    ///
    /// ```no_run
    /// let mnist = horn::datasets::mnist::load_default().unwrap();
    /// assert_eq!(mnist.test.images_scaled().shape(), &[10000, 28, 28, 1]);
    /// ```
    pub fn images_scaled(&self) -> ndarray::Array4<f32> {
        self.x
            .mapv(|v| v as f32 / 255.0)
            .insert_axis(ndarray::Axis(3))
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

    /// Loads MNIST from the first folder that holds the four files:
    /// `$HORN_MNIST_DIR` when set, then `data/mnist` under the current
    /// directory, then the `data/mnist` of horn's own source tree (present in a
    /// git checkout; the published crate leaves the 11 MB out). The error lists
    /// every place it looked and how to get the files.
    pub fn load_default() -> Result<Mnist> {
        let candidates = default_dirs();
        for dir in &candidates {
            if dir.join("train-images-idx3-ubyte.gz").exists()
                || dir.join("train-images-idx3-ubyte").exists()
            {
                return load(dir);
            }
        }
        let looked: Vec<String> = candidates.iter().map(|d| d.display().to_string()).collect();
        Err(Error::io(
            candidates.first().cloned().unwrap_or_default(),
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "the MNIST files were not found; looked in: {}. Put the four IDX files \
                     (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, \
                     t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz, as published by \
                     Yann LeCun and mirrored widely) in one folder and set {ENV_VAR} to it, \
                     or call `mnist::load(folder)`",
                    looked.join(", ")
                ),
            ),
        ))
    }

    /// Where [`load_default`] looks, in order.
    pub fn default_dirs() -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        if let Some(d) = std::env::var_os(ENV_VAR).filter(|d| !d.is_empty()) {
            dirs.push(PathBuf::from(d));
        }
        dirs.push(PathBuf::from("data/mnist"));
        dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist"));
        dirs
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

    /// Reads an IDX file (gzipped or plain): the magic number, `dims` sizes,
    /// then exactly the payload the header announces. Sizes are multiplied with
    /// overflow checks, and no more than the announced payload (plus one byte,
    /// to detect trailing data) is ever read: a gzip bomb or a device such as
    /// `/dev/zero` fails after at most that much, and memory grows only with
    /// data that is really there.
    fn read_idx(path: &Path, magic: u32, dims: usize) -> Result<(Vec<usize>, Vec<u8>)> {
        let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        if !meta.is_file() {
            return Err(Error::format(path, "not a regular file"));
        }
        let mut first = [0u8; 2];
        let got = read_full(&mut file, &mut first).map_err(|e| Error::io(path, e))?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| Error::io(path, e))?;
        let gz = got == 2 && first == [0x1f, 0x8b];
        parse_idx(
            std::io::BufReader::new(file),
            gz,
            meta.len(),
            path,
            magic,
            dims,
        )
    }

    /// [`read_idx`] on a byte slice.
    fn parse_idx_bytes(bytes: &[u8], magic: u32, dims: usize) -> Result<(Vec<usize>, Vec<u8>)> {
        let gz = bytes.starts_with(&[0x1f, 0x8b]);
        let path = Path::new("<bytes>");
        parse_idx(bytes, gz, bytes.len() as u64, path, magic, dims)
    }

    /// The IDX parser behind [`read_idx`]: `len` is the stored size, which a
    /// plain (not gzipped) input must match exactly.
    fn parse_idx(
        input: impl Read,
        gz: bool,
        len: u64,
        path: &Path,
        magic: u32,
        dims: usize,
    ) -> Result<(Vec<usize>, Vec<u8>)> {
        let mut reader: Box<dyn Read + '_> = if gz {
            Box::new(GzDecoder::new(input))
        } else {
            Box::new(input)
        };
        let corrupt = |e: std::io::Error| Error::format(path, format!("corrupt gzip data: {e}"));
        let mut header = vec![0u8; 4 + 4 * dims];
        let got = read_full(&mut reader, &mut header).map_err(corrupt)?;
        if got < header.len() {
            return Err(Error::format(
                path,
                format!("truncated header: {got} bytes"),
            ));
        }
        let be =
            |i: usize| u32::from_be_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        if be(0) != magic {
            return Err(Error::format(
                path,
                format!("bad magic number 0x{:08x}, expected 0x{magic:08x}", be(0)),
            ));
        }
        let shape: Vec<usize> = (0..dims).map(|d| be(4 + 4 * d) as usize).collect();
        let expected = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n < isize::MAX as usize)
            .ok_or_else(|| Error::format(path, format!("the header's sizes {shape:?} overflow")))?;
        if !gz && len != (header.len() + expected) as u64 {
            return Err(Error::format(
                path,
                format!(
                    "the header announces {shape:?} ({} bytes) but the file has {} bytes (truncated or wrong counts)",
                    header.len() + expected,
                    len
                ),
            ));
        }
        let mut payload = Vec::new();
        reader
            .take(expected as u64 + 1)
            .read_to_end(&mut payload)
            .map_err(corrupt)?;
        if payload.len() != expected {
            let what = if payload.len() > expected {
                "more data than".to_string()
            } else {
                format!("{} payload bytes, fewer than", payload.len())
            };
            return Err(Error::format(
                path,
                format!("the file holds {what} the header announces ({shape:?}: {expected} bytes)"),
            ));
        }
        Ok((shape, payload))
    }

    /// Reads until `buf` is full or the input ends; returns the bytes read.
    fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match r.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// Reads an IDX3 image file (magic 0x00000803) into `(n, rows, cols)`.
    pub fn read_images(path: impl AsRef<Path>) -> Result<Array3<u8>> {
        let path = path.as_ref();
        images(read_idx(path, 0x0000_0803, 3)?, path)
    }

    /// Reads an IDX1 label file (magic 0x00000801).
    pub fn read_labels(path: impl AsRef<Path>) -> Result<Array1<u8>> {
        let path = path.as_ref();
        labels(read_idx(path, 0x0000_0801, 1)?, path)
    }

    /// [`read_images`] from the bytes of an IDX3 file (gzipped or plain).
    ///
    /// ```
    /// let mut idx = vec![0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2];
    /// idx.extend([0, 64, 128, 255]);
    /// let x = horn::datasets::mnist::parse_images(&idx).unwrap();
    /// assert_eq!(x.dim(), (1, 2, 2));
    /// assert!(horn::datasets::mnist::parse_images(&idx[..18]).is_err());
    /// ```
    pub fn parse_images(bytes: &[u8]) -> Result<Array3<u8>> {
        images(
            parse_idx_bytes(bytes, 0x0000_0803, 3)?,
            Path::new("<bytes>"),
        )
    }

    /// [`read_labels`] from the bytes of an IDX1 file (gzipped or plain).
    pub fn parse_labels(bytes: &[u8]) -> Result<Array1<u8>> {
        labels(
            parse_idx_bytes(bytes, 0x0000_0801, 1)?,
            Path::new("<bytes>"),
        )
    }

    fn images((s, payload): (Vec<usize>, Vec<u8>), path: &Path) -> Result<Array3<u8>> {
        Array3::from_shape_vec((s[0], s[1], s[2]), payload)
            .map_err(|e| Error::format(path, e.to_string()))
    }

    fn labels((_, payload): (Vec<usize>, Vec<u8>), path: &Path) -> Result<Array1<u8>> {
        if let Some(&bad) = payload.iter().find(|&&v| v > 9) {
            return Err(Error::format(
                path,
                format!("label {bad} is not a digit 0-9"),
            ));
        }
        Ok(Array1::from(payload))
    }
}

/// The Palmer Archipelago penguins (Gorman, Williams and Fraser 2014; data
/// CC0, from the palmerpenguins R package): 344 rows of species, island,
/// bill length and depth, flipper length, body mass, sex and year, with `NA`
/// for missing values. The table is compiled into horn (17 KB), so it loads
/// in any crate that depends on horn, with no file to find.
pub mod penguins {
    use crate::error::Result;
    use crate::preprocessing::Table;

    /// The CSV text, as published.
    pub const CSV: &str = include_str!("../data/penguins.csv");

    /// The table, `NA` as missing (R's `palmerpenguins::penguins`).
    ///
    /// ```
    /// let t = horn::datasets::penguins::load().unwrap();
    /// assert_eq!(t.nrows(), 344);
    /// assert_eq!(t.drop_na().nrows(), 333);
    /// ```
    pub fn load() -> Result<Table> {
        Table::from_csv_str(CSV)
    }
}
