//! `Dense`: `y = activation(x K + b)`, with the bias add and the activation fused
//! into one pass over the output.

use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis};
use rand::rngs::StdRng;

use super::{
    add_bias_activate, expect_grads, expect_shape, BackwardContext, Buffers, ForwardContext, Layer,
    ParamView,
};
use crate::activations::Activation;
use crate::error::{Error, Result};
use crate::initializers::Initializer;
use crate::kernels::{gemm, matrix, matrix_mut, values, values_mut};
use crate::regularizers::Regularizer;
use crate::saving::LayerConfig;
use crate::shape::Shape;

/// A fully connected layer (Keras `Dense`).
///
/// Keras defaults: kernel `glorot_uniform`, bias `zeros`, `use_bias` true,
/// activation `linear`, no regularizers. The kernel has shape `(input_dim, units)`
/// as Keras stores it, so `y = x K + b`.
///
/// ```
/// use horn::prelude::*;
/// let layer = Dense::new(16, Relu)
///     .kernel_initializer(Initializer::HeNormal)
///     .kernel_regularizer(Regularizer::l2(1e-4));
/// let model = Sequential::new().input(8).add(layer).dense(1, Sigmoid);
/// # let _ = model;
/// ```
#[derive(Debug, Clone)]
pub struct Dense {
    pub(crate) units: usize,
    pub(crate) activation: Activation,
    pub(crate) use_bias: bool,
    pub(crate) kernel_initializer: Initializer,
    pub(crate) bias_initializer: Initializer,
    pub(crate) kernel_regularizer: Option<Regularizer>,
    pub(crate) bias_regularizer: Option<Regularizer>,
    /// `(input_dim, units)`; empty until built.
    pub(crate) kernel: Array2<f32>,
    pub(crate) bias: Vec<f32>,
    /// Keep `z = xK + b` for a fused loss even when the activation's gradient does not need it.
    pub(crate) keep_z: bool,
}

impl Dense {
    /// A dense layer with `units` outputs and the given activation.
    pub fn new(units: usize, activation: Activation) -> Self {
        Dense {
            units,
            activation,
            use_bias: true,
            kernel_initializer: Initializer::GlorotUniform,
            bias_initializer: Initializer::Zeros,
            kernel_regularizer: None,
            bias_regularizer: None,
            kernel: Array2::zeros((0, units)),
            bias: Vec::new(),
            keep_z: false,
        }
    }

    /// Whether to add a bias (Keras default true).
    pub fn use_bias(mut self, use_bias: bool) -> Self {
        self.use_bias = use_bias;
        self
    }
    /// Kernel initializer (Keras default `glorot_uniform`).
    pub fn kernel_initializer(mut self, init: Initializer) -> Self {
        self.kernel_initializer = init;
        self
    }
    /// Bias initializer (Keras default `zeros`).
    pub fn bias_initializer(mut self, init: Initializer) -> Self {
        self.bias_initializer = init;
        self
    }
    /// Penalty on the kernel.
    pub fn kernel_regularizer(mut self, r: Regularizer) -> Self {
        self.kernel_regularizer = Some(r);
        self
    }
    /// Penalty on the bias.
    pub fn bias_regularizer(mut self, r: Regularizer) -> Self {
        self.bias_regularizer = Some(r);
        self
    }

    /// Number of output units.
    pub fn units(&self) -> usize {
        self.units
    }

    /// The layer's activation.
    pub fn activation(&self) -> Activation {
        self.activation
    }

    /// The kernel, `(input_dim, units)`.
    pub fn kernel(&self) -> ArrayView2<'_, f32> {
        self.kernel.view()
    }

    /// The kernel's values, row-major.
    fn kernel_values(&self) -> &[f32] {
        self.kernel.as_slice().expect(KERNEL_LAYOUT)
    }

    /// The bias (empty without `use_bias`).
    pub fn bias(&self) -> &[f32] {
        &self.bias
    }

    /// The forward pass through a block of the layer's columns: `y =
    /// activation(x kernel + bias)` for the rows of `x` (`rows x input_dim`),
    /// with `kernel` some columns of the layer's kernel (`input_dim x w`, any
    /// row stride), `bias` the same columns of the bias (empty without one),
    /// and `y` (and the pre-activation `z`, when given) contiguous, `rows x
    /// w`.
    ///
    /// Each output column is its own dot products (summed over the inputs in
    /// one fixed order whatever block of columns or rows it is computed in)
    /// and its own elementwise steps, so any split of the columns gives the
    /// bits of the whole layer: a data-parallel `fit` splits a first `Dense`
    /// layer's columns across ranks this way. A row-wise activation
    /// (softmax) needs every column.
    pub(crate) fn forward_block(
        &self,
        kernel: ArrayView2<f32>,
        bias: &[f32],
        x: ArrayView2<f32>,
        mut y: ArrayViewMut2<f32>,
        z: Option<&mut [f32]>,
    ) {
        let w = kernel.ncols();
        gemm(x, kernel, y.view_mut());
        add_bias_activate(values_mut(y), z, bias, self.activation, w, ROWS_PER_TASK);
    }

    /// The kernel and bias gradients of a block of columns (all of them, or
    /// one rank's share as [`Dense::forward_block`] made it): `dy` (the
    /// output gradient, turned into the pre-activation gradient in place
    /// unless `dy_is_preactivation`), then `gk = x^T dz` (`input_dim x w`,
    /// any row stride) and `gb` the column sums of `dz` in row order.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn weight_grads(
        &self,
        x: ArrayView2<f32>,
        y: ArrayView2<f32>,
        z: &[f32],
        mut dy: ArrayViewMut2<f32>,
        dy_is_preactivation: bool,
        gk: ArrayViewMut2<f32>,
        gb: Option<&mut [f32]>,
    ) {
        if !dy_is_preactivation {
            self.preactivation_grad(y, z, dy.view_mut());
        }
        let dz = dy.view();
        // dK = x^T dz: split over the kernel's rows, each summing the batch in order.
        gemm(x.t(), dz, gk);
        if let Some(gb) = gb {
            column_sums(dz, gb);
        }
    }

    /// The output gradient `dy` of a block of columns (`rows x w`, as
    /// [`Dense::forward_block`] made `y` and `z`) turned into the
    /// pre-activation gradient, in place.
    pub(crate) fn preactivation_grad(
        &self,
        y: ArrayView2<f32>,
        z: &[f32],
        mut dy: ArrayViewMut2<f32>,
    ) {
        let w = dy.ncols();
        self.activation
            .backward(z, values(y), values_mut(dy.view_mut()), w);
    }
}

/// `sums` = the column sums of `dz`, each over the rows in order (a bias
/// gradient).
pub(crate) fn column_sums(dz: ArrayView2<f32>, sums: &mut [f32]) {
    sums.fill(0.0);
    for row in dz.axis_iter(Axis(0)) {
        for (g, &d) in sums.iter_mut().zip(row.iter()) {
            *g += d;
        }
    }
}

/// The kernel is only ever created by `build` (a fresh standard-layout array) and
/// written in place, so it is always contiguous.
const KERNEL_LAYOUT: &str = "the kernel is created contiguous by build";

/// Rows per parallel task in the fused bias + activation pass.
const ROWS_PER_TASK: usize = 32;

impl Layer for Dense {
    fn propagates_mask(&self) -> bool {
        true
    }

    fn class_name(&self) -> &str {
        "Dense"
    }

    fn as_dense(&self) -> Option<&Dense> {
        Some(self)
    }

    fn build(&mut self, input: &Shape, rng: &mut StdRng) -> Result<Shape> {
        let input_dim = input.last();
        if input.rank() == 0 || input_dim == 0 {
            return Err(Error::shape(
                "Dense input",
                "a last axis of at least 1",
                input.to_string(),
            ));
        }
        if self.units == 0 {
            return Err(Error::arg("units", "a positive integer", self.units));
        }
        self.activation.validate()?;
        for r in [self.kernel_regularizer, self.bias_regularizer]
            .into_iter()
            .flatten()
        {
            r.validate()?;
        }
        let k = self
            .kernel_initializer
            .sample(&[input_dim, self.units], rng)?;
        self.kernel = k
            .into_dimensionality()
            .map_err(|e| Error::shape("Dense kernel", "2-D", e.to_string()))?;
        self.bias = if self.use_bias {
            self.bias_initializer
                .sample(&[self.units], rng)?
                .into_iter()
                .collect()
        } else {
            Vec::new()
        };
        Ok(input.with_last(self.units))
    }

    fn buffers(&self, input: &Shape, _training: bool) -> Buffers {
        let positions = input.size() / input.last().max(1);
        Buffers {
            aux: if self.keep_z || self.activation.backward_needs_input() {
                self.units * positions
            } else {
                0
            },
            ..Buffers::default()
        }
    }

    fn forward(
        &self,
        x: ArrayView2<f32>,
        y: ArrayViewMut2<f32>,
        aux: ArrayViewMut2<f32>,
        _ctx: &mut ForwardContext<'_>,
    ) {
        // On a higher-rank input Dense applies to the last axis: each row of
        // `steps x features` values is `steps` rows of `features`.
        let (x, y, aux) = (
            last_axis_rows("x", x, self.kernel.nrows()),
            last_axis_rows_mut("y", y, self.units),
            last_axis_rows_mut("aux", aux, self.units),
        );
        let (rows, units) = (x.nrows(), self.units);
        expect_shape("Dense", "x", x.shape(), &[rows, self.kernel.nrows()]);
        expect_shape("Dense", "y", y.shape(), &[rows, units]);
        if aux.ncols() > 0 {
            expect_shape("Dense", "aux", aux.shape(), &[rows, units]);
        }
        let keep_z = aux.ncols() == units;
        let z = keep_z.then(|| values_mut(aux));
        self.forward_block(self.kernel.view(), &self.bias, x, y, z);
    }

    fn backward(
        &self,
        x: ArrayView2<f32>,
        y: ArrayView2<f32>,
        aux: ArrayView2<f32>,
        dy: ArrayViewMut2<f32>,
        dx: Option<ArrayViewMut2<f32>>,
        grads: &mut [Vec<f32>],
        ctx: &mut BackwardContext<'_>,
    ) {
        let dy_is_preactivation = ctx.dy_is_preactivation;
        let (x, y, aux, mut dy, dx) = (
            last_axis_rows("x", x, self.kernel.nrows()),
            last_axis_rows("y", y, self.units),
            last_axis_rows("aux", aux, self.units),
            last_axis_rows_mut("dy", dy, self.units),
            dx.map(|dx| last_axis_rows_mut("dx", dx, self.kernel.nrows())),
        );
        let (rows, units) = (x.nrows(), self.units);
        expect_shape("Dense", "x", x.shape(), &[rows, self.kernel.nrows()]);
        expect_shape("Dense", "y", y.shape(), &[rows, units]);
        expect_shape("Dense", "dy", dy.shape(), &[rows, units]);
        if let Some(dx) = &dx {
            expect_shape("Dense", "dx", dx.shape(), x.shape());
        }
        if !dy_is_preactivation && self.activation.backward_needs_input() {
            expect_shape("Dense", "aux", aux.shape(), &[rows, units]);
        }
        let n_params = if self.use_bias { 2 } else { 1 };
        expect_grads("Dense", grads, &[self.kernel.len(), units][..n_params]);
        let z = aux.to_slice().unwrap_or(&[]);
        let (gk, gb) = grads.split_at_mut(1);
        // (`expect_grads` above checked grads[0]'s length, so the view fits.)
        let gk = matrix_mut(&mut gk[0], x.ncols(), units);
        let gb = gb.first_mut().map(Vec::as_mut_slice);
        self.weight_grads(x, y, z, dy.view_mut(), dy_is_preactivation, gk, gb);
        if let Some(dx) = dx {
            gemm(dy.view(), self.kernel.t(), dx);
        }
    }

    fn params(&self) -> Vec<ParamView<'_>> {
        let mut v = vec![ParamView::trainable(
            "kernel",
            vec![self.kernel.nrows(), self.kernel.ncols()],
            self.kernel_values(),
        )];
        if self.use_bias {
            v.push(ParamView::trainable(
                "bias",
                vec![self.bias.len()],
                &self.bias,
            ));
        }
        v
    }

    fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut [f32])) {
        f(self.kernel.as_slice_mut().expect(KERNEL_LAYOUT));
        if self.use_bias {
            f(&mut self.bias);
        }
    }

    fn output_activation(&self) -> Option<Activation> {
        Some(self.activation)
    }

    fn keep_preactivation(&mut self, keep: bool) {
        self.keep_z = keep;
    }

    fn preactivation<'a>(
        &self,
        _x: ArrayView2<'a, f32>,
        aux: ArrayView2<'a, f32>,
    ) -> Option<ArrayView2<'a, f32>> {
        (aux.ncols() > 0 && aux.ncols() % self.units == 0).then_some(aux)
    }

    fn regularization_penalty(&self) -> f32 {
        let mut p = 0.0;
        if let Some(r) = self.kernel_regularizer {
            p += r.penalty(self.kernel_values());
        }
        if let (Some(r), true) = (self.bias_regularizer, self.use_bias) {
            p += r.penalty(&self.bias);
        }
        p
    }

    fn add_regularization_gradient(&self, grads: &mut [Vec<f32>]) {
        if let Some(r) = self.kernel_regularizer {
            r.add_gradient(self.kernel_values(), &mut grads[0]);
        }
        if let (Some(r), true) = (self.bias_regularizer, self.use_bias) {
            r.add_gradient(&self.bias, &mut grads[1]);
        }
    }

    fn config(&self) -> Option<LayerConfig> {
        Some(LayerConfig::Dense {
            units: self.units,
            activation: self.activation,
            use_bias: self.use_bias,
            kernel_initializer: self.kernel_initializer,
            bias_initializer: self.bias_initializer,
            kernel_regularizer: self.kernel_regularizer,
            bias_regularizer: self.bias_regularizer,
        })
    }
}

/// A `rows x (positions * width)` view as `(rows * positions) x width`: Dense
/// on the last axis. Views that already have `width` columns (2-D inputs, and
/// every empty `aux`) and views whose width is not a multiple (which the
/// callers' shape checks then report) pass unchanged; a wider one must be
/// contiguous.
#[track_caller]
fn last_axis_rows<'a>(what: &str, v: ArrayView2<'a, f32>, width: usize) -> ArrayView2<'a, f32> {
    if keeps_rows(v.ncols(), width) {
        return v;
    }
    let n = v.len();
    match v.to_slice() {
        Some(values) => matrix(values, n / width, width),
        None => not_contiguous(what, width),
    }
}

/// Mutable [`last_axis_rows`].
#[track_caller]
fn last_axis_rows_mut<'a>(
    what: &str,
    v: ArrayViewMut2<'a, f32>,
    width: usize,
) -> ArrayViewMut2<'a, f32> {
    if keeps_rows(v.ncols(), width) {
        return v;
    }
    let n = v.len();
    match v.into_slice() {
        Some(values) => matrix_mut(values, n / width, width),
        None => not_contiguous(what, width),
    }
}

fn keeps_rows(cols: usize, width: usize) -> bool {
    cols == width || cols == 0 || width == 0 || cols % width != 0
}

#[track_caller]
fn not_contiguous(what: &str, width: usize) -> ! {
    panic!("Dense: `{what}` must be a contiguous view whose rows are a multiple of {width} values")
}
