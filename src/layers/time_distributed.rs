//! `TimeDistributed`: one layer applied to every step of a sequence.

use ndarray::{ArrayView2, ArrayViewMut2};
use rand::rngs::StdRng;

use super::{BackwardContext, Buffers, ForwardContext, Layer, ParamView};
use crate::error::{Error, Result};
use crate::kernels::{matrix, matrix_mut, values, values_mut};
use crate::saving::LayerConfig;
use crate::shape::Shape;

/// Applies a layer to each step of its input separately, with one set of
/// weights (Keras `TimeDistributed`): on `(steps, ...)` inputs the wrapped
/// layer sees `(...)` and the output is `(steps, ...its output)`.
///
/// A batch of `n` sequences is, in horn's row layout, exactly a batch of
/// `n * steps` rows of the wrapped layer, so the wrapper passes the same
/// memory on with another row count: no copy. (`Dense` already applies to the
/// last axis of any input, as in Keras, so `TimeDistributed(Dense)` is the
/// same as `Dense`; the wrapper is for the other layers, a convolution over
/// the frames of a video for instance.)
///
/// ```
/// use horn::prelude::*;
/// // Ten frames of 8x8 grey images, each through the same small convnet.
/// let model = Sequential::new()
///     .input_shape(&[10, 8, 8, 1])
///     .add(TimeDistributed::new(Conv2D::new(4, 3, Relu)))
///     .add(TimeDistributed::new(Flatten::new()))
///     .lstm(16)
///     .dense(1, Sigmoid);
/// assert!(model.summary().contains("(None, 10, 144)"));
/// ```
#[derive(Debug)]
pub struct TimeDistributed {
    inner: Box<dyn Layer>,
    /// Steps and the wrapped layer's input shape, set when built.
    steps: usize,
    inner_input: Shape,
    inner_output: Shape,
}

impl TimeDistributed {
    /// Wraps `layer`.
    pub fn new(layer: impl Layer + 'static) -> Self {
        TimeDistributed::new_boxed(Box::new(layer))
    }

    /// Wraps a boxed layer.
    pub fn new_boxed(layer: Box<dyn Layer>) -> Self {
        TimeDistributed {
            inner: layer,
            steps: 0,
            inner_input: Shape::new(&[]),
            inner_output: Shape::new(&[]),
        }
    }

    /// The wrapped layer.
    pub fn layer(&self) -> &dyn Layer {
        self.inner.as_ref()
    }

    /// Rows of the wrapped layer for `n` sequences.
    fn rows(&self, n: usize) -> usize {
        n * self.steps
    }
}

impl Layer for TimeDistributed {
    fn class_name(&self) -> &str {
        "TimeDistributed"
    }

    /// The time axis stays (the wrapped layer sees single steps, no mask).
    fn propagates_mask(&self) -> bool {
        true
    }

    fn build(&mut self, input: &Shape, rng: &mut StdRng) -> Result<Shape> {
        if input.rank() < 2 {
            return Err(Error::shape(
                "TimeDistributed input",
                "(steps, ...): at least a time axis and one more (rank 3 with the batch)",
                input.to_string(),
            ));
        }
        let inner_input = Shape::new(&input.dims()[1..]);
        let inner_output = self.inner.build(&inner_input, rng)?;
        self.steps = input.dims()[0];
        let mut dims = vec![self.steps];
        dims.extend_from_slice(inner_output.dims());
        self.inner_input = inner_input;
        self.inner_output = inner_output;
        Ok(Shape::new(&dims))
    }

    fn buffers(&self, input: &Shape, training: bool) -> Buffers {
        if input.rank() < 2 {
            return Buffers::default();
        }
        let steps = input.dims()[0];
        let b = self
            .inner
            .buffers(&Shape::new(&input.dims()[1..]), training);
        Buffers {
            aux: b.aux.saturating_mul(steps),
            scratch_per_row: b.scratch_per_row.saturating_mul(steps),
            scratch: b.scratch,
            state: b.state,
        }
    }

    fn forward(
        &self,
        x: ArrayView2<f32>,
        mut y: ArrayViewMut2<f32>,
        mut aux: ArrayViewMut2<f32>,
        ctx: &mut ForwardContext<'_>,
    ) {
        let n = x.nrows();
        let nt = self.rows(n);
        let (xi, yi, ai) = (
            self.inner_input.size(),
            self.inner_output.size(),
            aux.ncols() / self.steps.max(1),
        );
        super::expect_shape("TimeDistributed", "x", x.shape(), &[n, self.steps * xi]);
        super::expect_shape("TimeDistributed", "y", y.shape(), &[n, self.steps * yi]);
        super::expect_shape("TimeDistributed", "aux", aux.shape(), &[n, self.steps * ai]);
        let aux = values_mut(aux.view_mut());
        let mask = ctx.mask.take();
        self.inner.forward(
            matrix(values(x), nt, xi),
            matrix_mut(values_mut(y.view_mut()), nt, yi),
            matrix_mut(aux, nt, ai),
            ctx,
        );
        ctx.mask = mask;
    }

    fn backward(
        &self,
        x: ArrayView2<f32>,
        y: ArrayView2<f32>,
        aux: ArrayView2<f32>,
        mut dy: ArrayViewMut2<f32>,
        dx: Option<ArrayViewMut2<f32>>,
        grads: &mut [Vec<f32>],
        ctx: &mut BackwardContext<'_>,
    ) {
        let n = x.nrows();
        let nt = self.rows(n);
        let (xi, yi, ai) = (
            self.inner_input.size(),
            self.inner_output.size(),
            aux.ncols() / self.steps.max(1),
        );
        super::expect_shape("TimeDistributed", "x", x.shape(), &[n, self.steps * xi]);
        super::expect_shape("TimeDistributed", "y", y.shape(), &[n, self.steps * yi]);
        super::expect_shape("TimeDistributed", "dy", dy.shape(), y.shape());
        super::expect_shape("TimeDistributed", "aux", aux.shape(), &[n, self.steps * ai]);
        let mut dx = dx;
        if let Some(d) = &dx {
            super::expect_shape("TimeDistributed", "dx", d.shape(), x.shape());
        }
        let dxi = dx
            .as_mut()
            .map(|d| matrix_mut(values_mut(d.view_mut()), nt, xi));
        let mask = ctx.mask.take();
        self.inner.backward(
            matrix(values(x), nt, xi),
            matrix(values(y), nt, yi),
            matrix(values(aux), nt, ai),
            matrix_mut(values_mut(dy.view_mut()), nt, yi),
            dxi,
            grads,
            ctx,
        );
        ctx.mask = mask;
    }

    fn end_train_step(&mut self, state: &[f32]) {
        self.inner.end_train_step(state);
    }

    fn params(&self) -> Vec<ParamView<'_>> {
        self.inner.params()
    }

    fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut [f32])) {
        self.inner.visit_params_mut(f);
    }

    fn regularization_penalty(&self) -> f32 {
        self.inner.regularization_penalty()
    }

    fn add_regularization_gradient(&self, grads: &mut [Vec<f32>]) {
        self.inner.add_regularization_gradient(grads);
    }

    fn config(&self) -> Option<LayerConfig> {
        Some(LayerConfig::TimeDistributed {
            layer: Box::new(self.inner.config()?),
        })
    }
}
