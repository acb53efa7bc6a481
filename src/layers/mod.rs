//! Layers: the [`Layer`] trait and the built-in layers.
//!
//! A layer maps a block of rows (`batch x input.size()`) to a block of rows
//! (`batch x output.size()`), each row one sample's tensor in channels-last
//! order. Layers never own per-batch buffers: the model hands each layer its
//! input, an output buffer, an auxiliary buffer of [`Buffers::aux`] columns
//! (pre-activations, dropout masks, patches), scratch space and a state buffer,
//! all in the model's reusable workspace. `forward` and `backward` take `&self`, so one model
//! can serve predictions from many threads, and the buffers are reused across
//! batches without allocation.

mod activation;
pub(crate) mod conv;
mod dense;
mod dropout;
mod embedding;
pub(crate) mod merge;
mod normalization;
pub(crate) mod pooling;
pub(crate) mod recurrent;
mod reshape;
mod time_distributed;

pub use activation::ActivationLayer;
pub use conv::{Conv1D, Conv2D, ConvConfig, IntoWindow, Padding};
#[cfg(feature = "distribute")]
pub(crate) use dense::column_sums;
pub use dense::Dense;
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use merge::{Add, Average, Concatenate, Dot, Maximum, MergeOp, Minimum, Multiply, Subtract};
pub use normalization::{BatchNormalization, LayerNormalization};
pub use pooling::{
    AveragePooling1D, AveragePooling2D, GlobalAveragePooling1D, GlobalAveragePooling2D,
    GlobalMaxPooling1D, GlobalMaxPooling2D, MaxPooling1D, MaxPooling2D, PoolConfig,
};
pub use recurrent::{
    Bidirectional, BidirectionalConfig, MergeMode, RecurrentConfig, Rnn, SimpleRNN, GRU, LSTM,
};
pub use reshape::{Flatten, Reshape};
pub use time_distributed::TimeDistributed;

use std::fmt;

use ndarray::{ArrayView2, ArrayViewMut2};
use rand::rngs::StdRng;

use crate::activations::Activation;
use crate::error::Result;
use crate::shape::Shape;

/// What a forward pass gets besides its input and output: the mode, the
/// step's random stream and the layer's buffers from the model's workspace.
pub struct ForwardContext<'a> {
    /// True during `fit`'s training steps.
    pub training: bool,
    /// The step's random stream (dropout masks), seeded from the fit seed, the
    /// epoch and the step, so a run is reproducible.
    pub rng: &'a mut StdRng,
    /// Scratch space of at least [`Buffers::scratch_len`] values for this batch,
    /// shared by all layers: its contents do not survive the call.
    pub scratch: &'a mut [f32],
    /// The layer's own [`Buffers::state`] values, kept from `forward` to
    /// `backward` and [`Layer::end_train_step`] (BatchNormalization's batch
    /// statistics).
    pub state: &'a mut [f32],
    /// Keras' mask over the time steps of each sample (`rows x steps`, 1 for
    /// a step to use, 0 for padding), when an `Embedding` with `mask_zero`
    /// made one and every layer since passed it on
    /// ([`Layer::propagates_mask`]). Recurrent layers skip masked steps.
    pub mask: Option<&'a [f32]>,
}

impl<'a> ForwardContext<'a> {
    /// A context without buffers, for layers that declare none (calling a
    /// layer by hand).
    pub fn new(training: bool, rng: &'a mut StdRng) -> Self {
        ForwardContext {
            training,
            rng,
            scratch: &mut [],
            state: &mut [],
            mask: None,
        }
    }
}

/// The layer after a fusing layer and its views, for
/// [`Layer::forward_then`]: `y` and `aux` as [`Layer::forward`] would get
/// them (same rows as the fusing layer's input).
///
/// Calling a convolution and the pooling after it by hand, fused and in
/// turn (`Sequential` does the fused call itself):
///
/// ```
/// use horn::prelude::*;
/// use horn::layers::{ForwardContext, Layer, NextLayer};
/// use horn::Shape;
/// use ndarray::Array2;
/// use rand::SeedableRng;
///
/// let mut rng = rand::rngs::StdRng::seed_from_u64(1);
/// let mut conv = Conv2D::new(4, 3, Relu);
/// let mut pool = MaxPooling2D::new(2);
/// let conv_out = conv.build(&Shape::new(&[6, 6, 1]), &mut rng)?;
/// let pool_out = pool.build(&conv_out, &mut rng)?;
/// let rows = 3;
/// let x = Array2::from_shape_fn((rows, 36), |(i, j)| ((i * 7 + j) % 5) as f32 - 2.0);
/// let scratch_len = conv.buffers(&Shape::new(&[6, 6, 1]), false).scratch_len(rows);
/// let mut scratch = vec![0.0; scratch_len];
/// let mut no_aux = Array2::zeros((rows, 0));
/// let (mut y, mut pooled) = (Array2::zeros((rows, conv_out.size())), Array2::zeros((rows, pool_out.size())));
/// let mut ctx = ForwardContext::new(false, &mut rng);
/// ctx.scratch = &mut scratch;
/// let next = NextLayer { layer: &pool, y: pooled.view_mut(), aux: no_aux.view_mut(), training: false };
/// conv.forward_then(x.view(), y.view_mut(), Array2::zeros((rows, 0)).view_mut(), &mut ctx, next);
///
/// // The same in turn.
/// let mut y2 = Array2::zeros((rows, conv_out.size()));
/// conv.forward(x.view(), y2.view_mut(), Array2::zeros((rows, 0)).view_mut(), &mut ctx);
/// let mut pooled2 = Array2::zeros((rows, pool_out.size()));
/// let mut rng2 = rand::rngs::StdRng::seed_from_u64(0);
/// pool.forward(y2.view(), pooled2.view_mut(), no_aux.view_mut(), &mut ForwardContext::new(false, &mut rng2));
/// assert_eq!(pooled, pooled2);
/// # Ok::<(), horn::Error>(())
/// ```
pub struct NextLayer<'a> {
    /// The sample-local layer to run on each finished block of samples.
    pub layer: &'a dyn Layer,
    /// Its output.
    pub y: ArrayViewMut2<'a, f32>,
    /// Its [`Buffers::aux`] columns.
    pub aux: ArrayViewMut2<'a, f32>,
    /// Training or inference, as in [`ForwardContext::training`].
    pub training: bool,
}

/// The sample-local layer after a fusing layer and its views, for
/// [`Layer::backward_after`]: `y`, `aux` and `dy` as [`Layer::backward`]
/// would get them (its `x` is the fusing layer's `y`).
///
/// Back-propagating through a pooling and the convolution before it by hand,
/// fused and in turn (`Sequential` does the fused call itself):
///
/// ```
/// use horn::prelude::*;
/// use horn::layers::{BackwardContext, ForwardContext, Layer, NextLayerGrad};
/// use horn::Shape;
/// use ndarray::Array2;
/// use rand::SeedableRng;
///
/// let mut rng = rand::rngs::StdRng::seed_from_u64(1);
/// let mut conv = Conv2D::new(4, 3, Relu);
/// let mut pool = MaxPooling2D::new(2);
/// let input = Shape::new(&[6, 6, 1]);
/// let conv_out = conv.build(&input, &mut rng)?;
/// let pool_out = pool.build(&conv_out, &mut rng)?;
/// let rows = 3;
/// let x = Array2::from_shape_fn((rows, 36), |(i, j)| ((i * 7 + j) % 5) as f32 - 2.0);
/// let (cb, pb) = (conv.buffers(&input, true), pool.buffers(&conv_out, true));
/// let mut scratch = vec![0.0; cb.scratch_len(rows)];
/// let mut conv_aux = Array2::zeros((rows, cb.aux));
/// let mut pool_aux = Array2::zeros((rows, pb.aux));
/// let mut y = Array2::zeros((rows, conv_out.size()));
/// let mut pooled = Array2::zeros((rows, pool_out.size()));
/// let mut ctx = ForwardContext::new(true, &mut rng);
/// ctx.scratch = &mut scratch;
/// conv.forward(x.view(), y.view_mut(), conv_aux.view_mut(), &mut ctx);
/// let mut rng2 = rand::rngs::StdRng::seed_from_u64(0);
/// pool.forward(y.view(), pooled.view_mut(), pool_aux.view_mut(), &mut ForwardContext::new(true, &mut rng2));
///
/// let upstream = Array2::from_shape_fn((rows, pool_out.size()), |(i, j)| ((i + j) % 3) as f32 - 1.0);
/// let mut grads = vec![vec![0.0; 36], vec![0.0; 4]];
/// let (mut dy, mut pool_dy) = (Array2::zeros(y.dim()), upstream.clone());
/// let mut ctx = BackwardContext::new(false);
/// ctx.scratch = &mut scratch;
/// let next = NextLayerGrad { layer: &pool, y: pooled.view(), aux: pool_aux.view(), dy: pool_dy.view_mut() };
/// conv.backward_after(x.view(), y.view(), conv_aux.view(), dy.view_mut(), None, &mut grads, &mut ctx, next);
///
/// // The same in turn.
/// let mut grads2 = vec![vec![0.0; 36], vec![0.0; 4]];
/// let (mut dy2, mut pool_dy2) = (Array2::zeros(y.dim()), upstream.clone());
/// pool.backward(y.view(), pooled.view(), pool_aux.view(), pool_dy2.view_mut(), Some(dy2.view_mut()),
///     &mut [], &mut BackwardContext::new(false));
/// let mut ctx = BackwardContext::new(false);
/// ctx.scratch = &mut scratch;
/// conv.backward(x.view(), y.view(), conv_aux.view(), dy2.view_mut(), None, &mut grads2, &mut ctx);
/// assert_eq!(grads, grads2);
/// # Ok::<(), horn::Error>(())
/// ```
pub struct NextLayerGrad<'a> {
    /// The sample-local layer after the fusing one.
    pub layer: &'a dyn Layer,
    /// Its output.
    pub y: ArrayView2<'a, f32>,
    /// Its [`Buffers::aux`] columns.
    pub aux: ArrayView2<'a, f32>,
    /// The gradient of the loss with respect to its output (it may be
    /// overwritten, as [`Layer::backward`]'s `dy`).
    pub dy: ArrayViewMut2<'a, f32>,
}

/// [`Layer::backward_after`] done in turn: `next.layer`'s backward into
/// `dy`, then `layer`'s backward. The trait's default, and what a layer that
/// fuses only some cases calls for the others.
///
/// ```
/// use horn::prelude::*;
/// use horn::layers::{backward_in_turn, BackwardContext, ForwardContext, Layer, NextLayerGrad};
/// use horn::Shape;
/// use ndarray::Array2;
/// use rand::SeedableRng;
///
/// let mut rng = rand::rngs::StdRng::seed_from_u64(1);
/// let (mut conv, mut pool) = (Conv1D::new(2, 3, Tanh), MaxPooling1D::new(2));
/// let input = Shape::new(&[6, 1]);
/// let conv_out = conv.build(&input, &mut rng)?;
/// let pool_out = pool.build(&conv_out, &mut rng)?;
/// let x = Array2::from_shape_fn((2, 6), |(i, j)| (i + j) as f32 * 0.1);
/// let (cb, pb) = (conv.buffers(&input, true), pool.buffers(&conv_out, true));
/// let mut scratch = vec![0.0; cb.scratch_len(2)];
/// let (mut conv_aux, mut pool_aux) = (Array2::zeros((2, cb.aux)), Array2::zeros((2, pb.aux)));
/// let mut y = Array2::zeros((2, conv_out.size()));
/// let mut pooled = Array2::zeros((2, pool_out.size()));
/// let mut ctx = ForwardContext::new(true, &mut rng);
/// ctx.scratch = &mut scratch;
/// conv.forward(x.view(), y.view_mut(), conv_aux.view_mut(), &mut ctx);
/// let mut rng2 = rand::rngs::StdRng::seed_from_u64(0);
/// pool.forward(y.view(), pooled.view_mut(), pool_aux.view_mut(), &mut ForwardContext::new(true, &mut rng2));
///
/// let mut pool_dy = Array2::from_elem(pooled.dim(), 1.0);
/// let mut dy = Array2::zeros(y.dim());
/// let mut grads = vec![vec![0.0; 6], vec![0.0; 2]];
/// let mut ctx = BackwardContext::new(false);
/// ctx.scratch = &mut scratch;
/// let next = NextLayerGrad { layer: &pool, y: pooled.view(), aux: pool_aux.view(), dy: pool_dy.view_mut() };
/// backward_in_turn(&conv, x.view(), y.view(), conv_aux.view(), dy.view_mut(), None, &mut grads, &mut ctx, next);
/// // Each pooled output sent its gradient to one of its two cells, which the
/// // convolution then scaled by tanh's derivative (in place).
/// assert_eq!(dy.iter().filter(|&&d| d != 0.0).count(), pooled.len());
/// # Ok::<(), horn::Error>(())
/// ```
#[allow(clippy::too_many_arguments)]
pub fn backward_in_turn<L: Layer + ?Sized>(
    layer: &L,
    x: ArrayView2<f32>,
    y: ArrayView2<f32>,
    aux: ArrayView2<f32>,
    mut dy: ArrayViewMut2<f32>,
    dx: Option<ArrayViewMut2<f32>>,
    grads: &mut [Vec<f32>],
    ctx: &mut BackwardContext<'_>,
    next: NextLayerGrad<'_>,
) {
    next.layer.backward(
        y.view(),
        next.y,
        next.aux,
        next.dy,
        Some(dy.view_mut()),
        &mut [],
        &mut BackwardContext::new(false),
    );
    layer.backward(x, y, aux, dy, dx, grads, ctx);
}

/// What a backward pass gets besides its views.
pub struct BackwardContext<'a> {
    /// `dy` is already the gradient with respect to the pre-activation of
    /// [`Layer::output_activation`] (a loss fused with the output softmax or
    /// sigmoid).
    pub dy_is_preactivation: bool,
    /// Scratch space as in [`ForwardContext::scratch`].
    pub scratch: &'a mut [f32],
    /// The state the forward pass left, as in [`ForwardContext::state`].
    pub state: &'a [f32],
    /// The mask the forward pass saw, as in [`ForwardContext::mask`].
    pub mask: Option<&'a [f32]>,
}

impl<'a> BackwardContext<'a> {
    /// A context without buffers (calling a layer by hand).
    pub fn new(dy_is_preactivation: bool) -> Self {
        BackwardContext {
            dy_is_preactivation,
            scratch: &mut [],
            state: &[],
            mask: None,
        }
    }
}

/// The workspace a layer asks for, sized once per `fit`/`predict` so that
/// no batch allocates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Buffers {
    /// Values per row kept from `forward` to `backward` (pre-activations,
    /// dropout masks, a convolution's patches), handed over as `aux`.
    pub aux: usize,
    /// Scratch values per row of the batch.
    pub scratch_per_row: usize,
    /// Scratch values independent of the batch size.
    pub scratch: usize,
    /// Values of per-batch state (see [`ForwardContext::state`]).
    pub state: usize,
}

impl Buffers {
    /// Scratch values needed for a batch of `rows` rows.
    pub fn scratch_len(&self, rows: usize) -> usize {
        self.scratch_per_row
            .saturating_mul(rows)
            .saturating_add(self.scratch)
    }
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
    /// Whether the optimizer trains it (false for BatchNormalization's moving
    /// statistics, which `end_train_step` updates).
    pub trainable: bool,
}

impl<'a> ParamView<'a> {
    /// A trainable weight.
    pub fn trainable(name: &'static str, shape: Vec<usize>, values: &'a [f32]) -> Self {
        ParamView {
            name,
            shape,
            values,
            trainable: true,
        }
    }
}

/// A layer of a [`Sequential`](crate::Sequential) model. Implement it to add your
/// own layers; the built-in ones are implemented the same way.
///
/// A batch reaches a layer as an `ArrayView2` of `rows x shape.size()`: one
/// row per sample, the sample's tensor in channels-last order (see
/// [`Shape`]). The layer learns its input shape in [`Layer::build`].
///
/// ```
/// use horn::prelude::*;
/// use horn::layers::{BackwardContext, ForwardContext, Layer, ParamView};
/// use horn::Shape;
/// use ndarray::{ArrayView2, ArrayViewMut2};
///
/// /// Multiplies its input by a fixed factor.
/// #[derive(Debug)]
/// struct Scale(f32);
///
/// impl Layer for Scale {
///     fn class_name(&self) -> &str { "Scale" }
///     fn build(&mut self, input: &Shape, _rng: &mut rand::rngs::StdRng) -> horn::Result<Shape> {
///         Ok(input.clone())
///     }
///     fn forward(&self, x: ArrayView2<f32>, mut y: ArrayViewMut2<f32>, _aux: ArrayViewMut2<f32>,
///                _ctx: &mut ForwardContext<'_>) {
///         y.zip_mut_with(&x, |o, &i| *o = i * self.0);
///     }
///     fn backward(&self, _x: ArrayView2<f32>, _y: ArrayView2<f32>, _aux: ArrayView2<f32>,
///                 dy: ArrayViewMut2<f32>, dx: Option<ArrayViewMut2<f32>>, _grads: &mut [Vec<f32>],
///                 _ctx: &mut BackwardContext<'_>) {
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

    /// Creates the weights for this input shape and returns the output shape
    /// (Keras' `build` + `compute_output_shape`). Called once, before any
    /// pass. A shape the layer cannot take is an [`Error::Shape`](crate::Error)
    /// naming both shapes.
    fn build(&mut self, input: &Shape, rng: &mut StdRng) -> Result<Shape>;

    /// The buffers the layer needs for this input shape (none by default).
    /// `training` is false for `predict` and `evaluate`.
    fn buffers(&self, _input: &Shape, _training: bool) -> Buffers {
        Buffers::default()
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

    /// Values per sample of the mask this layer makes from its input (Keras'
    /// `compute_mask`: an `Embedding` with `mask_zero` masks the steps whose
    /// id is 0), or 0 when it makes none.
    fn mask_steps(&self, _input: &Shape) -> usize {
        0
    }

    /// Writes the mask of `x` (`rows x mask_steps` values, 1 to use a step,
    /// 0 to skip it), for a layer whose [`Layer::mask_steps`] is not 0.
    fn compute_mask(&self, _x: ArrayView2<f32>, _mask: &mut [f32]) {}

    /// Whether the mask of this layer's input also applies to its output
    /// (the time axis is kept: Dense, Dropout, the normalizations, recurrent
    /// layers that return sequences), as Keras' `supports_masking`.
    fn propagates_mask(&self) -> bool {
        false
    }

    /// Checks the values of a model's input before any pass, when this layer
    /// is the model's first (an [`Embedding`] checks that every id is a whole
    /// number in range). `name` is the argument's name for the error.
    fn check_input(&self, _x: ArrayView2<f32>, _name: &str) -> Result<()> {
        Ok(())
    }

    /// Computes `y` from `x` (both `rows x size`, standard layout). `aux` has
    /// [`Buffers::aux`] columns for the same rows.
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

    /// Whether the layer is *sample-local*: `forward` on any block of rows
    /// gives exactly those rows' outputs (and `aux`) of a whole-batch call,
    /// draws no random numbers and needs no scratch, state or mask; and
    /// `backward`, given those rows' `x`, `y`, `aux` and `dy`, gives exactly
    /// those rows' `dx` and has no weights. The layer before it may then run
    /// it block by block while the blocks are in cache
    /// ([`Layer::forward_then`], [`Layer::backward_after`]). Pooling layers
    /// are; the default is `false`.
    fn is_sample_local(&self) -> bool {
        false
    }

    /// This layer as a [`Dense`] layer, or `None` (the default). A
    /// data-parallel `fit` splits a first `Dense` layer's columns across its
    /// ranks ([`crate::distribute`]); other layers, and layers defined
    /// outside horn, keep the default.
    ///
    /// ```
    /// use horn::prelude::*;
    /// use horn::layers::Layer;
    /// assert!(Dense::new(4, Relu).as_dense().is_some());
    /// assert!(Dropout::new(0.5).as_dense().is_none());
    /// ```
    fn as_dense(&self) -> Option<&Dense> {
        None
    }

    /// Whether each output is the largest value of its window of inputs,
    /// copied, and backward sends its gradient to that input alone (max
    /// pooling). A ReLU before such a layer commutes with it (`max(relu(a),
    /// relu(b)) = relu(max(a, b))`), so a layer ending in ReLU that runs
    /// this one fused ([`Layer::backward_after`]) may apply the ReLU's
    /// gradient to this layer's smaller output gradient (`dy` where `y > 0`)
    /// and never read its own output: the same values, bit for bit. The
    /// default is `false`.
    fn selects_max(&self) -> bool {
        false
    }

    /// [`Layer::forward`], then `next.layer`'s forward, writing `next.y` and
    /// `next.aux`: the model calls this instead of the two forwards in turn
    /// when `next.layer` is [sample-local](Layer::is_sample_local).
    /// The default does exactly that; a layer that computes its output in
    /// blocks of samples may instead run `next.layer` on each block as soon
    /// as it is done, with the same results.
    ///
    /// A convolution does this for the pooling after it: its output (11 MB
    /// per batch for the MNIST convnet's first layer) is pooled while each
    /// tile of it is in cache instead of being read back from memory.
    fn forward_then(
        &self,
        x: ArrayView2<f32>,
        mut y: ArrayViewMut2<f32>,
        aux: ArrayViewMut2<f32>,
        ctx: &mut ForwardContext<'_>,
        next: NextLayer<'_>,
    ) {
        self.forward(x, y.view_mut(), aux, ctx);
        let mut next_ctx = ForwardContext::new(next.training, &mut *ctx.rng);
        next.layer
            .forward(y.view(), next.y, next.aux, &mut next_ctx);
    }

    /// `next.layer`'s backward (from `next.dy` into this layer's `dy`), then
    /// [`Layer::backward`]: the model calls this instead of the two in turn
    /// when `next.layer` is [sample-local](Layer::is_sample_local). The
    /// default does exactly that ([`backward_in_turn`]); a layer that works
    /// through its gradient in blocks of samples may instead compute each
    /// block of `dy` from `next` when it needs it, with the same results,
    /// and leave `dy` unused.
    ///
    /// A convolution does this for the pooling after it: its output
    /// gradient (11 MB per batch for the MNIST convnet's first layer) is
    /// made tile by tile in cache and never written to memory.
    #[allow(clippy::too_many_arguments)]
    fn backward_after(
        &self,
        x: ArrayView2<f32>,
        y: ArrayView2<f32>,
        aux: ArrayView2<f32>,
        dy: ArrayViewMut2<f32>,
        dx: Option<ArrayViewMut2<f32>>,
        grads: &mut [Vec<f32>],
        ctx: &mut BackwardContext<'_>,
        next: NextLayerGrad<'_>,
    ) {
        backward_in_turn(self, x, y, aux, dy, dx, grads, ctx, next);
    }

    /// Back-propagates: from `dy = dL/dy` (which the layer may overwrite) computes
    /// the gradients of the trainable weights into `grads` (one `Vec` per
    /// trainable tensor of [`Layer::params`], in order, overwritten, not
    /// accumulated) and, when `dx` is given, `dL/dx`.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        x: ArrayView2<f32>,
        y: ArrayView2<f32>,
        aux: ArrayView2<f32>,
        dy: ArrayViewMut2<f32>,
        dx: Option<ArrayViewMut2<f32>>,
        grads: &mut [Vec<f32>],
        ctx: &mut BackwardContext<'_>,
    );

    /// Commits per-batch state after the optimizer step of a training batch
    /// (BatchNormalization folds the batch statistics into its moving
    /// averages). `state` is what `forward` left in [`ForwardContext::state`].
    fn end_train_step(&mut self, _state: &[f32]) {}

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

/// [`add_bias_activate`] on the calling thread, for a block of rows that a
/// parallel caller already owns.
pub(crate) fn bias_activate_block(
    y: &mut [f32],
    z: Option<&mut [f32]>,
    bias: &[f32],
    act: Activation,
    units: usize,
) {
    if act == Activation::Relu && z.is_none() && !bias.is_empty() {
        // One pass instead of two (the most common case: a hidden layer with
        // ReLU).
        bias_relu(y, bias, units);
        return;
    }
    if !bias.is_empty() {
        for row in y.chunks_exact_mut(units) {
            for (v, &b) in row.iter_mut().zip(bias) {
                *v += b;
            }
        }
    }
    if let Some(z) = z {
        z.copy_from_slice(y);
    }
    act.forward_block(y, units);
}

/// `y = relu(y + bias)` on rows of `units` values: the select of
/// `Activation::forward_block` (`s` where `s > 0` or NaN, else `+0`) as a bit
/// mask, which vectorizes, compiled for AVX2 where the CPU has it (twice the
/// SSE width; the same IEEE addition, so the same bits).
fn bias_relu(y: &mut [f32], bias: &[f32], units: usize) {
    #[inline(always)]
    fn rows(y: &mut [f32], bias: &[f32], units: usize) {
        for row in y.chunks_exact_mut(units) {
            for (v, &b) in row.iter_mut().zip(bias) {
                let s = *v + b;
                let keep = s > 0.0 || s.is_nan();
                *v = f32::from_bits(s.to_bits() & 0u32.wrapping_sub(u32::from(keep)));
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        fn wide(y: &mut [f32], bias: &[f32], units: usize) {
            rows(y, bias, units)
        }
        if crate::kernels::avx2_available() {
            // SAFETY: the CPU has AVX2 (checked at run time just above).
            unsafe { wide(y, bias, units) };
            return;
        }
    }
    rows(y, bias, units)
}

/// The fused pass after a layer's matrix product: adds `bias` to every row
/// of `units` values of `y`, copies the result to `z` when given (the
/// pre-activation a fused loss or the activation's gradient needs), and
/// applies `act`, all in one pass over the memory; in parallel over blocks
/// of `rows_per_task` rows for large outputs (each row's values do not
/// depend on the split).
pub(crate) fn add_bias_activate(
    y: &mut [f32],
    z: Option<&mut [f32]>,
    bias: &[f32],
    act: Activation,
    units: usize,
    rows_per_task: usize,
) {
    use rayon::prelude::*;
    let finish =
        |yc: &mut [f32], zc: Option<&mut [f32]>| bias_activate_block(yc, zc, bias, act, units);
    let chunk = rows_per_task.max(1) * units;
    let parallel = y.len() >= 1 << 14;
    match z {
        Some(z) if parallel => y
            .par_chunks_mut(chunk)
            .zip(z.par_chunks_mut(chunk))
            .for_each(|(yc, zc)| finish(yc, Some(zc))),
        Some(z) => finish(y, Some(z)),
        None if parallel => y.par_chunks_mut(chunk).for_each(|yc| finish(yc, None)),
        None => finish(y, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fused_bias_and_relu_give_the_bits_of_the_select() {
        let specials = [
            0.0,
            -0.0,
            1.5,
            -1.5,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE / 4.0,
            -f32::MIN_POSITIVE / 4.0,
            3.0e38,
        ];
        let units = 13;
        let bias: Vec<f32> = (0..units)
            .map(|j| specials[j % specials.len()] * 0.5)
            .collect();
        let y0: Vec<f32> = (0..units * 7)
            .map(|i| specials[(i * 7) % specials.len()] - (i % 5) as f32 * 0.25)
            .collect();
        let mut y = y0.clone();
        bias_activate_block(&mut y, None, &bias, Activation::Relu, units);
        for (i, (&got, &x)) in y.iter().zip(&y0).enumerate() {
            let s = x + bias[i % units];
            let want = if s > 0.0 || s.is_nan() { s } else { 0.0 };
            assert_eq!(
                got.to_bits(),
                want.to_bits(),
                "value {i}: {x} + {}",
                bias[i % units]
            );
        }
    }
}
