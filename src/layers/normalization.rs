//! `BatchNormalization` and `LayerNormalization` over the last axis.
//!
//! Both normalize `x` to `xhat = (x - mean) / sqrt(var + epsilon)` and return
//! `gamma * xhat + beta`. BatchNormalization takes the statistics of each
//! channel over the batch (and every spatial position) in training, keeping
//! them in its state buffer for the backward pass; after the optimizer step,
//! [`Layer::end_train_step`] folds them into the moving averages that
//! inference uses. LayerNormalization takes them over each position's
//! features and needs no state. Every sum runs in row order, so results are
//! the same for any number of threads.

use ndarray::{ArrayView2, ArrayViewMut2};
use rand::rngs::StdRng;

use super::{
    expect_grads, expect_shape, BackwardContext, Buffers, ForwardContext, Layer, ParamView,
};
use crate::error::{Error, Result};
use crate::kernels::{values, values_mut};
use crate::regularizers::Regularizer;
use crate::saving::LayerConfig;
use crate::shape::Shape;

fn check_epsilon(epsilon: f32) -> Result<()> {
    if epsilon.is_finite() && epsilon > 0.0 {
        Ok(())
    } else {
        Err(Error::arg("epsilon", "a positive, finite number", epsilon))
    }
}

/// Channel groups whose statistics are summed in f64 registers on the stack.
const GROUP: usize = 64;

/// The batch mean, inverse standard deviation and (biased) variance of each
/// of `c` channels of `xs` into `state` (`[mean; c], [inv; c], [var; c],
/// flag`), summing in f64 in row order, two passes (no cancellation).
fn batch_moments(xs: &[f32], c: usize, epsilon: f32, state: &mut [f32]) {
    let count = (xs.len() / c) as f64;
    for g0 in (0..c).step_by(GROUP) {
        let w = GROUP.min(c - g0);
        let mut sum = [0.0f64; GROUP];
        for cell in xs.chunks_exact(c) {
            for (s, &v) in sum[..w].iter_mut().zip(&cell[g0..g0 + w]) {
                *s += v as f64;
            }
        }
        let mut mean = [0.0f64; GROUP];
        for j in 0..w {
            mean[j] = sum[j] / count;
        }
        let mut sq = [0.0f64; GROUP];
        for cell in xs.chunks_exact(c) {
            for j in 0..w {
                let d = cell[g0 + j] as f64 - mean[j];
                sq[j] += d * d;
            }
        }
        for j in 0..w {
            let var = sq[j] / count;
            state[g0 + j] = mean[j] as f32;
            state[c + g0 + j] = (1.0 / (var + epsilon as f64).sqrt()) as f32;
            state[2 * c + g0 + j] = var as f32;
        }
    }
    state[3 * c] = 1.0;
}

/// Batch normalization over the last axis (Keras `BatchNormalization` with
/// `axis=-1`).
///
/// Keras defaults: `momentum` 0.99, `epsilon` 1e-3, `center` and `scale`
/// true, `beta` zeros, `gamma` ones, moving mean zeros and moving variance
/// ones. In training each channel is normalized with the batch's mean and
/// (biased) variance, and the moving statistics become
/// `moving * momentum + batch * (1 - momentum)` after each step; `predict`
/// and `evaluate` use the moving statistics. The moving statistics are
/// non-trainable weights: saved, loaded, and counted apart by `summary()`.
///
/// ```
/// use horn::prelude::*;
/// let m = Sequential::new().input(64).add(BatchNormalization::new());
/// assert_eq!(m.count_params(), 256); // gamma, beta, moving mean, moving variance
/// ```
#[derive(Debug, Clone)]
pub struct BatchNormalization {
    pub(crate) momentum: f32,
    pub(crate) epsilon: f32,
    pub(crate) center: bool,
    pub(crate) scale: bool,
    pub(crate) beta_regularizer: Option<Regularizer>,
    pub(crate) gamma_regularizer: Option<Regularizer>,
    pub(crate) gamma: Vec<f32>,
    pub(crate) beta: Vec<f32>,
    pub(crate) moving_mean: Vec<f32>,
    pub(crate) moving_variance: Vec<f32>,
    channels: usize,
}

impl Default for BatchNormalization {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchNormalization {
    /// Batch normalization with Keras' defaults.
    pub fn new() -> Self {
        BatchNormalization {
            momentum: 0.99,
            epsilon: 1e-3,
            center: true,
            scale: true,
            beta_regularizer: None,
            gamma_regularizer: None,
            gamma: Vec::new(),
            beta: Vec::new(),
            moving_mean: Vec::new(),
            moving_variance: Vec::new(),
            channels: 0,
        }
    }
    /// Weight of the old value in the moving averages (Keras default 0.99).
    pub fn momentum(mut self, momentum: f32) -> Self {
        self.momentum = momentum;
        self
    }
    /// Added to the variance before its square root (Keras default 1e-3).
    pub fn epsilon(mut self, epsilon: f32) -> Self {
        self.epsilon = epsilon;
        self
    }
    /// Whether to add the learned offset `beta` (Keras default true).
    pub fn center(mut self, center: bool) -> Self {
        self.center = center;
        self
    }
    /// Whether to multiply by the learned `gamma` (Keras default true).
    pub fn scale(mut self, scale: bool) -> Self {
        self.scale = scale;
        self
    }
    /// Penalty on `beta`.
    pub fn beta_regularizer(mut self, r: Regularizer) -> Self {
        self.beta_regularizer = Some(r);
        self
    }
    /// Penalty on `gamma`.
    pub fn gamma_regularizer(mut self, r: Regularizer) -> Self {
        self.gamma_regularizer = Some(r);
        self
    }
    /// The moving mean (inference statistics).
    pub fn moving_mean(&self) -> &[f32] {
        &self.moving_mean
    }
    /// The moving variance (inference statistics).
    pub fn moving_variance(&self) -> &[f32] {
        &self.moving_variance
    }

    fn gamma_at(&self, c: usize) -> f32 {
        if self.scale {
            self.gamma[c]
        } else {
            1.0
        }
    }
    fn beta_at(&self, c: usize) -> f32 {
        if self.center {
            self.beta[c]
        } else {
            0.0
        }
    }
}

impl Layer for BatchNormalization {
    fn propagates_mask(&self) -> bool {
        true
    }

    fn class_name(&self) -> &str {
        "BatchNormalization"
    }

    fn build(&mut self, input: &Shape, _rng: &mut StdRng) -> Result<Shape> {
        check_epsilon(self.epsilon)?;
        if !(self.momentum.is_finite() && (0.0..=1.0).contains(&self.momentum)) {
            return Err(Error::arg("momentum", "a number in [0, 1]", self.momentum));
        }
        for r in [self.beta_regularizer, self.gamma_regularizer]
            .into_iter()
            .flatten()
        {
            r.validate()?;
        }
        let c = input.last();
        self.channels = c;
        self.gamma = if self.scale { vec![1.0; c] } else { Vec::new() };
        self.beta = if self.center {
            vec![0.0; c]
        } else {
            Vec::new()
        };
        self.moving_mean = vec![0.0; c];
        self.moving_variance = vec![1.0; c];
        Ok(input.clone())
    }

    fn buffers(&self, _input: &Shape, training: bool) -> Buffers {
        // State (training): the batch mean, inverse standard deviation and
        // variance per channel, and a flag saying they are set. Scratch: the
        // inference scale, and the gradient sums.
        Buffers {
            state: if training { 3 * self.channels + 1 } else { 0 },
            scratch: 3 * self.channels,
            ..Buffers::default()
        }
    }

    fn forward(
        &self,
        x: ArrayView2<f32>,
        mut y: ArrayViewMut2<f32>,
        _aux: ArrayViewMut2<f32>,
        ctx: &mut ForwardContext<'_>,
    ) {
        let c = self.channels;
        expect_shape("BatchNormalization", "y", y.shape(), x.shape());
        assert!(
            c > 0 && x.ncols() % c == 0,
            "BatchNormalization: `x` has {} columns, not a multiple of its {c} channels",
            x.ncols()
        );
        let xs = values(x);
        let ys = values_mut(y.view_mut());
        let (mean, inv): (&[f32], &[f32]) = if ctx.training {
            assert!(
                ctx.state.len() > 3 * c,
                "BatchNormalization: state of {} values, {} needed",
                ctx.state.len(),
                3 * c + 1
            );
            batch_moments(xs, c, self.epsilon, ctx.state);
            (&ctx.state[..c], &ctx.state[c..2 * c])
        } else {
            assert!(
                ctx.scratch.len() >= c,
                "BatchNormalization: scratch of {} values, {c} needed",
                ctx.scratch.len()
            );
            for (o, &v) in ctx.scratch[..c].iter_mut().zip(&self.moving_variance) {
                *o = 1.0 / (v + self.epsilon).sqrt();
            }
            (&self.moving_mean, &ctx.scratch[..c])
        };
        for (yc, xc) in ys.chunks_exact_mut(c).zip(xs.chunks_exact(c)) {
            for ch in 0..c {
                yc[ch] = (xc[ch] - mean[ch]) * inv[ch] * self.gamma_at(ch) + self.beta_at(ch);
            }
        }
    }

    fn backward(
        &self,
        x: ArrayView2<f32>,
        y: ArrayView2<f32>,
        _aux: ArrayView2<f32>,
        dy: ArrayViewMut2<f32>,
        dx: Option<ArrayViewMut2<f32>>,
        grads: &mut [Vec<f32>],
        ctx: &mut BackwardContext<'_>,
    ) {
        let c = self.channels;
        expect_shape("BatchNormalization", "y", y.shape(), x.shape());
        expect_shape("BatchNormalization", "dy", dy.shape(), x.shape());
        let n_grads = self.scale as usize + self.center as usize;
        expect_grads("BatchNormalization", grads, &[c, c][..n_grads]);
        assert!(
            ctx.scratch.len() >= 3 * c,
            "BatchNormalization: scratch of {} values, {} needed",
            ctx.scratch.len(),
            3 * c
        );
        let xs = values(x);
        let dys = values(dy.view());
        // The statistics the forward pass used: the batch's in training
        // (state flag set), else the moving ones.
        let training = ctx.state.len() > 3 * c && ctx.state[3 * c] == 1.0;
        let (inf_inv, sums) = ctx.scratch.split_at_mut(c);
        let (dgamma, dbeta) = sums[..2 * c].split_at_mut(c);
        let (mean, inv): (&[f32], &[f32]) = if training {
            (&ctx.state[..c], &ctx.state[c..2 * c])
        } else {
            for (o, &v) in inf_inv.iter_mut().zip(&self.moving_variance) {
                *o = 1.0 / (v + self.epsilon).sqrt();
            }
            (&self.moving_mean, inf_inv)
        };
        dgamma.fill(0.0);
        dbeta.fill(0.0);
        for (xc, dc) in xs.chunks_exact(c).zip(dys.chunks_exact(c)) {
            for ch in 0..c {
                let xhat = (xc[ch] - mean[ch]) * inv[ch];
                dgamma[ch] += dc[ch] * xhat;
                dbeta[ch] += dc[ch];
            }
        }
        let mut g = 0;
        if self.scale {
            grads[g].copy_from_slice(dgamma);
            g += 1;
        }
        if self.center {
            grads[g].copy_from_slice(dbeta);
        }
        let Some(dx) = dx else { return };
        expect_shape("BatchNormalization", "dx", dx.shape(), x.shape());
        let dxs = values_mut(dx);
        let count = (xs.len() / c.max(1)) as f32;
        for ((dxc, xc), dc) in dxs
            .chunks_exact_mut(c)
            .zip(xs.chunks_exact(c))
            .zip(dys.chunks_exact(c))
        {
            for ch in 0..c {
                let k = self.gamma_at(ch) * inv[ch];
                dxc[ch] = if training {
                    let xhat = (xc[ch] - mean[ch]) * inv[ch];
                    k * (dc[ch] - dbeta[ch] / count - xhat * dgamma[ch] / count)
                } else {
                    k * dc[ch]
                };
            }
        }
    }

    fn end_train_step(&mut self, state: &[f32]) {
        let c = self.channels;
        if state.len() <= 3 * c || state[3 * c] != 1.0 {
            return;
        }
        let m = self.momentum;
        for ch in 0..c {
            self.moving_mean[ch] = self.moving_mean[ch] * m + state[ch] * (1.0 - m);
            self.moving_variance[ch] = self.moving_variance[ch] * m + state[2 * c + ch] * (1.0 - m);
        }
    }

    fn params(&self) -> Vec<ParamView<'_>> {
        let c = self.channels;
        let mut v = Vec::new();
        if self.scale {
            v.push(ParamView::trainable("gamma", vec![c], &self.gamma));
        }
        if self.center {
            v.push(ParamView::trainable("beta", vec![c], &self.beta));
        }
        for (name, values) in [
            ("moving_mean", &self.moving_mean),
            ("moving_variance", &self.moving_variance),
        ] {
            v.push(ParamView {
                name,
                shape: vec![c],
                values,
                trainable: false,
            });
        }
        v
    }

    fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut [f32])) {
        if self.scale {
            f(&mut self.gamma);
        }
        if self.center {
            f(&mut self.beta);
        }
        f(&mut self.moving_mean);
        f(&mut self.moving_variance);
    }

    fn regularization_penalty(&self) -> f32 {
        let mut p = 0.0;
        if let (Some(r), true) = (self.gamma_regularizer, self.scale) {
            p += r.penalty(&self.gamma);
        }
        if let (Some(r), true) = (self.beta_regularizer, self.center) {
            p += r.penalty(&self.beta);
        }
        p
    }

    fn add_regularization_gradient(&self, grads: &mut [Vec<f32>]) {
        let mut g = 0;
        if self.scale {
            if let Some(r) = self.gamma_regularizer {
                r.add_gradient(&self.gamma, &mut grads[g]);
            }
            g += 1;
        }
        if let (Some(r), true) = (self.beta_regularizer, self.center) {
            r.add_gradient(&self.beta, &mut grads[g]);
        }
    }

    fn config(&self) -> Option<LayerConfig> {
        Some(LayerConfig::BatchNormalization {
            momentum: self.momentum,
            epsilon: self.epsilon,
            center: self.center,
            scale: self.scale,
            beta_regularizer: self.beta_regularizer,
            gamma_regularizer: self.gamma_regularizer,
        })
    }
}

/// Layer normalization over the last axis (Keras `LayerNormalization` with
/// `axis=-1`): each position's features are normalized by their own mean and
/// variance. Keras defaults: `epsilon` 1e-3, `center` and `scale` true,
/// `beta` zeros, `gamma` ones.
///
/// ```
/// use horn::prelude::*;
/// let m = Sequential::new().input_shape(&[9, 3]).add(LayerNormalization::new());
/// assert_eq!(m.count_params(), 6);
/// ```
#[derive(Debug, Clone)]
pub struct LayerNormalization {
    pub(crate) epsilon: f32,
    pub(crate) center: bool,
    pub(crate) scale: bool,
    pub(crate) gamma: Vec<f32>,
    pub(crate) beta: Vec<f32>,
    features: usize,
}

impl Default for LayerNormalization {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerNormalization {
    /// Layer normalization with Keras' defaults.
    pub fn new() -> Self {
        LayerNormalization {
            epsilon: 1e-3,
            center: true,
            scale: true,
            gamma: Vec::new(),
            beta: Vec::new(),
            features: 0,
        }
    }
    /// Added to the variance before its square root (Keras default 1e-3).
    pub fn epsilon(mut self, epsilon: f32) -> Self {
        self.epsilon = epsilon;
        self
    }
    /// Whether to add the learned offset `beta` (Keras default true).
    pub fn center(mut self, center: bool) -> Self {
        self.center = center;
        self
    }
    /// Whether to multiply by the learned `gamma` (Keras default true).
    pub fn scale(mut self, scale: bool) -> Self {
        self.scale = scale;
        self
    }

    /// Mean and inverse standard deviation of one position's features.
    fn moments(&self, v: &[f32]) -> (f32, f32) {
        let n = v.len() as f64;
        let mean = v.iter().map(|&a| a as f64).sum::<f64>() / n;
        let var = v.iter().map(|&a| (a as f64 - mean).powi(2)).sum::<f64>() / n;
        (
            mean as f32,
            (1.0 / (var + self.epsilon as f64).sqrt()) as f32,
        )
    }
}

impl Layer for LayerNormalization {
    fn propagates_mask(&self) -> bool {
        true
    }

    fn class_name(&self) -> &str {
        "LayerNormalization"
    }

    fn build(&mut self, input: &Shape, _rng: &mut StdRng) -> Result<Shape> {
        check_epsilon(self.epsilon)?;
        let d = input.last();
        self.features = d;
        self.gamma = if self.scale { vec![1.0; d] } else { Vec::new() };
        self.beta = if self.center {
            vec![0.0; d]
        } else {
            Vec::new()
        };
        Ok(input.clone())
    }

    fn buffers(&self, _input: &Shape, _training: bool) -> Buffers {
        Buffers {
            scratch: 3 * self.features,
            ..Buffers::default()
        }
    }

    fn forward(
        &self,
        x: ArrayView2<f32>,
        mut y: ArrayViewMut2<f32>,
        _aux: ArrayViewMut2<f32>,
        _ctx: &mut ForwardContext<'_>,
    ) {
        let d = self.features;
        expect_shape("LayerNormalization", "y", y.shape(), x.shape());
        assert!(
            d > 0 && x.ncols() % d == 0,
            "LayerNormalization: `x` has {} columns, not a multiple of its {d} features",
            x.ncols()
        );
        for (yc, xc) in values_mut(y.view_mut())
            .chunks_exact_mut(d)
            .zip(values(x).chunks_exact(d))
        {
            let (mean, inv) = self.moments(xc);
            for j in 0..d {
                let g = if self.scale { self.gamma[j] } else { 1.0 };
                let b = if self.center { self.beta[j] } else { 0.0 };
                yc[j] = (xc[j] - mean) * inv * g + b;
            }
        }
    }

    fn backward(
        &self,
        x: ArrayView2<f32>,
        y: ArrayView2<f32>,
        _aux: ArrayView2<f32>,
        dy: ArrayViewMut2<f32>,
        dx: Option<ArrayViewMut2<f32>>,
        grads: &mut [Vec<f32>],
        ctx: &mut BackwardContext<'_>,
    ) {
        let d = self.features;
        expect_shape("LayerNormalization", "y", y.shape(), x.shape());
        expect_shape("LayerNormalization", "dy", dy.shape(), x.shape());
        let n_grads = self.scale as usize + self.center as usize;
        expect_grads("LayerNormalization", grads, &[d, d][..n_grads]);
        assert!(
            ctx.scratch.len() >= 3 * d,
            "LayerNormalization: scratch of {} values, {} needed",
            ctx.scratch.len(),
            3 * d
        );
        let (dxhat, sums) = ctx.scratch[..3 * d].split_at_mut(d);
        let (dgamma, dbeta) = sums.split_at_mut(d);
        dgamma.fill(0.0);
        dbeta.fill(0.0);
        let mut dx = dx.map(|dx| {
            expect_shape("LayerNormalization", "dx", dx.shape(), x.shape());
            values_mut(dx)
        });
        for (i, (xc, dc)) in values(x)
            .chunks_exact(d)
            .zip(values(dy.view()).chunks_exact(d))
            .enumerate()
        {
            let (mean, inv) = self.moments(xc);
            let (mut s1, mut s2) = (0.0f64, 0.0f64);
            for j in 0..d {
                let xhat = (xc[j] - mean) * inv;
                dgamma[j] += dc[j] * xhat;
                dbeta[j] += dc[j];
                let g = if self.scale { self.gamma[j] } else { 1.0 };
                dxhat[j] = dc[j] * g;
                s1 += dxhat[j] as f64;
                s2 += (dxhat[j] * xhat) as f64;
            }
            if let Some(dx) = dx.as_deref_mut() {
                let (m1, m2) = ((s1 / d as f64) as f32, (s2 / d as f64) as f32);
                for j in 0..d {
                    let xhat = (xc[j] - mean) * inv;
                    dx[i * d + j] = inv * (dxhat[j] - m1 - xhat * m2);
                }
            }
        }
        let mut g = 0;
        if self.scale {
            grads[g].copy_from_slice(dgamma);
            g += 1;
        }
        if self.center {
            grads[g].copy_from_slice(dbeta);
        }
    }

    fn params(&self) -> Vec<ParamView<'_>> {
        let mut v = Vec::new();
        if self.scale {
            v.push(ParamView::trainable(
                "gamma",
                vec![self.features],
                &self.gamma,
            ));
        }
        if self.center {
            v.push(ParamView::trainable(
                "beta",
                vec![self.features],
                &self.beta,
            ));
        }
        v
    }

    fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut [f32])) {
        if self.scale {
            f(&mut self.gamma);
        }
        if self.center {
            f(&mut self.beta);
        }
    }

    fn config(&self) -> Option<LayerConfig> {
        Some(LayerConfig::LayerNormalization {
            epsilon: self.epsilon,
            center: self.center,
            scale: self.scale,
        })
    }
}
