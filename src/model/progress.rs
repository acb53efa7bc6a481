//! Keras 2 style progress output (`utils/generic_utils.py` `Progbar`, width 30).
//!
//! verbose 1: `Epoch 1/10`, then `352/352 [==============================] - 2s 5ms/step - loss: 0.2928 - ...`,
//! redrawn in place while the epoch runs when stdout is a terminal, one line per
//! epoch otherwise (logs and CI stay readable). verbose 2: one line per epoch,
//! `352/352 - 2s - loss: ... - 2s/epoch - 5ms/step`. verbose 0: silent.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use super::history::Logs;

const WIDTH: usize = 30;
const REDRAW: Duration = Duration::from_millis(50);

pub(crate) struct Progress {
    verbose: u8,
    tty: bool,
    /// Columns of the terminal, when known: the live line stays shorter.
    width: Option<usize>,
    steps: usize,
    start: Instant,
    first_step: Option<Duration>,
    last_draw: Instant,
}

/// A value the way Keras prints it: `%.4f`, or `%.4e` for tiny magnitudes.
pub(crate) fn format_value(v: f32) -> String {
    if v.abs() > 1e-3 || v == 0.0 || !v.is_finite() {
        format!("{v:.4}")
    } else {
        format!("{v:.4e}")
    }
}

fn format_step_time(secs: f64) -> String {
    if secs >= 1.0 {
        format!("{secs:.0}s/step")
    } else if secs >= 1e-3 {
        format!("{:.0}ms/step", secs * 1e3)
    } else {
        format!("{:.0}us/step", secs * 1e6)
    }
}

fn format_eta(secs: f64) -> String {
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, (s % 3600) / 60, s % 60)
    } else if s >= 60 {
        format!("{}:{:02}", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

impl Progress {
    pub fn new(verbose: u8, steps: usize) -> Self {
        let now = Instant::now();
        let tty = std::io::stdout().is_terminal();
        Progress {
            verbose,
            tty,
            width: if tty { terminal_width() } else { None },
            steps,
            start: now,
            first_step: None,
            last_draw: now,
        }
    }

    pub fn epoch_begin(&mut self, epoch: usize, epochs: usize) {
        self.start = Instant::now();
        self.first_step = None;
        if self.verbose > 0 {
            println!("Epoch {}/{}", epoch + 1, epochs);
        }
    }

    /// Keras ignores the first step (compilation, warm-up) in the per-step time.
    fn step_time(&self, done: usize) -> f64 {
        let elapsed = self.start.elapsed().as_secs_f64();
        match (self.first_step, done) {
            (Some(first), d) if d > 1 => (elapsed - first.as_secs_f64()) / (d - 1) as f64,
            _ => elapsed / done.max(1) as f64,
        }
    }

    fn bar(&self, current: usize) -> String {
        let digits = self.steps.to_string().len();
        let mut s = format!("{current:>digits$}/{} [", self.steps);
        let filled = (WIDTH * current).checked_div(self.steps).unwrap_or(WIDTH);
        if filled > 0 {
            s.push_str(&"=".repeat(filled - 1));
            s.push(if current < self.steps { '>' } else { '=' });
        }
        s.push_str(&".".repeat(WIDTH - filled));
        s.push(']');
        s
    }

    pub fn batch_end(&mut self, step: usize, logs: &Logs) {
        if self.first_step.is_none() {
            self.first_step = Some(self.start.elapsed());
        }
        if self.verbose != 1 || !self.tty || step == self.steps {
            return;
        }
        let now = Instant::now();
        if now.duration_since(self.last_draw) < REDRAW {
            return;
        }
        self.last_draw = now;
        let eta = self.step_time(step) * (self.steps - step) as f64;
        let line = self.live_line(step, &format_eta(eta), logs, self.width);
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\r{line}\x1b[K");
        let _ = out.flush();
    }

    /// The line redrawn during an epoch: bar, ETA, then as many of the running
    /// values as fit in `width - 1` columns (a line that reaches the last
    /// column wraps in most terminals, and every redraw would leave a line
    /// behind). Values that do not fit are left out, whole; then the ETA.
    fn live_line(&self, step: usize, eta: &str, logs: &Logs, width: Option<usize>) -> String {
        let max = width.map_or(usize::MAX, |w| w.saturating_sub(1));
        let mut line = self.bar(step);
        let with_eta = format!("{line} - ETA: {eta}");
        if with_eta.chars().count() <= max {
            line = with_eta;
        }
        for (k, v) in logs.iter() {
            let part = format!(" - {k}: {}", format_value(v));
            if line.chars().count() + part.chars().count() > max {
                break;
            }
            line.push_str(&part);
        }
        line.chars().take(max).collect()
    }

    pub fn epoch_end(&mut self, logs: &Logs) {
        let elapsed = self.start.elapsed().as_secs_f64();
        let step = self.step_time(self.steps);
        let mut vals = String::new();
        for (k, v) in logs.iter() {
            vals.push_str(&format!(" - {k}: {}", format_value(v)));
        }
        match self.verbose {
            1 => {
                let prefix = if self.tty { "\r" } else { "" };
                let clear = if self.tty { "\x1b[K" } else { "" };
                // Seconds rounded as Keras' `%.0f` does (0.7 s shows as 1s).
                println!(
                    "{prefix}{} - {elapsed:.0}s {}{vals}{clear}",
                    self.bar(self.steps),
                    format_step_time(step)
                );
            }
            2 => println!(
                "{}/{} - {elapsed:.0}s{vals} - {elapsed:.0}s/epoch - {}",
                self.steps,
                self.steps,
                format_step_time(step)
            ),
            _ => {}
        }
    }
}

/// The terminal's columns: `COLUMNS` when set (as Python's
/// `shutil.get_terminal_size` reads it), else the width stdout's terminal
/// reports.
fn terminal_width() -> Option<usize> {
    if let Some(c) = std::env::var("COLUMNS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&c| c > 0)
    {
        return Some(c);
    }
    #[cfg(unix)]
    {
        if let Ok(ws) = rustix::termios::tcgetwinsize(std::io::stdout()) {
            if ws.ws_col > 0 {
                return Some(ws.ws_col as usize);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_matches_keras() {
        let p = Progress::new(1, 352);
        assert_eq!(p.bar(352), format!("352/352 [{}]", "=".repeat(30)));
        assert_eq!(
            p.bar(176),
            format!("176/352 [{}>{}]", "=".repeat(14), ".".repeat(15))
        );
        assert_eq!(format_value(0.29281), "0.2928");
        assert_eq!(format_value(0.0001234), "1.2340e-4");
        assert_eq!(format_step_time(0.005), "5ms/step");
    }

    #[test]
    fn live_line_fits_the_terminal() {
        let p = Progress::new(1, 352);
        let mut logs = Logs::default();
        for k in ["loss", "accuracy", "precision", "recall", "auc"] {
            logs.insert(k, 0.123456);
        }
        for width in [40, 80, 160] {
            let line = p.live_line(176, "3s", &logs, Some(width));
            assert!(line.chars().count() < width, "{width}: {line}");
            assert!(line.starts_with("176/352 ["));
        }
        // 80 columns: bar, ETA and the first values that fit, whole.
        let line = p.live_line(176, "3s", &logs, Some(80));
        assert_eq!(
            line,
            format!(
                "176/352 [{}>{}] - ETA: 3s - loss: 0.1235",
                "=".repeat(14),
                ".".repeat(15)
            )
        );
        // 160 columns hold every value; no width known, nothing is cut.
        let full = p.live_line(176, "3s", &logs, None);
        assert!(full.ends_with("auc: 0.1235"));
        assert_eq!(p.live_line(176, "3s", &logs, Some(160)), full);
        // Narrower than the bar: cut, never longer than the terminal.
        assert_eq!(p.live_line(176, "3s", &logs, Some(20)).chars().count(), 19);
    }
}
