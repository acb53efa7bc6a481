//! The `Sequential` model: building, compiling, weights, and the training engine.
//!
//! - `mod.rs`: the builder and weights in Keras order.
//! - `compile.rs`: `compile`, [`CompileOptions`], metric keys and weighting.
//! - `fit.rs`: the epoch loop (splitting, shuffling, batching, callbacks, History).
//! - `infer.rs`: `predict` and `evaluate` on large blocks.
//! - `input.rs`: [`IntoInput`], the arrays they accept (f32 or f64, any rank).
//! - `workspace.rs`: the reusable buffers and the forward/backward passes.
//! - `validate.rs`: argument checks with Keras-style messages.
//! - `history.rs`, `progress.rs`, `summary.rs`: what the user sees.

#[cfg(feature = "distribute")]
mod column_split;
mod compile;
#[cfg(feature = "distribute")]
mod data_parallel;
#[cfg(not(feature = "distribute"))]
#[path = "data_parallel_off.rs"]
mod data_parallel;
mod diagram;
mod fit;
pub mod functional;
mod history;
mod infer;
mod input;
mod plot;
mod progress;
pub(crate) mod summary;
pub(crate) mod validate;
mod weights;
pub(crate) mod workspace;

pub use compile::CompileOptions;
pub(crate) use compile::Compiled;
pub use diagram::{DiagramNode, ModelDiagram};
pub use fit::FitOptions;
pub use functional::{Callee, Graph, IntoData, IntoTensors, LayerRef, Model, ModelCompile, Tensor};
pub use history::{History, HistoryParams, Logs};
pub use infer::EvaluateOptions;
pub use input::{InputElement, IntoInput};

use std::fmt;

use ndarray::ArrayD;
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::activations::IntoActivation;
use crate::error::{Error, Result};
use crate::layers::{ActivationLayer, Dense, Dropout, Layer};
use crate::losses::Loss;
use crate::metrics::Metric;
use crate::optimizers::Optimizer;
use crate::shape::Shape;

/// A linear stack of layers, built and trained the Keras way.
///
/// ```
/// use horn::prelude::*;
/// use ndarray::Array2;
///
/// # fn main() -> horn::Result<()> {
/// let mut model = Sequential::new()
///     .seed(42)
///     .input(4)
///     .dense(8, Relu)
///     .dropout(0.1)
///     .dense(3, Softmax);
/// model.compile(RmsProp::default(), CategoricalCrossentropy::default(), &[Metric::Accuracy])?;
/// let x = Array2::<f32>::from_shape_fn((30, 4), |(i, j)| ((i * 7 + j) % 5) as f32 / 5.0);
/// let y = Array2::<f32>::from_shape_fn((30, 3), |(i, j)| (i % 3 == j) as u8 as f32);
/// let history = model.fit(&x, &y, FitOptions { epochs: 2, batch_size: 8, verbose: 0,
///                                              ..Default::default() })?;
/// assert_eq!(history.get("loss").unwrap().len(), 2);
/// let scores = model.evaluate(&x, &y)?;
/// assert!(scores["accuracy"] >= 0.0);
/// let probs = model.predict(&x)?;
/// assert_eq!(probs.dim(), (30, 3));
/// # Ok(()) }
/// ```
pub struct Sequential {
    name: String,
    input_shape: Option<Shape>,
    layers: Vec<Box<dyn Layer>>,
    names: Vec<String>,
    /// Layers per snake_case class name, for numbering (`dense`, `dense_1`)
    /// in constant time however many layers a model (or a file) has.
    name_counts: std::collections::HashMap<String, usize>,
    /// The names in `names`, to refuse a duplicate in constant time.
    taken: std::collections::HashSet<String>,
    /// Output shape of each built layer (`shapes.len()` layers are built).
    shapes: Vec<Shape>,
    seed: u64,
    rng: StdRng,
    pending: Option<Error>,
    compiled: Option<Compiled>,
    /// The History of the last `fit`, kept when it fails too (Keras' `model.history`).
    last_history: Option<History>,
    /// Layers a Keras file froze, which `fit` refuses to train.
    frozen: Frozen,
}

/// The layers of a model read from a Keras file that Keras would train
/// differently: frozen ones (`trainable: false`: their weights never move,
/// a BatchNormalization runs in inference mode) and ones called with
/// `training=False`. horn cannot train either as Keras does yet, so `fit`
/// refuses such a model and horn's own format (which cannot record them)
/// refuses to save it; `predict` and `evaluate` are unaffected, and
/// `save_keras` writes them back as they were.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Frozen {
    /// Layers with `trainable: false` that have weights.
    pub layers: Vec<String>,
    /// Layers called with `training=False`.
    pub inference_calls: Vec<String>,
}

impl Frozen {
    pub(crate) fn is_empty(&self) -> bool {
        self.layers.is_empty() && self.inference_calls.is_empty()
    }

    /// The error `fit` returns for a frozen model.
    pub(crate) fn check_fit(&self) -> Result<()> {
        self.refuse("fit", "a model whose layers all train")
    }

    /// The error saving in horn's own format returns for a frozen model.
    pub(crate) fn check_save(&self) -> Result<()> {
        self.refuse(
            "save",
            "a model without frozen layers (horn's own format cannot record them yet; \
             `save_keras` keeps them)",
        )
    }

    /// An error for `what` when any layer is frozen: `expected` says what
    /// would work.
    fn refuse(&self, what: &str, expected: &str) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        let list = |names: &[String]| {
            let mut s: Vec<String> = names.iter().take(5).map(|n| format!("`{n}`")).collect();
            if names.len() > 5 {
                s.push(format!("{} more", names.len() - 5));
            }
            s.join(", ")
        };
        let mut parts = Vec::new();
        if !self.layers.is_empty() {
            parts.push(format!("{} frozen (trainable: false)", list(&self.layers)));
        }
        if !self.inference_calls.is_empty() {
            parts.push(format!(
                "{} called with training=False",
                list(&self.inference_calls)
            ));
        }
        Err(Error::arg(
            what,
            format!("{expected} (horn cannot train frozen layers yet; predict and evaluate work)"),
            format!("a Keras model with layers {}", parts.join(" and layers ")),
        ))
    }
}

impl Default for Sequential {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Sequential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sequential")
            .field("name", &self.name)
            .field("input_shape", &self.input_shape)
            .field("layers", &self.names)
            .field("compiled", &self.compiled.is_some())
            .finish()
    }
}

impl fmt::Display for Sequential {
    /// The `summary()` table.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())
    }
}

impl Sequential {
    /// An empty model named `sequential`. Weights are initialised from a random
    /// seed unless [`Sequential::seed`] fixes one.
    pub fn new() -> Self {
        let seed = rand::random::<u64>();
        Sequential {
            name: "sequential".into(),
            input_shape: None,
            layers: Vec::new(),
            names: Vec::new(),
            name_counts: Default::default(),
            taken: Default::default(),
            shapes: Vec::new(),
            seed,
            rng: StdRng::seed_from_u64(seed),
            pending: None,
            compiled: None,
            last_history: None,
            frozen: Frozen::default(),
        }
    }

    /// Sets the model's name (shown by `summary()`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Fixes the seed of weight initialisation (and the default seed of `fit`):
    /// the same seed and layers give the same weights, whatever the order of the
    /// builder calls.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self.rebuild();
        self
    }

    /// The input width of flat rows (Keras `input_shape = c(n)`,
    /// `keras.Input(shape=(n,))`).
    pub fn input(self, dim: usize) -> Self {
        self.input_shape(&[dim])
    }

    /// The shape of one input sample, batch excluded, channels last as in Keras
    /// (`keras.Input(shape=(28, 28, 1))`): `&[28, 28, 1]` for grey images,
    /// `&[50, 8]` for sequences of 50 steps of 8 features.
    ///
    /// ```
    /// use horn::prelude::*;
    /// let model = Sequential::new().input_shape(&[28, 28, 1]).conv2d(32, 3, Relu);
    /// assert_eq!(model.output_shape().unwrap().dims(), &[26, 26, 32]);
    /// ```
    pub fn input_shape(mut self, shape: &[usize]) -> Self {
        if shape.is_empty() || shape.contains(&0) {
            self.pending.get_or_insert(Error::arg(
                "input_shape",
                "one or more positive dimensions",
                format!("{shape:?}"),
            ));
        }
        self.input_shape = Some(Shape::new(shape));
        self.rebuild();
        self
    }

    /// Adds `Dense(units, activation)` with Keras' default initializers. The
    /// activation is an [`Activation`](crate::activations::Activation) or its Keras name (`"relu"`); an unknown
    /// name is reported by `compile`, as every other build error.
    pub fn dense(mut self, units: usize, activation: impl IntoActivation) -> Self {
        match activation.into_activation() {
            Ok(a) => self.add(Dense::new(units, a)),
            Err(e) => {
                self.pending.get_or_insert(e);
                self
            }
        }
    }

    /// Adds `Dropout(rate)`.
    pub fn dropout(self, rate: f32) -> Self {
        self.add(Dropout::new(rate))
    }

    /// Adds a separate `Activation` layer (an [`Activation`](crate::activations::Activation) or its Keras name).
    pub fn activation(mut self, activation: impl IntoActivation) -> Self {
        match activation.into_activation() {
            Ok(a) => self.add(ActivationLayer::new(a)),
            Err(e) => {
                self.pending.get_or_insert(e);
                self
            }
        }
    }

    /// Adds `Conv2D(filters, kernel_size, activation)` with Keras' defaults
    /// (stride 1, `valid` padding); use [`Conv2D`](crate::layers::Conv2D)
    /// with [`Sequential::add`] for the other options.
    ///
    /// ```
    /// use horn::prelude::*;
    /// let m = Sequential::new().input_shape(&[28, 28, 1]).conv2d(32, 3, Relu).max_pooling2d(2);
    /// assert_eq!(m.output_shape().unwrap().dims(), &[13, 13, 32]);
    /// ```
    pub fn conv2d(
        self,
        filters: usize,
        kernel_size: usize,
        activation: impl IntoActivation,
    ) -> Self {
        self.add(crate::layers::Conv2D::new(filters, kernel_size, activation))
    }

    /// Adds `Conv1D(filters, kernel_size, activation)` with Keras' defaults.
    pub fn conv1d(
        self,
        filters: usize,
        kernel_size: usize,
        activation: impl IntoActivation,
    ) -> Self {
        self.add(crate::layers::Conv1D::new(filters, kernel_size, activation))
    }

    /// Adds `MaxPooling2D(pool_size)` (strides = pool size, `valid`).
    pub fn max_pooling2d(self, pool_size: usize) -> Self {
        self.add(crate::layers::MaxPooling2D::new(pool_size))
    }

    /// Adds `MaxPooling1D(pool_size)` (strides = pool size, `valid`).
    pub fn max_pooling1d(self, pool_size: usize) -> Self {
        self.add(crate::layers::MaxPooling1D::new(pool_size))
    }

    /// Adds `Embedding(input_dim, output_dim)` with Keras' defaults: token
    /// ids in `0..input_dim` become vectors of `output_dim` values.
    ///
    /// ```
    /// use horn::prelude::*;
    /// let m = Sequential::new().input_shape(&[20]).embedding(1000, 16).lstm(32);
    /// assert_eq!(m.output_shape().unwrap().dims(), &[32]);
    /// ```
    pub fn embedding(self, input_dim: usize, output_dim: usize) -> Self {
        self.add(crate::layers::Embedding::new(input_dim, output_dim))
    }

    /// Adds `LSTM(units)` with Keras' defaults (the last step's state only);
    /// use [`LSTM`](crate::layers::LSTM) with [`Sequential::add`] for
    /// `return_sequences` and the other options.
    pub fn lstm(self, units: usize) -> Self {
        self.add(crate::layers::LSTM::new(units))
    }

    /// Adds `GRU(units)` with Keras' defaults (see [`Sequential::lstm`]).
    pub fn gru(self, units: usize) -> Self {
        self.add(crate::layers::GRU::new(units))
    }

    /// Adds `SimpleRNN(units)` with Keras' defaults (see [`Sequential::lstm`]).
    pub fn simple_rnn(self, units: usize) -> Self {
        self.add(crate::layers::SimpleRNN::new(units))
    }

    /// Adds `Flatten()`.
    pub fn flatten(self) -> Self {
        self.add(crate::layers::Flatten)
    }

    /// Adds `BatchNormalization()` with Keras' defaults.
    pub fn batch_normalization(self) -> Self {
        self.add(crate::layers::BatchNormalization::new())
    }

    /// Adds any layer, built-in or your own (Keras `model.add`).
    #[allow(clippy::should_implement_trait)]
    pub fn add(mut self, layer: impl Layer + 'static) -> Self {
        self.push_named(Box::new(layer));
        self.build_pending();
        self
    }

    /// Adds a boxed layer (layers chosen at run time, e.g. from a
    /// configuration file).
    ///
    /// ```
    /// use horn::prelude::*;
    /// let layer: Box<dyn Layer> = Box::new(Flatten::new());
    /// let m = Sequential::new().input_shape(&[2, 3]).add_boxed(layer);
    /// assert_eq!(m.output_dim(), 6);
    /// ```
    pub fn add_boxed(mut self, layer: Box<dyn Layer>) -> Self {
        self.push_named(layer);
        self.build_pending();
        self
    }

    /// The name the next layer of this class will get (`dense`, `dense_1`,
    /// ...), skipping names a loaded layer already holds.
    pub(crate) fn next_layer_name(&self, class_name: &str) -> String {
        let base = snake_case(class_name);
        let mut count = self.name_counts.get(&base).copied().unwrap_or(0);
        loop {
            let name = match count {
                0 => base.clone(),
                c => format!("{base}_{c}"),
            };
            if !self.taken.contains(&name) {
                return name;
            }
            count += 1;
        }
    }

    /// Appends a layer under the next free name of its class.
    fn push_named(&mut self, layer: Box<dyn Layer>) {
        let name = self.next_layer_name(layer.class_name());
        *self
            .name_counts
            .entry(snake_case(layer.class_name()))
            .or_insert(0) += 1;
        self.taken.insert(name.clone());
        self.names.push(name);
        self.layers.push(layer);
        self.compiled = None;
    }

    /// Appends a layer whose weights already exist (model loading) under its
    /// saved name, with its output shape: nothing is initialised, so a
    /// file's architecture costs only the tensors it holds. Every earlier
    /// layer must be built; a name already taken (checked in constant time
    /// against the set of names), empty or holding `/` is an error.
    pub(crate) fn push_built_named(
        &mut self,
        layer: Box<dyn Layer>,
        out: Shape,
        name: &str,
    ) -> Result<()> {
        if self.shapes.len() != self.layers.len() || self.pending.is_some() {
            return Err(Error::NotBuilt(
                "a built layer follows one that is not built".into(),
            ));
        }
        check_layer_name(name)?;
        if !self.taken.insert(name.to_string()) {
            return Err(Error::arg("layer name", "a unique name", name));
        }
        *self
            .name_counts
            .entry(snake_case(layer.class_name()))
            .or_insert(0) += 1;
        self.names.push(name.to_string());
        self.layers.push(layer);
        self.compiled = None;
        self.shapes.push(out);
        Ok(())
    }

    /// Re-initialises every layer from the seed.
    fn rebuild(&mut self) {
        self.rng = StdRng::seed_from_u64(self.seed);
        self.shapes.clear();
        self.build_pending();
    }

    /// Builds the layers not built yet, when the input shape is known.
    fn build_pending(&mut self) {
        let Some(input) = self.input_shape.clone() else {
            return;
        };
        if self.pending.is_some() || input.size() == 0 {
            return;
        }
        while self.shapes.len() < self.layers.len() {
            let i = self.shapes.len();
            let in_shape = if i == 0 { &input } else { &self.shapes[i - 1] };
            match self.layers[i].build(in_shape, &mut self.rng) {
                Ok(s) if s.size() > 0 && s.rank() > 0 => self.shapes.push(s),
                Ok(s) => {
                    self.pending = Some(Error::shape(
                        format!("output of layer `{}`", self.names[i]),
                        "at least one value per sample",
                        s.to_string(),
                    ));
                    return;
                }
                Err(e) => {
                    self.pending = Some(name_error(&self.names[i], e));
                    return;
                }
            }
        }
    }

    /// Whether the model is complete but for its input shape, which the first
    /// `fit` supplies (Keras builds a model on its first call).
    pub(crate) fn awaits_input(&self) -> bool {
        self.input_shape.is_none() && self.pending.is_none() && !self.layers.is_empty()
    }

    /// Builds the model for samples of `sample` shape when no input shape was
    /// given, and reports what the build refused.
    pub(crate) fn build_for(&mut self, sample: &[usize]) -> Result<()> {
        if self.awaits_input() {
            if sample.is_empty() || sample.contains(&0) {
                return Err(Error::shape(
                    "`x`",
                    "samples with at least one value each, to build the model on",
                    format!("{sample:?}"),
                ));
            }
            self.input_shape = Some(Shape::new(sample));
            self.rebuild();
            self.ensure_built()?;
        }
        Ok(())
    }

    /// Checks that every layer is built.
    pub(crate) fn ensure_built(&self) -> Result<()> {
        if let Some(e) = &self.pending {
            // Errors are not Clone (io::Error); report the message faithfully.
            return Err(match e {
                Error::InvalidArgument {
                    name,
                    expected,
                    received,
                } => Error::InvalidArgument {
                    name: name.clone(),
                    expected: expected.clone(),
                    received: received.clone(),
                },
                other => Error::NotBuilt(other.to_string()),
            });
        }
        if self.layers.is_empty() {
            return Err(Error::NotBuilt(
                "it has no layers; add one with `.dense(units, activation)`".into(),
            ));
        }
        if self.input_shape.is_none() {
            return Err(Error::NotBuilt(
                "its input shape is unknown; start the model with `.input(n_features)` or \
                 `.input_shape(&[h, w, c])`, or call `fit` first (it builds the model for its data)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The model's output width: values per sample (0 before it is built).
    pub fn output_dim(&self) -> usize {
        self.output_shape().map_or(0, Shape::size)
    }

    /// The shape of one output sample, once the model is built.
    pub fn output_shape(&self) -> Option<&Shape> {
        if self.shapes.len() == self.layers.len() {
            self.shapes.last()
        } else {
            None
        }
    }

    /// The input width (values per sample), if the input shape is set.
    pub fn input_dim(&self) -> Option<usize> {
        self.input_shape.as_ref().map(Shape::size)
    }

    /// Checks input rows: present, the model's width, finite, and values the
    /// first layer accepts (an Embedding's token ids).
    pub(crate) fn check_x(&self, x: ndarray::ArrayView2<f32>, name: &str) -> Result<()> {
        validate::check_inputs(x, self.input_dim().unwrap_or(0), name)?;
        match self.layers().first() {
            Some(first) => first.check_input(x, name),
            None => Ok(()),
        }
    }

    /// The shape of one input sample, if set.
    pub fn get_input_shape(&self) -> Option<&Shape> {
        self.input_shape.as_ref()
    }

    /// The layers, in order.
    pub fn layers(&self) -> &[Box<dyn Layer>] {
        &self.layers
    }

    /// The layer names (`dense`, `dense_1`, `dropout`, ...). horn numbers layers
    /// per model; Keras numbers them per session, so a second Keras model starts
    /// at `dense_2`.
    pub fn layer_names(&self) -> &[String] {
        &self.names
    }

    /// The History of the last `fit` (Keras' `model.history`), including the
    /// epochs a failed `fit` completed before its error (a callback's error, a
    /// full disk under `ModelCheckpoint`, a diverged loss).
    ///
    /// ```
    /// use horn::prelude::*;
    /// let mut model = Sequential::new().seed(1).input(2).dense(1, Linear);
    /// model.compile("sgd", "mse", Metric::NONE).unwrap();
    /// let x = ndarray::Array2::<f32>::ones((4, 2));
    /// model.fit(&x, &x.column(0).insert_axis(ndarray::Axis(1)),
    ///           FitOptions { epochs: 2, verbose: 0, ..Default::default() }).unwrap();
    /// assert_eq!(model.history().unwrap().len(), 2);
    /// ```
    pub fn history(&self) -> Option<&History> {
        self.last_history.as_ref()
    }

    pub(crate) fn set_history(&mut self, h: History) {
        self.last_history = Some(h);
    }

    /// The compiled optimizer, if any.
    pub fn optimizer(&self) -> Option<&Optimizer> {
        self.compiled.as_ref().map(|c| &c.optimizer)
    }

    /// The compiled loss, if any.
    pub fn loss(&self) -> Option<&Loss> {
        self.compiled.as_ref().map(|c| &c.loss)
    }

    /// The compiled metrics, as given to `compile` (unweighted).
    pub fn metrics(&self) -> &[Metric] {
        self.compiled.as_ref().map_or(&[], |c| &c.metrics)
    }

    /// The compiled weighted metrics (Keras `weighted_metrics`), which see
    /// sample and class weights.
    pub fn weighted_metrics(&self) -> &[Metric] {
        self.compiled.as_ref().map_or(&[], |c| &c.weighted_metrics)
    }

    /// The keys the metrics log under, in Keras' order (metrics, then weighted
    /// metrics), without the `val_` prefix.
    pub fn metric_keys(&self) -> Vec<&str> {
        self.compiled.as_ref().map_or_else(Vec::new, |c| {
            c.entries.iter().map(|e| e.key.as_str()).collect()
        })
    }

    /// The optimizer's current learning rate.
    pub fn learning_rate(&self) -> Option<f32> {
        self.optimizer().map(|o| o.learning_rate())
    }

    /// Sets the optimizer's learning rate (between steps, e.g. from a callback).
    pub fn set_learning_rate(&mut self, lr: f32) -> Result<()> {
        match &mut self.compiled {
            Some(c) => c.optimizer.set_learning_rate(lr),
            None => Err(Error::NotCompiled("set_learning_rate")),
        }
    }

    /// Total number of weights (Keras `count_params()`).
    pub fn count_params(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.params().iter().map(|p| p.values.len()).sum::<usize>())
            .sum()
    }

    /// Copies of all weights in Keras order: for each layer, kernel `(in, units)`
    /// then bias `(units)`.
    ///
    /// ```
    /// use horn::prelude::*;
    /// let mut model = Sequential::new().input(3).dense(2, Relu);
    /// let w = model.get_weights().unwrap();
    /// assert_eq!(w[0].shape(), &[3, 2]);
    /// assert_eq!(w[1].shape(), &[2]);
    /// model.set_weights(&w).unwrap();
    /// ```
    pub fn get_weights(&self) -> Result<Vec<ArrayD<f32>>> {
        self.ensure_built()?;
        weights::get(self.named_layers())
    }

    /// The layers with their names.
    fn named_layers(&self) -> impl Iterator<Item = (&str, &dyn Layer)> {
        self.names
            .iter()
            .map(String::as_str)
            .zip(self.layers.iter().map(|l| l.as_ref()))
    }

    /// Names and sizes of the trainable weight tensors, in Keras order: the
    /// variables an optimizer's state belongs to.
    pub(crate) fn weight_sizes(&self) -> Vec<(String, usize)> {
        weights::trainable_sizes(self.named_layers())
    }

    /// Replaces all weights, in the order of [`Sequential::get_weights`]. Checks
    /// the count, every shape and that every value is finite (as loading a
    /// file does) before changing anything.
    pub fn set_weights(&mut self, weights: &[ArrayD<f32>]) -> Result<()> {
        self.ensure_built()?;
        let mut layers: Vec<(&str, &mut dyn Layer)> = self
            .names
            .iter()
            .map(String::as_str)
            .zip(self.layers.iter_mut().map(|l| l.as_mut() as &mut dyn Layer))
            .collect();
        weights::set(&mut layers, weights, " (kernel and bias per Dense layer)")
    }

    /// The sum of the layers' regularization penalties.
    pub(crate) fn regularization_penalty(&self) -> f32 {
        self.layers.iter().map(|l| l.regularization_penalty()).sum()
    }

    pub(crate) fn compiled(&self) -> Option<&Compiled> {
        self.compiled.as_ref()
    }

    pub(crate) fn compiled_mut(&mut self) -> Option<&mut Compiled> {
        self.compiled.as_mut()
    }

    /// The layers, moved out (turning a model into another kind).
    pub(crate) fn into_layers(self) -> Vec<Box<dyn Layer>> {
        self.layers
    }

    /// The layers a Keras file froze (see [`Frozen`]).
    pub(crate) fn frozen(&self) -> &Frozen {
        &self.frozen
    }

    #[cfg_attr(not(feature = "keras"), allow(dead_code))]
    pub(crate) fn set_frozen(&mut self, frozen: Frozen) {
        self.frozen = frozen;
    }

    pub(crate) fn default_seed(&self) -> u64 {
        self.seed
    }

    pub(crate) fn model_name(&self) -> &str {
        &self.name
    }

    /// The input shape then each built layer's output shape (the workspace's
    /// layout).
    pub(crate) fn all_shapes(&self) -> Vec<Shape> {
        let mut v = Vec::with_capacity(self.shapes.len() + 1);
        v.push(self.input_shape.clone().unwrap_or_default());
        v.extend(self.shapes.iter().cloned());
        v
    }

    /// Output shape of each built layer.
    pub(crate) fn layer_shapes(&self) -> &[Shape] {
        &self.shapes
    }
}

/// Keras' `to_snake_case`: `Dense` -> `dense`, `BatchNormalization` ->
/// `batch_normalization`, `Conv2D` -> `conv2d`, `MaxPooling2D` ->
/// `max_pooling2d` (an underscore before a capital that starts a lowercase
/// run, or after a lowercase letter before a capital).
pub(crate) fn snake_case(s: &str) -> String {
    let c: Vec<char> = s.chars().collect();
    let mut out = String::new();
    for (i, &ch) in c.iter().enumerate() {
        if i > 0 && ch.is_ascii_uppercase() {
            let starts_word = c.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            let after_lower = c[i - 1].is_ascii_lowercase();
            if starts_word || after_lower {
                out.push('_');
            }
        }
        out.extend(ch.to_lowercase());
    }
    out
}

/// Checks a layer's (or input's) name as Keras does: not empty, and without
/// `/`, which separates a layer's name from its weights' in model files
/// (`dense/kernel`, `optimizer/dense/kernel`), so that no two tensors of a
/// saved model can get the same key.
pub(crate) fn check_layer_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::arg("name", "a non-empty string", "\"\""));
    }
    if name.contains('/') {
        return Err(Error::arg(
            "name",
            "a string without the character `/` (Keras refuses it too: `/` separates a \
             layer's name from its weights' names in model files)",
            name,
        ));
    }
    Ok(())
}

/// Prefixes a layer's build error with the layer's name (shape errors say
/// which layer refused which shape).
fn name_error(layer: &str, e: Error) -> Error {
    match e {
        Error::Shape {
            context,
            expected,
            received,
        } => Error::Shape {
            context: format!("layer `{layer}`: {context}"),
            expected,
            received,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::snake_case;

    #[test]
    fn layer_names_follow_keras() {
        for (class, name) in [
            ("Dense", "dense"),
            ("BatchNormalization", "batch_normalization"),
            ("Conv2D", "conv2d"),
            ("MaxPooling2D", "max_pooling2d"),
            ("GlobalAveragePooling1D", "global_average_pooling1d"),
            ("LayerNormalization", "layer_normalization"),
        ] {
            assert_eq!(snake_case(class), name);
        }
    }
}
