//! Loss functions: per-sample values and their gradients.
//!
//! A loss maps one sample's prediction row and target row to one number `l_i`.
//! Keras' default reduction, `sum_over_batch_size`, then gives
//! `L = sum_i w_i * l_i / N` where `N` is the number of rows (not the sum of
//! weights). Regularization penalties are added after this reduction.
//!
//! Where the model's last layer ends in a softmax (or sigmoid) and the loss is a
//! cross-entropy on probabilities, horn uses the fused form from the logits, as
//! Keras does on its TensorFlow backend (`_keras_logits`): the loss is
//! `logsumexp(z) - sum(y * z)` and its gradient with respect to the logits is
//! `p - y`, which is both faster and stable (no clipping at 1e-7).

use std::str::FromStr;

use ndarray::{ArrayView2, ArrayViewMut2};
use serde::{Deserialize, Serialize};

use crate::activations::{sigmoid, softmax_row_inplace, Activation};
use crate::error::{Error, Result};

/// Keras' fuzz factor `epsilon()`, used to clip probabilities.
pub const EPSILON: f32 = 1e-7;

/// Categorical cross-entropy on one-hot (or soft) targets.
///
/// `l = -sum_c y_c * log(p_c)`, with `p` renormalised to sum to 1 and clipped to
/// `[1e-7, 1 - 1e-7]` (Keras). `from_logits` (default false) applies a log-softmax
/// instead; `label_smoothing` (default 0) uses `y * (1 - s) + s / C`.
///
/// ```
/// use horn::losses::{CategoricalCrossentropy, Loss};
/// use ndarray::array;
/// let loss = Loss::from(CategoricalCrossentropy::default());
/// let v = loss.compute(array![[0.0, 1.0]].view(), array![[0.5, 0.5]].view()).unwrap();
/// assert!((v - std::f32::consts::LN_2).abs() < 1e-6);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct CategoricalCrossentropy {
    /// Whether predictions are logits (Keras default false).
    pub from_logits: bool,
    /// Label smoothing in `[0, 1]` (Keras default 0).
    pub label_smoothing: f32,
}

/// Sparse categorical cross-entropy: targets are class indices in a single column.
///
/// `l = -log(p_y)`; same clipping and `from_logits` as [`CategoricalCrossentropy`].
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct SparseCategoricalCrossentropy {
    /// Whether predictions are logits (Keras default false).
    pub from_logits: bool,
}

/// Binary cross-entropy, averaged over the outputs of each sample.
///
/// `l = mean_c -(y log p + (1 - y) log(1 - p))`, `p` clipped to `[1e-7, 1 - 1e-7]`;
/// with `from_logits` the stable form `max(z, 0) - z y + log(1 + exp(-|z|))`.
/// `label_smoothing` uses `y * (1 - s) + 0.5 s`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct BinaryCrossentropy {
    /// Whether predictions are logits (Keras default false).
    pub from_logits: bool,
    /// Label smoothing in `[0, 1]` (Keras default 0).
    pub label_smoothing: f32,
}

/// Huber loss: `0.5 e^2` where `|e| <= delta`, else `delta (|e| - 0.5 delta)`,
/// averaged over outputs; Keras default delta 1.0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Huber {
    /// The switch point between quadratic and linear.
    pub delta: f32,
}

impl Default for Huber {
    fn default() -> Self {
        Huber { delta: 1.0 }
    }
}

/// Mean squared error: `mean_c (p - y)^2`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct MeanSquaredError;

/// Mean absolute error: `mean_c |p - y|`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct MeanAbsoluteError;

/// A loss function, by value. Build one from the typed structs
/// (`CategoricalCrossentropy::default().into()`) or a Keras name
/// (`"categorical_crossentropy".parse()`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Loss {
    /// See [`CategoricalCrossentropy`].
    CategoricalCrossentropy {
        /// Predictions are logits.
        from_logits: bool,
        /// Label smoothing.
        label_smoothing: f32,
    },
    /// See [`SparseCategoricalCrossentropy`].
    SparseCategoricalCrossentropy {
        /// Predictions are logits.
        from_logits: bool,
    },
    /// See [`BinaryCrossentropy`].
    BinaryCrossentropy {
        /// Predictions are logits.
        from_logits: bool,
        /// Label smoothing.
        label_smoothing: f32,
    },
    /// `mean_c (p - y)^2`.
    MeanSquaredError,
    /// `mean_c |p - y|`.
    MeanAbsoluteError,
    /// `100 * mean_c |y - p| / max(|y|, 1e-7)`.
    MeanAbsolutePercentageError,
    /// `mean_c (log(max(p, eps) + 1) - log(max(y, eps) + 1))^2`.
    MeanSquaredLogarithmicError,
    /// See [`Huber`].
    Huber {
        /// The switch point.
        delta: f32,
    },
    /// `mean_c log(cosh(p - y))`.
    LogCosh,
    /// `sum_c y log(y / p)`, both clipped to `[1e-7, 1]`.
    KlDivergence,
    /// `mean_c (p - y log(p + 1e-7))`.
    Poisson,
    /// `mean_c max(1 - y p, 0)`, with 0/1 targets mapped to -1/1.
    Hinge,
    /// `mean_c max(1 - y p, 0)^2`, with 0/1 targets mapped to -1/1.
    SquaredHinge,
    /// `max(max_c((1 - y) p) - sum_c y p + 1, 0)`.
    CategoricalHinge,
    /// `-sum_c (y / |y|) (p / |p|)` (Keras returns the negative cosine similarity).
    CosineSimilarity,
}

macro_rules! loss_from {
    ($t:ident => $e:expr) => {
        impl From<$t> for Loss {
            fn from(v: $t) -> Loss {
                #[allow(clippy::redundant_closure_call)]
                ($e)(v)
            }
        }
    };
}
loss_from!(CategoricalCrossentropy => |v: CategoricalCrossentropy| Loss::CategoricalCrossentropy { from_logits: v.from_logits, label_smoothing: v.label_smoothing });
loss_from!(SparseCategoricalCrossentropy => |v: SparseCategoricalCrossentropy| Loss::SparseCategoricalCrossentropy { from_logits: v.from_logits });
loss_from!(BinaryCrossentropy => |v: BinaryCrossentropy| Loss::BinaryCrossentropy { from_logits: v.from_logits, label_smoothing: v.label_smoothing });
loss_from!(Huber => |v: Huber| Loss::Huber { delta: v.delta });
loss_from!(MeanSquaredError => |_| Loss::MeanSquaredError);
loss_from!(MeanAbsoluteError => |_| Loss::MeanAbsoluteError);

/// Anything `compile` accepts as a loss: a typed loss, a [`Loss`], or a Keras name.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a loss",
    label = "expected a loss (such as `CategoricalCrossentropy::default()`) or a Keras name (such as \"categorical_crossentropy\")"
)]
pub trait IntoLoss {
    /// Converts into a [`Loss`], failing on unknown names.
    fn into_loss(self) -> Result<Loss>;
}

impl<T: Into<Loss>> IntoLoss for T {
    fn into_loss(self) -> Result<Loss> {
        Ok(self.into())
    }
}

impl IntoLoss for &str {
    fn into_loss(self) -> Result<Loss> {
        self.parse()
    }
}

impl IntoLoss for String {
    fn into_loss(self) -> Result<Loss> {
        self.parse()
    }
}

impl FromStr for Loss {
    type Err = Error;

    fn from_str(s: &str) -> Result<Loss> {
        // Keys without underscores: Keras function and class names both match.
        Ok(match crate::name_key(s).as_str() {
            "categoricalcrossentropy" => CategoricalCrossentropy::default().into(),
            "sparsecategoricalcrossentropy" => SparseCategoricalCrossentropy::default().into(),
            "binarycrossentropy" => BinaryCrossentropy::default().into(),
            "meansquarederror" | "mse" => Loss::MeanSquaredError,
            "meanabsoluteerror" | "mae" => Loss::MeanAbsoluteError,
            "meanabsolutepercentageerror" | "mape" => Loss::MeanAbsolutePercentageError,
            "meansquaredlogarithmicerror" | "msle" => Loss::MeanSquaredLogarithmicError,
            "huber" => Huber::default().into(),
            "logcosh" => Loss::LogCosh,
            "kldivergence" | "kld" | "kullbackleiblerdivergence" => Loss::KlDivergence,
            "poisson" => Loss::Poisson,
            "hinge" => Loss::Hinge,
            "squaredhinge" => Loss::SquaredHinge,
            "categoricalhinge" => Loss::CategoricalHinge,
            "cosinesimilarity" => Loss::CosineSimilarity,
            _ => {
                return Err(Error::UnknownName {
                    kind: "loss",
                    name: s.to_string(),
                    known: Loss::NAMES.to_string(),
                })
            }
        })
    }
}

impl Loss {
    /// The Keras names horn accepts.
    pub const NAMES: &'static str = "categorical_crossentropy, sparse_categorical_crossentropy, binary_crossentropy, mean_squared_error (mse), mean_absolute_error (mae), mean_absolute_percentage_error (mape), mean_squared_logarithmic_error (msle), huber, log_cosh, kl_divergence, poisson, hinge, squared_hinge, categorical_hinge, cosine_similarity";

    /// The Keras name.
    pub fn name(&self) -> &'static str {
        match self {
            Loss::CategoricalCrossentropy { .. } => "categorical_crossentropy",
            Loss::SparseCategoricalCrossentropy { .. } => "sparse_categorical_crossentropy",
            Loss::BinaryCrossentropy { .. } => "binary_crossentropy",
            Loss::MeanSquaredError => "mean_squared_error",
            Loss::MeanAbsoluteError => "mean_absolute_error",
            Loss::MeanAbsolutePercentageError => "mean_absolute_percentage_error",
            Loss::MeanSquaredLogarithmicError => "mean_squared_logarithmic_error",
            Loss::Huber { .. } => "huber",
            Loss::LogCosh => "log_cosh",
            Loss::KlDivergence => "kl_divergence",
            Loss::Poisson => "poisson",
            Loss::Hinge => "hinge",
            Loss::SquaredHinge => "squared_hinge",
            Loss::CategoricalHinge => "categorical_hinge",
            Loss::CosineSimilarity => "cosine_similarity",
        }
    }

    /// Checks the loss' own parameters.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Loss::CategoricalCrossentropy {
                label_smoothing: s, ..
            }
            | Loss::BinaryCrossentropy {
                label_smoothing: s, ..
            } if !(0.0..=1.0).contains(&s) => {
                Err(Error::arg("label_smoothing", "a number in [0, 1]", s))
            }
            Loss::Huber { delta } if !(delta.is_finite() && delta > 0.0) => {
                Err(Error::arg("delta", "a positive number", delta))
            }
            _ => Ok(()),
        }
    }

    /// Whether targets are class indices in one column.
    pub fn is_sparse(&self) -> bool {
        matches!(self, Loss::SparseCategoricalCrossentropy { .. })
    }

    /// Whether this loss, on probabilities, can be fused with the given output
    /// activation into the logits form.
    pub(crate) fn fuses_with(&self, act: Activation) -> bool {
        matches!(
            (self, act),
            (
                Loss::CategoricalCrossentropy {
                    from_logits: false,
                    ..
                },
                Activation::Softmax
            ) | (
                Loss::SparseCategoricalCrossentropy { from_logits: false },
                Activation::Softmax
            ) | (
                Loss::BinaryCrossentropy {
                    from_logits: false,
                    ..
                },
                Activation::Sigmoid
            )
        )
    }

    /// The reduced loss `mean_i l_i` of a batch, as a Keras loss object returns it.
    ///
    /// `y_true` has one row per sample (one column of class indices for the sparse
    /// loss); `y_pred` has one row per sample.
    ///
    /// ```
    /// use horn::losses::Loss;
    /// use ndarray::array;
    /// let v = Loss::MeanSquaredError.compute(array![[1.0, 2.0]].view(), array![[1.0, 4.0]].view()).unwrap();
    /// assert_eq!(v, 2.0);
    /// ```
    pub fn compute(&self, y_true: ArrayView2<f32>, y_pred: ArrayView2<f32>) -> Result<f32> {
        self.validate()?;
        let n = y_pred.nrows();
        if n == 0 {
            return Err(Error::Empty {
                name: "y_pred".into(),
            });
        }
        crate::model::validate::check_targets(self, y_true, y_pred.ncols(), 1, "y_true")?;
        if y_true.nrows() != n {
            return Err(Error::shape(
                "loss",
                format!("y_true with {n} rows"),
                format!("{} rows", y_true.nrows()),
            ));
        }
        let pred = y_pred.as_standard_layout();
        let truth = y_true.as_standard_layout();
        let mut losses = vec![0.0f32; n];
        self.per_sample(pred.view(), truth.view(), None, &mut losses, None, 1);
        Ok(losses.iter().map(|&v| v as f64).sum::<f64>() as f32 / n as f32)
    }

    /// Whether the loss reads each output position as one distribution over
    /// the last axis (the cross-entropies, KL divergence, categorical hinge,
    /// cosine similarity), rather than value by value.
    pub(crate) fn per_position(&self) -> bool {
        matches!(
            self,
            Loss::CategoricalCrossentropy { .. }
                | Loss::SparseCategoricalCrossentropy { .. }
                | Loss::KlDivergence
                | Loss::CategoricalHinge
                | Loss::CosineSimilarity
        )
    }

    /// Per-sample losses `l_i` and, when `grad` is given, `d l_i / d pred` (or,
    /// when `logits` is given for a fused loss, `d l_i / d logits`).
    ///
    /// All arrays are in standard layout, one row per sample. With
    /// `positions > 1` (a `(steps, classes)` output) a [`Loss::per_position`]
    /// loss is taken over each position's last axis and averaged over the
    /// positions, as Keras does; the sparse loss then has one class index
    /// per position.
    pub(crate) fn per_sample(
        &self,
        pred: ArrayView2<f32>,
        truth: ArrayView2<f32>,
        logits: Option<ArrayView2<f32>>,
        losses: &mut [f32],
        grad: Option<ArrayViewMut2<f32>>,
        positions: usize,
    ) {
        use crate::kernels::{values, values_mut};
        let c = pred.ncols();
        if c == 0 {
            return;
        }
        if positions > 1 && self.per_position() && c % positions == 0 {
            let cp = c / positions;
            let tp = truth.ncols() / positions;
            let inv = 1.0 / positions as f32;
            let preds = values(pred).chunks_exact(c);
            let truths = values(truth).chunks_exact(truth.ncols().max(1));
            let mut grads = grad.map(|g| values_mut(g).chunks_exact_mut(c));
            let mut zs = logits.map(|z| values(z).chunks_exact(c));
            for ((l, p), t) in losses.iter_mut().zip(preds).zip(truths) {
                let mut g = grads.as_mut().and_then(|it| it.next());
                let z = zs.as_mut().and_then(|it| it.next());
                let mut sum = 0.0f32;
                for k in 0..positions {
                    let gk = g.as_mut().map(|g| &mut g[k * cp..(k + 1) * cp]);
                    let zk = z.map(|z| &z[k * cp..(k + 1) * cp]);
                    sum += self.row(
                        &p[k * cp..(k + 1) * cp],
                        &t[k * tp..(k + 1) * tp],
                        zk,
                        gk,
                        cp,
                        cp as f32,
                    );
                }
                if let Some(g) = g {
                    g.iter_mut().for_each(|v| *v *= inv);
                }
                *l = sum * inv;
            }
            return;
        }
        let cf = c as f32;
        let tc = truth.ncols().max(1);
        let preds = values(pred).chunks_exact(c);
        let truths = values(truth).chunks_exact(tc);
        let mut grads = grad.map(|g| values_mut(g).chunks_exact_mut(c));
        let mut zs = logits.map(|z| values(z).chunks_exact(c));
        for ((l, p), t) in losses.iter_mut().zip(preds).zip(truths) {
            let g = grads.as_mut().and_then(|it| it.next());
            let z = zs.as_mut().and_then(|it| it.next());
            *l = self.row(p, t, z, g, c, cf);
        }
    }

    /// One sample. `z` is given exactly when the loss is fused with the output
    /// activation (softmax/sigmoid) and then the gradient is with respect to `z`.
    fn row(
        &self,
        p: &[f32],
        t: &[f32],
        z: Option<&[f32]>,
        g: Option<&mut [f32]>,
        c: usize,
        cf: f32,
    ) -> f32 {
        match *self {
            Loss::CategoricalCrossentropy {
                from_logits,
                label_smoothing: s,
            } => {
                let smooth = |y: f32| if s > 0.0 { y * (1.0 - s) + s / cf } else { y };
                if from_logits || z.is_some() {
                    let zz = z.unwrap_or(p);
                    let lse = logsumexp(zz);
                    let mut loss = 0.0f32;
                    let mut ysum = 0.0f32;
                    for (&y, &zi) in t.iter().zip(zz) {
                        let y = smooth(y);
                        loss += y * (lse - zi);
                        ysum += y;
                    }
                    if let Some(g) = g {
                        // d/dz = softmax(z) * sum(y) - y
                        if z.is_some() {
                            for ((gi, &pi), &y) in g.iter_mut().zip(p).zip(t) {
                                *gi = pi * ysum - smooth(y);
                            }
                        } else {
                            g.copy_from_slice(zz);
                            softmax_row_inplace(g);
                            for (gi, &y) in g.iter_mut().zip(t) {
                                *gi = *gi * ysum - smooth(y);
                            }
                        }
                    }
                    loss
                } else {
                    cce_probs(p, c, g, |j| smooth(t[j]))
                }
            }
            Loss::SparseCategoricalCrossentropy { from_logits } => {
                let k = t[0] as usize;
                if from_logits || z.is_some() {
                    let zz = z.unwrap_or(p);
                    let lse = logsumexp(zz);
                    if let Some(g) = g {
                        if z.is_some() {
                            g.copy_from_slice(p);
                        } else {
                            g.copy_from_slice(zz);
                            softmax_row_inplace(g);
                        }
                        g[k] -= 1.0;
                    }
                    lse - zz[k]
                } else {
                    cce_probs(p, c, g, |j| if j == k { 1.0 } else { 0.0 })
                }
            }
            Loss::BinaryCrossentropy {
                from_logits,
                label_smoothing: s,
            } => {
                let smooth = |y: f32| if s > 0.0 { y * (1.0 - s) + 0.5 * s } else { y };
                let mut loss = 0.0f32;
                if from_logits || z.is_some() {
                    let zz = z.unwrap_or(p);
                    let mut g = g;
                    for j in 0..c {
                        let y = smooth(t[j]);
                        let zj = zz[j];
                        loss += zj.max(0.0) - zj * y + (-zj.abs()).exp().ln_1p();
                        if let Some(g) = g.as_deref_mut() {
                            let pj = if z.is_some() { p[j] } else { sigmoid(zj) };
                            g[j] = (pj - y) / cf;
                        }
                    }
                } else {
                    let mut g = g;
                    for j in 0..c {
                        let y = smooth(t[j]);
                        let pc = p[j].clamp(EPSILON, 1.0 - EPSILON);
                        loss -= y * pc.ln() + (1.0 - y) * (1.0 - pc).ln();
                        if let Some(g) = g.as_deref_mut() {
                            let inside = p[j] > EPSILON && p[j] < 1.0 - EPSILON;
                            g[j] = if inside {
                                -(y / pc - (1.0 - y) / (1.0 - pc)) / cf
                            } else {
                                0.0
                            };
                        }
                    }
                }
                loss / cf
            }
            Loss::MeanSquaredError => elementwise(p, t, g, cf, |e, _| (e * e, 2.0 * e)),
            Loss::MeanAbsoluteError => elementwise(p, t, g, cf, |e, _| (e.abs(), sign(e))),
            Loss::MeanAbsolutePercentageError => elementwise(p, t, g, cf, |e, y| {
                let d = y.abs().max(EPSILON);
                (100.0 * e.abs() / d, 100.0 * sign(e) / d)
            }),
            Loss::MeanSquaredLogarithmicError => {
                let mut loss = 0.0f32;
                let mut g = g;
                for j in 0..c {
                    let a = (p[j].max(EPSILON) + 1.0).ln();
                    let b = (t[j].max(EPSILON) + 1.0).ln();
                    loss += (a - b) * (a - b);
                    if let Some(g) = g.as_deref_mut() {
                        g[j] = if p[j] > EPSILON {
                            2.0 * (a - b) / (p[j] + 1.0) / cf
                        } else {
                            0.0
                        };
                    }
                }
                loss / cf
            }
            Loss::Huber { delta } => elementwise(p, t, g, cf, |e, _| {
                let a = e.abs();
                if a <= delta {
                    (0.5 * e * e, e)
                } else {
                    (delta * (a - 0.5 * delta), delta * sign(e))
                }
            }),
            Loss::LogCosh => elementwise(p, t, g, cf, |e, _| {
                // log(cosh(e)) = e + softplus(-2e) - log(2), stable for large |e|
                let m = -2.0 * e;
                let softplus = m.max(0.0) + (-m.abs()).exp().ln_1p();
                (e + softplus - std::f32::consts::LN_2, e.tanh())
            }),
            Loss::KlDivergence => {
                let mut loss = 0.0f32;
                let mut g = g;
                for j in 0..c {
                    let y = t[j].clamp(EPSILON, 1.0);
                    let pc = p[j].clamp(EPSILON, 1.0);
                    loss += y * (y / pc).ln();
                    if let Some(g) = g.as_deref_mut() {
                        g[j] = if p[j] > EPSILON && p[j] < 1.0 {
                            -y / pc
                        } else {
                            0.0
                        };
                    }
                }
                loss
            }
            Loss::Poisson => elementwise(p, t, g, cf, |e, y| {
                let pj = e + y;
                (pj - y * (pj + EPSILON).ln(), 1.0 - y / (pj + EPSILON))
            }),
            Loss::Hinge | Loss::SquaredHinge => {
                let binary = t.iter().all(|&y| y == 0.0 || y == 1.0);
                let squared = matches!(self, Loss::SquaredHinge);
                let mut loss = 0.0f32;
                let mut g = g;
                for j in 0..c {
                    let y = if binary { 2.0 * t[j] - 1.0 } else { t[j] };
                    let m = (1.0 - y * p[j]).max(0.0);
                    loss += if squared { m * m } else { m };
                    if let Some(g) = g.as_deref_mut() {
                        g[j] = if m > 0.0 {
                            if squared {
                                -2.0 * y * m / cf
                            } else {
                                -y / cf
                            }
                        } else {
                            0.0
                        };
                    }
                }
                loss / cf
            }
            Loss::CategoricalHinge => {
                let pos: f32 = p.iter().zip(t).map(|(a, b)| a * b).sum();
                let mut neg = f32::NEG_INFINITY;
                let mut arg = 0;
                for j in 0..c {
                    let v = (1.0 - t[j]) * p[j];
                    if v > neg {
                        neg = v;
                        arg = j;
                    }
                }
                let v = (neg - pos + 1.0).max(0.0);
                if let Some(g) = g {
                    for j in 0..c {
                        g[j] = if v > 0.0 { -t[j] } else { 0.0 };
                    }
                    if v > 0.0 {
                        g[arg] += 1.0 - t[arg];
                    }
                }
                v
            }
            Loss::CosineSimilarity => {
                let ny = t.iter().map(|v| v * v).sum::<f32>().max(1e-12).sqrt();
                let np2 = p.iter().map(|v| v * v).sum::<f32>().max(1e-12);
                let np = np2.sqrt();
                let dot: f32 = p.iter().zip(t).map(|(a, b)| a * b).sum();
                let cos = dot / (ny * np);
                if let Some(g) = g {
                    for j in 0..c {
                        // d(-cos)/dp_j = -(y_j / (|y| |p|) - dot p_j / (|y| |p|^3))
                        g[j] = -(t[j] / (ny * np) - dot * p[j] / (ny * np * np2));
                    }
                }
                -cos
            }
        }
    }
}

/// Cross-entropy on probabilities, Keras' way: renormalise, clip, `-sum y log p`.
fn cce_probs(p: &[f32], c: usize, g: Option<&mut [f32]>, y: impl Fn(usize) -> f32) -> f32 {
    let sum: f32 = p.iter().sum();
    let mut loss = 0.0f32;
    let mut ysum_inside = 0.0f32;
    for (j, &pj) in p.iter().enumerate() {
        let q = pj / sum;
        let qc = q.clamp(EPSILON, 1.0 - EPSILON);
        let yj = y(j);
        loss -= yj * qc.ln();
        if q > EPSILON && q < 1.0 - EPSILON {
            ysum_inside += yj;
        }
    }
    if let Some(g) = g {
        // l = -sum_c y_c log(q_c), q = p / S  =>  dl/dp_j = (-y_j / q_j [j inside] + sum_{c inside} y_c) / S
        for j in 0..c {
            let q = p[j] / sum;
            let inside = q > EPSILON && q < 1.0 - EPSILON;
            let own = if inside { -y(j) / q } else { 0.0 };
            g[j] = (own + ysum_inside) / sum;
        }
    }
    loss
}

/// Losses of the form `mean_c f(p_c - y_c, y_c)`; `f` returns the value and its
/// derivative with respect to `p`.
#[inline]
fn elementwise(
    p: &[f32],
    t: &[f32],
    g: Option<&mut [f32]>,
    cf: f32,
    f: impl Fn(f32, f32) -> (f32, f32),
) -> f32 {
    let mut loss = 0.0f32;
    match g {
        Some(g) => {
            for ((gi, &pi), &yi) in g.iter_mut().zip(p).zip(t) {
                let (v, d) = f(pi - yi, yi);
                loss += v;
                *gi = d / cf;
            }
        }
        None => {
            for (&pi, &yi) in p.iter().zip(t) {
                loss += f(pi - yi, yi).0;
            }
        }
    }
    loss / cf
}

#[inline]
fn sign(v: f32) -> f32 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        0.0
    }
}

#[inline]
fn logsumexp(z: &[f32]) -> f32 {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    max + z.iter().map(|&v| (v - max).exp()).sum::<f32>().ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn cce_clips_zero_probabilities() {
        // p = 0 for the true class is clipped to 1e-7: l = -ln(1e-7) = 16.118
        let v = Loss::from(CategoricalCrossentropy::default())
            .compute(array![[1.0, 0.0]].view(), array![[0.0, 1.0]].view())
            .unwrap();
        assert!((v - 16.118_095).abs() < 1e-3, "{v}");
    }

    #[test]
    fn names_parse() {
        for n in ["mse", "mae", "huber", "categorical_crossentropy", "hinge"] {
            assert!(n.parse::<Loss>().is_ok());
        }
        assert!("msee".parse::<Loss>().is_err());
    }
}
