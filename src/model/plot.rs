//! `History::to_svg`: R's `plot(history)` as a dependency-free SVG.
//!
//! One panel per metric (loss first), stacked, with the epoch on the x axis and
//! the training and validation series side by side in ggplot2's two default
//! colours. Each series is a `<polyline class="series">` with `data-metric` and
//! `data-split` attributes, so tools (and tests) can find them.

use std::fmt::Write as _;
use std::path::Path;

use super::history::History;
use crate::error::{Error, Result};
use crate::pictures::Image;

const WIDTH: f64 = 640.0;
const PANEL_H: f64 = 200.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 120.0;
const TOP: f64 = 28.0;
const GAP: f64 = 44.0;
const TRAIN_COLOUR: &str = "#F8766D";
const VAL_COLOUR: &str = "#00BFC4";
const PANEL_FILL: &str = "#EBEBEB";

/// Up to about six round tick values covering `[lo, hi]` (steps of 1, 2 or 5 x 10^k).
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil();
    let last = (hi / step + 1e-9).floor();
    (first as i64..=last as i64)
        .map(|i| i as f64 * step)
        .collect()
}

/// A tick label: plain for everyday magnitudes, scientific (`1.8e7`) for
/// large or tiny ones, as R prints an axis of raw values like 18000000.
fn label(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e5 || v.abs() < 1e-3) {
        return format!("{v:e}");
    }
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Epoch ticks: every epoch up to 10 of them, else round steps plus the first.
fn epoch_ticks(first: f64, last: f64) -> Vec<f64> {
    if last - first < 10.0 {
        return (first as i64..=last as i64).map(|e| e as f64).collect();
    }
    let mut t: Vec<f64> = ticks(first, last)
        .into_iter()
        .filter(|t| t.fract() == 0.0 && *t > first)
        .collect();
    // The first epoch gets its tick unless a round one sits right beside it.
    if t.first()
        .is_none_or(|&x| (x - first) / (last - first) > 0.04)
    {
        t.insert(0, first);
    }
    t
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Where a text's x coordinate sits.
#[derive(Clone, Copy)]
enum Anchor {
    Start,
    Middle,
    End,
}

/// What the History picture is drawn with (coordinates in SVG units, one
/// pixel each in the image).
trait Canvas {
    fn begin(&mut self, width: f64, height: f64);
    /// A panel's background `[x, y, w, h]`, and its group in the SVG.
    fn begin_panel(&mut self, metric: &str, rect: [f64; 4]);
    fn end_panel(&mut self);
    fn line(&mut self, class: &str, xy: [f64; 4], colour: &str, width: f64);
    fn text(&mut self, x: f64, y: f64, text: &str, anchor: Anchor, bold: bool);
    /// One series' line and points.
    fn series(&mut self, metric: &str, split: &str, pts: &[(f64, f64)], colour: &str);
    fn end(&mut self);
}

struct SvgCanvas(String);

impl Canvas for SvgCanvas {
    fn begin(&mut self, width: f64, height: f64) {
        let _ = write!(
            self.0,
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="white"/>"##
        );
    }
    fn begin_panel(&mut self, metric: &str, [x, y, w, h]: [f64; 4]) {
        let _ = write!(
            self.0,
            r##"<g class="panel" data-metric="{m}"><rect x="{x}" y="{y}" width="{w}" height="{h}" fill="{PANEL_FILL}"/>"##,
            m = escape(metric)
        );
    }
    fn end_panel(&mut self) {
        self.0.push_str("</g>");
    }
    fn line(&mut self, class: &str, [x1, y1, x2, y2]: [f64; 4], colour: &str, width: f64) {
        let _ = write!(
            self.0,
            r##"<line class="{class}" x1="{x1:.2}" x2="{x2:.2}" y1="{y1:.2}" y2="{y2:.2}" stroke="{colour}" stroke-width="{width}"/>"##
        );
    }
    fn text(&mut self, x: f64, y: f64, text: &str, anchor: Anchor, bold: bool) {
        let anchor = match anchor {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
            Anchor::End => "end",
        };
        let weight = if bold {
            r##" font-size="13" font-weight="bold""##
        } else {
            ""
        };
        let _ = write!(
            self.0,
            r##"<text x="{x:.2}" y="{y:.2}" text-anchor="{anchor}"{weight}>{}</text>"##,
            escape(text)
        );
    }
    fn series(&mut self, metric: &str, split: &str, pts: &[(f64, f64)], colour: &str) {
        let path: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.2},{y:.2}")).collect();
        let _ = write!(
            self.0,
            r##"<polyline class="series" data-metric="{m}" data-split="{split}" points="{}" fill="none" stroke="{colour}" stroke-width="1.5"/>"##,
            path.join(" "),
            m = escape(metric)
        );
        for (x, y) in pts {
            let _ = write!(
                self.0,
                r##"<circle cx="{x:.2}" cy="{y:.2}" r="2.5" fill="{colour}"/>"##
            );
        }
    }
    fn end(&mut self) {
        self.0.push_str("</svg>\n");
    }
}

/// The raster canvas: lines stamped along their length, text in horn's
/// 3x5 pixel font at twice its size.
struct RasterCanvas(Image);

/// `#RRGGBB` (or `white`) to RGB.
fn rgb(colour: &str) -> [u8; 3] {
    let hex = |i: usize| u8::from_str_radix(colour.get(i..i + 2).unwrap_or("00"), 16).unwrap_or(0);
    if colour == "white" {
        [255, 255, 255]
    } else {
        [hex(1), hex(3), hex(5)]
    }
}

impl RasterCanvas {
    fn dot(&mut self, x: f64, y: f64, r: f64, colour: [u8; 3]) {
        let (x0, x1) = (
            (x - r).floor().max(0.0) as usize,
            (x + r).ceil().max(0.0) as usize,
        );
        let (y0, y1) = (
            (y - r).floor().max(0.0) as usize,
            (y + r).ceil().max(0.0) as usize,
        );
        for py in y0..=y1 {
            for px in x0..=x1 {
                let (dx, dy) = (px as f64 - x, py as f64 - y);
                if dx * dx + dy * dy <= r * r + 0.25 {
                    self.0.set_pixel(px, py, colour);
                }
            }
        }
    }
}

impl Canvas for RasterCanvas {
    fn begin(&mut self, width: f64, height: f64) {
        // Sizes come from the constants above: small and positive.
        if let Ok(img) = Image::filled(width as usize, height as usize, [255, 255, 255]) {
            self.0 = img;
        }
    }
    fn begin_panel(&mut self, _metric: &str, [x, y, w, h]: [f64; 4]) {
        self.0.fill_rect(
            x as usize,
            y as usize,
            w as usize,
            h as usize,
            rgb(PANEL_FILL),
        );
    }
    fn end_panel(&mut self) {}
    fn line(&mut self, _class: &str, [x1, y1, x2, y2]: [f64; 4], colour: &str, width: f64) {
        let steps = ((x2 - x1).abs().max((y2 - y1).abs()) * 2.0).ceil().max(1.0) as usize;
        let c = rgb(colour);
        for i in 0..=steps {
            let t = i as f64 / steps as f64;
            self.dot(x1 + (x2 - x1) * t, y1 + (y2 - y1) * t, width / 2.0, c);
        }
    }
    fn text(&mut self, x: f64, y: f64, text: &str, anchor: Anchor, bold: bool) {
        let size = if bold { 3 } else { 2 };
        let w = (text.chars().count() * 4).saturating_sub(1) * size;
        let left = match anchor {
            Anchor::Start => x,
            Anchor::Middle => x - w as f64 / 2.0,
            Anchor::End => x - w as f64,
        };
        // SVG puts the baseline at y; the pixel font hangs from its top.
        let top = y - (5 * size) as f64;
        self.0.draw_text(
            text,
            left.max(0.0) as usize,
            top.max(0.0) as usize,
            size,
            [40, 40, 40],
        );
    }
    fn series(&mut self, _metric: &str, _split: &str, pts: &[(f64, f64)], colour: &str) {
        for w in pts.windows(2) {
            self.line("", [w[0].0, w[0].1, w[1].0, w[1].1], colour, 1.5);
        }
        for &(x, y) in pts {
            self.dot(x, y, 2.5, rgb(colour));
        }
    }
    fn end(&mut self) {}
}

impl History {
    /// The metrics plotted by [`History::to_svg`]: every key that is not a
    /// `val_` twin or the learning rate, in History order.
    pub fn plotted_metrics(&self) -> Vec<&str> {
        self.keys()
            .filter(|k| !k.starts_with("val_") && *k != "lr")
            .collect()
    }

    /// An SVG plot of every metric against the epoch, training and validation
    /// in one panel per metric, as R's `plot(history)` draws it.
    ///
    /// ```
    /// use horn::{History, Logs};
    /// let mut h = History::default();
    /// for (e, (l, v)) in [(0.9, 1.0), (0.5, 0.7), (0.3, 0.6)].into_iter().enumerate() {
    ///     let mut logs = Logs::default();
    ///     logs.insert("loss", l);
    ///     logs.insert("val_loss", v);
    ///     h.push(e, &logs);
    /// }
    /// let svg = h.to_svg();
    /// assert!(svg.starts_with("<svg") && svg.contains("data-split=\"validation\""));
    /// ```
    pub fn to_svg(&self) -> String {
        let mut svg = SvgCanvas(String::new());
        self.draw(&mut svg);
        svg.0
    }

    /// The same picture as [`History::to_svg`] as an image (labels in horn's
    /// pixel font): [`Image::save_png`](crate::pictures::Image::save_png)
    /// writes it as PNG.
    ///
    /// ```
    /// use horn::{History, Logs};
    /// let mut h = History::default();
    /// for (e, l) in [0.9f32, 0.5, 0.3].into_iter().enumerate() {
    ///     let mut logs = Logs::default();
    ///     logs.insert("loss", l);
    ///     h.push(e, &logs);
    /// }
    /// let img = h.to_image().unwrap();
    /// assert_eq!(img.width(), 640);
    /// ```
    pub fn to_image(&self) -> Result<Image> {
        let mut raster = RasterCanvas(Image::filled(1, 1, [255, 255, 255])?);
        self.draw(&mut raster);
        Ok(raster.0)
    }

    /// Writes [`History::to_image`] as a PNG file.
    pub fn write_png(&self, path: impl AsRef<Path>) -> Result<()> {
        self.to_image()?.save_png(path)
    }

    /// The picture, drawn on either canvas: one code path for SVG and PNG.
    fn draw(&self, c: &mut dyn Canvas) {
        let metrics = self.plotted_metrics();
        let panels = metrics.len().max(1) as f64;
        let height = TOP + panels * (PANEL_H + GAP);
        let plot_w = WIDTH - LEFT - RIGHT;
        c.begin(WIDTH, height);
        let epochs: Vec<f64> = self.epoch.iter().map(|&e| (e + 1) as f64).collect();
        let (x_lo, x_hi) = match (epochs.first(), epochs.last()) {
            (Some(&a), Some(&b)) if b > a => (a, b),
            (Some(&a), _) => (a - 0.5, a + 0.5),
            _ => (0.0, 1.0),
        };
        // A little room on both sides, so the first and last points sit inside
        // the panel rather than on its border (ggplot2 expands by 5%).
        let x_pad = (x_hi - x_lo) * 0.04;
        let x_of = |e: f64| LEFT + (e - x_lo + x_pad) / (x_hi - x_lo + 2.0 * x_pad) * plot_w;
        for (p, metric) in metrics.iter().enumerate() {
            let top = TOP + p as f64 * (PANEL_H + GAP);
            let mut series = vec![("training", TRAIN_COLOUR, self.get(metric).unwrap_or(&[]))];
            let val_key = format!("val_{metric}");
            if let Some(v) = self.get(&val_key) {
                series.push(("validation", VAL_COLOUR, v));
            }
            let finite = series
                .iter()
                .flat_map(|(_, _, v)| v.iter())
                .filter(|v| v.is_finite())
                .map(|&v| v as f64);
            let (mut lo, mut hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(v), b.max(v))
            });
            if !lo.is_finite() {
                (lo, hi) = (0.0, 1.0);
            }
            if hi - lo < 1e-9 {
                lo -= 0.5;
                hi += 0.5;
            }
            let pad = (hi - lo) * 0.05;
            let (lo, hi) = (lo - pad, hi + pad);
            let y_of = |v: f64| top + PANEL_H - (v - lo) / (hi - lo) * PANEL_H;
            c.begin_panel(metric, [LEFT, top, plot_w, PANEL_H]);
            c.text(LEFT, top - 8.0, metric, Anchor::Start, true);
            for t in ticks(lo, hi) {
                let y = y_of(t);
                c.line("ytick", [LEFT, y, LEFT + plot_w, y], "white", 1.0);
                c.text(LEFT - 6.0, y + 4.0, &label(t), Anchor::End, false);
            }
            let (e_first, e_last) = (
                epochs.first().copied().unwrap_or(1.0),
                epochs.last().copied().unwrap_or(1.0),
            );
            for t in epoch_ticks(e_first, e_last) {
                let x = x_of(t);
                c.line("xtick", [x, top, x, top + PANEL_H], "white", 1.0);
                c.text(x, top + PANEL_H + 14.0, &label(t), Anchor::Middle, false);
            }
            c.text(
                LEFT + plot_w / 2.0,
                top + PANEL_H + 30.0,
                "epoch",
                Anchor::Middle,
                false,
            );
            for (k, (split, colour, values)) in series.iter().enumerate() {
                let pts: Vec<(f64, f64)> = epochs
                    .iter()
                    .zip(values.iter())
                    .filter(|(_, v)| v.is_finite())
                    .map(|(&e, &v)| (x_of(e), y_of(v as f64)))
                    .collect();
                c.series(metric, split, &pts, colour);
                // One legend, beside the first panel (the colours are shared).
                if p > 0 {
                    continue;
                }
                let ly = top + 20.0 + k as f64 * 18.0;
                let lx = LEFT + plot_w + 12.0;
                c.line("legend", [lx, ly, lx + 18.0, ly], colour, 2.0);
                c.text(lx + 24.0, ly + 4.0, split, Anchor::Start, false);
            }
            c.end_panel();
        }
        c.end();
    }

    /// Writes [`History::to_svg`] to a file.
    pub fn write_svg(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        std::fs::write(path, self.to_svg()).map_err(|e| Error::io(path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::{epoch_ticks, label, ticks};

    #[test]
    fn ticks_are_round() {
        let labels = |lo, hi| ticks(lo, hi).into_iter().map(label).collect::<Vec<_>>();
        assert_eq!(labels(0.0, 1.0), ["0", "0.2", "0.4", "0.6", "0.8", "1"]);
        assert_eq!(labels(1.0, 10.0), ["2", "4", "6", "8", "10"]);
        assert_eq!(labels(0.083, 0.31), ["0.1", "0.15", "0.2", "0.25", "0.3"]);
        assert_eq!(label(18_000_000.0), "1.8e7");
        assert_eq!(label(0.0002), "2e-4");
        assert_eq!(label(25_000.0), "25000");
    }

    #[test]
    fn epoch_one_has_a_tick() {
        assert_eq!(epoch_ticks(1.0, 6.0), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(
            epoch_ticks(1.0, 30.0),
            [1.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0]
        );
        assert_eq!(epoch_ticks(1.0, 1.0), [1.0]);
    }
}
