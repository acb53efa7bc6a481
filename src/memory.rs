//! How much memory horn takes at once for the buffers a model or data asks for.
//!
//! A small file can describe a model whose buffers are huge: a
//! `Conv1D(filters=65536, kernel_size=1)` on inputs of shape `(65536, 1)`
//! has 1 KB of weights and 16 GiB of output per sample. horn sizes every
//! such buffer with overflow-checked products and reserves it with
//! `try_reserve_exact`, so a size the allocator refuses is an
//! [`Error::OutOfMemory`] instead of an abort.
//!
//! That alone is not enough on Linux: with memory overcommit a 16 GiB
//! reservation succeeds on a machine with less, and the process is killed
//! later, when the pages are written. So horn also refuses, up front, to
//! take more than a fixed limit at once: [`DEFAULT_MEMORY_LIMIT`] (8 GiB) for
//! the buffers of one pass (one `fit`'s, `evaluate`'s or `predict`'s
//! workspace) and for one result array (the predictions), and the same
//! limit for one weight tensor drawn by an initializer. The limit is fixed,
//! not derived from the machine's memory, so that a model behaves the same
//! everywhere; set the environment variable [`MEMORY_LIMIT_VAR`]
//! (`HORN_MEMORY_LIMIT`, in bytes) before the first model runs to raise or
//! lower it. `predict` and `evaluate` keep their workspace near 32 MiB by
//! splitting the rows into blocks, so only a model whose single row
//! exceeds the limit is refused there; `fit` needs its whole batch at once.
//!
//! ```
//! use horn::prelude::*;
//! use ndarray::Array3;
//!
//! // 1 KB of weights, 16 GiB of output per sample: refused, not aborted.
//! let model = Sequential::new().seed(1).input_shape(&[65536, 1]).conv1d(65536, 1, Linear);
//! let err = model.predict_nd(&Array3::<f32>::zeros((1, 65536, 1))).unwrap_err();
//! assert!(matches!(err, horn::Error::OutOfMemory { .. }));
//! assert!(err.to_string().contains("16.0 GiB"), "{err}");
//! assert!(horn::memory::memory_limit().unwrap() >= 1 << 20);
//! ```

use std::sync::OnceLock;

use crate::error::{Error, Result};

/// The most bytes horn takes at once for one pass's buffers, one result
/// array or one weight tensor, unless [`MEMORY_LIMIT_VAR`] says otherwise:
/// 8 GiB.
///
/// ```
/// assert_eq!(horn::memory::DEFAULT_MEMORY_LIMIT, 8 << 30);
/// ```
pub const DEFAULT_MEMORY_LIMIT: u64 = 8 << 30;

/// The environment variable that replaces [`DEFAULT_MEMORY_LIMIT`]: a number
/// of bytes (digits only), read once, the first time a limit is needed.
///
/// ```
/// assert_eq!(horn::memory::MEMORY_LIMIT_VAR, "HORN_MEMORY_LIMIT");
/// ```
pub const MEMORY_LIMIT_VAR: &str = "HORN_MEMORY_LIMIT";

/// The limit in force, in bytes: [`MEMORY_LIMIT_VAR`] when it is set, else
/// [`DEFAULT_MEMORY_LIMIT`]. An unset variable is the default; a value that
/// is not a number of bytes is an error (here and in every call that needs
/// the limit), not silently ignored.
///
/// ```
/// let limit = horn::memory::memory_limit()?;
/// assert!(limit > 0);
/// # Ok::<(), horn::Error>(())
/// ```
pub fn memory_limit() -> Result<u64> {
    static LIMIT: OnceLock<std::result::Result<u64, String>> = OnceLock::new();
    LIMIT
        .get_or_init(|| match std::env::var(MEMORY_LIMIT_VAR) {
            Err(std::env::VarError::NotPresent) => Ok(DEFAULT_MEMORY_LIMIT),
            Err(std::env::VarError::NotUnicode(v)) => Err(format!("{v:?}")),
            Ok(v) => v.trim().parse::<u64>().ok().filter(|&b| b > 0).ok_or(v),
        })
        .clone()
        .map_err(|received| {
            Error::arg(
                MEMORY_LIMIT_VAR,
                "a positive number of bytes, e.g. 17179869184 for 16 GiB",
                received,
            )
        })
}

/// `bytes` in the largest binary unit that keeps it at least 1, with one
/// decimal: `16.0 GiB`, `512 B`.
pub(crate) fn human_bytes(bytes: u64) -> String {
    if bytes == u64::MAX {
        return "more than 16 EiB".into();
    }
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// The buffers of one pass (or one result), allocated fallibly against
/// [`memory_limit`]: the bytes taken so far count towards it, so many
/// buffers that are each small cannot add up to more either.
pub(crate) struct Budget {
    context: &'static str,
    used: u64,
    limit: u64,
}

impl Budget {
    /// A budget for the buffers of `context` (`predict`, `fit`, ...).
    pub fn new(context: &'static str) -> Result<Self> {
        Ok(Budget {
            context,
            used: 0,
            limit: memory_limit()?,
        })
    }

    /// `rows` rows of `width` values each, all `fill`; `what` names the
    /// buffer for the error (`the output of layer `conv1d``).
    pub fn rows<T: Clone>(
        &mut self,
        rows: usize,
        width: usize,
        fill: T,
        what: impl FnOnce() -> String,
    ) -> Result<Vec<T>> {
        let describe = || {
            let plural = |n: usize| if n == 1 { "" } else { "s" };
            format!(
                "{} ({rows} row{} of {width} value{})",
                what(),
                plural(rows),
                plural(width)
            )
        };
        match rows.checked_mul(width) {
            Some(len) => self.take(len, fill, describe),
            None => Err(self.refuse(u64::MAX, describe())),
        }
    }

    /// `len` values, all `fill`.
    pub fn values<T: Clone>(
        &mut self,
        len: usize,
        fill: T,
        what: impl FnOnce() -> String,
    ) -> Result<Vec<T>> {
        self.take(len, fill, || format!("{} ({len} values)", what()))
    }

    /// Counts `len` values of `elem_bytes` each against the limit without
    /// allocating them (a tensor another function fills), and returns the
    /// total so far.
    pub fn check(
        &mut self,
        len: usize,
        elem_bytes: usize,
        what: impl FnOnce() -> String,
    ) -> Result<u64> {
        let total = (len as u64)
            .checked_mul(elem_bytes as u64)
            .and_then(|b| b.checked_add(self.used))
            .unwrap_or(u64::MAX);
        if total > self.limit {
            return Err(self.refuse(total, what()));
        }
        self.used = total;
        Ok(total)
    }

    /// `len` values after [`Budget::check`], reserved fallibly: a size the
    /// allocator refuses is an error too.
    fn take<T: Clone>(
        &mut self,
        len: usize,
        fill: T,
        what: impl FnOnce() -> String,
    ) -> Result<Vec<T>> {
        let before = self.used;
        let mut what = Some(what);
        let mut describe = || what.take().map_or_else(String::new, |f| f());
        let total = self.check(len, std::mem::size_of::<T>(), &mut describe)?;
        let mut v = Vec::new();
        if v.try_reserve_exact(len).is_err() {
            self.used = before;
            return Err(self.refuse(total, describe()));
        }
        v.resize(len, fill);
        Ok(v)
    }

    /// The error for a buffer `what` that brings the total to `total` bytes.
    fn refuse(&self, total: u64, what: String) -> Error {
        let what = if self.used > 0 {
            format!(
                "{what} and the {} of buffers before it",
                human_bytes(self.used)
            )
        } else {
            what
        };
        Error::OutOfMemory {
            context: self.context.to_string(),
            what,
            bytes: total,
            limit: self.limit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(16 << 30), "16.0 GiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(u64::MAX), "more than 16 EiB");
    }

    #[test]
    fn a_budget_counts_what_it_gave() {
        let mut b = Budget {
            context: "predict",
            used: 0,
            limit: 1000,
        };
        assert_eq!(b.rows(10, 20, 0.0f32, || "a".into()).unwrap().len(), 200);
        let e = b
            .rows(10, 10, 0.0f32, || "the output of layer `x`".into())
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("predict needs 1.2 KiB for the output of layer `x` (10 rows of 10 values) and the 800 B of buffers before it"), "{msg}");
        assert!(msg.contains("limit of 1000 B"), "{msg}");
        let e = b.rows(usize::MAX, 2, 0u8, || "y".into()).unwrap_err();
        assert!(e.to_string().contains("more than 16 EiB"), "{e}");
    }
}
