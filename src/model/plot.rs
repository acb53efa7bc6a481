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

const WIDTH: f64 = 640.0;
const PANEL_H: f64 = 200.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 120.0;
const TOP: f64 = 28.0;
const GAP: f64 = 44.0;
const TRAIN_COLOUR: &str = "#F8766D";
const VAL_COLOUR: &str = "#00BFC4";

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
        let metrics = self.plotted_metrics();
        let panels = metrics.len().max(1) as f64;
        let height = TOP + panels * (PANEL_H + GAP);
        let plot_w = WIDTH - LEFT - RIGHT;
        let mut s = String::new();
        let _ = write!(
            s,
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">"##
        );
        let _ = write!(s, r##"<rect width="100%" height="100%" fill="white"/>"##);
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
            let _ = write!(
                s,
                r##"<g class="panel" data-metric="{m}"><rect x="{LEFT}" y="{top}" width="{plot_w}" height="{PANEL_H}" fill="#EBEBEB"/>"##,
                m = escape(metric)
            );
            let _ = write!(
                s,
                r##"<text x="{}" y="{}" font-size="13" font-weight="bold">{}</text>"##,
                LEFT,
                top - 8.0,
                escape(metric)
            );
            for t in ticks(lo, hi) {
                let y = y_of(t);
                let _ = write!(
                    s,
                    r##"<line class="ytick" x1="{LEFT}" x2="{}" y1="{y:.2}" y2="{y:.2}" stroke="white"/><text x="{}" y="{:.2}" text-anchor="end">{}</text>"##,
                    LEFT + plot_w,
                    LEFT - 6.0,
                    y + 4.0,
                    label(t)
                );
            }
            let (e_first, e_last) = (
                epochs.first().copied().unwrap_or(1.0),
                epochs.last().copied().unwrap_or(1.0),
            );
            for t in epoch_ticks(e_first, e_last) {
                let x = x_of(t);
                let _ = write!(
                    s,
                    r##"<line class="xtick" x1="{x:.2}" x2="{x:.2}" y1="{top}" y2="{}" stroke="white"/><text x="{x:.2}" y="{}" text-anchor="middle">{}</text>"##,
                    top + PANEL_H,
                    top + PANEL_H + 14.0,
                    label(t)
                );
            }
            let _ = write!(
                s,
                r##"<text x="{}" y="{}" text-anchor="middle">epoch</text>"##,
                LEFT + plot_w / 2.0,
                top + PANEL_H + 30.0
            );
            for (k, (split, colour, values)) in series.iter().enumerate() {
                let pts: Vec<(f64, f64)> = epochs
                    .iter()
                    .zip(values.iter())
                    .filter(|(_, v)| v.is_finite())
                    .map(|(&e, &v)| (x_of(e), y_of(v as f64)))
                    .collect();
                let path: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.2},{y:.2}")).collect();
                let _ = write!(
                    s,
                    r##"<polyline class="series" data-metric="{m}" data-split="{split}" points="{}" fill="none" stroke="{colour}" stroke-width="1.5"/>"##,
                    path.join(" "),
                    m = escape(metric)
                );
                for (x, y) in &pts {
                    let _ = write!(
                        s,
                        r##"<circle cx="{x:.2}" cy="{y:.2}" r="2.5" fill="{colour}"/>"##
                    );
                }
                // One legend, beside the first panel (the colours are shared).
                if p > 0 {
                    continue;
                }
                let ly = top + 20.0 + k as f64 * 18.0;
                let lx = LEFT + plot_w + 12.0;
                let _ = write!(
                    s,
                    r##"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="2"/><text x="{}" y="{}">{split}</text>"##,
                    lx + 18.0,
                    lx + 24.0,
                    ly + 4.0
                );
            }
            s.push_str("</g>");
        }
        s.push_str("</svg>\n");
        s
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
