//! The functional API: [`Model`], a graph of layers with several inputs and
//! outputs, built with a [`Graph`].
//!
//! - `graph.rs`: the builder ([`Graph`], [`Tensor`], [`LayerRef`]);
//! - `mod.rs`: [`Model::new`] (checks and prunes the graph), weights;
//! - `engine.rs`: the workspace and the forward/backward passes over nodes;
//! - `train.rs`: `compile`, `fit`, `evaluate` and `predict` with one loss
//!   per output;
//! - `summary.rs`: Keras' table with its "Connected to" column.
//!
//! # Design
//! A model is a list of nodes in creation order, which is a topological
//! order (a call can only use tensors that exist). Tensors are numbered
//! inputs first, then one per node; every tensor has one buffer of `rows x
//! size` values in the workspace, as `Sequential`'s layers do, so the
//! layers run unchanged. Backward walks the nodes in reverse: each tensor
//! has one gradient buffer; the first consumer (in reverse order) writes
//! it, later ones add into it, so a tensor used twice (fan-out) sums its
//! gradients in one fixed order. A shared layer's weight gradients add up
//! the same way. Nothing is allocated per batch, and every reduction order
//! is fixed by the graph, so results do not depend on the thread count.
//!
//! `Sequential` stays a separate, chain-only engine: it is the speed
//! reference of the MLP and the convnet, and a chain needs none of the
//! bookkeeping above.

mod engine;
pub(crate) mod graph;
mod summary;
mod train;

pub use graph::{Callee, Graph, IntoTensors, LayerRef, Tensor};
pub use train::{IntoData, ModelCompile};

use std::fmt;

use ndarray::ArrayD;

use crate::error::{Error, Result};
use crate::shape::Shape;
use graph::{LayerKind, Producer};

/// One layer of a model: its name and what it runs.
#[derive(Debug)]
pub(crate) struct ModelLayer {
    pub name: String,
    pub kind: LayerKind,
}

/// One call of a layer: tensors in, one tensor out (indices into the
/// model's tensors: inputs first, then node outputs).
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub layer: usize,
    pub inputs: Vec<usize>,
    pub output: usize,
}

/// A functional model (Keras `keras.Model(inputs, outputs)`): layers called
/// on each other's outputs, with any number of inputs and outputs, layers
/// shared between branches, and one loss per output.
///
/// ```
/// use horn::prelude::*;
/// use ndarray::Array2;
///
/// # fn main() -> horn::Result<()> {
/// let mut g = Graph::with_seed(7);
/// let a = g.input("a", &[5]);
/// let b = g.input("b", &[5]);
/// let da = g.call(Dense::new(4, Relu), a);
/// let db = g.call(Dense::new(4, Tanh), b);
/// let m = g.call(Concatenate::new(), [da, db]);
/// let class = g.call_named("out_class", Dense::new(3, Softmax), m);
/// let value = g.call_named("out_value", Dense::new(1, Linear), m);
/// let mut model = Model::new(g, [a, b], [class, value])?;
/// model.compile(
///     Sgd { learning_rate: 0.1, ..Default::default() },
///     ModelCompile::new()
///         .losses(["categorical_crossentropy", "mse"])
///         .loss_weights(&[1.0, 0.5])
///         .metrics("out_class", &["accuracy"]),
/// )?;
/// let xa = Array2::<f32>::from_shape_fn((12, 5), |(i, j)| ((i + j) % 4) as f32 / 4.0);
/// let xb = Array2::<f32>::from_shape_fn((12, 5), |(i, j)| ((i * j) % 3) as f32 / 3.0);
/// let yc = Array2::<f32>::from_shape_fn((12, 3), |(i, j)| (i % 3 == j) as u8 as f32);
/// let yv = Array2::<f32>::from_shape_fn((12, 1), |(i, _)| i as f32 / 12.0);
/// let history = model.fit([&xa, &xb], [&yc, &yv],
///     FitOptions { epochs: 2, batch_size: 4, verbose: 0, ..Default::default() })?;
/// assert!(history.get("out_class_accuracy").is_some());
/// assert!(history.get("out_value_loss").is_some());
/// let p = model.predict([&xa, &xb])?;
/// assert_eq!(p[0].shape(), &[12, 3]);
/// assert_eq!(p[1].shape(), &[12, 1]);
/// # Ok(()) }
/// ```
pub struct Model {
    pub(crate) name: String,
    pub(crate) seed: u64,
    pub(crate) layers: Vec<ModelLayer>,
    /// Input names and sample shapes; input `i` is tensor `i`.
    pub(crate) inputs: Vec<(String, Shape)>,
    pub(crate) nodes: Vec<Node>,
    /// The sample shape of every tensor.
    pub(crate) shapes: Vec<Shape>,
    /// The tensor of each output.
    pub(crate) outputs: Vec<usize>,
    pub(crate) compiled: Option<train::ModelCompiled>,
    pub(crate) last_history: Option<crate::History>,
    /// Layers a Keras file froze, which `fit` refuses to train.
    pub(crate) frozen: crate::model::Frozen,
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.name)
            .field("inputs", &self.input_names())
            .field("outputs", &self.output_names())
            .field("layers", &self.layer_names())
            .field("compiled", &self.compiled.is_some())
            .finish()
    }
}

impl fmt::Display for Model {
    /// The `summary()` table.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())
    }
}

impl Model {
    /// The model from `graph` that maps `inputs` to `outputs` (Keras
    /// `keras.Model(inputs, outputs)`), named `functional`. Only the layers
    /// the outputs depend on are kept.
    ///
    /// Errors: the first error met while building the graph (a shape a layer
    /// refused, shapes a merge cannot join, a name used twice); an input
    /// that is not one of the graph's inputs or is listed twice; an output
    /// that depends on an input not listed (a disconnected graph); an input
    /// no output depends on; tensors of another graph.
    pub fn new(graph: Graph, inputs: impl IntoTensors, outputs: impl IntoTensors) -> Result<Model> {
        if let Some(e) = graph.error {
            return Err(e);
        }
        let (inputs, outputs) = (inputs.into_tensors(), outputs.into_tensors());
        if inputs.is_empty() || outputs.is_empty() {
            return Err(Error::Graph(
                "a model needs at least one input and one output".into(),
            ));
        }
        for t in inputs.iter().chain(&outputs) {
            if t.graph != graph.id || t.index >= graph.tensors.len() {
                return Err(Error::Graph(
                    "a tensor of another graph was given to Model::new".into(),
                ));
            }
        }
        // The model's inputs: graph inputs, each once.
        let mut input_pos = vec![None; graph.tensors.len()];
        for (k, t) in inputs.iter().enumerate() {
            match graph.tensors[t.index].producer {
                Producer::Input(_) => {}
                Producer::Node(n) => {
                    let what = graph.nodes.get(n).map_or("a failed call".to_string(), |n| {
                        format!("layer `{}`", graph.layers[n.layer].name)
                    });
                    return Err(Error::Graph(format!(
                        "model input {k} is the output of {what}; model inputs must come from `Graph::input`"
                    )));
                }
            }
            if input_pos[t.index].replace(k).is_some() {
                return Err(Error::Graph(format!(
                    "input `{}` is listed twice among the model's inputs",
                    input_name(&graph, t.index)
                )));
            }
        }
        // Walk back from the outputs: the nodes they need.
        let mut needed = vec![false; graph.nodes.len()];
        let mut reached = vec![false; graph.tensors.len()];
        let mut stack: Vec<usize> = outputs.iter().map(|t| t.index).collect();
        while let Some(t) = stack.pop() {
            if std::mem::replace(&mut reached[t], true) {
                continue;
            }
            match graph.tensors[t].producer {
                Producer::Input(_) => {
                    if input_pos[t].is_none() {
                        return Err(Error::Graph(format!(
                            "graph disconnected: an output depends on input `{}`, which is not among the model's inputs",
                            input_name(&graph, t)
                        )));
                    }
                }
                Producer::Node(n) => {
                    let Some(node) = graph.nodes.get(n) else {
                        return Err(Error::Graph(
                            "an output depends on a call that failed".into(),
                        ));
                    };
                    needed[n] = true;
                    stack.extend(node.inputs.iter().copied());
                }
            }
        }
        for t in &inputs {
            if !reached[t.index] {
                return Err(Error::Graph(format!(
                    "input `{}` is not connected to any output",
                    input_name(&graph, t.index)
                )));
            }
        }
        for (k, t) in outputs.iter().enumerate() {
            if matches!(graph.tensors[t.index].producer, Producer::Input(_)) {
                return Err(Error::Graph(format!(
                    "output {k} is the input `{}` itself; an output must come from a layer",
                    input_name(&graph, t.index)
                )));
            }
        }
        // Renumber: model inputs first (in the order given), then the kept
        // nodes' outputs in creation order.
        let mut tensor_map = vec![usize::MAX; graph.tensors.len()];
        let mut shapes = Vec::new();
        let mut model_inputs = Vec::new();
        for t in &inputs {
            tensor_map[t.index] = shapes.len();
            let shape = graph.tensors[t.index].shape.clone().unwrap_or_default();
            model_inputs.push((input_name(&graph, t.index), shape.clone()));
            shapes.push(shape);
        }
        let mut layer_map = vec![usize::MAX; graph.layers.len()];
        let mut used_layers = Vec::new();
        let mut nodes = Vec::new();
        for (n, node) in graph.nodes.iter().enumerate() {
            if !needed[n] {
                continue;
            }
            if layer_map[node.layer] == usize::MAX {
                layer_map[node.layer] = used_layers.len();
                used_layers.push(node.layer);
            }
            tensor_map[node.output] = shapes.len();
            shapes.push(graph.tensors[node.output].shape.clone().unwrap_or_default());
            nodes.push(Node {
                layer: layer_map[node.layer],
                inputs: node.inputs.iter().map(|&i| tensor_map[i]).collect(),
                output: tensor_map[node.output],
            });
        }
        let mut all: Vec<Option<graph::GraphLayer>> = graph.layers.into_iter().map(Some).collect();
        let layers = used_layers
            .iter()
            .filter_map(|&l| all[l].take())
            .map(|gl| ModelLayer {
                name: gl.name,
                kind: gl.kind,
            })
            .collect();
        Ok(Model {
            name: "functional".into(),
            seed: graph.seed,
            layers,
            inputs: model_inputs,
            nodes,
            shapes,
            outputs: outputs.iter().map(|t| tensor_map[t.index]).collect(),
            compiled: None,
            last_history: None,
            frozen: Default::default(),
        })
    }

    /// The same layers as a functional model: one input named
    /// `input_layer` and a chain of calls. Weights, compile settings and
    /// the optimizer's state move over unchanged.
    ///
    /// ```
    /// use horn::prelude::*;
    /// let seq = Sequential::new().seed(1).input(3).dense(4, Relu).dense(2, Softmax);
    /// let w = seq.get_weights().unwrap();
    /// let model = Model::from_sequential(seq);
    /// assert_eq!(model.get_weights().unwrap(), w);
    /// assert_eq!(model.input_names(), ["input_layer"]);
    /// ```
    pub fn from_sequential(seq: crate::Sequential) -> Model {
        let compiled = seq.compiled().cloned();
        let input = seq.get_input_shape().cloned().unwrap_or_default();
        let shapes_out: Vec<Shape> = seq.layer_shapes().to_vec();
        let name = seq.model_name().to_string();
        let seed = seq.default_seed();
        let names = seq.layer_names().to_vec();
        let frozen = seq.frozen().clone();
        let layers: Vec<ModelLayer> = seq
            .into_layers()
            .into_iter()
            .zip(names)
            .map(|(l, name)| ModelLayer {
                name,
                kind: LayerKind::Layer(l),
            })
            .collect();
        let mut shapes = vec![input.clone()];
        shapes.extend(shapes_out);
        let nodes = (0..layers.len())
            .map(|k| Node {
                layer: k,
                inputs: vec![k],
                output: k + 1,
            })
            .collect();
        let n = layers.len();
        let mut model = Model {
            name,
            seed,
            layers,
            inputs: vec![("input_layer".into(), input)],
            nodes,
            shapes,
            outputs: vec![n],
            compiled: None,
            last_history: None,
            frozen,
        };
        if let Some(c) = compiled {
            let output = model.output_names()[0].to_string();
            let mut options = ModelCompile::new().loss(c.loss);
            for (key, m) in c.metric_names.iter().zip(&c.metrics) {
                options = options.named_metric(&output, key, *m, false);
            }
            for (key, m) in c.weighted_names.iter().zip(&c.weighted_metrics) {
                options = options.named_metric(&output, key, *m, true);
            }
            // The same settings compiled once already; the optimizer (and
            // its state, keyed by the same weight names) moves over as is.
            if model.compile(c.optimizer.clone(), options).is_ok() {
                if let Some(mc) = model.compiled.as_mut() {
                    mc.optimizer = c.optimizer;
                }
            }
        }
        model
    }

    /// Sets the model's name (shown by `summary()`; Keras' default is
    /// `functional`).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The inputs' names, in the order `fit` and `predict` take them.
    pub fn input_names(&self) -> Vec<&str> {
        self.inputs.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The inputs' sample shapes (batch excluded).
    pub fn input_shapes(&self) -> Vec<&Shape> {
        self.inputs.iter().map(|(_, s)| s).collect()
    }

    /// The outputs' names: the names of the layers that produce them (Keras
    /// `model.output_names`), which key their losses, metrics and History
    /// entries.
    pub fn output_names(&self) -> Vec<&str> {
        self.outputs
            .iter()
            .map(|&t| self.producer_name(t))
            .collect()
    }

    /// The outputs' sample shapes (batch excluded).
    pub fn output_shapes(&self) -> Vec<&Shape> {
        self.outputs.iter().map(|&t| &self.shapes[t]).collect()
    }

    /// The names of the layers, in the order of [`Model::get_weights`]
    /// (inputs excluded).
    pub fn layer_names(&self) -> Vec<&str> {
        self.layers.iter().map(|l| l.name.as_str()).collect()
    }

    /// The layer called `name`, if it is a layer with weights (not a merge).
    pub fn get_layer(&self, name: &str) -> Option<&dyn crate::layers::Layer> {
        self.layers
            .iter()
            .find(|l| l.name == name)
            .and_then(|l| match &l.kind {
                LayerKind::Layer(l) => Some(l.as_ref()),
                LayerKind::Merge(_) => None,
            })
    }

    /// The History of the last `fit` (Keras' `model.history`).
    pub fn history(&self) -> Option<&crate::History> {
        self.last_history.as_ref()
    }

    /// The name of the layer that produces tensor `t` (or the input's name).
    pub(crate) fn producer_name(&self, t: usize) -> &str {
        if t < self.inputs.len() {
            return &self.inputs[t].0;
        }
        let node = &self.nodes[t - self.inputs.len()];
        &self.layers[node.layer].name
    }

    /// The layers with weights, with their names.
    pub(crate) fn weighted_layers(
        &self,
    ) -> impl Iterator<Item = (&str, &dyn crate::layers::Layer)> {
        self.layers.iter().filter_map(|l| match &l.kind {
            LayerKind::Layer(b) => Some((l.name.as_str(), b.as_ref())),
            LayerKind::Merge(_) => None,
        })
    }

    /// Total number of weights (Keras `count_params()`), each shared layer
    /// counted once.
    pub fn count_params(&self) -> usize {
        self.weighted_layers()
            .map(|(_, l)| l.params().iter().map(|p| p.values.len()).sum::<usize>())
            .sum()
    }

    /// Copies of all weights in Keras order: layer by layer in creation
    /// order, each layer's tensors in its own order (kernel then bias).
    pub fn get_weights(&self) -> Result<Vec<ArrayD<f32>>> {
        crate::model::weights::get(self.weighted_layers())
    }

    /// The Keras names of the weights (`dense/kernel`), in the order of
    /// [`Model::get_weights`].
    pub fn weight_names(&self) -> Vec<String> {
        self.weighted_layers()
            .flat_map(|(n, l)| {
                l.params()
                    .into_iter()
                    .map(move |p| format!("{n}/{}", p.name))
            })
            .collect()
    }

    /// Replaces all weights, in the order of [`Model::get_weights`]. Checks
    /// the count, every shape and that every value is finite (as loading a
    /// file does) before changing anything.
    pub fn set_weights(&mut self, weights: &[ArrayD<f32>]) -> Result<()> {
        let mut layers: Vec<(&str, &mut dyn crate::layers::Layer)> = self
            .layers
            .iter_mut()
            .filter_map(|l| match &mut l.kind {
                LayerKind::Layer(b) => {
                    Some((l.name.as_str(), b.as_mut() as &mut dyn crate::layers::Layer))
                }
                LayerKind::Merge(_) => None,
            })
            .collect();
        crate::model::weights::set(&mut layers, weights, "")
    }

    /// Sets weights by their Keras names (`out_class/kernel`), as Keras'
    /// `load_weights` matches them: every name must be a weight of this
    /// model with the same shape, and every weight of the model must be
    /// given. Nothing changes on an error.
    pub fn set_weights_by_name<'a>(
        &mut self,
        weights: impl IntoIterator<Item = (&'a str, &'a ArrayD<f32>)>,
    ) -> Result<()> {
        let names = self.weight_names();
        let mut ordered: Vec<Option<ArrayD<f32>>> = vec![None; names.len()];
        for (name, w) in weights {
            let Some(i) = names.iter().position(|n| n == name) else {
                return Err(Error::arg("weight name", format!("one of {names:?}"), name));
            };
            ordered[i] = Some(w.clone());
        }
        let mut all = Vec::with_capacity(names.len());
        for (n, w) in names.iter().zip(ordered) {
            all.push(w.ok_or_else(|| Error::arg("weights", format!("a value for `{n}`"), "none"))?);
        }
        self.set_weights(&all)
    }
}

fn input_name(graph: &Graph, tensor: usize) -> String {
    match graph.tensors[tensor].producer {
        Producer::Input(i) => graph.inputs[i].name.clone(),
        Producer::Node(_) => "?".into(),
    }
}
