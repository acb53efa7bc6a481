//! Model files of functional models: the same safetensors container as
//! `Sequential`'s (weights named `{layer}/{weight}`, optimizer slots
//! `optimizer/{layer}/{weight}`), with metadata `model_kind =
//! "functional"` and a `model` entry that holds the graph: inputs with
//! names and shapes, layers with names and configurations, nodes (a layer
//! and the tensors it reads), outputs, and the compile settings per output.
//!
//! Loading checks the graph as untrusted input before it builds anything:
//! indices in range and pointing backwards (so no cycle), one input per
//! layer call and 2 to 32 per merge, names unique, shapes that the layers
//! accept, and a shared layer called on one shape. Layers are built from
//! the file's own tensors, so nothing is allocated that the file's size does
//! not justify.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{
    encode, open_model_file, optimizer_tensors, parse_file, tensor, LayerConfig, SavedOptimizer,
    Tensor, FORMAT_VERSION, MAX_RANK,
};
use crate::error::{Error, Result};
use crate::files::{read_file, write_atomic};
use crate::layers::merge::MergeOp;
use crate::losses::Loss;
use crate::metrics::Metric;
use crate::model::functional::graph::{LayerKind, MAX_MERGE_INPUTS};
use crate::model::functional::{ModelLayer, Node};
use crate::model::{check_layer_name, Model, ModelCompile};
use crate::optimizers::Optimizer;
use crate::shape::Shape;

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct InputEntry {
    pub name: String,
    pub shape: Vec<usize>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) enum LayerBody {
    Layer(LayerConfig),
    Merge(MergeOp),
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct GraphLayerEntry {
    pub name: String,
    pub body: LayerBody,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct NodeEntry {
    pub layer: usize,
    pub inputs: Vec<usize>,
}

#[derive(Debug, Serialize, Deserialize)]
struct OutputCompileEntry {
    loss: Loss,
    weight: f32,
    metrics: Vec<(String, Metric)>,
    weighted_metrics: Vec<(String, Metric)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FunctionalCompileEntry {
    optimizer: Optimizer,
    outputs: Vec<OutputCompileEntry>,
    optimizer_state: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct FunctionalEntry {
    pub name: String,
    pub seed: u64,
    pub inputs: Vec<InputEntry>,
    pub layers: Vec<GraphLayerEntry>,
    /// Node `k` makes tensor `inputs.len() + k`.
    pub nodes: Vec<NodeEntry>,
    pub outputs: Vec<usize>,
    compile: Option<FunctionalCompileEntry>,
}

impl FunctionalEntry {
    /// A graph without compile settings (the Keras loader adds its own).
    #[cfg_attr(not(feature = "keras"), allow(dead_code))]
    pub(super) fn graph(
        name: String,
        inputs: Vec<InputEntry>,
        layers: Vec<GraphLayerEntry>,
        nodes: Vec<NodeEntry>,
        outputs: Vec<usize>,
    ) -> Self {
        FunctionalEntry {
            name,
            seed: 0,
            inputs,
            layers,
            nodes,
            outputs,
            compile: None,
        }
    }
}

/// Builds one layer with weights: `(layer index, config, input shape,
/// name)` to the layer and its output shape.
pub(super) type LoadLayer<'a> = dyn FnMut(usize, &LayerConfig, &Shape, &str) -> Result<(Box<dyn crate::layers::Layer>, Shape)>
    + 'a;

/// The most layers, nodes or inputs a functional model file may list.
const MAX_ENTRIES: usize = super::MAX_LAYERS;

impl Model {
    fn weight_tensors(&self) -> Vec<Tensor<'_>> {
        let mut out = Vec::new();
        for (name, l) in self.weighted_layers() {
            for p in l.params() {
                out.push(Tensor {
                    name: format!("{name}/{}", p.name),
                    shape: p.shape.clone(),
                    values: p.values,
                });
            }
        }
        out
    }

    /// Saves the graph, compile settings, weights and optimizer state to
    /// one safetensors file (as [`Sequential::save`](crate::Sequential::save):
    /// the same bytes for the same model, written atomically), so that `fit`
    /// resumes where it stopped.
    ///
    /// ```
    /// use horn::prelude::*;
    /// let mut g = Graph::with_seed(2);
    /// let a = g.input("a", &[3]);
    /// let b = g.input("b", &[2]);
    /// let j = g.call(Concatenate::new(), [a, b]);
    /// let o = g.call(Dense::new(1, Linear), j);
    /// let mut model = Model::new(g, [a, b], [o]).unwrap();
    /// model.compile("adam", ModelCompile::new().loss("mse")).unwrap();
    /// let bytes = model.to_bytes().unwrap();
    /// let copy = Model::from_bytes(&bytes).unwrap();
    /// assert_eq!(copy.get_weights().unwrap(), model.get_weights().unwrap());
    /// assert_eq!(copy.input_names(), ["a", "b"]);
    /// ```
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        write_atomic(path, &self.encode_model(path)?)
    }

    /// The bytes [`Model::save`] writes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.encode_model(Path::new("<bytes>"))
    }

    /// Loads a model saved by [`Model::save`], checked as untrusted input.
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        let path = path.as_ref();
        Self::decode(&read_file(path)?, path)
    }

    /// [`Model::load`] from a file's bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Model> {
        Self::decode(bytes, Path::new("<bytes>"))
    }

    fn encode_model(&self, path: &Path) -> Result<Vec<u8>> {
        self.frozen.check_save()?;
        let mut layers = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            let body = match &l.kind {
                LayerKind::Layer(b) => LayerBody::Layer(b.config().ok_or_else(|| {
                    Error::arg(
                        "layer",
                        "built-in layers only (custom layers cannot be saved; save the weights)",
                        format!("{} ({})", l.name, b.class_name()),
                    )
                })?),
                LayerKind::Merge(m) => LayerBody::Merge(*m),
            };
            layers.push(GraphLayerEntry {
                name: l.name.clone(),
                body,
            });
        }
        let mut tensors = self.weight_tensors();
        let compile = self.compiled.as_ref().map(|c| {
            let has_state = optimizer_tensors(&c.optimizer, &mut tensors);
            FunctionalCompileEntry {
                optimizer: c.optimizer.clone(),
                outputs: c
                    .outputs
                    .iter()
                    .map(|o| OutputCompileEntry {
                        loss: o.loss,
                        weight: o.weight,
                        metrics: o
                            .given
                            .iter()
                            .filter(|m| !m.2)
                            .map(|m| (m.0.clone(), m.1))
                            .collect(),
                        weighted_metrics: o
                            .given
                            .iter()
                            .filter(|m| m.2)
                            .map(|m| (m.0.clone(), m.1))
                            .collect(),
                    })
                    .collect(),
                optimizer_state: has_state,
            }
        });
        let entry = FunctionalEntry {
            name: self.name.clone(),
            seed: self.seed,
            inputs: self
                .inputs
                .iter()
                .map(|(n, s)| InputEntry {
                    name: n.clone(),
                    shape: s.dims().to_vec(),
                })
                .collect(),
            layers,
            nodes: self
                .nodes
                .iter()
                .map(|n| NodeEntry {
                    layer: n.layer,
                    inputs: n.inputs.clone(),
                })
                .collect(),
            outputs: self.outputs.clone(),
            compile,
        };
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), "horn".to_string());
        meta.insert("format_version".to_string(), FORMAT_VERSION.to_string());
        meta.insert("model_kind".to_string(), "functional".to_string());
        meta.insert(
            "model".to_string(),
            serde_json::to_string(&entry).map_err(|e| Error::format(path, e.to_string()))?,
        );
        encode(&mut tensors, meta)
    }

    fn decode(bytes: &[u8], path: &Path) -> Result<Model> {
        let (st, meta, version) = open_model_file(bytes, path)?;
        if meta.get("model_kind").map(String::as_str) != Some("functional") {
            return Err(Error::format(
                path,
                "this file holds a Sequential model; load it with `Sequential::load`",
            ));
        }
        let json = meta
            .get("model")
            .ok_or_else(|| Error::format(path, "metadata has no `model` entry"))?;
        let entry: FunctionalEntry = serde_json::from_str(json)
            .map_err(|e| Error::format(path, format!("unreadable architecture: {e}")))?;
        let mut model = build_model(&entry, path, &mut |_, config, input, name| {
            config.load(input, name, &st, path)
        })?;
        let bad = |why: String| Error::format(path, format!("invalid graph: {why}"));
        if let Some(c) = entry.compile {
            let out_names: Vec<String> =
                model.output_names().iter().map(|s| s.to_string()).collect();
            if c.outputs.len() != out_names.len() {
                return Err(bad(format!(
                    "{} compiled outputs for {} outputs",
                    c.outputs.len(),
                    out_names.len()
                )));
            }
            let mut options = ModelCompile::new();
            let mut weights = Vec::new();
            for (o, name) in c.outputs.iter().zip(&out_names) {
                options = options.output_loss(name, o.loss);
                weights.push(o.weight);
                for (key, m) in &o.metrics {
                    options = options.named_metric(name, key, *m, false);
                }
                for (key, m) in &o.weighted_metrics {
                    options = options.named_metric(name, key, *m, true);
                }
            }
            options = options.loss_weights(&weights);
            let vars = model.weight_sizes();
            let saved =
                SavedOptimizer::read(&c.optimizer, c.optimizer_state, &vars, &st, version, path)?;
            model
                .compile(c.optimizer, options)
                .map_err(|e| Error::format(path, format!("invalid compile settings: {e}")))?;
            if let Some(comp) = model.compiled.as_mut() {
                saved.restore(&mut comp.optimizer);
            }
        }
        Ok(model)
    }

    /// Loads weights by their Keras names (`out_class/kernel`) from a
    /// safetensors file (horn's `save_weights`, or Keras' `get_weights()`
    /// exported by name), checking every shape and value before changing
    /// anything.
    pub fn load_weights(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = read_file(path)?;
        let st = parse_file(&bytes, path)?;
        let mut weights = Vec::new();
        for (name, l) in self.weighted_layers() {
            for p in l.params() {
                let key = format!("{name}/{}", p.name);
                let v = tensor(&st, &key, &p.shape, path)?;
                weights.push(
                    ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&p.shape), v)
                        .map_err(|e| Error::format(path, e.to_string()))?,
                );
            }
        }
        self.set_weights(&weights)
    }

    /// Saves only the weights, by Keras name.
    pub fn save_weights(&self, path: impl AsRef<Path>) -> Result<()> {
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), "horn-weights".to_string());
        write_atomic(path.as_ref(), &encode(&mut self.weight_tensors(), meta)?)
    }
}

/// The model of a graph entry (checked as untrusted: indices, names,
/// shapes), its layers built by `load_layer`.
pub(super) fn build_model(
    entry: &FunctionalEntry,
    path: &Path,
    load_layer: &mut LoadLayer<'_>,
) -> Result<Model> {
    let bad = |why: String| Error::format(path, format!("invalid graph: {why}"));
    let n_in = entry.inputs.len();
    if n_in == 0 || entry.outputs.is_empty() || entry.nodes.is_empty() {
        return Err(bad("a model needs inputs, layers and outputs".into()));
    }
    if n_in > MAX_ENTRIES || entry.layers.len() > MAX_ENTRIES || entry.nodes.len() > MAX_ENTRIES {
        return Err(bad(format!(
            "more than {MAX_ENTRIES} inputs, layers or nodes"
        )));
    }
    let mut names = HashSet::new();
    let mut shapes: Vec<Shape> = Vec::with_capacity(n_in + entry.nodes.len());
    let mut inputs = Vec::with_capacity(n_in);
    for i in &entry.inputs {
        if i.shape.is_empty()
            || i.shape.len() > MAX_RANK
            || i.shape.contains(&0)
            || i.shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .is_none()
        {
            return Err(bad(format!("input `{}` has shape {:?}", i.name, i.shape)));
        }
        check_layer_name(&i.name).map_err(|e| bad(format!("input `{}`: {e}", i.name)))?;
        if !names.insert(i.name.clone()) {
            return Err(bad(format!("input name `{}` is used twice", i.name)));
        }
        shapes.push(Shape::new(&i.shape));
        inputs.push((i.name.clone(), Shape::new(&i.shape)));
    }
    // Each layer is built (from the file's tensors) at its first call,
    // which fixes its input shapes and output shape.
    let mut built: Vec<Option<(LayerKind, Vec<Shape>, Shape)>> =
        (0..entry.layers.len()).map(|_| None).collect();
    let mut nodes = Vec::with_capacity(entry.nodes.len());
    for (k, node) in entry.nodes.iter().enumerate() {
        let t = n_in + k;
        let Some(le) = entry.layers.get(node.layer) else {
            return Err(bad(format!(
                "node {k} calls layer {} of {}",
                node.layer,
                entry.layers.len()
            )));
        };
        if let Some(&i) = node.inputs.iter().find(|&&i| i >= t) {
            return Err(bad(format!(
                "node {k} reads tensor {i}, which is not made before it"
            )));
        }
        let in_shapes: Vec<Shape> = node.inputs.iter().map(|&i| shapes[i].clone()).collect();
        let out = match &mut built[node.layer] {
            Some((kind, first, first_out)) => {
                if first != &in_shapes {
                    return Err(bad(format!(
                        "shared layer `{}` is called on two shapes",
                        le.name
                    )));
                }
                match kind {
                    LayerKind::Merge(m) => {
                        m.output_shape(&in_shapes).map_err(|e| bad(e.to_string()))?
                    }
                    // Same input shape as its first call: the same output.
                    LayerKind::Layer(_) => first_out.clone(),
                }
            }
            slot @ None => {
                check_layer_name(&le.name).map_err(|e| bad(format!("layer `{}`: {e}", le.name)))?;
                if !names.insert(le.name.clone()) {
                    return Err(bad(format!("layer name `{}` is used twice", le.name)));
                }
                match &le.body {
                    LayerBody::Layer(config) => {
                        if in_shapes.len() != 1 {
                            return Err(bad(format!(
                                "layer `{}` is called on {} tensors",
                                le.name,
                                in_shapes.len()
                            )));
                        }
                        let (layer, out) = load_layer(node.layer, config, &in_shapes[0], &le.name)?;
                        *slot = Some((LayerKind::Layer(layer), in_shapes, out.clone()));
                        out
                    }
                    LayerBody::Merge(m) => {
                        if in_shapes.len() > MAX_MERGE_INPUTS {
                            return Err(bad(format!(
                                "merge `{}` has {} inputs",
                                le.name,
                                in_shapes.len()
                            )));
                        }
                        let out = m.output_shape(&in_shapes).map_err(|e| bad(e.to_string()))?;
                        *slot = Some((LayerKind::Merge(*m), in_shapes, out.clone()));
                        out
                    }
                }
            }
        };
        shapes.push(out);
        nodes.push(Node {
            layer: node.layer,
            inputs: node.inputs.clone(),
            output: t,
        });
    }
    let mut layers = Vec::with_capacity(entry.layers.len());
    for (le, b) in entry.layers.iter().zip(built) {
        let (kind, _, _) = b.ok_or_else(|| bad(format!("layer `{}` is never called", le.name)))?;
        layers.push(ModelLayer {
            name: le.name.clone(),
            kind,
        });
    }
    if let Some(&o) = entry
        .outputs
        .iter()
        .find(|&&o| o < n_in || o >= shapes.len())
    {
        return Err(bad(format!("output tensor {o} is not made by a layer")));
    }
    Ok(Model {
        name: entry.name.clone(),
        seed: entry.seed,
        layers,
        inputs,
        nodes,
        shapes,
        outputs: entry.outputs.clone(),
        compiled: None,
        last_history: None,
        frozen: Default::default(),
    })
}
