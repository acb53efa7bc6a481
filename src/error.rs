//! The crate's one error type.
//!
//! Messages follow Keras' shape: what was wrong, what was expected, and
//! `Received: arg=value`, so that a user can fix the call without reading source.

use std::path::PathBuf;

/// Everything that can go wrong in horn. Every public fallible function returns
/// [`Result<T>`](crate::Result) with this error; no user input makes horn panic.
///
/// ```
/// use horn::prelude::*;
/// let mut model = Sequential::new().input(4).dense(0, Relu);
/// let err = model.compile(Adam::default(), MeanSquaredError, &[] as &[Metric]).unwrap_err();
/// assert!(err.to_string().contains("units"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An argument or option has a value outside its domain.
    #[error("invalid value for `{name}`: expected {expected}. Received: {name}={received}")]
    InvalidArgument {
        /// The argument's name, as Keras spells it.
        name: String,
        /// What a valid value looks like.
        expected: String,
        /// What was passed.
        received: String,
    },
    /// Arrays whose shapes do not fit the model or each other.
    #[error("shape mismatch in {context}: expected {expected}. Received: {received}")]
    Shape {
        /// Which argument or step saw the mismatch.
        context: String,
        /// The expected shape.
        expected: String,
        /// The shape that was passed.
        received: String,
    },
    /// NaN or infinite values in inputs or targets.
    #[error("`{name}` contains a non-finite value ({value}) at row {row}, column {col}; clean or impute the data first")]
    NonFinite {
        /// The argument's name.
        name: String,
        /// Row of the first bad value.
        row: usize,
        /// Column of the first bad value.
        col: usize,
        /// The value itself (NaN or inf).
        value: f32,
    },
    /// An argument that must hold at least one row was empty.
    #[error("`{name}` is empty: expected at least one row")]
    Empty {
        /// The argument's name.
        name: String,
    },
    /// A name (optimizer, loss, metric, activation, ...) that horn does not know.
    #[error("unknown {kind} `{name}`; known names: {known}")]
    UnknownName {
        /// What kind of thing was asked for.
        kind: &'static str,
        /// The name that was given.
        name: String,
        /// The accepted names.
        known: String,
    },
    /// A model method that needs `compile` first.
    #[error("the model must be compiled before calling `{0}`; call `model.compile(optimizer, loss, metrics)` first")]
    NotCompiled(&'static str),
    /// A model whose layers cannot be built (no input size, no layers).
    #[error("the model cannot be built: {0}")]
    NotBuilt(String),
    /// Training produced a NaN or infinite loss (Keras' TerminateOnNaN behaviour).
    #[error("training diverged: the loss became {loss} at epoch {epoch}, batch {batch}; lower the learning rate or check the data")]
    Diverged {
        /// 1-based epoch.
        epoch: usize,
        /// 0-based batch within the epoch.
        batch: usize,
        /// The loss value seen.
        loss: f32,
        /// The history up to the last complete epoch.
        history: Box<crate::History>,
    },
    /// Training left a weight NaN or infinite while every batch loss stayed
    /// finite (a ReLU turns a `-inf` pre-activation into 0, so the loss can
    /// miss it). `fit` checks the weights at the end of each epoch, after the
    /// per-batch loss check; the model keeps the bad values.
    #[error("training diverged: weight `{weight}` became {value} (at flat index {index}) during epoch {epoch}, although the loss stayed finite; lower the learning rate or check the optimizer's settings and the data")]
    DivergedWeights {
        /// 1-based epoch at whose end the weight was seen.
        epoch: usize,
        /// The weight's Keras name (`dense/kernel`).
        weight: String,
        /// Row-major index of the first bad element.
        index: usize,
        /// The value itself (NaN or inf).
        value: f32,
        /// The history up to the last complete epoch.
        history: Box<crate::History>,
    },
    /// An I/O error while reading or writing a file.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file that is corrupt, truncated or of the wrong kind.
    #[error("cannot read {path}: {reason}")]
    Format {
        /// The file (or a description of the source).
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// A functional model whose graph cannot be built or run: a layer name
    /// used twice, an input no output depends on, an output that needs an
    /// input the model does not list, tensors of another graph.
    #[error("invalid model graph: {0}")]
    Graph(String),
    /// A bad value in tabular data (unparsable number, unseen category, ...).
    #[error("data error: {0}")]
    Data(String),
    /// A buffer whose size comes from a model or from data is larger than
    /// horn's memory limit ([`crate::memory::memory_limit`]) or than the
    /// system could allocate: `predict` on a model whose one sample's output
    /// is 16 GiB, `fit` with a batch too large for the model.
    ///
    /// ```
    /// use horn::prelude::*;
    /// let model = Sequential::new().seed(1).input(1).dense(1 << 20, Linear);
    /// let err = model.predict(&ndarray::Array2::<f32>::zeros((3000, 1))).unwrap_err();
    /// // 3000 rows of 2^20 predictions: 11.7 GiB.
    /// assert!(err.to_string().starts_with("predict needs 11.7 GiB for the predictions"), "{err}");
    /// ```
    #[error("{context} needs {} for {what}, {}; use a smaller batch or a smaller model", crate::memory::human_bytes(*.bytes), oom_reason(*.bytes, *.limit))]
    OutOfMemory {
        /// The call that needed the memory (`predict`, `fit`, ...).
        context: String,
        /// The buffer, with its rows and values per row.
        what: String,
        /// The bytes it needed with the buffers of the same pass before it
        /// (`u64::MAX` when that does not fit in 64 bits).
        bytes: u64,
        /// The memory limit in force, in bytes.
        limit: u64,
    },
    /// Data-parallel training could not go on: ranks that disagree (other
    /// data, other weights, other options), a rank that left or did not
    /// answer within the timeout, a communicator of an unusable size.
    #[error("data-parallel training: {0}")]
    Distributed(String),
}

impl Error {
    /// Builds an [`Error::InvalidArgument`].
    pub(crate) fn arg(
        name: impl Into<String>,
        expected: impl Into<String>,
        received: impl std::fmt::Display,
    ) -> Self {
        Error::InvalidArgument {
            name: name.into(),
            expected: expected.into(),
            received: received.to_string(),
        }
    }

    /// Builds an [`Error::Shape`].
    pub(crate) fn shape(
        context: impl Into<String>,
        expected: impl Into<String>,
        received: impl Into<String>,
    ) -> Self {
        Error::Shape {
            context: context.into(),
            expected: expected.into(),
            received: received.into(),
        }
    }

    /// Builds an [`Error::Format`].
    pub(crate) fn format(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Why an [`Error::OutOfMemory`] refused `bytes`.
fn oom_reason(bytes: u64, limit: u64) -> String {
    if bytes > limit {
        format!(
            "more than horn's memory limit of {} (the environment variable {} sets it, in bytes)",
            crate::memory::human_bytes(limit),
            crate::memory::MEMORY_LIMIT_VAR
        )
    } else {
        "and the system could not allocate it".into()
    }
}

/// `Result` with horn's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
