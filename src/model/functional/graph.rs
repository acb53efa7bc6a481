//! [`Graph`]: the builder of a functional model, with symbolic [`Tensor`]s.
//!
//! Keras builds a functional model by calling layers on symbolic tensors:
//! `x = Dense(16)(inputs)`. In Rust the graph that records those calls is an
//! explicit value: `let x = g.call(Dense::new(16, Relu), inputs);`. A
//! [`Tensor`] is a small `Copy` handle into that graph, so it can be used
//! as often as needed (fan-out), and a [`LayerRef`] names a layer that is
//! called more than once (shared weights).
//!
//! Each layer is built when it is first called, from the shape of the
//! tensor it is called on, so shapes are known as the graph grows
//! ([`Graph::shape`]). A call the layer cannot take (a shape it refuses,
//! shapes a merge cannot join, a name used twice) is remembered and
//! reported by [`Model::new`](crate::Model::new), so that building reads as
//! a straight sequence of calls, as in Keras. Tensors can only be made from
//! tensors that already exist, so a graph has no cycles by construction.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::error::{Error, Result};
use crate::layers::merge::MergeOp;
use crate::layers::Layer;
use crate::shape::Shape;

/// Most inputs one merge layer takes (its input slices live on the stack,
/// so a pass allocates nothing).
pub(crate) const MAX_MERGE_INPUTS: usize = 32;

/// Distinguishes graphs, so that a tensor of one is refused by another.
static NEXT_GRAPH: AtomicU64 = AtomicU64::new(1);

/// A symbolic tensor: an input of a [`Graph`] or the output of a layer
/// called in it. Cheap to copy; only meaningful in its own graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tensor {
    pub(crate) graph: u64,
    pub(crate) index: usize,
}

/// A layer added to a [`Graph`] with [`Graph::layer`], to call on several
/// tensors with one set of weights (Keras' shared layers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LayerRef {
    pub(crate) graph: u64,
    pub(crate) index: usize,
}

/// What a graph node runs: a layer with weights, or a merge of several
/// tensors.
#[derive(Debug)]
pub(crate) enum LayerKind {
    Layer(Box<dyn Layer>),
    Merge(MergeOp),
}

impl LayerKind {
    pub(crate) fn class_name(&self) -> &str {
        match self {
            LayerKind::Layer(l) => l.class_name(),
            LayerKind::Merge(m) => m.class_name(),
        }
    }
}

/// A named layer of the graph and the input shape it was built for.
#[derive(Debug)]
pub(crate) struct GraphLayer {
    pub name: String,
    pub kind: LayerKind,
    /// The shape of its first call's inputs (a later call must match).
    pub built_for: Option<Vec<Shape>>,
}

/// Where a tensor comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Producer {
    /// `inputs[i]`.
    Input(usize),
    /// `nodes[i]`.
    Node(usize),
}

#[derive(Debug, Clone)]
pub(crate) struct GraphTensor {
    /// None when the call that made it failed (the error is kept).
    pub shape: Option<Shape>,
    pub producer: Producer,
}

/// One call of a layer on tensors.
#[derive(Debug, Clone)]
pub(crate) struct GraphNode {
    pub layer: usize,
    pub inputs: Vec<usize>,
    pub output: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct GraphInput {
    pub name: String,
}

/// The builder of a functional [`Model`](crate::Model): inputs, and layers
/// called on tensors.
///
/// ```
/// use horn::prelude::*;
///
/// # fn main() -> horn::Result<()> {
/// let mut g = Graph::with_seed(1);
/// let numbers = g.input("numbers", &[4]);
/// let flags = g.input("flags", &[3]);
/// let h = g.call(Dense::new(8, Relu), numbers);
/// let joined = g.call(Concatenate::new(), [h, flags]);
/// let class = g.call_named("class", Dense::new(3, Softmax), joined);
/// let value = g.call_named("value", Dense::new(1, Linear), joined);
/// let model = Model::new(g, [numbers, flags], [class, value])?;
/// assert_eq!(model.output_names(), ["class", "value"]);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Graph {
    pub(crate) id: u64,
    pub(crate) seed: u64,
    rng: StdRng,
    pub(crate) layers: Vec<GraphLayer>,
    pub(crate) tensors: Vec<GraphTensor>,
    pub(crate) nodes: Vec<GraphNode>,
    pub(crate) inputs: Vec<GraphInput>,
    /// Layers per snake_case class name, for Keras' numbering.
    counts: HashMap<String, usize>,
    names: HashSet<String>,
    pub(crate) error: Option<Error>,
}

impl Default for Graph {
    fn default() -> Self {
        Self::new()
    }
}

/// What [`Graph::call`] can call: a layer (added to the graph and called
/// once), a [`LayerRef`] (a layer already in the graph: shared weights), or
/// a merge layer ([`Concatenate`](crate::layers::Concatenate),
/// [`Add`](crate::layers::Add), ...).
pub trait Callee {
    /// Adds the layer to `g` when it is new, and returns its index.
    #[doc(hidden)]
    fn into_layer(self, g: &mut Graph, name: Option<&str>) -> usize;
}

impl<T: Layer + 'static> Callee for T {
    fn into_layer(self, g: &mut Graph, name: Option<&str>) -> usize {
        g.push_layer(name, LayerKind::Layer(Box::new(self)))
    }
}

impl Callee for Box<dyn Layer> {
    fn into_layer(self, g: &mut Graph, name: Option<&str>) -> usize {
        g.push_layer(name, LayerKind::Layer(self))
    }
}

impl Callee for LayerRef {
    fn into_layer(self, g: &mut Graph, name: Option<&str>) -> usize {
        if self.graph != g.id || self.index >= g.layers.len() {
            g.fail(Error::Graph(
                "a LayerRef from another graph was called; a layer belongs to the graph that added it"
                    .into(),
            ));
            return usize::MAX;
        }
        if let Some(n) = name {
            g.fail(Error::Graph(format!(
                "call_named(\"{n}\") on the shared layer `{}`: a shared layer keeps the name it was added with",
                g.layers[self.index].name
            )));
        }
        self.index
    }
}

macro_rules! merge_callee {
    ($($t:ident),*) => {$(
        impl Callee for crate::layers::$t {
            fn into_layer(self, g: &mut Graph, name: Option<&str>) -> usize {
                g.push_layer(name, LayerKind::Merge(self.into()))
            }
        }
    )*};
}
merge_callee!(
    Concatenate,
    Add,
    Subtract,
    Multiply,
    Average,
    Maximum,
    Minimum,
    Dot
);

/// The tensors a layer is called on: one [`Tensor`], an array, a slice or a
/// `Vec` of them.
pub trait IntoTensors {
    /// The tensors, in order.
    fn into_tensors(self) -> Vec<Tensor>;
}

impl IntoTensors for Tensor {
    fn into_tensors(self) -> Vec<Tensor> {
        vec![self]
    }
}

impl<const N: usize> IntoTensors for [Tensor; N] {
    fn into_tensors(self) -> Vec<Tensor> {
        self.to_vec()
    }
}

impl IntoTensors for &[Tensor] {
    fn into_tensors(self) -> Vec<Tensor> {
        self.to_vec()
    }
}

impl IntoTensors for Vec<Tensor> {
    fn into_tensors(self) -> Vec<Tensor> {
        self
    }
}

impl IntoTensors for &Vec<Tensor> {
    fn into_tensors(self) -> Vec<Tensor> {
        self.clone()
    }
}

impl Graph {
    /// An empty graph whose layers are initialised from a random seed.
    pub fn new() -> Self {
        Self::with_seed(rand::random())
    }

    /// An empty graph whose layers are initialised from `seed`: the same
    /// seed and the same calls give the same weights (and the model's
    /// default `fit` seed).
    pub fn with_seed(seed: u64) -> Self {
        Graph {
            id: NEXT_GRAPH.fetch_add(1, Ordering::Relaxed),
            seed,
            rng: StdRng::seed_from_u64(seed),
            layers: Vec::new(),
            tensors: Vec::new(),
            nodes: Vec::new(),
            inputs: Vec::new(),
            counts: HashMap::new(),
            names: HashSet::new(),
            error: None,
        }
    }

    /// A model input (Keras `keras.Input(shape, name)`): the shape of one
    /// sample, batch excluded, channels last. Names are how `fit` and
    /// `predict` can find the input's data.
    pub fn input(&mut self, name: &str, shape: &[usize]) -> Tensor {
        if shape.is_empty() || shape.contains(&0) {
            self.fail(Error::arg(
                format!("shape of input `{name}`"),
                "one or more positive dimensions",
                format!("{shape:?}"),
            ));
        }
        self.claim_name(name);
        let tensor = self.tensors.len();
        self.tensors.push(GraphTensor {
            shape: Some(Shape::new(shape)),
            producer: Producer::Input(self.inputs.len()),
        });
        self.inputs.push(GraphInput {
            name: name.to_string(),
        });
        self.tensor(tensor)
    }

    /// Adds a layer without calling it, to call it on several tensors with
    /// the same weights (Keras: one layer object called twice). Named like
    /// Keras by its class (`dense`, `dense_1`, ...).
    ///
    /// Every call must be on tensors of the shape of the first call (horn's
    /// layers are built for one input shape; Keras also lets an LSTM run
    /// over sequences of other lengths). A call on another shape is an
    /// error from [`Model::new`](crate::Model::new) that names both shapes.
    ///
    /// ```
    /// use horn::prelude::*;
    /// let mut g = Graph::with_seed(3);
    /// let left = g.input("left", &[5]);
    /// let right = g.input("right", &[5]);
    /// let encoder = g.layer(Dense::new(4, Tanh));
    /// let l = g.call(encoder, left);
    /// let r = g.call(encoder, right);
    /// let d = g.call(Subtract::new(), [l, r]);
    /// let out = g.call(Dense::new(1, Sigmoid), d);
    /// let model = Model::new(g, [left, right], [out]).unwrap();
    /// assert_eq!(model.count_params(), 4 * 5 + 4 + 4 + 1);
    /// ```
    pub fn layer(&mut self, layer: impl Layer + 'static) -> LayerRef {
        let index = self.push_layer(None, LayerKind::Layer(Box::new(layer)));
        LayerRef {
            graph: self.id,
            index,
        }
    }

    /// [`Graph::layer`] with a name of your choosing.
    pub fn layer_named(&mut self, name: &str, layer: impl Layer + 'static) -> LayerRef {
        let index = self.push_layer(Some(name), LayerKind::Layer(Box::new(layer)));
        LayerRef {
            graph: self.id,
            index,
        }
    }

    /// Calls a layer on tensors and returns its output (Keras
    /// `layer(inputs)`). Layers with weights take one tensor; merge layers
    /// take two or more. A call that fails (a shape the layer refuses) is
    /// reported by [`Model::new`](crate::Model::new); the tensor it returns
    /// has no shape.
    pub fn call(&mut self, layer: impl Callee, inputs: impl IntoTensors) -> Tensor {
        let index = layer.into_layer(self, None);
        self.call_index(index, inputs.into_tensors())
    }

    /// [`Graph::call`] on a new layer with a name of your choosing (an
    /// output's name is its layer's name: it keys the losses, metrics and
    /// History entries of that output).
    pub fn call_named(
        &mut self,
        name: &str,
        layer: impl Callee,
        inputs: impl IntoTensors,
    ) -> Tensor {
        let index = layer.into_layer(self, Some(name));
        self.call_index(index, inputs.into_tensors())
    }

    /// The shape of one sample of `t` (batch excluded), or `None` when the
    /// call that made it failed or `t` belongs to another graph.
    pub fn shape(&self, t: Tensor) -> Option<&Shape> {
        if t.graph != self.id {
            return None;
        }
        self.tensors.get(t.index).and_then(|x| x.shape.as_ref())
    }

    /// The first error met while building, if any (also returned by
    /// [`Model::new`](crate::Model::new)).
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }

    fn tensor(&self, index: usize) -> Tensor {
        Tensor {
            graph: self.id,
            index,
        }
    }

    fn fail(&mut self, e: Error) {
        self.error.get_or_insert(e);
    }

    /// Reserves a layer name, reporting a name used twice.
    fn claim_name(&mut self, name: &str) {
        if let Err(e) = crate::model::check_layer_name(name) {
            self.fail(e);
        } else if !self.names.insert(name.to_string()) {
            self.fail(Error::Graph(format!(
                "two layers (or inputs) are named `{name}`; names must be unique in a model"
            )));
        }
    }

    fn push_layer(&mut self, name: Option<&str>, kind: LayerKind) -> usize {
        let name = match name {
            Some(n) => n.to_string(),
            None => {
                // Keras numbers per class: dense, dense_1, ... skipping names
                // already taken.
                let base = super::super::snake_case(kind.class_name());
                loop {
                    let c = self.counts.entry(base.clone()).or_insert(0);
                    let candidate = if *c == 0 {
                        base.clone()
                    } else {
                        format!("{base}_{c}")
                    };
                    *c += 1;
                    if !self.names.contains(&candidate) {
                        break candidate;
                    }
                }
            }
        };
        self.claim_name(&name);
        self.layers.push(GraphLayer {
            name,
            kind,
            built_for: None,
        });
        self.layers.len() - 1
    }

    fn call_index(&mut self, layer: usize, inputs: Vec<Tensor>) -> Tensor {
        let output = self.tensors.len();
        let producer = Producer::Node(self.nodes.len());
        let shape = self.try_call(layer, &inputs);
        let shape = match shape {
            Ok(s) => Some(s),
            Err(e) => {
                self.fail(e);
                None
            }
        };
        self.tensors.push(GraphTensor { shape, producer });
        if layer < self.layers.len()
            && inputs
                .iter()
                .all(|t| t.graph == self.id && t.index < output)
        {
            self.nodes.push(GraphNode {
                layer,
                inputs: inputs.iter().map(|t| t.index).collect(),
                output,
            });
        } else {
            // Not a node: the tensor stays, marked as made by nothing
            // valid; Model::new reports the kept error.
            self.tensors[output].producer = Producer::Node(usize::MAX);
        }
        self.tensor(output)
    }

    fn try_call(&mut self, layer: usize, inputs: &[Tensor]) -> Result<Shape> {
        let Some(gl) = self.layers.get(layer) else {
            return Err(Error::Graph(
                "a call on a layer that is not in this graph".into(),
            ));
        };
        let lname = gl.name.clone();
        let mut shapes = Vec::with_capacity(inputs.len());
        for t in inputs {
            if t.graph != self.id {
                return Err(Error::Graph(format!(
                    "layer `{lname}` was called on a tensor of another graph"
                )));
            }
            match self.tensors.get(t.index).and_then(|x| x.shape.clone()) {
                Some(s) => shapes.push(s),
                // An earlier call failed; its error is already kept.
                None => {
                    return Err(Error::Graph(format!(
                        "layer `{lname}` was called on a tensor whose own call failed"
                    )))
                }
            }
        }
        let gl = &mut self.layers[layer];
        if let Some(prev) = &gl.built_for {
            if prev != &shapes {
                return Err(Error::shape(
                    format!("shared layer `{lname}`"),
                    format!("the input shape of its first call, {}", shape_list(prev)),
                    shape_list(&shapes),
                ));
            }
        }
        let out = match &mut gl.kind {
            LayerKind::Layer(l) => {
                if shapes.len() != 1 {
                    return Err(Error::arg(
                        format!("inputs of layer `{lname}` ({})", l.class_name()),
                        "exactly one tensor (merge layers such as Concatenate take several)",
                        shapes.len(),
                    ));
                }
                if gl.built_for.is_none() {
                    let s = l
                        .build(&shapes[0], &mut self.rng)
                        .map_err(|e| super::super::name_error(&lname, e))?;
                    if s.size() == 0 || s.rank() == 0 {
                        return Err(Error::shape(
                            format!("output of layer `{lname}`"),
                            "at least one value per sample",
                            s.to_string(),
                        ));
                    }
                    s
                } else {
                    // Same input shape as the first call: the same output.
                    let node = self.nodes.iter().find(|n| n.layer == layer);
                    match node.and_then(|n| self.tensors[n.output].shape.clone()) {
                        Some(s) => s,
                        None => {
                            return Err(Error::Graph(format!(
                                "layer `{lname}`: its first call failed"
                            )))
                        }
                    }
                }
            }
            LayerKind::Merge(m) => {
                if shapes.len() > MAX_MERGE_INPUTS {
                    return Err(Error::arg(
                        format!("inputs of `{lname}`"),
                        format!("at most {MAX_MERGE_INPUTS} tensors"),
                        shapes.len(),
                    ));
                }
                m.output_shape(&shapes)
                    .map_err(|e| super::super::name_error(&lname, e))?
            }
        };
        self.layers[layer].built_for = Some(shapes);
        Ok(out)
    }
}

/// `(None, 4) and (None, 5)`.
pub(crate) fn shape_list(shapes: &[Shape]) -> String {
    shapes
        .iter()
        .map(Shape::to_string)
        .collect::<Vec<_>>()
        .join(" and ")
}
