//! Pictures of the data: images from tensors as PNG files or in the
//! terminal, and labelled grids of them (the "which digits did the model get
//! wrong" picture).
//!
//! PNG files are written with the `flate2` compressor horn already uses for
//! MNIST's gzip files (no image crate in the default build); terminals get
//! Unicode half blocks with 24-bit colour, which every modern terminal shows.

use std::fmt::Write as _;
use std::path::Path;

use ndarray::{ArrayView, Axis, Dimension, IxDyn};

use crate::error::{Error, Result};
use crate::files::write_atomic;

/// An RGB image, 8 bits per channel, row-major.
///
/// ```
/// use horn::pictures::Image;
/// // A 28x28 "digit": a bright bar on black, values in [0, 1].
/// let x = ndarray::Array2::<f32>::from_shape_fn((28, 28), |(r, c)| (c > 12 && c < 16) as u8 as f32);
/// let img = Image::from_array(&x).unwrap().scaled(2);
/// assert_eq!((img.width(), img.height()), (56, 56));
/// let png = img.to_png().unwrap();
/// assert_eq!(&png[1..4], b"PNG");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

/// Largest side of an image horn draws (a guard against absurd scales).
const MAX_SIDE: usize = 1 << 14;

impl Image {
    /// A `width x height` image of one colour.
    pub fn filled(width: usize, height: usize, colour: [u8; 3]) -> Result<Image> {
        if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
            return Err(Error::arg(
                "image size",
                format!("sides in 1..={MAX_SIDE}"),
                format!("{width}x{height}"),
            ));
        }
        Ok(Image {
            width,
            height,
            rgb: colour.repeat(width * height),
        })
    }

    /// An image from an array of shape `(h, w)` or `(h, w, 1)` (grey) or
    /// `(h, w, 3)` (RGB). Values in `[0, 1]` (scaled pixels) map to 0..255;
    /// any other range (raw 0..255 bytes, standardized values) is stretched
    /// from its minimum to its maximum. NaN is drawn red, so it shows.
    pub fn from_array<'a, D: Dimension>(a: impl Into<ArrayView<'a, f32, D>>) -> Result<Image> {
        let a: ArrayView<'a, f32, IxDyn> = a.into().into_dyn();
        let (h, w, c) = match a.shape() {
            [h, w] => (*h, *w, 1),
            [h, w, c] if *c == 1 || *c == 3 => (*h, *w, *c),
            s => {
                return Err(Error::shape(
                    "image",
                    "(height, width), (height, width, 1) or (height, width, 3)",
                    format!("{s:?}"),
                ))
            }
        };
        let mut img = Image::filled(w, h, [0, 0, 0])?;
        let finite = a.iter().copied().filter(|v| v.is_finite());
        let (lo, hi) = finite.fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), v| {
            (l.min(v), h.max(v))
        });
        let (lo, hi) = if lo >= 0.0 && hi <= 1.0 {
            (0.0, 1.0)
        } else if hi > lo {
            (lo, hi)
        } else {
            (lo, lo + 1.0)
        };
        let byte = |v: f32| (((v - lo) / (hi - lo)).clamp(0.0, 1.0) * 255.0).round() as u8;
        // One copy in row order (images are small), as (h, w, c).
        let a3 = a
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order(IxDyn(&[h, w, c]))
            .map_err(|e| Error::shape("image", format!("({h}, {w}, {c})"), e.to_string()))?;
        for r in 0..h {
            for col in 0..w {
                let px = &mut img.rgb[(r * w + col) * 3..][..3];
                let vals: [f32; 3] = if c == 1 {
                    [a3[[r, col, 0]]; 3]
                } else {
                    [a3[[r, col, 0]], a3[[r, col, 1]], a3[[r, col, 2]]]
                };
                if vals.iter().any(|v| v.is_nan()) {
                    px.copy_from_slice(&[255, 0, 0]);
                } else {
                    for (o, v) in px.iter_mut().zip(vals) {
                        *o = byte(v);
                    }
                }
            }
        }
        Ok(img)
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The colour at `(x, y)`.
    pub fn pixel(&self, x: usize, y: usize) -> Option<[u8; 3]> {
        (x < self.width && y < self.height).then(|| {
            let p = &self.rgb[(y * self.width + x) * 3..][..3];
            [p[0], p[1], p[2]]
        })
    }

    /// Each pixel as a `factor x factor` block (a 28x28 digit at 4 is
    /// 112x112); the factor is capped so that no side exceeds 16384.
    pub fn scaled(&self, factor: usize) -> Image {
        let f = factor
            .clamp(1, MAX_SIDE / self.width.max(self.height).max(1))
            .max(1);
        let (w, h) = (self.width * f, self.height * f);
        let mut rgb = vec![0u8; w * h * 3];
        for y in 0..h {
            for x in 0..w {
                let src = ((y / f) * self.width + x / f) * 3;
                rgb[(y * w + x) * 3..][..3].copy_from_slice(&self.rgb[src..src + 3]);
            }
        }
        Image {
            width: w,
            height: h,
            rgb,
        }
    }

    /// Sets one pixel (outside the image: nothing).
    pub(crate) fn set_pixel(&mut self, x: usize, y: usize, colour: [u8; 3]) {
        if x < self.width && y < self.height {
            self.rgb[(y * self.width + x) * 3..][..3].copy_from_slice(&colour);
        }
    }

    /// Fills a rectangle (clipped).
    pub(crate) fn fill_rect(&mut self, x: usize, y: usize, w: usize, h: usize, colour: [u8; 3]) {
        for py in y..(y + h).min(self.height) {
            for px in x..(x + w).min(self.width) {
                self.rgb[(py * self.width + px) * 3..][..3].copy_from_slice(&colour);
            }
        }
    }

    /// Copies `other` with its top-left corner at `(x, y)` (clipped).
    fn paste(&mut self, other: &Image, x: usize, y: usize) {
        for r in 0..other.height.min(self.height.saturating_sub(y)) {
            let n = other.width.min(self.width.saturating_sub(x)) * 3;
            let dst = ((y + r) * self.width + x) * 3;
            let src = r * other.width * 3;
            self.rgb[dst..dst + n].copy_from_slice(&other.rgb[src..src + n]);
        }
    }

    /// Draws `text` (digits, letters, a few signs) with the built-in 3x5
    /// font, each font pixel `size x size`, top-left at `(x, y)`.
    pub(crate) fn draw_text(
        &mut self,
        text: &str,
        x: usize,
        y: usize,
        size: usize,
        colour: [u8; 3],
    ) {
        for (k, ch) in text.chars().enumerate() {
            let glyph = glyph(ch);
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..3 {
                    if bits & (0b100 >> col) == 0 {
                        continue;
                    }
                    for dy in 0..size {
                        for dx in 0..size {
                            let (px, py) = (x + (k * 4 + col) * size + dx, y + row * size + dy);
                            if px < self.width && py < self.height {
                                self.rgb[(py * self.width + px) * 3..][..3]
                                    .copy_from_slice(&colour);
                            }
                        }
                    }
                }
            }
        }
    }

    /// The image as PNG file bytes (8-bit RGB, zlib-compressed).
    pub fn to_png(&self) -> Result<Vec<u8>> {
        use flate2::write::ZlibEncoder;
        use std::io::Write;
        let mut raw = Vec::with_capacity((self.width * 3 + 1) * self.height);
        for row in self.rgb.chunks_exact(self.width * 3) {
            raw.push(0); // filter: none
            raw.extend_from_slice(row);
        }
        let mut z = ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&raw)
            .and_then(|_| z.finish())
            .map_err(|e| Error::Io {
                path: "<png>".into(),
                source: e,
            })
            .map(|idat| {
                let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
                let mut ihdr = Vec::with_capacity(13);
                ihdr.extend_from_slice(&(self.width as u32).to_be_bytes());
                ihdr.extend_from_slice(&(self.height as u32).to_be_bytes());
                ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8 bits, RGB
                chunk(&mut png, b"IHDR", &ihdr);
                chunk(&mut png, b"IDAT", &idat);
                chunk(&mut png, b"IEND", &[]);
                png
            })
    }

    /// Writes the image as a PNG file (atomically).
    pub fn save_png(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomic(path.as_ref(), &self.to_png()?)
    }

    /// The image for a terminal: two pixel rows per text line with Unicode
    /// upper half blocks and 24-bit colours (foreground the upper pixel,
    /// background the lower), each line ending with a colour reset.
    pub fn to_terminal(&self) -> String {
        let mut s = String::new();
        for y in (0..self.height).step_by(2) {
            for x in 0..self.width {
                let [r, g, b] = self.pixel(x, y).unwrap_or([0, 0, 0]);
                let [r2, g2, b2] = self.pixel(x, y + 1).unwrap_or([0, 0, 0]);
                let _ = write!(s, "\x1b[38;2;{r};{g};{b}m\x1b[48;2;{r2};{g2};{b2}m\u{2580}");
            }
            s.push_str("\x1b[0m\n");
        }
        s
    }
}

/// Appends a PNG chunk: length, type, data, CRC-32 of type and data.
fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.sum().to_be_bytes());
}

/// 3x5 glyphs, one byte per row (bit 2 the left column).
fn glyph(c: char) -> [u8; 5] {
    match c.to_ascii_lowercase() {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 3, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 2, 2, 2],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        ':' => [0, 2, 0, 2, 0],
        '-' => [0, 0, 7, 0, 0],
        '_' => [0, 0, 0, 0, 7],
        '+' => [0, 2, 7, 2, 0],
        '/' => [1, 1, 2, 4, 4],
        '.' => [0, 0, 0, 0, 2],
        '?' => [7, 1, 2, 0, 2],
        ' ' => [0; 5],
        'a' => [2, 5, 7, 5, 5],
        'b' => [6, 5, 6, 5, 6],
        'c' => [3, 4, 4, 4, 3],
        'd' => [6, 5, 5, 5, 6],
        'e' => [7, 4, 6, 4, 7],
        'f' => [7, 4, 6, 4, 4],
        'g' => [3, 4, 5, 5, 3],
        'h' => [5, 5, 7, 5, 5],
        'i' => [7, 2, 2, 2, 7],
        'j' => [1, 1, 1, 5, 2],
        'k' => [5, 5, 6, 5, 5],
        'l' => [4, 4, 4, 4, 7],
        'm' => [5, 7, 7, 5, 5],
        'n' => [6, 5, 5, 5, 5],
        'o' => [2, 5, 5, 5, 2],
        'p' => [6, 5, 6, 4, 4],
        'q' => [2, 5, 5, 6, 3],
        'r' => [6, 5, 6, 5, 5],
        's' => [3, 4, 2, 1, 6],
        't' => [7, 2, 2, 2, 2],
        'u' => [5, 5, 5, 5, 7],
        'v' => [5, 5, 5, 5, 2],
        'w' => [5, 5, 7, 7, 5],
        'x' => [5, 5, 2, 5, 5],
        'y' => [5, 5, 2, 2, 2],
        'z' => [7, 1, 2, 4, 7],
        _ => [7, 7, 7, 7, 7],
    }
}

/// A grid of images with their labels, and predicted labels where given:
/// a right prediction is printed in green, a wrong one in red (the classic
/// "which digits did the model get wrong" picture).
///
/// ```
/// use horn::pictures::ImageGrid;
/// let images = ndarray::Array3::<f32>::from_shape_fn((6, 28, 28), |(i, r, c)| ((r + c + i) % 28) as f32 / 27.0);
/// let grid = ImageGrid::new(images.view())
///     .labels(&[7, 2, 1, 0, 4, 1])
///     .predicted(&[7, 2, 1, 0, 9, 1])
///     .columns(3)
///     .scale(2)
///     .render()
///     .unwrap();
/// assert_eq!(grid.width(), 3 * (56 + 8) + 8);
/// ```
#[derive(Debug, Clone)]
pub struct ImageGrid<'a> {
    images: ArrayView<'a, f32, IxDyn>,
    labels: Vec<String>,
    predicted: Vec<String>,
    columns: usize,
    scale: usize,
}

impl<'a> ImageGrid<'a> {
    /// A grid of the images along the first axis of `images`:
    /// `(n, h, w)`, `(n, h, w, 1)` or `(n, h, w, 3)` (MNIST's
    /// `images_scaled()` works as it is). Defaults: 8 columns, scale 3.
    pub fn new<D: Dimension>(images: impl Into<ArrayView<'a, f32, D>>) -> Self {
        ImageGrid {
            images: images.into().into_dyn(),
            labels: Vec::new(),
            predicted: Vec::new(),
            columns: 8,
            scale: 3,
        }
    }

    /// The true label of each image.
    pub fn labels<L: ToString>(mut self, labels: &[L]) -> Self {
        self.labels = labels.iter().map(L::to_string).collect();
        self
    }

    /// The predicted label of each image (green when it equals the label,
    /// red otherwise).
    pub fn predicted<L: ToString>(mut self, predicted: &[L]) -> Self {
        self.predicted = predicted.iter().map(L::to_string).collect();
        self
    }

    /// Images per row.
    pub fn columns(mut self, columns: usize) -> Self {
        self.columns = columns.max(1);
        self
    }

    /// Each pixel as a `scale x scale` block.
    pub fn scale(mut self, scale: usize) -> Self {
        self.scale = scale.max(1);
        self
    }

    /// Draws the grid.
    pub fn render(&self) -> Result<Image> {
        let n = self.images.shape().first().copied().unwrap_or(0);
        if n == 0 {
            return Err(Error::Empty {
                name: "images".into(),
            });
        }
        for (what, v) in [("labels", &self.labels), ("predicted", &self.predicted)] {
            if !v.is_empty() && v.len() != n {
                return Err(Error::shape(
                    format!("`{what}`"),
                    format!("one per image ({n})"),
                    format!("{} values", v.len()),
                ));
            }
        }
        let tiles: Vec<Image> = self
            .images
            .axis_iter(Axis(0))
            .map(|a| Image::from_array(a).map(|i| i.scaled(self.scale)))
            .collect::<Result<_>>()?;
        let (tw, th) = (tiles[0].width(), tiles[0].height());
        let (pad, font) = (8usize, 2usize);
        let text_h = if self.labels.is_empty() && self.predicted.is_empty() {
            0
        } else {
            5 * font + 6
        };
        let cols = self.columns.min(n);
        let rows = n.div_ceil(cols);
        let mut grid = Image::filled(
            cols * (tw + pad) + pad,
            rows * (th + text_h + pad) + pad,
            [255, 255, 255],
        )?;
        for (k, tile) in tiles.iter().enumerate() {
            let (x, y) = (
                pad + (k % cols) * (tw + pad),
                pad + (k / cols) * (th + text_h + pad),
            );
            grid.paste(tile, x, y);
            let ty = y + th + 4;
            let mut tx = x;
            if let Some(l) = self.labels.get(k) {
                grid.draw_text(l, tx, ty, font, [0, 0, 0]);
                tx += (l.chars().count() * 4 + 2) * font;
            }
            if let Some(p) = self.predicted.get(k) {
                let right = self.labels.get(k).is_none_or(|l| l == p);
                let colour = if right { [0, 140, 0] } else { [220, 0, 0] };
                grid.draw_text(p, tx, ty, font, colour);
            }
        }
        Ok(grid)
    }
}

/// See [`ConfusionMatrix::to_image`](crate::metrics::ConfusionMatrix::to_image).
pub(crate) fn confusion_image(cm: &crate::metrics::ConfusionMatrix) -> Result<Image> {
    let counts = cm.counts();
    let k = counts.nrows();
    let labels = cm.labels();
    let font = 2usize;
    let widest = counts
        .iter()
        .map(|c| c.to_string().len())
        .max()
        .unwrap_or(1);
    let label_w = labels.iter().map(|l| l.chars().count()).max().unwrap_or(1);
    let cell = ((widest.max(label_w) * 4 + 4) * font).max(30);
    let (left, top) = ((label_w * 4 + 3) * font + 6, 5 * font + 12);
    let mut img = Image::filled(left + k * cell + 4, top + k * cell + 4, [255, 255, 255])?;
    for (i, l) in labels.iter().enumerate() {
        img.draw_text(l, 4, top + i * cell + cell / 2 - 5, font, [0, 0, 0]);
        img.draw_text(l, left + i * cell + 4, 6, font, [0, 0, 0]);
    }
    for i in 0..k {
        let row_total: usize = counts.row(i).sum();
        for j in 0..k {
            let c = counts[[i, j]];
            let share = if row_total > 0 {
                c as f32 / row_total as f32
            } else {
                0.0
            };
            // White to a dark blue.
            let shade = |full: f32| (255.0 - share * (255.0 - full)).round() as u8;
            let colour = [shade(8.0), shade(48.0), shade(107.0)];
            let tile = Image::filled(cell - 2, cell - 2, colour)?;
            let (x, y) = (left + j * cell, top + i * cell);
            img.paste(&tile, x, y);
            let ink = if share > 0.5 {
                [255, 255, 255]
            } else {
                [0, 0, 0]
            };
            img.draw_text(&c.to_string(), x + 3, y + cell / 2 - 5, font, ink);
        }
    }
    Ok(img)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_bytes_have_valid_chunks() {
        let img = Image::filled(3, 2, [10, 20, 30]).unwrap();
        let png = img.to_png().unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 3);
        assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), 2);
        assert!(png.ends_with(&[0xAE, 0x42, 0x60, 0x82]), "IEND's CRC");
    }

    #[test]
    fn values_map_to_bytes() {
        let a = ndarray::array![[0.0f32, 0.5], [1.0, f32::NAN]];
        let img = Image::from_array(&a).unwrap();
        assert_eq!(img.pixel(0, 0), Some([0, 0, 0]));
        assert_eq!(img.pixel(1, 0), Some([128, 128, 128]));
        assert_eq!(img.pixel(0, 1), Some([255, 255, 255]));
        assert_eq!(img.pixel(1, 1), Some([255, 0, 0]));
        // Raw bytes are stretched from their range.
        let b = ndarray::array![[0.0f32, 255.0]];
        assert_eq!(Image::from_array(&b).unwrap().pixel(1, 0), Some([255; 3]));
        assert!(Image::from_array(&ndarray::Array3::<f32>::zeros((2, 2, 2))).is_err());
    }
}
