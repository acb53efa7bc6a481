//! Metrics, accumulated over an epoch as Keras' stateful metrics are.
//!
//! Mean-type metrics (accuracies, errors) average a per-sample value over the
//! epoch: `total += sum_i w_i v_i; count += sum_i w_i` (Keras `MeanMetricWrapper`).
//! Confusion-type metrics (precision, recall, AUC) accumulate counts; R2 and RMSE
//! accumulate sums. `Metric::Accuracy` is resolved at compile time from the loss
//! and output width, as Keras resolves `"accuracy"`.

use std::str::FromStr;

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::losses::Loss;

/// A metric to report during `fit` and `evaluate`.
///
/// ```
/// use horn::prelude::*;
/// let mut model = Sequential::new().input(4).dense(3, Softmax);
/// model.compile(Adam::default(), CategoricalCrossentropy::default(),
///               &[Metric::Accuracy, Metric::TopKCategoricalAccuracy { k: 2 }]).unwrap();
/// // Keras names work as well:
/// model.compile("adam", "categorical_crossentropy", &["accuracy", "precision"]).unwrap();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Metric {
    /// Keras `"accuracy"`: binary accuracy when the model has one output,
    /// sparse categorical accuracy for the sparse loss, categorical otherwise.
    /// Note (Keras' rule): sigmoid outputs with more than one column and
    /// `binary_crossentropy` resolve to *categorical* accuracy; use
    /// [`Metric::BinaryAccuracy`] for multi-label models.
    Accuracy,
    /// `mean(y == (p > threshold))`; Keras default threshold 0.5.
    BinaryAccuracy {
        /// Decision threshold.
        threshold: f32,
    },
    /// `argmax(y) == argmax(p)` (first maximum wins).
    CategoricalAccuracy,
    /// `y == argmax(p)` for class-index targets.
    SparseCategoricalAccuracy,
    /// Whether the true class is among the `k` largest predictions (Keras default k 5).
    TopKCategoricalAccuracy {
        /// How many top predictions count.
        k: usize,
    },
    /// `mean |p - y|`.
    MeanAbsoluteError,
    /// `mean (p - y)^2`.
    MeanSquaredError,
    /// `sqrt(total squared error / count)` over the epoch.
    RootMeanSquaredError,
    /// `100 * mean |y - p| / max(|y|, 1e-7)`.
    MeanAbsolutePercentageError,
    /// `TP / (TP + FP)` at threshold 0.5, over every output.
    Precision,
    /// `TP / (TP + FN)` at threshold 0.5, over every output.
    Recall,
    /// Area under the ROC curve, Keras' 200 thresholds and trapezoidal interpolation.
    Auc,
    /// Coefficient of determination, averaged over outputs (Keras `R2Score`).
    R2Score,
}

/// Anything `compile` accepts as a metric: a [`Metric`] or a Keras name.
///
/// The key a metric gets in logs and History follows Keras: a name string is
/// kept exactly as written (`"mae"` logs `mae`, `"mean_absolute_error"` logs
/// `mean_absolute_error`), a typed [`Metric`] logs its Keras class's default
/// name ([`Metric::name`]).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a metric",
    label = "expected `Metric`s (such as `Metric::Accuracy`), Keras names (such as \"accuracy\"), or `Metric::NONE` for none"
)]
pub trait IntoMetric {
    /// Converts into a [`Metric`], failing on unknown names.
    fn into_metric(self) -> Result<Metric>;

    /// The metric and the key it logs under.
    fn into_named_metric(self) -> Result<(String, Metric)>
    where
        Self: Sized,
    {
        let m = self.into_metric()?;
        Ok((m.name(), m))
    }
}

impl IntoMetric for Metric {
    fn into_metric(self) -> Result<Metric> {
        Ok(self)
    }
}
impl IntoMetric for &Metric {
    fn into_metric(self) -> Result<Metric> {
        Ok(*self)
    }
}
impl IntoMetric for &str {
    fn into_metric(self) -> Result<Metric> {
        self.parse()
    }
    fn into_named_metric(self) -> Result<(String, Metric)> {
        Ok((self.trim().to_string(), self.parse()?))
    }
}
impl IntoMetric for &&str {
    fn into_metric(self) -> Result<Metric> {
        self.parse()
    }
    fn into_named_metric(self) -> Result<(String, Metric)> {
        Ok((self.trim().to_string(), self.parse()?))
    }
}
impl IntoMetric for &String {
    fn into_metric(self) -> Result<Metric> {
        self.parse()
    }
    fn into_named_metric(self) -> Result<(String, Metric)> {
        Ok((self.trim().to_string(), self.parse()?))
    }
}

impl FromStr for Metric {
    type Err = Error;
    fn from_str(s: &str) -> Result<Metric> {
        // Keys without underscores: Keras function and class names both match.
        Ok(match crate::name_key(s).as_str() {
            "accuracy" | "acc" => Metric::Accuracy,
            "binaryaccuracy" => Metric::BinaryAccuracy { threshold: 0.5 },
            "categoricalaccuracy" => Metric::CategoricalAccuracy,
            "sparsecategoricalaccuracy" => Metric::SparseCategoricalAccuracy,
            "topkcategoricalaccuracy" => Metric::TopKCategoricalAccuracy { k: 5 },
            "meanabsoluteerror" | "mae" => Metric::MeanAbsoluteError,
            "meansquarederror" | "mse" => Metric::MeanSquaredError,
            "rootmeansquarederror" | "rmse" => Metric::RootMeanSquaredError,
            "meanabsolutepercentageerror" | "mape" => Metric::MeanAbsolutePercentageError,
            "precision" => Metric::Precision,
            "recall" => Metric::Recall,
            "auc" => Metric::Auc,
            "r2score" | "r2" => Metric::R2Score,
            _ => {
                return Err(Error::UnknownName {
                    kind: "metric",
                    name: s.to_string(),
                    known: Metric::NAMES.into(),
                })
            }
        })
    }
}

impl Metric {
    /// No metrics, for `compile` (`&[]` alone has no element type in Rust):
    /// `model.compile("sgd", "mse", Metric::NONE)`.
    pub const NONE: &'static [Metric] = &[];

    /// The Keras names horn accepts.
    pub const NAMES: &'static str = "accuracy (acc), binary_accuracy, categorical_accuracy, sparse_categorical_accuracy, top_k_categorical_accuracy, mean_absolute_error (mae), mean_squared_error (mse), root_mean_squared_error (rmse), mean_absolute_percentage_error (mape), precision, recall, auc, r2_score";

    /// The key under which a typed metric appears in logs and History: the
    /// default `name` of Keras' metric class (`keras.metrics.MeanAbsoluteError()`
    /// logs `mean_absolute_error`). A metric given by name string logs under
    /// that string instead (see [`IntoMetric`]).
    pub fn name(&self) -> String {
        match self {
            Metric::Accuracy => "accuracy".into(),
            Metric::BinaryAccuracy { .. } => "binary_accuracy".into(),
            Metric::CategoricalAccuracy => "categorical_accuracy".into(),
            Metric::SparseCategoricalAccuracy => "sparse_categorical_accuracy".into(),
            Metric::TopKCategoricalAccuracy { .. } => "top_k_categorical_accuracy".into(),
            Metric::MeanAbsoluteError => "mean_absolute_error".into(),
            Metric::MeanSquaredError => "mean_squared_error".into(),
            Metric::RootMeanSquaredError => "root_mean_squared_error".into(),
            Metric::MeanAbsolutePercentageError => "mean_absolute_percentage_error".into(),
            Metric::Precision => "precision".into(),
            Metric::Recall => "recall".into(),
            Metric::Auc => "auc".into(),
            Metric::R2Score => "r2_score".into(),
        }
    }

    /// Checks parameters.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Metric::TopKCategoricalAccuracy { k: 0 } => {
                Err(Error::arg("k", "a positive integer", 0))
            }
            Metric::BinaryAccuracy { threshold } if !threshold.is_finite() => {
                Err(Error::arg("threshold", "a finite number", threshold))
            }
            _ => Ok(()),
        }
    }

    /// Resolves `Accuracy` to its concrete form for this loss and output width
    /// (Keras `compile_utils.get_metric`).
    pub fn resolve(&self, loss: &Loss, output_dim: usize) -> Metric {
        match self {
            Metric::Accuracy => {
                if loss.is_sparse() {
                    Metric::SparseCategoricalAccuracy
                } else if output_dim == 1 {
                    Metric::BinaryAccuracy { threshold: 0.5 }
                } else {
                    Metric::CategoricalAccuracy
                }
            }
            m => *m,
        }
    }

    /// Computes the metric over one batch, as a fresh Keras metric's
    /// `update_state` then `result` would.
    ///
    /// ```
    /// use horn::metrics::Metric;
    /// use ndarray::array;
    /// let acc = Metric::CategoricalAccuracy
    ///     .compute(array![[0.0, 1.0], [1.0, 0.0]].view(), array![[0.2, 0.8], [0.3, 0.7]].view())
    ///     .unwrap();
    /// assert_eq!(acc, 0.5);
    /// ```
    pub fn compute(&self, y_true: ArrayView2<f32>, y_pred: ArrayView2<f32>) -> Result<f32> {
        self.validate()?;
        if y_true.nrows() != y_pred.nrows() {
            return Err(Error::shape(
                "metric",
                format!("y_true with {} rows", y_pred.nrows()),
                format!("{} rows", y_true.nrows()),
            ));
        }
        let sparse = matches!(self, Metric::SparseCategoricalAccuracy);
        if !sparse && y_true.ncols() != y_pred.ncols() {
            return Err(Error::shape(
                "metric",
                format!("y_true with {} columns", y_pred.ncols()),
                format!("{} columns", y_true.ncols()),
            ));
        }
        let loss = if sparse || y_true.ncols() == 1 && y_pred.ncols() > 1 {
            Loss::SparseCategoricalCrossentropy { from_logits: false }
        } else {
            Loss::MeanSquaredError
        };
        let m = self.resolve(&loss, y_pred.ncols());
        let mut state = MetricState::new(m);
        let t = y_true.as_standard_layout();
        let p = y_pred.as_standard_layout();
        state.update(t.view(), p.view(), None);
        Ok(state.result())
    }
}

/// Accumulated state of one metric over an epoch.
#[derive(Debug, Clone)]
pub struct MetricState {
    metric: Metric,
    total: f64,
    count: f64,
    // Confusion counts: precision/recall use [tp, fp, fn]; AUC uses per-threshold arrays.
    tp: Vec<f64>,
    fp: Vec<f64>,
    fnn: Vec<f64>,
    tn: Vec<f64>,
    // R2: per column sum y, sum y^2, sum residual^2, weight count.
    r2: Vec<[f64; 4]>,
    // Output positions per sample (see `per_position`).
    positions: usize,
}

/// Keras' AUC default number of thresholds.
const AUC_THRESHOLDS: usize = 200;

impl MetricState {
    /// A fresh state for a resolved metric.
    pub fn new(metric: Metric) -> Self {
        let n = match metric {
            Metric::Auc => AUC_THRESHOLDS,
            Metric::Precision | Metric::Recall => 1,
            _ => 0,
        };
        MetricState {
            metric,
            total: 0.0,
            count: 0.0,
            tp: vec![0.0; n],
            fp: vec![0.0; n],
            fnn: vec![0.0; n],
            tn: vec![0.0; n],
            r2: Vec::new(),
            positions: 1,
        }
    }

    /// Reads each sample's row as `positions` outputs (a `(steps, classes)`
    /// output): the class metrics (accuracies, top-k) then compare each
    /// position's last axis and average over the positions, as Keras does.
    /// The other metrics are element-wise and unchanged.
    ///
    /// ```
    /// use horn::metrics::{Metric, MetricState};
    /// use ndarray::array;
    /// let mut s = MetricState::new(Metric::CategoricalAccuracy).per_position(2);
    /// // One sample, two positions of two classes: right, then wrong.
    /// s.update(array![[0.0f32, 1.0, 1.0, 0.0]].view(), array![[0.2f32, 0.8, 0.3, 0.7]].view(), None);
    /// assert_eq!(s.result(), 0.5);
    /// ```
    pub fn per_position(mut self, positions: usize) -> Self {
        self.positions = positions.max(1);
        self
    }

    /// Clears the state (Keras `reset_state`).
    pub fn reset(&mut self) {
        *self = MetricState::new(self.metric).per_position(self.positions);
    }

    /// Adds one batch: `y_true` and `y_pred` hold one row per sample (one column
    /// of class indices for the sparse metrics); `weights` are optional
    /// per-sample weights. [`Metric::compute`] checks shapes; this low-level
    /// method, called per batch by `fit`, counts the rows both arrays have.
    /// Any memory layout works (a strided or transposed view is copied to row
    /// order first; the views `fit` passes are already in row order).
    ///
    /// ```
    /// use horn::metrics::{Metric, MetricState};
    /// use ndarray::array;
    /// let mut s = MetricState::new(Metric::CategoricalAccuracy);
    /// let t = array![[0.0f32, 1.0], [1.0, 0.0]];
    /// let p = array![[0.2f32, 0.3], [0.8, 0.7]]; // transposed: rows (0.2, 0.8), (0.3, 0.7)
    /// s.update(t.view(), p.t(), None);
    /// assert_eq!(s.result(), 0.5);
    /// ```
    pub fn update(
        &mut self,
        y_true: ArrayView2<f32>,
        y_pred: ArrayView2<f32>,
        weights: Option<&[f32]>,
    ) {
        // No copy when the views are already in row order (the per-batch case).
        let (y_true, y_pred) = (y_true.as_standard_layout(), y_pred.as_standard_layout());
        let c = y_pred.ncols();
        // Rows beyond either array, or beyond `weights`, are not counted twice or
        // read out of bounds: extra rows are ignored, missing weights count 1.
        let w = |i: usize| weights.and_then(|w| w.get(i)).map_or(1.0, |&v| v as f64);
        for i in 0..y_pred.nrows().min(y_true.nrows()) {
            let (p, t) = match (y_pred.row(i).to_slice(), y_true.row(i).to_slice()) {
                (Some(p), Some(t)) => (p, t),
                // Unreachable: both arrays were put in row order above.
                _ => continue,
            };
            let wi = w(i);
            let positions = self.positions;
            if positions > 1 && self.is_class_metric() && c % positions == 0 {
                let (cp, tp) = (c / positions, t.len() / positions);
                let v: f64 = (0..positions)
                    .map(|k| self.class_value(&p[k * cp..(k + 1) * cp], &t[k * tp..(k + 1) * tp]))
                    .sum::<f64>()
                    / positions as f64;
                self.total += wi * v;
                self.count += wi;
                continue;
            }
            let value: Option<f64> = match self.metric {
                Metric::Accuracy | Metric::CategoricalAccuracy => {
                    Some((argmax(t) == argmax(p)) as u8 as f64)
                }
                Metric::SparseCategoricalAccuracy => {
                    Some((t[0] as usize == argmax(p)) as u8 as f64)
                }
                Metric::BinaryAccuracy { threshold } => Some(
                    p.iter()
                        .zip(t)
                        .filter(|(&pv, &tv)| ((pv > threshold) as u8 as f32) == tv)
                        .count() as f64
                        / c as f64,
                ),
                Metric::TopKCategoricalAccuracy { k } => {
                    let target = if t.len() == 1 && c > 1 {
                        t[0] as usize
                    } else {
                        argmax(t)
                    };
                    let pt = p.get(target).copied().unwrap_or(f32::NEG_INFINITY);
                    let larger = p.iter().filter(|&&v| v > pt).count();
                    Some((larger < k) as u8 as f64)
                }
                Metric::MeanAbsoluteError => Some(
                    p.iter()
                        .zip(t)
                        .map(|(a, b)| (a - b).abs() as f64)
                        .sum::<f64>()
                        / c as f64,
                ),
                Metric::MeanSquaredError | Metric::RootMeanSquaredError => Some(
                    p.iter()
                        .zip(t)
                        .map(|(a, b)| ((a - b) as f64).powi(2))
                        .sum::<f64>()
                        / c as f64,
                ),
                Metric::MeanAbsolutePercentageError => Some(
                    p.iter()
                        .zip(t)
                        .map(|(a, b)| 100.0 * ((b - a).abs() / b.abs().max(1e-7)) as f64)
                        .sum::<f64>()
                        / c as f64,
                ),
                Metric::Precision | Metric::Recall => {
                    for (&pv, &tv) in p.iter().zip(t) {
                        let pred = pv > 0.5;
                        let actual = tv > 0.5;
                        match (pred, actual) {
                            (true, true) => self.tp[0] += wi,
                            (true, false) => self.fp[0] += wi,
                            (false, true) => self.fnn[0] += wi,
                            (false, false) => self.tn[0] += wi,
                        }
                    }
                    None
                }
                Metric::Auc => {
                    for (&pv, &tv) in p.iter().zip(t) {
                        let actual = tv > 0.5;
                        for (k, th) in auc_thresholds().enumerate() {
                            let pred = pv > th;
                            match (pred, actual) {
                                (true, true) => self.tp[k] += wi,
                                (true, false) => self.fp[k] += wi,
                                (false, true) => self.fnn[k] += wi,
                                (false, false) => self.tn[k] += wi,
                            }
                        }
                    }
                    None
                }
                Metric::R2Score => {
                    if self.r2.len() != c {
                        self.r2 = vec![[0.0; 4]; c];
                    }
                    for (j, (&tv, &pv)) in t.iter().zip(p).enumerate() {
                        let y = tv as f64;
                        let r = (tv - pv) as f64;
                        let s = &mut self.r2[j];
                        s[0] += wi * y;
                        s[1] += wi * y * y;
                        s[2] += wi * r * r;
                        s[3] += wi;
                    }
                    None
                }
            };
            if let Some(v) = value {
                self.total += wi * v;
                self.count += wi;
            }
        }
    }

    /// Whether the metric compares a whole distribution per row.
    fn is_class_metric(&self) -> bool {
        matches!(
            self.metric,
            Metric::Accuracy
                | Metric::CategoricalAccuracy
                | Metric::SparseCategoricalAccuracy
                | Metric::TopKCategoricalAccuracy { .. }
        )
    }

    /// 1 when one position's prediction `p` is right for its target `t`.
    fn class_value(&self, p: &[f32], t: &[f32]) -> f64 {
        let c = p.len();
        match self.metric {
            Metric::SparseCategoricalAccuracy => (t[0] as usize == argmax(p)) as u8 as f64,
            Metric::TopKCategoricalAccuracy { k } => {
                let target = if t.len() == 1 && c > 1 {
                    t[0] as usize
                } else {
                    argmax(t)
                };
                let pt = p.get(target).copied().unwrap_or(f32::NEG_INFINITY);
                (p.iter().filter(|&&v| v > pt).count() < k) as u8 as f64
            }
            _ => (argmax(t) == argmax(p)) as u8 as f64,
        }
    }

    /// The metric's value so far (0 when nothing was seen).
    pub fn result(&self) -> f32 {
        let div = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        (match self.metric {
            Metric::RootMeanSquaredError => div(self.total, self.count).sqrt(),
            Metric::Precision => div(self.tp[0], self.tp[0] + self.fp[0]),
            Metric::Recall => div(self.tp[0], self.tp[0] + self.fnn[0]),
            Metric::Auc => {
                let rate = |k: usize| {
                    (
                        div(self.fp[k], self.fp[k] + self.tn[k]),
                        div(self.tp[k], self.tp[k] + self.fnn[k]),
                    )
                };
                (0..AUC_THRESHOLDS - 1)
                    .map(|k| {
                        let ((fpr0, tpr0), (fpr1, tpr1)) = (rate(k), rate(k + 1));
                        (fpr0 - fpr1) * (tpr0 + tpr1) / 2.0
                    })
                    .sum()
            }
            Metric::R2Score => {
                if self.r2.is_empty() {
                    0.0
                } else {
                    let scores: f64 = self
                        .r2
                        .iter()
                        .map(|s| {
                            let mean = div(s[0], s[3]);
                            let ss_tot = s[1] - s[3] * mean * mean;
                            if ss_tot > 0.0 {
                                1.0 - s[2] / ss_tot
                            } else {
                                0.0
                            }
                        })
                        .sum();
                    scores / self.r2.len() as f64
                }
            }
            _ => div(self.total, self.count),
        }) as f32
    }
}

/// Keras' AUC thresholds: `0 - eps`, `i / (n - 1)` for the inner ones, `1 + eps`.
fn auc_thresholds() -> impl Iterator<Item = f32> {
    (0..AUC_THRESHOLDS).map(|i| {
        if i == 0 {
            -1e-7
        } else if i == AUC_THRESHOLDS - 1 {
            1.0 + 1e-7
        } else {
            i as f32 / (AUC_THRESHOLDS - 1) as f32
        }
    })
}

/// Index of the first maximum.
#[inline]
pub(crate) fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Counts of (true class, predicted class) pairs: rows are the true classes,
/// columns the predictions (`tf.math.confusion_matrix`'s layout; R's
/// `table(pred, truth)` is its transpose). Prints as a table.
///
/// ```
/// use horn::metrics::confusion_matrix;
/// let cm = confusion_matrix(&[0, 1, 2, 2], &[0, 2, 2, 2], None).unwrap();
/// assert_eq!(cm.get(2, 2), 2);
/// assert_eq!(cm.get(1, 2), 1);
/// assert_eq!(cm.accuracy(), 0.75);
/// println!("{cm}");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfusionMatrix {
    counts: ndarray::Array2<usize>,
    labels: Vec<String>,
}

/// The confusion matrix of class indices (`num_classes` defaults to the largest
/// index plus one). Fails on sequences of different lengths, on an index
/// outside `num_classes`, and on more than 65,536 classes.
pub fn confusion_matrix(
    y_true: &[usize],
    y_pred: &[usize],
    num_classes: Option<usize>,
) -> Result<ConfusionMatrix> {
    if y_true.len() != y_pred.len() {
        return Err(Error::shape(
            "confusion_matrix",
            format!("as many predictions as labels ({})", y_true.len()),
            format!("{} predictions", y_pred.len()),
        ));
    }
    let k = match num_classes {
        Some(k) => k,
        None => y_true
            .iter()
            .chain(y_pred)
            .max()
            .map_or(0, |m| m.saturating_add(1)),
    };
    const MAX: usize = 1 << 16;
    if k > MAX {
        return Err(Error::arg("num_classes", format!("at most {MAX}"), k));
    }
    let mut counts = ndarray::Array2::zeros((k, k));
    for (i, (&t, &p)) in y_true.iter().zip(y_pred).enumerate() {
        if t >= k || p >= k {
            return Err(Error::arg(
                format!("pair {i}"),
                format!("class indices in 0..{k}"),
                format!("truth {t}, prediction {p}"),
            ));
        }
        counts[[t, p]] += 1;
    }
    Ok(ConfusionMatrix {
        counts,
        labels: (0..k).map(|c| c.to_string()).collect(),
    })
}

impl ConfusionMatrix {
    /// How often class `truth` was predicted as `predicted`.
    pub fn get(&self, truth: usize, predicted: usize) -> usize {
        self.counts.get((truth, predicted)).copied().unwrap_or(0)
    }

    /// All counts, `(true class, predicted class)`.
    pub fn counts(&self) -> ndarray::ArrayView2<'_, usize> {
        self.counts.view()
    }

    /// The fraction on the diagonal (0 when empty).
    pub fn accuracy(&self) -> f64 {
        let total: usize = self.counts.sum();
        let right: usize = self.counts.diag().sum();
        if total == 0 {
            0.0
        } else {
            right as f64 / total as f64
        }
    }

    /// The class names (`"0"`, `"1"`, ... unless set by
    /// [`ConfusionMatrix::with_labels`]).
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The matrix as a picture: one cell per (true, predicted) pair, shaded
    /// by its share of the true class's row, with its count; true classes
    /// down the side, predictions along the top.
    ///
    /// ```
    /// let cm = horn::metrics::confusion_matrix(&[0, 1, 1, 2], &[0, 1, 2, 2], None).unwrap();
    /// let img = cm.to_image().unwrap();
    /// assert!(img.width() > 3 * 30 && img.to_png().is_ok());
    /// ```
    pub fn to_image(&self) -> Result<crate::pictures::Image> {
        crate::pictures::confusion_image(self)
    }

    /// Names the classes in the printed table (e.g. the species of the
    /// penguins); fails unless there is one name per class.
    pub fn with_labels<S: AsRef<str>>(mut self, labels: &[S]) -> Result<Self> {
        if labels.len() != self.labels.len() {
            return Err(Error::shape(
                "confusion matrix labels",
                format!("{} names", self.labels.len()),
                format!("{} names", labels.len()),
            ));
        }
        self.labels = labels.iter().map(|l| l.as_ref().to_string()).collect();
        Ok(self)
    }
}

impl std::fmt::Display for ConfusionMatrix {
    /// Rows are the truth, columns the prediction, right-aligned.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let head = "truth \\ predicted";
        let lw = self
            .labels
            .iter()
            .map(String::len)
            .chain([head.len()])
            .max()
            .unwrap_or(0);
        let cw = self
            .labels
            .iter()
            .map(String::len)
            .chain(self.counts.iter().map(|c| c.to_string().len()))
            .max()
            .unwrap_or(1);
        write!(f, "{head:<lw$}")?;
        for l in &self.labels {
            write!(f, " {l:>cw$}")?;
        }
        writeln!(f)?;
        for (l, row) in self.labels.iter().zip(self.counts.rows()) {
            write!(f, "{l:>lw$}")?;
            for c in row {
                write!(f, " {c:>cw$}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}
