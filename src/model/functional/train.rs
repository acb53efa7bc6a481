//! `compile`, `fit`, `evaluate` and `predict` of a functional [`Model`]:
//! one loss per output, weighted by `loss_weights`, metrics per output,
//! and data given per input and per output, by position or by name.
//!
//! One training step, for a batch of row indices:
//! 1. gather the rows of every input and every output's targets;
//! 2. forward through every node;
//! 3. per output, per-sample losses and their gradients (fused with a
//!    softmax or sigmoid where the output's layer allows), scaled by
//!    `loss_weight * w_i / nb`, written into that output's gradient;
//! 4. backward through the nodes (fan-out and shared layers add up);
//! 5. one optimizer pass over each weight tensor, then BatchNormalization's
//!    moving statistics.

use std::sync::atomic::Ordering;

use ndarray::{Array2, ArrayD, ArrayView2, CowArray, Ix2, IxDyn};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::engine::GraphWorkspace;
use super::graph::LayerKind;
use super::Model;
use crate::callbacks::{with_train_hooks, Callback, CallbackContext};
use crate::error::{Error, Result};
use crate::losses::{IntoLoss, Loss};
use crate::metrics::{IntoMetric, Metric, MetricState};
use crate::model::compile::{unique_keys, MetricEntry};
use crate::model::fit::{check_sample_weight, stream_seed};
use crate::model::infer::{
    block_rows, copy_block, eval_context, gather_rows, workspace_halving, zeros_rows,
};
use crate::model::progress::Progress;
use crate::model::validate;
use crate::model::{FitOptions, History, HistoryParams, IntoInput, Logs};
use crate::optimizers::{IntoOptimizer, Optimizer};

/// Which outputs a loss, weight or metric of [`ModelCompile`] is for.
#[derive(Debug, Clone)]
enum Target {
    All,
    Position(usize),
    Name(String),
}

/// What [`Model::compile`] binds besides the optimizer: a loss per output
/// (or one for all), `loss_weights`, and metrics per output (Keras
/// `compile(loss=..., loss_weights=..., metrics={...})`).
///
/// ```
/// use horn::prelude::*;
/// let c = ModelCompile::new()
///     .output_loss("species", "categorical_crossentropy")
///     .output_loss("mass", "mse")
///     .loss_weights(&[1.0, 0.5])
///     .metrics("species", &["accuracy"])
///     .metrics("mass", &["mae"]);
/// # let _ = c;
/// ```
#[derive(Debug, Default)]
pub struct ModelCompile {
    losses: Vec<(Target, Loss)>,
    loss_weights: Option<Vec<f32>>,
    metrics: Vec<(Target, String, Metric, bool)>,
    error: Option<Error>,
}

impl ModelCompile {
    /// Nothing bound yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// One loss for every output (Keras `loss="mse"` on a multi-output
    /// model).
    pub fn loss(mut self, loss: impl IntoLoss) -> Self {
        match loss.into_loss() {
            Ok(l) => self.losses.push((Target::All, l)),
            Err(e) => self.keep(e),
        }
        self
    }

    /// One loss per output, in the order of the model's outputs (Keras
    /// `loss=[...]`).
    pub fn losses<L: IntoLoss>(mut self, losses: impl IntoIterator<Item = L>) -> Self {
        for (i, l) in losses.into_iter().enumerate() {
            match l.into_loss() {
                Ok(l) => self.losses.push((Target::Position(i), l)),
                Err(e) => self.keep(e),
            }
        }
        self
    }

    /// The loss of the output named `output` (Keras `loss={"name": ...}`).
    pub fn output_loss(mut self, output: &str, loss: impl IntoLoss) -> Self {
        match loss.into_loss() {
            Ok(l) => self.losses.push((Target::Name(output.into()), l)),
            Err(e) => self.keep(e),
        }
        self
    }

    /// Weights of the outputs' losses in the total loss, in output order
    /// (Keras `loss_weights`; default 1 each). The History's per-output
    /// losses stay unweighted, as in Keras.
    pub fn loss_weights(mut self, weights: &[f32]) -> Self {
        self.loss_weights = Some(weights.to_vec());
        self
    }

    /// Metrics of the output named `output` (Keras `metrics={"name":
    /// [...]}`), logged as `{output}_{metric}`.
    pub fn metrics<M: IntoMetric + Clone>(self, output: &str, metrics: &[M]) -> Self {
        self.add_metrics(Target::Name(output.into()), metrics, false)
    }

    /// The same metrics for every output. Keras 3 asks for a dict or one
    /// list per output instead; this is the Keras 2 shorthand.
    pub fn metrics_all<M: IntoMetric + Clone>(self, metrics: &[M]) -> Self {
        self.add_metrics(Target::All, metrics, false)
    }

    /// Weighted metrics of one output (Keras `weighted_metrics`): they see
    /// `sample_weight`.
    pub fn weighted_metrics<M: IntoMetric + Clone>(self, output: &str, metrics: &[M]) -> Self {
        self.add_metrics(Target::Name(output.into()), metrics, true)
    }

    fn add_metrics<M: IntoMetric + Clone>(
        mut self,
        target: Target,
        metrics: &[M],
        weighted: bool,
    ) -> Self {
        for m in metrics {
            match m.clone().into_named_metric().and_then(|(k, m)| {
                m.validate()?;
                Ok((k, m))
            }) {
                Ok((k, m)) => self.metrics.push((target.clone(), k, m, weighted)),
                Err(e) => self.keep(e),
            }
        }
        self
    }

    /// A metric with its key (model loading).
    pub(crate) fn named_metric(
        mut self,
        output: &str,
        key: &str,
        metric: Metric,
        weighted: bool,
    ) -> Self {
        if let Err(e) = metric.validate() {
            self.keep(e);
        }
        self.metrics.push((
            Target::Name(output.into()),
            key.to_string(),
            metric,
            weighted,
        ));
        self
    }

    fn keep(&mut self, e: Error) {
        self.error.get_or_insert(e);
    }
}

/// What `compile` bound to one output.
#[derive(Debug, Clone)]
pub(crate) struct OutputCompiled {
    pub loss: Loss,
    pub weight: f32,
    /// `{output}_loss` in the logs (None for a single-output model, whose
    /// loss is `loss` itself).
    pub loss_key: Option<String>,
    pub entries: Vec<MetricEntry>,
    /// The node producing this output, when its loss is fused with the
    /// node's softmax or sigmoid.
    pub fused_node: Option<usize>,
    /// Positions per sample (1 for a vector output).
    pub positions: usize,
    /// The metrics as given to `compile`: key, metric, weighted (model
    /// files).
    pub given: Vec<(String, Metric, bool)>,
}

/// What `fit` trains on, fixed for the whole run.
struct Plan<'p> {
    c: &'p ModelCompiled,
    x: &'p [ArrayView2<'p, f32>],
    y: &'p [ArrayView2<'p, f32>],
    /// Per training row sample weights.
    weights: Option<&'p [f32]>,
    /// Validation inputs, targets and weights.
    #[allow(clippy::type_complexity)]
    val: Option<(
        Vec<ArrayView2<'p, f32>>,
        Vec<ArrayView2<'p, f32>>,
        Option<&'p [f32]>,
    )>,
    n_train: usize,
    bs: usize,
    steps: usize,
    seed: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct ModelCompiled {
    pub optimizer: Optimizer,
    pub outputs: Vec<OutputCompiled>,
}

/// Data for a model's inputs or outputs, one array each: a single array
/// (one input), an array `[&a, &b]` or `Vec` of arrays, a tuple `(&a, &b)`
/// of arrays of different element types, or `(name, array)` pairs by the
/// inputs' or outputs' names.
pub trait IntoData<'a> {
    /// The arrays, each with its name when given by name.
    #[doc(hidden)]
    fn into_data(self) -> Vec<(Option<String>, CowArray<'a, f32, IxDyn>)>;
}

impl<'a, T: IntoInput<'a>> IntoData<'a> for T {
    fn into_data(self) -> Vec<(Option<String>, CowArray<'a, f32, IxDyn>)> {
        vec![(None, self.into_input())]
    }
}

impl<'a, T: IntoInput<'a>, const N: usize> IntoData<'a> for [T; N] {
    fn into_data(self) -> Vec<(Option<String>, CowArray<'a, f32, IxDyn>)> {
        self.into_iter().map(|x| (None, x.into_input())).collect()
    }
}

impl<'a, T: IntoInput<'a>> IntoData<'a> for Vec<T> {
    fn into_data(self) -> Vec<(Option<String>, CowArray<'a, f32, IxDyn>)> {
        self.into_iter().map(|x| (None, x.into_input())).collect()
    }
}

impl<'a, T: IntoInput<'a>, const N: usize> IntoData<'a> for [(&str, T); N] {
    fn into_data(self) -> Vec<(Option<String>, CowArray<'a, f32, IxDyn>)> {
        self.into_iter()
            .map(|(n, x)| (Some(n.to_string()), x.into_input()))
            .collect()
    }
}

impl<'a, T: IntoInput<'a>> IntoData<'a> for Vec<(&str, T)> {
    fn into_data(self) -> Vec<(Option<String>, CowArray<'a, f32, IxDyn>)> {
        self.into_iter()
            .map(|(n, x)| (Some(n.to_string()), x.into_input()))
            .collect()
    }
}

macro_rules! tuple_data {
    ($($t:ident $v:ident),+) => {
        impl<'a, $($t: IntoInput<'a>),+> IntoData<'a> for ($($t,)+) {
            fn into_data(self) -> Vec<(Option<String>, CowArray<'a, f32, IxDyn>)> {
                let ($($v,)+) = self;
                vec![$((None, $v.into_input())),+]
            }
        }
    };
}
tuple_data!(A a, B b);
tuple_data!(A a, B b, C c);
tuple_data!(A a, B b, C c, D d);

/// Arrays matched to `names`: by name when named, else by position.
fn match_data<'a>(
    data: Vec<(Option<String>, CowArray<'a, f32, IxDyn>)>,
    names: &[&str],
    what: &str,
) -> Result<Vec<CowArray<'a, f32, IxDyn>>> {
    let named = data.iter().filter(|(n, _)| n.is_some()).count();
    if data.len() != names.len() {
        return Err(Error::arg(
            what,
            format!(
                "{} arrays, one per model {} ({})",
                names.len(),
                if what == "x" { "input" } else { "output" },
                names.join(", ")
            ),
            format!("{} arrays", data.len()),
        ));
    }
    let mut slots: Vec<Option<CowArray<'a, f32, IxDyn>>> = (0..names.len()).map(|_| None).collect();
    if named == 0 {
        for (slot, (_, a)) in slots.iter_mut().zip(data) {
            *slot = Some(a);
        }
    } else {
        for (n, a) in data {
            let n = n.unwrap_or_default();
            let Some(i) = names.iter().position(|m| *m == n) else {
                return Err(Error::arg(
                    format!("{what} names"),
                    format!("names among {names:?}"),
                    format!("\"{n}\""),
                ));
            };
            if slots[i].replace(a).is_some() {
                return Err(Error::arg(
                    format!("{what} names"),
                    "each name once",
                    format!("\"{n}\" twice"),
                ));
            }
        }
    }
    slots
        .into_iter()
        .zip(names)
        .map(|(slot, name)| {
            slot.ok_or_else(|| {
                Error::arg(
                    format!("{what} names"),
                    format!("an array for `{name}`"),
                    "none",
                )
            })
        })
        .collect()
}

impl Model {
    /// Binds an optimizer and the outputs' losses, weights and metrics
    /// (Keras `compile`). Every output needs a loss.
    ///
    /// Log keys follow Keras 3: with several outputs, `loss` (the weighted
    /// total), `{output}_loss` per output (unweighted) and
    /// `{output}_{metric}`; with one output, `loss` and the metric names.
    pub fn compile(&mut self, optimizer: impl IntoOptimizer, options: ModelCompile) -> Result<()> {
        let optimizer = optimizer.into_optimizer()?;
        optimizer.validate()?;
        if let Some(e) = options.error {
            return Err(e);
        }
        let names: Vec<String> = self.output_names().iter().map(|s| s.to_string()).collect();
        let n_out = names.len();
        let resolve = |t: &Target, what: &str| -> Result<Vec<usize>> {
            match t {
                Target::All => Ok((0..n_out).collect()),
                Target::Position(i) if *i < n_out => Ok(vec![*i]),
                Target::Position(i) => Err(Error::arg(
                    what,
                    format!(
                        "at most {n_out} entries, one per output ({})",
                        names.join(", ")
                    ),
                    format!("entry {}", i + 1),
                )),
                Target::Name(n) => names
                    .iter()
                    .position(|m| m == n)
                    .map(|i| vec![i])
                    .ok_or_else(|| {
                        Error::arg(
                            what,
                            format!("an output name among {names:?}"),
                            format!("\"{n}\""),
                        )
                    }),
            }
        };
        let mut losses: Vec<Option<Loss>> = vec![None; n_out];
        for (t, l) in &options.losses {
            l.validate()?;
            for i in resolve(t, "loss")? {
                losses[i] = Some(*l);
            }
        }
        let weights = match &options.loss_weights {
            Some(w) if w.len() != n_out => {
                return Err(Error::arg(
                    "loss_weights",
                    format!("{n_out} weights, one per output"),
                    format!("{} weights", w.len()),
                ))
            }
            Some(w) => {
                if let Some(v) = w.iter().find(|v| !v.is_finite()) {
                    return Err(Error::arg("loss_weights", "finite numbers", v));
                }
                w.clone()
            }
            None => vec![1.0; n_out],
        };
        // Fusion needs a layer called once whose output only the loss reads.
        let n_in = self.inputs.len();
        let consumed = |t: usize| self.nodes.iter().any(|n| n.inputs.contains(&t));
        let calls = |l: usize| self.nodes.iter().filter(|n| n.layer == l).count();
        for l in &mut self.layers {
            if let LayerKind::Layer(l) = &mut l.kind {
                l.keep_preactivation(false);
            }
        }
        let mut outputs = Vec::with_capacity(n_out);
        for (o, name) in names.iter().enumerate() {
            let loss = losses[o].ok_or_else(|| {
                Error::arg(
                    "loss",
                    format!("a loss for every output; none for `{name}`"),
                    "no loss",
                )
            })?;
            let t = self.outputs[o];
            let shape = &self.shapes[t];
            let positions = if shape.rank() > 1 {
                shape.size() / shape.last().max(1)
            } else {
                1
            };
            let classes = shape.size() / positions.max(1);
            let mut plain = Vec::new();
            let mut weighted = Vec::new();
            for (target, key, m, w) in &options.metrics {
                if resolve(target, "metrics")?.contains(&o) {
                    if *w {
                        weighted.push((key.clone(), *m));
                    } else {
                        plain.push((key.clone(), *m));
                    }
                }
            }
            let pk: Vec<String> = plain.iter().map(|(k, _)| k.clone()).collect();
            let wk: Vec<String> = weighted.iter().map(|(k, _)| k.clone()).collect();
            let keys = unique_keys(&pk, &wk);
            let entries = plain
                .iter()
                .map(|(_, m)| (m, false))
                .chain(weighted.iter().map(|(_, m)| (m, true)))
                .zip(keys)
                .map(|((m, weighted), key)| MetricEntry {
                    key: if n_out > 1 {
                        format!("{name}_{key}")
                    } else {
                        key
                    },
                    resolved: m.resolve(&loss, classes),
                    weighted,
                })
                .collect();
            let k = t - n_in;
            let node = &self.nodes[k];
            let once = self.outputs.iter().filter(|&&u| u == t).count() == 1;
            let fused = match &self.layers[node.layer].kind {
                LayerKind::Layer(l) => {
                    once && !consumed(t)
                        && calls(node.layer) == 1
                        && l.output_activation().is_some_and(|a| loss.fuses_with(a))
                }
                LayerKind::Merge(_) => false,
            };
            outputs.push(OutputCompiled {
                loss,
                weight: weights[o],
                loss_key: (n_out > 1).then(|| format!("{name}_loss")),
                entries,
                fused_node: fused.then_some(k),
                positions,
                given: plain
                    .iter()
                    .map(|(k, m)| (k.clone(), *m, false))
                    .chain(weighted.iter().map(|(k, m)| (k.clone(), *m, true)))
                    .collect(),
            });
        }
        for oc in &outputs {
            if let Some(k) = oc.fused_node {
                if let LayerKind::Layer(l) = &mut self.layers[self.nodes[k].layer].kind {
                    l.keep_preactivation(true);
                }
            }
        }
        self.compiled = Some(ModelCompiled { optimizer, outputs });
        Ok(())
    }

    /// The compiled optimizer, if any.
    pub fn optimizer(&self) -> Option<&Optimizer> {
        self.compiled.as_ref().map(|c| &c.optimizer)
    }

    /// The optimizer's current learning rate.
    pub fn learning_rate(&self) -> Option<f32> {
        self.optimizer().map(|o| o.learning_rate())
    }

    /// Sets the optimizer's learning rate (between steps, e.g. from a
    /// callback).
    pub fn set_learning_rate(&mut self, lr: f32) -> Result<()> {
        match &mut self.compiled {
            Some(c) => c.optimizer.set_learning_rate(lr),
            None => Err(Error::NotCompiled("set_learning_rate")),
        }
    }

    /// Names and sizes of the trainable weight tensors (the optimizer's
    /// variables).
    pub(crate) fn weight_sizes(&self) -> Vec<(String, usize)> {
        crate::model::weights::trainable_sizes(self.weighted_layers())
    }

    fn regularization_penalty(&self) -> f32 {
        self.weighted_layers()
            .map(|(_, l)| l.regularization_penalty())
            .sum()
    }

    /// The inputs' arrays in input order (by name or position).
    fn order_inputs<'a>(
        &self,
        x: impl IntoData<'a>,
        what: &str,
    ) -> Result<Vec<CowArray<'a, f32, IxDyn>>> {
        match_data(x.into_data(), &self.input_names(), what)
    }

    /// Inputs as checked rows (views of `arrays` where they are contiguous):
    /// shapes, finite values, and what the layers reading them accept (an
    /// Embedding's ids).
    fn input_rows<'s>(
        &self,
        arrays: &'s [CowArray<'_, f32, IxDyn>],
        what: &str,
    ) -> Result<Vec<CowArray<'s, f32, Ix2>>> {
        let names = self.input_names();
        let shapes = self.input_shapes();
        let mut rows = Vec::with_capacity(arrays.len());
        for (i, a) in arrays.iter().enumerate() {
            let label = format!("{what}[\"{}\"]", names[i]);
            let r = validate::as_rows(a.view(), Some(shapes[i]), &label)?;
            validate::check_inputs(r.view(), shapes[i].size(), &label)?;
            for node in self.nodes.iter().filter(|n| n.inputs.contains(&i)) {
                if let LayerKind::Layer(l) = &self.layers[node.layer].kind {
                    l.check_input(r.view(), &label)?;
                }
            }
            rows.push(r);
        }
        for (i, r) in rows.iter().enumerate().skip(1) {
            validate::check_rows(
                rows[0].view(),
                r.view(),
                &format!("{what}[0]"),
                &format!("{what}[{i}]"),
            )?;
        }
        Ok(rows)
    }

    /// The targets' arrays in output order.
    fn order_targets<'a>(
        &self,
        y: impl IntoData<'a>,
        what: &str,
    ) -> Result<Vec<CowArray<'a, f32, IxDyn>>> {
        match_data(y.into_data(), &self.output_names(), what)
    }

    /// Targets as checked rows, one per output, with as many rows as `x`.
    fn target_rows<'s>(
        &self,
        c: &ModelCompiled,
        arrays: &'s [CowArray<'_, f32, IxDyn>],
        x_rows: usize,
        what: &str,
    ) -> Result<Vec<CowArray<'s, f32, Ix2>>> {
        let names = self.output_names();
        let shapes = self.output_shapes();
        let mut rows = Vec::with_capacity(arrays.len());
        for (o, a) in arrays.iter().enumerate() {
            let label = format!("{what}[\"{}\"]", names[o]);
            let r = validate::as_rows(a.view(), Some(shapes[o]), &label)?;
            let oc = &c.outputs[o];
            validate::check_targets(&oc.loss, r.view(), shapes[o].size(), oc.positions, &label)?;
            if r.nrows() != x_rows {
                return Err(Error::shape(
                    format!("`{label}`"),
                    format!("{x_rows} rows, as many as the inputs"),
                    format!("{} rows", r.nrows()),
                ));
            }
            rows.push(r);
        }
        Ok(rows)
    }

    /// Trains the model (Keras `fit`) on one array per input and one per
    /// output, by position or by name, and returns the per-epoch
    /// [`History`].
    ///
    /// Supported [`FitOptions`]: `epochs`, `batch_size`, `validation_split`
    /// (the same last rows of every array), `shuffle`, `seed`,
    /// `initial_epoch`, `verbose`, `sample_weight` (per row, for every
    /// output), `cancel`. Explicit validation arrays go to
    /// [`Model::fit_validated`] (`FitOptions::validation_data` holds one
    /// input and one output, and is refused here); `class_weight` is
    /// refused, as Keras 3 refuses it on several outputs.
    pub fn fit<'a, 'b>(
        &mut self,
        x: impl IntoData<'a>,
        y: impl IntoData<'b>,
        options: FitOptions,
    ) -> Result<History> {
        self.fit_with_callbacks(x, y, options, &mut [])
    }

    /// [`Model::fit`] with callbacks (`EarlyStopping`, `ModelCheckpoint`,
    /// `ReduceLrOnPlateau`, ...), which see the model through
    /// [`CallbackContext`] and keep their state afterwards. Every callback's
    /// `on_train_end` runs whenever `on_train_begin` did, errors included.
    pub fn fit_with_callbacks<'a, 'b>(
        &mut self,
        x: impl IntoData<'a>,
        y: impl IntoData<'b>,
        options: FitOptions,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<History> {
        self.fit_inner(x, y, None, options, callbacks)
    }

    /// [`Model::fit_with_callbacks`] with explicit validation data, one
    /// array per input and per output (Keras `validation_data=([xa, xb],
    /// [ya, yb])`); it replaces `validation_split`, as in Keras.
    ///
    /// ```
    /// use horn::prelude::*;
    /// use ndarray::Array2;
    /// let mut g = Graph::with_seed(1);
    /// let a = g.input("a", &[2]);
    /// let b = g.input("b", &[2]);
    /// let s = g.call(Add::new(), [a, b]);
    /// let o = g.call(Dense::new(1, Linear), s);
    /// let mut model = Model::new(g, [a, b], [o]).unwrap();
    /// model.compile("sgd", ModelCompile::new().loss("mse")).unwrap();
    /// let x = Array2::<f32>::ones((8, 2));
    /// let y = Array2::<f32>::ones((8, 1));
    /// let h = model.fit_validated([&x, &x], [&y], [&x, &x], [&y],
    ///     FitOptions { epochs: 2, verbose: 0, ..Default::default() }, &mut []).unwrap();
    /// assert_eq!(h.get("val_loss").unwrap().len(), 2);
    /// ```
    pub fn fit_validated<'a, 'b, 'c, 'd>(
        &mut self,
        x: impl IntoData<'a>,
        y: impl IntoData<'b>,
        validation_x: impl IntoData<'c>,
        validation_y: impl IntoData<'d>,
        options: FitOptions,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<History> {
        let vx = self.order_inputs(validation_x, "validation_x")?;
        let vy = self.order_targets(validation_y, "validation_y")?;
        self.fit_inner(x, y, Some((vx, vy)), options, callbacks)
    }

    #[allow(clippy::type_complexity)]
    fn fit_inner<'a, 'b>(
        &mut self,
        x: impl IntoData<'a>,
        y: impl IntoData<'b>,
        validation: Option<(Vec<CowArray<'_, f32, IxDyn>>, Vec<CowArray<'_, f32, IxDyn>>)>,
        options: FitOptions,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<History> {
        let o = &options;
        let c = self
            .compiled
            .as_ref()
            .ok_or(Error::NotCompiled("fit"))?
            .clone();
        self.frozen.check_fit()?;
        validate::check_batch_size(o.batch_size)?;
        if o.validation_data.is_some() {
            return Err(Error::arg(
                "validation_data",
                "None for a functional model (pass one array per input and output to Model::fit_validated)",
                "arrays",
            ));
        }
        #[cfg(feature = "distribute")]
        if o.distribution.is_some() {
            return Err(Error::arg(
                "distribution",
                "None for a functional model (data-parallel training runs Sequential models for now)",
                "DataParallel",
            ));
        }
        if o.class_weight.is_some() {
            return Err(Error::arg(
                "class_weight",
                "None for a functional model (Keras 3 refuses it too; use sample_weight)",
                "a map",
            ));
        }
        if !(0.0..1.0).contains(&o.validation_split) {
            return Err(Error::arg(
                "validation_split",
                "a number in [0, 1) (the fraction of rows held out)",
                o.validation_split,
            ));
        }
        let x_in = self.order_inputs(x, "x")?;
        let y_in = self.order_targets(y, "y")?;
        let xs = self.input_rows(&x_in, "x")?;
        let n = xs[0].nrows();
        let ys = self.target_rows(&c, &y_in, n, "y")?;
        if let Some(w) = &o.sample_weight {
            check_sample_weight(w, n, "sample_weight")?;
        }
        // Explicit validation data replaces validation_split (Keras).
        let explicit = match &validation {
            Some((vx, vy)) => {
                let vxs = self.input_rows(vx, "validation_x")?;
                let vys = self.target_rows(&c, vy, vxs[0].nrows(), "validation_y")?;
                Some((vxs, vys))
            }
            None => None,
        };
        let n_train = if explicit.is_some() {
            n
        } else if o.validation_split > 0.0 {
            let split_at = (n as f64 * (1.0 - o.validation_split as f64)).floor() as usize;
            if split_at == 0 || split_at == n {
                return Err(Error::arg(
                    "validation_split",
                    format!(
                        "a fraction that leaves rows on both sides ({n} rows give {split_at} for training and {} for validation)",
                        n - split_at
                    ),
                    o.validation_split,
                ));
            }
            split_at
        } else {
            n
        };
        let vars = self.weight_sizes();
        if let Some(c) = self.compiled.as_mut() {
            c.optimizer.build(&vars)?;
        }
        let seed = o.seed.unwrap_or(self.seed);
        let bs = o.batch_size.min(n_train);
        let steps = n_train.div_ceil(bs);
        let mut history = History::default();
        history.params = HistoryParams {
            epochs: o.epochs,
            steps,
            verbose: o.verbose,
        };
        let cols: Vec<usize> = ys.iter().map(|y| y.ncols()).collect();
        let mut ws = GraphWorkspace::new(self, bs, true, &cols, "fit")?;
        for oc in &c.outputs {
            if let Some(k) = oc.fused_node {
                ws.fused_node[k] = true;
            }
        }
        let xv: Vec<ArrayView2<f32>> = xs.iter().map(|a| a.view()).collect();
        let yv: Vec<ArrayView2<f32>> = ys.iter().map(|a| a.view()).collect();
        let train_x: Vec<ArrayView2<f32>> = xv
            .iter()
            .map(|a| a.slice(ndarray::s![..n_train, ..]))
            .collect();
        let train_y: Vec<ArrayView2<f32>> = yv
            .iter()
            .map(|a| a.slice(ndarray::s![..n_train, ..]))
            .collect();
        let explicit_views = explicit.as_ref().map(|(vx, vy)| {
            (
                vx.iter().map(|a| a.view()).collect::<Vec<_>>(),
                vy.iter().map(|a| a.view()).collect::<Vec<_>>(),
                None,
            )
        });
        let val = explicit_views.or_else(|| {
            (n_train < n).then(|| {
                (
                    xv.iter()
                        .map(|a| a.slice(ndarray::s![n_train.., ..]))
                        .collect::<Vec<_>>(),
                    yv.iter()
                        .map(|a| a.slice(ndarray::s![n_train.., ..]))
                        .collect::<Vec<_>>(),
                    o.sample_weight.as_deref().map(|w| &w[n_train..]),
                )
            })
        });
        let train_w = o.sample_weight.as_deref().map(|w| &w[..n_train]);

        let plan = Plan {
            c: &c,
            x: &train_x,
            y: &train_y,
            weights: train_w,
            val,
            n_train,
            bs,
            steps,
            seed,
        };
        let result = with_train_hooks(
            self,
            |m| CallbackContext::functional(m),
            callbacks,
            |m, cbs, last| m.run_epochs(&plan, o, &mut ws, &mut history, last, cbs),
        );
        // Keras' `model.history`: the epochs done survive an error.
        self.last_history = Some(history.clone());
        result.map(|_| history)
    }

    /// The epoch loop of `fit`.
    fn run_epochs(
        &mut self,
        plan: &Plan<'_>,
        o: &FitOptions,
        ws: &mut GraphWorkspace,
        history: &mut History,
        last_logs: &mut Logs,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<()> {
        let c = plan.c;
        let mut states: Vec<Vec<MetricState>> = c
            .outputs
            .iter()
            .map(|oc| {
                oc.entries
                    .iter()
                    .map(|e| MetricState::new(e.resolved).per_position(oc.positions))
                    .collect()
            })
            .collect();
        let mut progress = Progress::new(o.verbose, plan.steps);
        let mut order: Vec<usize> = (0..plan.n_train).collect();
        let cancelled = || o.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed));
        let mut out_totals = vec![0.0f64; c.outputs.len()];
        let mut out_batch = vec![0.0f64; c.outputs.len()];
        let mut stop = false;
        for epoch in o.initial_epoch..o.epochs {
            if stop || cancelled() {
                break;
            }
            let mut ctx = CallbackContext::functional(self);
            for cb in callbacks.iter_mut() {
                cb.on_epoch_begin(epoch, &mut ctx)?;
            }
            stop |= ctx.stop_requested();
            progress.epoch_begin(epoch, o.epochs);
            if o.shuffle {
                order.sort_unstable();
                let mut rng = StdRng::seed_from_u64(stream_seed(plan.seed, epoch as u64, u64::MAX));
                order.shuffle(&mut rng);
            }
            states.iter_mut().flatten().for_each(MetricState::reset);
            out_totals.iter_mut().for_each(|t| *t = 0.0);
            let mut loss_total = 0.0f64;
            let mut seen = 0usize;
            let mut logs = Logs::default();
            // Cancelled (no validation) or stopped by a callback mid-epoch.
            let mut early: Option<bool> = None;
            for step in 0..plan.steps {
                if cancelled() {
                    early = Some(true);
                    break;
                }
                if !callbacks.is_empty() {
                    let mut ctx = CallbackContext::functional(self);
                    for cb in callbacks.iter_mut() {
                        cb.on_batch_begin(step, &mut ctx)?;
                    }
                    stop |= ctx.stop_requested();
                }
                let rows = &order[step * plan.bs..((step + 1) * plan.bs).min(plan.n_train)];
                let nb = rows.len();
                let step_seed = stream_seed(plan.seed, epoch as u64, step as u64);
                let batch_loss = rayon::scope(|_| {
                    self.train_step(ws, c, &mut states, &mut out_batch, plan, rows, step_seed)
                })?;
                if !batch_loss.is_finite() {
                    if o.verbose > 0 {
                        println!();
                    }
                    return Err(Error::Diverged {
                        epoch: epoch + 1,
                        batch: step,
                        loss: batch_loss,
                        history: Box::new(history.clone()),
                    });
                }
                loss_total += batch_loss as f64 * nb as f64;
                for (t, b) in out_totals.iter_mut().zip(&out_batch) {
                    *t += b * nb as f64;
                }
                seen += nb;
                logs.set("loss", (loss_total / seen as f64) as f32);
                for ((oc, st), t) in c.outputs.iter().zip(&states).zip(&out_totals) {
                    if let Some(k) = &oc.loss_key {
                        logs.set(k, (t / seen as f64) as f32);
                    }
                    for (e, s) in oc.entries.iter().zip(st) {
                        logs.set(&e.key, s.result());
                    }
                }
                progress.batch_end(step + 1, &logs);
                if !callbacks.is_empty() {
                    let mut ctx = CallbackContext::functional(self);
                    for cb in callbacks.iter_mut() {
                        cb.on_batch_end(step, &logs, &mut ctx)?;
                    }
                    stop |= ctx.stop_requested();
                }
                if stop && step + 1 < plan.steps {
                    early = Some(false);
                    break;
                }
            }
            if seen == 0 {
                // Cancelled before its first batch: nothing to record.
                break;
            }
            crate::model::weights::check_finite_at_epoch_end(
                self.weighted_layers(),
                epoch,
                history,
                o.verbose > 0,
            )?;
            if early != Some(true) {
                if let Some((vx, vy, vw)) = &plan.val {
                    let vl = self.evaluate_rows(c, vx, vy, *vw, "val_")?;
                    for (k, v) in vl.iter() {
                        logs.insert(k, v);
                    }
                }
            }
            if early.is_some() {
                history.partial_epoch = Some(epoch);
            }
            let mut ctx = CallbackContext::functional(self);
            for cb in callbacks.iter_mut() {
                cb.on_epoch_end(epoch, &mut logs, &mut ctx)?;
            }
            stop |= ctx.stop_requested() || early.is_some();
            progress.epoch_end(&logs);
            history.push(epoch, &logs);
            *last_logs = logs;
        }
        Ok(())
    }

    /// One training step; returns the batch loss (before any weight
    /// changes when it is not finite) and each output's mean loss in
    /// `out_batch`.
    #[allow(clippy::too_many_arguments)]
    fn train_step(
        &mut self,
        ws: &mut GraphWorkspace,
        c: &ModelCompiled,
        states: &mut [Vec<MetricState>],
        out_batch: &mut [f64],
        plan: &Plan<'_>,
        rows: &[usize],
        seed: u64,
    ) -> Result<f32> {
        let (xs, ys, weights) = (plan.x, plan.y, plan.weights);
        let nb = rows.len();
        for (i, x) in xs.iter().enumerate() {
            let w = ws.widths[i];
            gather_rows(*x, rows, &mut ws.acts[i][..nb * w]);
        }
        for (o, y) in ys.iter().enumerate() {
            let tc = ws.target_cols[o];
            gather_rows(*y, rows, &mut ws.targets[o][..nb * tc]);
        }
        for (k, &r) in rows.iter().enumerate() {
            ws.sample_weights[k] = weights.map_or(1.0, |w| w[r]);
        }
        let mut rng = StdRng::seed_from_u64(seed);
        ws.forward(self, nb, true, &mut rng)?;
        ws.written.iter_mut().for_each(|w| *w = false);
        let inv = 1.0 / nb as f32;
        let mut total = 0.0f64;
        for (o, oc) in c.outputs.iter().enumerate() {
            let t = self.outputs[o];
            let w_out = ws.widths[t];
            let tc = ws.target_cols[o];
            let mut grad = std::mem::take(&mut ws.grads[t]);
            let mut tmp = std::mem::take(&mut ws.tmp);
            let mut losses = std::mem::take(&mut ws.losses);
            // An output listed twice adds its second gradient.
            let first = !ws.written[t];
            let mut sum = 0.0f64;
            {
                let g: &mut [f32] = if first { &mut grad } else { &mut tmp };
                let logits = oc.fused_node.and_then(|k| ws.logits(self, k, nb));
                let targets = crate::kernels::matrix(&ws.targets[o], nb, tc);
                oc.loss.per_sample(
                    ws.tensor(t, nb),
                    targets,
                    logits,
                    &mut losses[..nb],
                    Some(crate::kernels::matrix_mut(g, nb, w_out)),
                    oc.positions,
                );
                for (k, row) in g[..nb * w_out].chunks_exact_mut(w_out).enumerate() {
                    let w = ws.sample_weights[k];
                    sum += (losses[k] * w) as f64;
                    let f = w * inv * oc.weight;
                    row.iter_mut().for_each(|v| *v *= f);
                }
            }
            if !first {
                for (d, s) in grad[..nb * w_out].iter_mut().zip(&tmp[..nb * w_out]) {
                    *d += s;
                }
            }
            ws.tmp = tmp;
            let mean = sum / nb as f64;
            out_batch[o] = mean;
            total += oc.weight as f64 * mean;
            ws.grads[t] = grad;
            ws.losses = losses;
            ws.written[t] = true;
        }
        let batch_loss = total as f32 + self.regularization_penalty();
        if !batch_loss.is_finite() {
            return Ok(batch_loss);
        }
        for (o, oc) in c.outputs.iter().enumerate() {
            let t = self.outputs[o];
            let tc = ws.target_cols[o];
            let targets = crate::kernels::matrix(&ws.targets[o], nb, tc);
            let w = weights.map(|_| &ws.sample_weights[..nb]);
            for (s, e) in states[o].iter_mut().zip(&oc.entries) {
                s.update(targets, ws.tensor(t, nb), if e.weighted { w } else { None });
            }
        }
        ws.backward(self, nb);
        let compiled = self.compiled.as_mut().ok_or(Error::NotCompiled("fit"))?;
        let layers = self.layers.iter_mut().map(|ml| match &mut ml.kind {
            LayerKind::Layer(l) => Some(l.as_mut() as &mut dyn crate::layers::Layer),
            LayerKind::Merge(_) => None,
        });
        crate::model::weights::optimizer_step(
            &mut compiled.optimizer,
            layers,
            &mut ws.param_grads,
            &ws.trainable,
        );
        for (node, state) in self.nodes.iter().zip(&ws.state) {
            if !state.is_empty() {
                if let LayerKind::Layer(layer) = &mut self.layers[node.layer].kind {
                    layer.end_train_step(state);
                }
            }
        }
        Ok(batch_loss)
    }

    /// Rows per inference block: at most 2048, fewer when a row's buffers
    /// are large (as `Sequential`'s, [`block_rows`]).
    fn rows_per_block(&self) -> usize {
        let per_row = self
            .shapes
            .iter()
            .map(|s| s.size())
            .chain(self.nodes.iter().map(|n| match &self.layers[n.layer].kind {
                LayerKind::Layer(l) => {
                    let b = l.buffers(&self.shapes[n.inputs[0]], false);
                    b.aux.saturating_add(b.scratch_per_row)
                }
                LayerKind::Merge(_) => 0,
            }))
            .fold(0usize, usize::saturating_add);
        block_rows(2048, per_row)
    }

    /// Runs the model forward over the rows of `xs` in blocks, calling
    /// `each(start, rows, workspace)` after each; the blocks are halved
    /// when their buffers cannot be allocated (see `Sequential`'s).
    fn forward_blocks(
        &self,
        xs: &[ArrayView2<f32>],
        context: &'static str,
        mut each: impl FnMut(usize, usize, &GraphWorkspace) + Send,
    ) -> Result<()> {
        let n = xs[0].nrows();
        let block = n.min(self.rows_per_block()).max(1);
        let width = xs.iter().fold(0usize, |a, x| a.saturating_add(x.ncols()));
        let mut run = || -> Result<()> {
            let (mut ws, block) = workspace_halving(block, |rows| {
                GraphWorkspace::new(self, rows, false, &[], context)
            })?;
            let mut rng = StdRng::seed_from_u64(0);
            for start in (0..n).step_by(block) {
                let nb = block.min(n - start);
                for (i, x) in xs.iter().enumerate() {
                    let w = ws.widths[i];
                    copy_block(
                        x.slice(ndarray::s![start..start + nb, ..]),
                        &mut ws.acts[i][..nb * w],
                    );
                }
                ws.forward(self, nb, false, &mut rng)?;
                each(start, nb, &ws);
            }
            Ok(())
        };
        if n.saturating_mul(width) >= 1 << 16 {
            rayon::scope(|_| run())
        } else {
            run()
        }
    }

    /// Predictions, one array per output shaped `(samples, ...output
    /// shape)` (Keras `predict` on a multi-output model).
    pub fn predict<'a>(&self, x: impl IntoData<'a>) -> Result<Vec<ArrayD<f32>>> {
        let x_in = self.order_inputs(x, "x")?;
        let xs = self.input_rows(&x_in, "x")?;
        let n = xs[0].nrows();
        let xv: Vec<ArrayView2<f32>> = xs.iter().map(|a| a.view()).collect();
        let mut outs: Vec<Array2<f32>> = self
            .outputs
            .iter()
            .map(|&t| zeros_rows("predict", n, self.shapes[t].size(), "the predictions"))
            .collect::<Result<_>>()?;
        self.forward_blocks(&xv, "predict", |start, nb, ws| {
            for (out, &t) in outs.iter_mut().zip(&self.outputs) {
                out.slice_mut(ndarray::s![start..start + nb, ..])
                    .assign(&ws.tensor(t, nb));
            }
        })?;
        outs.into_iter()
            .zip(&self.outputs)
            .map(|(a, &t)| {
                let mut shape = vec![n];
                shape.extend_from_slice(self.shapes[t].dims());
                a.into_shape_with_order(IxDyn(&shape))
                    .map_err(|e| Error::shape("predict", format!("{shape:?}"), e.to_string()))
            })
            .collect()
    }

    /// Loss and metrics in inference mode (Keras `evaluate` with
    /// `return_dict=True`): `loss`, `{output}_loss` and the metrics, keyed
    /// as in `fit`'s History.
    pub fn evaluate<'a, 'b>(&self, x: impl IntoData<'a>, y: impl IntoData<'b>) -> Result<Logs> {
        let c = self
            .compiled
            .as_ref()
            .ok_or(Error::NotCompiled("evaluate"))?;
        let x_in = self.order_inputs(x, "x")?;
        let y_in = self.order_targets(y, "y")?;
        let xs = self.input_rows(&x_in, "x")?;
        let ys = self.target_rows(c, &y_in, xs[0].nrows(), "y")?;
        let xv: Vec<ArrayView2<f32>> = xs.iter().map(|a| a.view()).collect();
        let yv: Vec<ArrayView2<f32>> = ys.iter().map(|a| a.view()).collect();
        self.evaluate_rows(c, &xv, &yv, None, "")
    }

    /// `evaluate` on checked rows.
    fn evaluate_rows(
        &self,
        c: &ModelCompiled,
        xs: &[ArrayView2<f32>],
        ys: &[ArrayView2<f32>],
        weights: Option<&[f32]>,
        prefix: &str,
    ) -> Result<Logs> {
        let n = xs[0].nrows();
        let mut states: Vec<Vec<MetricState>> = c
            .outputs
            .iter()
            .map(|oc| {
                oc.entries
                    .iter()
                    .map(|e| MetricState::new(e.resolved).per_position(oc.positions))
                    .collect()
            })
            .collect();
        let mut totals = vec![0.0f64; c.outputs.len()];
        let mut losses = vec![0.0f32; n.min(self.rows_per_block()).max(1)];
        self.forward_blocks(xs, eval_context(prefix), |start, nb, ws| {
            let wb = weights.map(|w| &w[start..start + nb]);
            for (o, oc) in c.outputs.iter().enumerate() {
                let t = self.outputs[o];
                let yb = ys[o].slice(ndarray::s![start..start + nb, ..]);
                let yb = yb.as_standard_layout();
                let logits = oc.fused_node.and_then(|k| ws.logits(self, k, nb));
                oc.loss.per_sample(
                    ws.tensor(t, nb),
                    yb.view(),
                    logits,
                    &mut losses[..nb],
                    None,
                    oc.positions,
                );
                for (i, &l) in losses[..nb].iter().enumerate() {
                    totals[o] += l as f64 * wb.map_or(1.0, |w| w[i] as f64);
                }
                for (s, e) in states[o].iter_mut().zip(&oc.entries) {
                    s.update(
                        yb.view(),
                        ws.tensor(t, nb),
                        if e.weighted { wb } else { None },
                    );
                }
            }
        })?;
        let mut logs = Logs::default();
        let total: f64 = c
            .outputs
            .iter()
            .zip(&totals)
            .map(|(oc, t)| oc.weight as f64 * t / n as f64)
            .sum();
        logs.insert(
            format!("{prefix}loss"),
            total as f32 + self.regularization_penalty(),
        );
        for ((oc, st), t) in c.outputs.iter().zip(&states).zip(&totals) {
            if let Some(k) = &oc.loss_key {
                logs.insert(format!("{prefix}{k}"), (t / n as f64) as f32);
            }
            for (e, s) in oc.entries.iter().zip(st) {
                logs.insert(format!("{prefix}{}", e.key), s.result());
            }
        }
        Ok(logs)
    }
}
