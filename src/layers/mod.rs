//! Layers: the [`Layer`] trait and the built-in `Dense`, `Dropout` and `Activation`.
//!
//! A layer maps a block of rows (`batch x input_dim`) to a block of rows
//! (`batch x output_dim`). Layers never own per-batch buffers: the model hands
//! each layer its input, an output buffer and an auxiliary buffer of
//! [`Layer::aux_width`] columns (pre-activations, dropout masks) that live in the
//! model's reusable workspace. `forward` and `backward` take `&self`, so one model
//! can serve predictions from many threads, and the buffers are reused across
//! batches without allocation.

mod activation;
mod dense;
mod dropout;

pub use activation::ActivationLayer;
pub use dense::Dense;
pub use dropout::Dropout;

use std::fmt;

use ndarray::{ArrayView2, ArrayViewMut2};
use rand::rngs::StdRng;

use crate::activations::Activation;
use crate::error::Result;

/// Whether a forward pass is for training (dropout active) or inference.
pub struct ForwardContext<'a> {
    /// True during `fit`'s training steps.
    pub training: bool,
    /// The step's random stream (dropout masks), seeded from the fit seed, the
    /// epoch and the step, so a run is reproducible.
    pub rng: &'a mut StdRng,
}

/// A named view of one weight tensor.
#[derive(Debug, Clone)]
pub struct ParamView<'a> {
    /// Keras' variable name, e.g. `kernel` or `bias`.
    pub name: &'static str,
    /// The tensor's shape, e.g. `[784, 512]` for a kernel.
    pub shape: Vec<usize>,
    /// Values in row-major order.
    pub values: &'a [f32],
}

/// A layer of a [`Sequential`](crate::Sequential) model. Implement it to add your
/// own layers; the built-in ones are implemented the same way.
///
/// ```
/// use horn::prelude::*;
/// use horn::layers::{ForwardContext, Layer, ParamView};
/// use ndarray::{ArrayView2, ArrayViewMut2};
///
/// /// Multiplies its input by a fixed factor.
/// #[derive(Debug)]
/// struct Scale(f32);
///
/// impl Layer for Scale {
///     fn class_name(&self) -> &str { "Scale" }
///     fn build(&mut self, input_dim: usize, _rng: &mut rand::rngs::StdRng) -> horn::Result<usize> {
///         Ok(input_dim)
///     }
///     fn forward(&self, x: ArrayView2<f32>, mut y: ArrayViewMut2<f32>, _aux: ArrayViewMut2<f32>,
///                _ctx: &mut ForwardContext<'_>) {
///         y.zip_mut_with(&x, |o, &i| *o = i * self.0);
///     }
///     fn backward(&self, _x: ArrayView2<f32>, _y: ArrayView2<f32>, _aux: ArrayView2<f32>,
///                 dy: ArrayViewMut2<f32>, dx: Option<ArrayViewMut2<f32>>, _grads: &mut [Vec<f32>],
///                 _dy_is_preactivation: bool) {
///         if let Some(mut dx) = dx { dx.zip_mut_with(&dy, |o, &d| *o = d * self.0); }
///     }
/// }
///
/// let mut model = Sequential::new().input(3).add(Scale(2.0)).dense(1, Linear);
/// model.compile("sgd", "mse", &[] as &[Metric]).unwrap();
/// let p = model.predict(&ndarray::Array2::<f32>::ones((2, 3))).unwrap();
/// assert_eq!(p.dim(), (2, 1));
/// ```
pub trait Layer: Send + Sync + fmt::Debug {
    /// The class shown in `summary()` (`Dense`, `Dropout`, ...).
    fn class_name(&self) -> &str;

    /// Creates the weights for this input width and returns the output width
    /// (Keras' `build` + `compute_output_shape`). Called once, before any pass.
    fn build(&mut self, input_dim: usize, rng: &mut StdRng) -> Result<usize>;

    /// Columns of auxiliary per-row storage the layer needs between `forward` and
    /// `backward` for this input width (0 by default).
    fn aux_width(&self, _input_dim: usize) -> usize {
        0
    }

    /// Asks the layer to keep its pre-activation values (the logits) in `aux`, so
    /// that a loss can be fused with its output activation. Only layers whose
    /// [`Layer::output_activation`] is `Some` need to honour it.
    fn keep_preactivation(&mut self, _keep: bool) {}

    /// The pre-activation values of the last forward pass, when the layer keeps them
    /// (see [`Layer::keep_preactivation`]).
    fn preactivation<'a>(
        &self,
        _x: ArrayView2<'a, f32>,
        _aux: ArrayView2<'a, f32>,
    ) -> Option<ArrayView2<'a, f32>> {
        None
    }

    /// Computes `y` from `x` (both `rows x width`, standard layout). `aux` has
    /// `aux_width()` columns for the same rows.
    ///
    /// # Panics
    /// The model always passes contiguous, standard-layout views of its own
    /// buffers of the right sizes. The built-in layers check every view's shape
    /// in all builds and panic with a message naming the layer, the view and
    /// both shapes when called by hand with a view of the wrong size or a
    /// strided output; they never write outside a view.
    fn forward(
        &self,
        x: ArrayView2<f32>,
        y: ArrayViewMut2<f32>,
        aux: ArrayViewMut2<f32>,
        ctx: &mut ForwardContext<'_>,
    );

    /// Back-propagates: from `dy = dL/dy` (which the layer may overwrite) computes
    /// the parameter gradients into `grads` (one `Vec` per tensor of
    /// [`Layer::params`], overwritten, not accumulated) and, when `dx` is given,
    /// `dL/dx`. With `dy_is_preactivation`, `dy` is already the gradient with
    /// respect to the pre-activation of [`Layer::output_activation`] (a loss fused
    /// with the output softmax or sigmoid).
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        x: ArrayView2<f32>,
        y: ArrayView2<f32>,
        aux: ArrayView2<f32>,
        dy: ArrayViewMut2<f32>,
        dx: Option<ArrayViewMut2<f32>>,
        grads: &mut [Vec<f32>],
        dy_is_preactivation: bool,
    );

    /// The weight tensors, in Keras' order (kernel then bias).
    fn params(&self) -> Vec<ParamView<'_>> {
        Vec::new()
    }

    /// Calls `f` on each weight tensor, mutably, in [`Layer::params`] order.
    fn visit_params_mut(&mut self, _f: &mut dyn FnMut(&mut [f32])) {}

    /// The activation the layer ends with, if a loss may fuse with it.
    fn output_activation(&self) -> Option<Activation> {
        None
    }

    /// The regularization penalty of the current weights.
    fn regularization_penalty(&self) -> f32 {
        0.0
    }

    /// Adds the penalty's gradient to `grads`.
    fn add_regularization_gradient(&self, _grads: &mut [Vec<f32>]) {}

    /// The layer's configuration for model files, or `None` when it cannot be
    /// saved (custom layers).
    fn config(&self) -> Option<crate::saving::LayerConfig> {
        None
    }
}

/// Panics (in every build, with the layer, the view and both shapes in the
/// message) unless a view handed to a layer by hand has the shape it needs.
#[track_caller]
pub(crate) fn expect_shape(layer: &str, view: &str, got: &[usize], want: &[usize]) {
    assert!(
        got == want,
        "{layer}: `{view}` has shape {got:?}, expected {want:?} (the Layer contract: views sized for the batch)"
    );
}

/// Panics unless a layer's parameter gradients have one buffer per weight
/// tensor with the given lengths (no allocation: it runs every step).
#[track_caller]
pub(crate) fn expect_grads(layer: &str, grads: &[Vec<f32>], lens: &[usize]) {
    let ok = grads.len() == lens.len() && grads.iter().zip(lens).all(|(g, &n)| g.len() == n);
    assert!(
        ok,
        "{layer}: `grads` must hold one buffer per weight tensor with lengths {lens:?}; received lengths {:?}",
        grads.iter().map(Vec::len).collect::<Vec<_>>()
    );
}
