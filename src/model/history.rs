//! `History` (what `fit` returns) and `Logs` (one epoch's or one evaluation's values).

use std::fmt;
use std::ops::Index;

use serde::{Deserialize, Serialize};

/// Named values in Keras' key order (`loss`, metrics, `val_loss`, `val_*`), as
/// `evaluate` returns them and callbacks receive them.
///
/// ```
/// use horn::Logs;
/// let mut logs = Logs::default();
/// logs.insert("loss", 0.25);
/// assert_eq!(logs["loss"], 0.25);
/// assert_eq!(logs.get("accuracy"), None);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Logs(Vec<(String, f32)>);

impl Logs {
    /// The value of a key.
    pub fn get(&self, key: &str) -> Option<f32> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// Sets a key (appended when new, so the insertion order is kept).
    pub fn insert(&mut self, key: impl Into<String>, value: f32) {
        let key = key.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(e) => e.1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// Sets a key without allocating when it is already present (the per-batch
    /// running values of `fit`).
    pub(crate) fn set(&mut self, key: &str, value: f32) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 = value,
            None => self.0.push((key.to_string(), value)),
        }
    }

    /// Key-value pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, f32)> {
        self.0.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Index<&str> for Logs {
    type Output = f32;
    /// Panics when the key is missing, as `HashMap` indexing does; use
    /// [`Logs::get`] to handle that case.
    fn index(&self, key: &str) -> &f32 {
        match self.0.iter().find(|(k, _)| k == key) {
            Some((_, v)) => v,
            None => panic!("no value named `{key}` in these logs"),
        }
    }
}

impl fmt::Display for Logs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(k, v)| format!("{k}: {}", super::progress::format_value(*v)))
            .collect();
        f.write_str(&parts.join(" - "))
    }
}

/// `fit`'s settings as Keras' `History.params` reports them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryParams {
    /// Epochs requested.
    pub epochs: usize,
    /// Steps (batches) per epoch.
    pub steps: usize,
    /// Verbosity.
    pub verbose: u8,
}

/// Per-epoch values of the loss and metrics, training and validation (Keras
/// `History`).
///
/// ```
/// use horn::History;
/// let h = History::default();
/// assert!(h.get("loss").is_none());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// The epoch indices (0-based, as Keras), one per recorded epoch.
    pub epoch: Vec<usize>,
    /// `fit`'s settings.
    pub params: HistoryParams,
    /// The epoch (0-based) that ended before all its batches ran, when one did:
    /// stopped by the cancel flag (then without validation values) or by a
    /// callback's `stop_training` during a batch. Its values cover only the
    /// batches it ran. `None` when every recorded epoch is complete.
    #[serde(default)]
    pub partial_epoch: Option<usize>,
    values: Vec<(String, Vec<f32>)>,
}

impl History {
    /// The per-epoch values of a key (`loss`, `accuracy`, `val_loss`, ...).
    pub fn get(&self, key: &str) -> Option<&[f32]> {
        self.values
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// The keys, in Keras' order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.values.iter().map(|(k, _)| k.as_str())
    }

    /// `(key, values)` pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[f32])> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// The last epoch's values.
    pub fn last(&self) -> Logs {
        let mut logs = Logs::default();
        for (k, v) in &self.values {
            if let Some(&x) = v.last() {
                logs.insert(k.clone(), x);
            }
        }
        logs
    }

    /// Number of recorded epochs.
    pub fn len(&self) -> usize {
        self.epoch.len()
    }

    /// Whether no epoch was recorded.
    pub fn is_empty(&self) -> bool {
        self.epoch.is_empty()
    }

    /// Appends one epoch's logs. A key first seen late (e.g. `lr` once a callback
    /// changes it) is back-filled with NaN for the earlier epochs.
    pub fn push(&mut self, epoch: usize, logs: &Logs) {
        let n = self.epoch.len();
        for (k, v) in logs.iter() {
            match self.values.iter_mut().find(|(key, _)| key == k) {
                Some((_, vals)) => vals.push(v),
                None => {
                    let mut vals = vec![f32::NAN; n];
                    vals.push(v);
                    self.values.push((k.to_string(), vals));
                }
            }
        }
        self.epoch.push(epoch);
        for (_, vals) in &mut self.values {
            if vals.len() < n + 1 {
                vals.push(f32::NAN);
            }
        }
    }

    /// The history as CSV: an `epoch` column, then one column per key.
    ///
    /// ```
    /// use horn::{History, Logs};
    /// let mut h = History::default();
    /// let mut logs = Logs::default();
    /// logs.insert("loss", 0.5);
    /// h.push(0, &logs);
    /// assert_eq!(h.to_csv(), "epoch,loss\n0,0.5\n");
    /// ```
    pub fn to_csv(&self) -> String {
        let mut s = String::from("epoch");
        for (k, _) in &self.values {
            s.push(',');
            s.push_str(k);
        }
        s.push('\n');
        for (i, e) in self.epoch.iter().enumerate() {
            s.push_str(&e.to_string());
            for (_, v) in &self.values {
                s.push(',');
                s.push_str(&v[i].to_string());
            }
            s.push('\n');
        }
        s
    }

    /// The history as JSON, shaped like Keras' `history.history` plus `epoch`
    /// and `params`.
    pub fn to_json(&self) -> String {
        let mut map = serde_json::Map::new();
        for (k, v) in &self.values {
            map.insert(
                k.clone(),
                serde_json::Value::Array(
                    v.iter()
                        .map(|&x| {
                            serde_json::Number::from_f64(x as f64)
                                .map_or(serde_json::Value::Null, serde_json::Value::Number)
                        })
                        .collect(),
                ),
            );
        }
        serde_json::json!({
            "history": map,
            "epoch": self.epoch,
            "params": self.params,
            "partial_epoch": self.partial_epoch,
        })
        .to_string()
    }
}

impl fmt::Display for History {
    /// R's `print(history)`: the final epoch's values, right-aligned names.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Final epoch (plot to see history):")?;
        let width = self.values.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in &self.values {
            if let Some(&x) = v.last() {
                writeln!(f, "{k:>width$}: {}", significant(x, 4))?;
            }
        }
        Ok(())
    }
}

/// `x` with `digits` significant digits, as R's `prettyNum(digits = 4)`.
fn significant(x: f32, digits: i32) -> String {
    if !x.is_finite() || x == 0.0 {
        return x.to_string();
    }
    let mag = (x.abs() as f64).log10().floor() as i32;
    let decimals = (digits - 1 - mag).max(0) as usize;
    let s = format!("{:.*}", decimals, x);
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}
