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

    /// Largest expansion of a gzipped IDX file over its size on disk, as the
    /// `.keras` reader allows. The real MNIST files inflate 2 to 5 times;
    /// deflate reaches about 1000:1 on zeros, which is what a bomb uses.
    /// Below [`MIN_CAP`] bytes of payload the ratio is not applied.
    const MAX_GZIP_RATIO: u64 = 100;

    /// Payload size every gzipped IDX file may announce whatever its size
    /// (1 MiB): tiny files of zeros are not refused by the ratio.
    const MIN_CAP: u64 = 1 << 20;

    /// Reads an IDX file (gzipped or plain): the magic number, `dims` sizes,
    /// then exactly the payload the header announces. Sizes are multiplied with
    /// overflow checks; a gzipped file may announce at most
    /// [`MAX_GZIP_RATIO`] times its own size (or [`MIN_CAP`]), which is
    /// checked before anything past the header is inflated; and no more than
    /// the announced payload (plus one byte, to detect trailing data) is ever
    /// read: a gzip bomb or a device such as `/dev/zero` fails after at most
    /// that much.
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
        if gz && expected as u64 > len.saturating_mul(MAX_GZIP_RATIO).max(MIN_CAP) {
            return Err(Error::format(
                path,
                format!(
                    "the header announces {shape:?} ({expected} bytes) from {len} gzipped bytes, \
                     more than {MAX_GZIP_RATIO} times the file (a decompression bomb?)"
                ),
            ));
        }
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
        // Bounded by the file's size (times the ratio) now, so reserved at
        // once; fallibly, so that a large announced size is an error.
        let mut payload = Vec::new();
        // One byte more than announced, for the trailing-data probe below.
        payload.try_reserve_exact(expected + 1).map_err(|_| {
            Error::format(
                path,
                format!("cannot allocate {expected} bytes for the payload {shape:?}"),
            )
        })?;
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
    /// A gzipped file may announce at most 100 times its own size (or 1 MiB),
    /// as the `.keras` reader allows: more is refused before it is inflated.
    pub fn read_images(path: impl AsRef<Path>) -> Result<Array3<u8>> {
        let path = path.as_ref();
        images(read_idx(path, 0x0000_0803, 3)?, path)
    }

    /// Reads an IDX1 label file (magic 0x00000801), with the limits of
    /// [`read_images`].
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

/// NumPy `.npy` files (what Python users save arrays in), read as `f32`.
pub mod npy {
    use std::path::Path;

    use ndarray::{ArrayD, IxDyn};

    use crate::error::{Error, Result};
    use crate::files::read_file;

    /// Reads a `.npy` file (format versions 1-3, C order; float32, float64,
    /// signed and unsigned integers and bools, either byte order) as `f32`.
    pub fn read(path: impl AsRef<Path>) -> Result<ArrayD<f32>> {
        let path = path.as_ref();
        parse_at(&read_file(path)?, path)
    }

    /// [`read`] from a file's bytes, checked as untrusted input: the shape
    /// must account for exactly the bytes that follow the header.
    ///
    /// ```
    /// // np.save of np.array([[1, 2], [3, 4]], dtype=np.float32)
    /// let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }";
    /// let mut b = b"\x93NUMPY\x01\x00".to_vec();
    /// let padded = format!("{header:<117}\n");
    /// b.extend((padded.len() as u16).to_le_bytes());
    /// b.extend(padded.as_bytes());
    /// for v in [1.0f32, 2.0, 3.0, 4.0] { b.extend(v.to_le_bytes()); }
    /// let a = horn::datasets::npy::parse(&b).unwrap();
    /// assert_eq!(a.shape(), &[2, 2]);
    /// assert_eq!(a[[1, 0]], 3.0);
    /// assert!(horn::datasets::npy::parse(&b[..b.len() - 1]).is_err());
    /// ```
    pub fn parse(bytes: &[u8]) -> Result<ArrayD<f32>> {
        parse_at(bytes, Path::new("<bytes>"))
    }

    fn parse_at(bytes: &[u8], path: &Path) -> Result<ArrayD<f32>> {
        let bad = |why: &str| Error::format(path, format!("not a readable .npy file: {why}"));
        if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
            return Err(bad("no NUMPY magic"));
        }
        let (len, start): (usize, usize) = match bytes[6] {
            1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
            2 | 3 if bytes.len() >= 12 => (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            ),
            _ => return Err(bad("unknown format version")),
        };
        let header = bytes
            .get(start..start.saturating_add(len))
            .and_then(|h| std::str::from_utf8(h).ok())
            .ok_or_else(|| bad("truncated header"))?;
        let value = |key: &str| -> Option<&str> {
            let at = header.find(&format!("'{key}'"))? + key.len() + 2;
            let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
            Some(rest)
        };
        let descr = value("descr")
            .and_then(|r| r.strip_prefix('\''))
            .and_then(|r| r.split('\'').next())
            .ok_or_else(|| bad("no descr"))?;
        if value("fortran_order").is_some_and(|r| r.starts_with("True")) {
            return Err(bad(
                "Fortran order (save a C-ordered array: np.ascontiguousarray)",
            ));
        }
        let shape_text = value("shape")
            .and_then(|r| r.strip_prefix('('))
            .and_then(|r| r.split(')').next())
            .ok_or_else(|| bad("no shape"))?;
        let shape: Vec<usize> = shape_text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<usize>()
                    .map_err(|_| bad("a non-integer dimension"))
            })
            .collect::<Result<_>>()?;
        let count = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| bad("a shape too large"))?;
        let data = &bytes[start + len..];
        let (little, kind, size) = {
            let mut c = descr.chars();
            let order = c.next().unwrap_or('?');
            let kind = c.next().unwrap_or('?');
            let size: usize = c.as_str().parse().map_err(|_| bad("unknown dtype"))?;
            (order != '>', kind, size)
        };
        if count.checked_mul(size) != Some(data.len()) {
            return Err(bad(&format!(
                "shape {shape:?} of {descr} needs {} bytes, the file has {}",
                count.saturating_mul(size),
                data.len()
            )));
        }
        let word = |chunk: &[u8]| -> [u8; 8] {
            let mut w = [0u8; 8];
            if little {
                w[..chunk.len()].copy_from_slice(chunk);
            } else {
                for (i, &b) in chunk.iter().rev().enumerate() {
                    w[i] = b;
                }
            }
            w
        };
        let sign_extend = |w: [u8; 8], size: usize| -> i64 {
            let v = u64::from_le_bytes(w);
            let shift = 64 - 8 * size as u32;
            ((v << shift) as i64) >> shift
        };
        let values: Vec<f32> = match (kind, size) {
            ('f', 4) => data
                .chunks_exact(4)
                .map(|c| {
                    let w = word(c);
                    f32::from_le_bytes([w[0], w[1], w[2], w[3]])
                })
                .collect(),
            ('f', 8) => data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(word(c)) as f32)
                .collect(),
            ('i', 1 | 2 | 4 | 8) => data
                .chunks_exact(size)
                .map(|c| sign_extend(word(c), size) as f32)
                .collect(),
            ('u' | 'b', 1 | 2 | 4 | 8) => data
                .chunks_exact(size)
                .map(|c| u64::from_le_bytes(word(c)) as f32)
                .collect(),
            _ => {
                return Err(bad(&format!(
                    "dtype {descr} (horn reads floats, integers and bools)"
                )))
            }
        };
        ArrayD::from_shape_vec(IxDyn(&shape), values).map_err(|e| bad(&e.to_string()))
    }
}
