//! Keras 3's own model files (`.keras`), read natively: no Python.
//!
//! A `.keras` file is a zip archive of `config.json` (the architecture and
//! the compile settings), `metadata.json` and `model.weights.h5` (the
//! weights and the optimizer's variables, HDF5). Loading
//! 1. reads the archive within limits (`archive.rs`);
//! 2. translates the architecture, Sequential or Functional, into horn's
//!    layers (`config.rs`): every key a layer's result depends on is read,
//!    and anything horn does not implement (a layer class, a custom object,
//!    `return_state`, constraints, a dtype other than float32, a call's
//!    tensor keyword argument such as `initial_state=`) is an error that
//!    names the layer and the key;
//! 3. builds every layer from its weights in the HDF5 file, found where
//!    Keras puts them (`layers/{class}_{n}/vars/{i}`, recurrent cells under
//!    `cell/`, Bidirectional under `forward_layer/` and `backward_layer/`),
//!    each checked for presence, dtype, shape and finite values before it is
//!    copied;
//! 4. restores the compile settings (optimizer and its hyper-parameters,
//!    losses, loss weights, metrics) and, where the optimizer's variables
//!    are laid out as horn keeps them, its state, so `fit` continues where
//!    Keras stopped.
//!
//! The file is untrusted input: the archive reader bounds every allocation
//! by the entries' declared sizes (and refuses decompression bombs and
//! names that climb out of the archive), the JSON parser has a depth limit,
//! the HDF5 decoder (`hdf5-reader`) is bounds-checked and its reads are
//! capped at the weights file's size, and a weight is only allocated once
//! the file's own dataset has the shape the configuration asks for. A
//! failed load returns an error and builds nothing.

mod archive;
mod config;
mod writer;

use std::path::Path;

use hdf5_reader::{Hdf5File, OpenOptions};
use serde_json::Value;

use self::archive::KerasArchive;
use self::config::{Architecture, Body};
use super::functional::{
    build_model, FunctionalEntry, GraphLayerEntry, InputEntry, LayerBody, NodeEntry,
};
use crate::error::{Error, Result};
use crate::files::read_file;
use crate::losses::Loss;
use crate::metrics::Metric;
use crate::model::functional::graph::LayerKind;
use crate::model::{Frozen, Model, ModelCompile, Sequential};
use crate::optimizers::{
    Adadelta, Adagrad, Adam, AdamW, Adamax, Lion, Nadam, Optimizer, RmsProp, Sgd,
};
use crate::shape::Shape;

/// A model read from a `.keras` file: Keras' `Sequential` stays a
/// [`Sequential`], a functional model becomes a [`Model`].
#[derive(Debug)]
pub enum KerasModel {
    /// A Keras `Sequential`.
    Sequential(Box<Sequential>),
    /// A Keras functional model.
    Functional(Box<Model>),
}

impl KerasModel {
    /// The `summary()` table.
    pub fn summary(&self) -> String {
        match self {
            KerasModel::Sequential(m) => m.summary(),
            KerasModel::Functional(m) => m.summary(),
        }
    }

    /// The model as a functional [`Model`] (a `Sequential` becomes a chain
    /// of the same layers with an input named `input_layer`).
    pub fn into_model(self) -> Model {
        match self {
            KerasModel::Sequential(m) => Model::from_sequential(*m),
            KerasModel::Functional(m) => *m,
        }
    }
}

/// Loads a Keras 3 `.keras` file (Keras `keras.saving.load_model`): the
/// architecture, the weights and, when the file has them, the compile
/// settings and optimizer state. A model saved without `compile()`
/// (`compile_config` empty or absent) loads for inference.
///
/// A file may list at most [`MAX_LAYERS`](crate::saving::MAX_LAYERS)
/// layers (and calls); loading takes O(n log n) time in them. Layers the
/// file freezes (`trainable: false`, or called with `training=False`) load
/// and predict, but `fit` refuses the model: horn cannot train frozen
/// layers yet. Keyword arguments of calls that take tensors
/// (`initial_state=`, an explicit `mask=`) and `Bidirectional(merge_mode=None)`
/// are refused by name, not dropped.
///
/// ```no_run
/// use horn::saving::{load_keras, KerasModel};
/// match load_keras("model.keras")? {
///     KerasModel::Sequential(m) => println!("{}", m.summary()),
///     KerasModel::Functional(m) => println!("{}", m.summary()),
/// }
/// # Ok::<(), horn::Error>(())
/// ```
pub fn load_keras(path: impl AsRef<Path>) -> Result<KerasModel> {
    let path = path.as_ref();
    decode(&read_file(path)?, path)
}

/// [`load_keras`] from the bytes of a `.keras` file.
pub fn load_keras_bytes(bytes: &[u8]) -> Result<KerasModel> {
    decode(bytes, Path::new("<bytes>"))
}

impl Sequential {
    /// Loads a Keras `Sequential` model from a `.keras` file (see
    /// [`load_keras`]); a functional model is an error that says to use
    /// [`Model::load_keras`].
    pub fn load_keras(path: impl AsRef<Path>) -> Result<Sequential> {
        let path = path.as_ref();
        match load_keras(path)? {
            KerasModel::Sequential(m) => Ok(*m),
            KerasModel::Functional(_) => Err(Error::format(
                path,
                "this file holds a functional Keras model; load it with `Model::load_keras`",
            )),
        }
    }
}

impl Model {
    /// Loads any Keras model from a `.keras` file as a functional [`Model`]
    /// (a `Sequential` becomes a chain); see [`load_keras`].
    pub fn load_keras(path: impl AsRef<Path>) -> Result<Model> {
        Ok(load_keras(path)?.into_model())
    }
}

impl Sequential {
    /// Writes the model as a Keras 3 `.keras` file that
    /// `keras.saving.load_model` opens: the architecture, the weights and,
    /// when compiled, the compile settings and the optimizer's variables
    /// (for the optimizers whose layout horn shares with Keras: SGD, plain
    /// RMSprop, Adam, Adagrad, Lion; the others are written without state,
    /// which Keras reports and starts fresh). Custom layers and activations
    /// with parameters Keras cannot name are errors. The write is atomic.
    ///
    /// ```
    /// use horn::prelude::*;
    /// let model = Sequential::new().seed(1).input(4).dense(3, Softmax);
    /// let bytes = model.to_keras_bytes().unwrap();
    /// let back = Sequential::load_keras_bytes(&bytes).unwrap();
    /// assert_eq!(back.get_weights().unwrap(), model.get_weights().unwrap());
    /// ```
    pub fn save_keras(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::files::write_atomic_any(path.as_ref(), &self.to_keras_bytes()?)
    }

    /// The bytes [`Sequential::save_keras`] writes.
    pub fn to_keras_bytes(&self) -> Result<Vec<u8>> {
        writer::Exported::sequential(self)?.to_bytes()
    }

    /// [`Sequential::load_keras`] from a file's bytes.
    pub fn load_keras_bytes(bytes: &[u8]) -> Result<Sequential> {
        match load_keras_bytes(bytes)? {
            KerasModel::Sequential(m) => Ok(*m),
            KerasModel::Functional(_) => Err(Error::format(
                "<bytes>",
                "this file holds a functional Keras model; load it with `Model::load_keras`",
            )),
        }
    }
}

impl Model {
    /// Writes the model as a Keras 3 `.keras` file (see
    /// [`Sequential::save_keras`]).
    pub fn save_keras(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::files::write_atomic_any(path.as_ref(), &self.to_keras_bytes()?)
    }

    /// The bytes [`Model::save_keras`] writes.
    pub fn to_keras_bytes(&self) -> Result<Vec<u8>> {
        writer::Exported::functional(self)?.to_bytes()
    }
}

/// The weights file, with reads capped at its own size.
struct Weights<'a> {
    h5: Hdf5File,
    size: usize,
    path: &'a Path,
    /// A Keras 2 `.h5` model file: weights under `model_weights/{layer}/`,
    /// listed by the group's `weight_names` attribute.
    legacy: bool,
}

impl Weights<'_> {
    /// The values of a layer's `i`-th weight (of `n`), which must have
    /// `shape`: where Keras 3 puts it (`key` is the layer's group), or
    /// where Keras 2 did (by the layer's `name`).
    fn var(
        &self,
        config: &crate::saving::LayerConfig,
        key: &str,
        name: &str,
        i: usize,
        n: usize,
        shape: &[usize],
    ) -> Result<Vec<f32>> {
        if !self.legacy {
            return self.f32s(&config::var_path(config, key, i, n), shape);
        }
        let group = format!("model_weights/{name}");
        let names = self
            .h5
            .group(&group)
            .and_then(|g| g.attribute("weight_names"))
            .and_then(|a| a.read_strings())
            .map_err(|_| {
                Error::format(
                    self.path,
                    format!("`{group}` has no readable `weight_names`"),
                )
            })?;
        if names.len() != n {
            return Err(Error::format(
                self.path,
                format!(
                    "layer `{name}` has {} weights in the file, its configuration needs {n}",
                    names.len()
                ),
            ));
        }
        self.f32s(&format!("{group}/{}", names[i]), shape)
    }

    /// The float32 values of dataset `name`, which must have `shape`.
    fn f32s(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let bad =
            |why: String| Error::format(self.path, format!("model.weights.h5: `{name}` {why}"));
        let ds = self
            .h5
            .dataset(name)
            .map_err(|_| bad("is missing (the weights do not match the configuration)".into()))?;
        let got: Vec<usize> = ds.shape().iter().map(|&d| d as usize).collect();
        if got != shape {
            return Err(Error::shape(
                format!("weight `{name}` in {}", self.path.display()),
                format!("{shape:?}"),
                format!("{got:?}"),
            ));
        }
        // Keras stores weights uncompressed: more values than the file
        // holds bytes is a lie, refused before allocating (a count that
        // overflows is one too).
        let n = match element_count(shape) {
            Some(n) if n.saturating_mul(4) <= self.size => n,
            _ => {
                return Err(bad(format!(
                    "claims {shape:?} values in a {}-byte file",
                    self.size
                )))
            }
        };
        let mut v = vec![0.0f32; n];
        ds.read_into(&mut v)
            .map_err(|e| bad(format!("cannot be read as float32 ({e})")))?;
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(bad(format!("holds a non-finite value at index {i}")));
        }
        Ok(v)
    }

    /// A scalar integer dataset (the optimizer's iteration count).
    fn int(&self, name: &str) -> Option<i64> {
        let ds = self.h5.dataset(name).ok()?;
        if ds.num_elements().ok()? != 1 {
            return None;
        }
        ds.read_array::<i64>()
            .ok()
            .and_then(|a| a.iter().next().copied())
            .or_else(|| {
                ds.read_array::<i32>()
                    .ok()
                    .and_then(|a| a.iter().next().map(|&x| x as i64))
            })
    }

    /// A scalar float dataset (the optimizer's learning rate).
    fn float(&self, name: &str) -> Option<f32> {
        let ds = self.h5.dataset(name).ok()?;
        if ds.num_elements().ok()? != 1 {
            return None;
        }
        ds.read_array::<f32>()
            .ok()
            .and_then(|a| a.iter().next().copied())
    }
}

/// The number of values of a shape read from a file, `None` when it
/// overflows (a crafted file's dimensions can).
fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

/// An HDF5 file's bytes, opened with reads capped at their size.
fn open_h5(bytes: Vec<u8>, path: &Path, what: &str) -> Result<(Hdf5File, usize)> {
    let size = bytes.len();
    let options = OpenOptions::default()
        .with_max_read_bytes(size)
        .with_max_chunk_bytes(size.max(1 << 20));
    let h5 = Hdf5File::from_vec_with_options(bytes, options)
        .map_err(|e| Error::format(path, format!("{what} is not a readable HDF5 file ({e})")))?;
    Ok((h5, size))
}

/// A string attribute of the root group of a Keras 2 `.h5` file, as JSON.
fn root_json(h5: &Hdf5File, name: &str, path: &Path) -> Result<Option<Value>> {
    let Ok(attr) = h5.root_group().and_then(|g| g.attribute(name)) else {
        return Ok(None);
    };
    let text = attr
        .read_string()
        .or_else(|_| attr.read_strings().map(|v| v.concat()))
        .map_err(|e| Error::format(path, format!("attribute `{name}` is not a string ({e})")))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::format(path, format!("attribute `{name}` is not valid JSON ({e})")))
}

fn decode(bytes: &[u8], path: &Path) -> Result<KerasModel> {
    let in_file = |e: Error| match e {
        Error::Format { .. } | Error::Shape { .. } => e,
        other => Error::format(path, other.to_string()),
    };
    let (root, weights) = if bytes.starts_with(b"\x89HDF\r\n\x1a\n") {
        // A Keras 2 (or R keras) full-model `.h5` file.
        let (h5, size) = open_h5(bytes.to_vec(), path, "the file")?;
        let config = root_json(&h5, "model_config", path)?.ok_or_else(|| {
            Error::format(
                path,
                "an HDF5 file without `model_config`: a weights-only file? (use load_weights)",
            )
        })?;
        let mut root = config;
        if let Some(tc) = root_json(&h5, "training_config", path)? {
            root["compile_config"] = serde_json::json!({
                "optimizer": tc.get("optimizer_config").cloned().unwrap_or(Value::Null),
                "loss": tc.get("loss").cloned().unwrap_or(Value::Null),
                "loss_weights": tc.get("loss_weights").cloned().unwrap_or(Value::Null),
                "metrics": tc.get("metrics").cloned().unwrap_or(Value::Null),
            });
        }
        (
            root,
            Weights {
                h5,
                size,
                path,
                legacy: true,
            },
        )
    } else {
        let archive = KerasArchive::read(bytes, path)?;
        let root: Value = serde_json::from_slice(&archive.config)
            .map_err(|e| Error::format(path, format!("config.json is not valid JSON ({e})")))?;
        let (h5, size) = open_h5(archive.weights, path, "model.weights.h5")?;
        (
            root,
            Weights {
                h5,
                size,
                path,
                legacy: false,
            },
        )
    };
    let arch = config::architecture(&root).map_err(in_file)?;
    // Keras 3 writes `{}` (older versions `null`, or nothing) for a model
    // saved without `compile()`: not compiled, loaded for inference.
    let compile = root
        .get("compile_config")
        .filter(|v| !v.is_null() && v.as_object().is_none_or(|o| !o.is_empty()));
    match arch {
        Architecture::Sequential {
            name,
            input_shape,
            layers,
        } => {
            let mut model = Sequential::new()
                .name(name)
                .seed(0)
                .input_shape(&input_shape);
            let mut shape = Shape::new(&input_shape);
            for l in &layers {
                let Body::Layer(config) = &l.body else {
                    return Err(Error::format(path, "a merge layer in a Sequential model"));
                };
                let n = config.weight_count(&shape).map_err(in_file)?;
                let (layer, out) = config.load_with(&shape, &l.name, path, &mut |i, _, s| {
                    weights.var(config, &l.h5_key, &l.name, i, n, s)
                })?;
                model.push_built_named(layer, out.clone(), &l.name)?;
                shape = out;
            }
            model.ensure_built().map_err(in_file)?;
            let frozen = Frozen {
                layers: layers
                    .iter()
                    .zip(model.layers())
                    .filter(|(l, b)| l.frozen && !b.params().is_empty())
                    .map(|(l, _)| l.name.clone())
                    .collect(),
                inference_calls: Vec::new(),
            };
            // Keras keeps optimizer slots for trainable weights only, which
            // horn's layout does not skip: with frozen layers (which `fit`
            // refuses) the optimizer starts fresh.
            let restore = frozen.layers.is_empty();
            model.set_frozen(frozen);
            if let Some(c) = compile {
                let (optimizer, losses, _, metrics) =
                    compile_settings(c, &["output".to_string()]).map_err(in_file)?;
                let loss = losses
                    .into_iter()
                    .next()
                    .flatten()
                    .ok_or_else(|| Error::format(path, "compile_config has no loss"))?;
                let all = metrics.into_iter().next().unwrap_or_default();
                let (weighted, plain): (Vec<NamedMetric>, Vec<NamedMetric>) =
                    all.into_iter().partition(|m| m.2);
                let strip = |v: Vec<NamedMetric>| v.into_iter().map(|(k, m, _)| (k, m)).collect();
                let options = crate::model::CompileOptions::named(strip(plain), strip(weighted));
                model
                    .compile_with(optimizer, loss, options)
                    .map_err(in_file)?;
                let vars = model.weight_sizes();
                if let Some(c) = model.compiled_mut().filter(|_| restore) {
                    restore_optimizer(&mut c.optimizer, &weights, &vars)?;
                }
            }
            Ok(KerasModel::Sequential(Box::new(model)))
        }
        Architecture::Functional {
            name,
            inputs,
            layers,
            nodes,
            outputs,
        } => {
            let (entry_nodes, outputs) = order_calls(&inputs, &layers, &nodes, &outputs)
                .map_err(|e| Error::format(path, e))?;
            let entry = FunctionalEntry::graph(
                name,
                inputs
                    .iter()
                    .map(|(n, s)| InputEntry {
                        name: n.clone(),
                        shape: s.clone(),
                    })
                    .collect(),
                layers
                    .iter()
                    .map(|l| GraphLayerEntry {
                        name: l.name.clone(),
                        body: match &l.body {
                            Body::Layer(c) => LayerBody::Layer(c.clone()),
                            Body::Merge(m) => LayerBody::Merge(*m),
                        },
                    })
                    .collect(),
                entry_nodes,
                outputs,
            );
            let mut model = build_model(&entry, path, &mut |l, config, input, name| {
                let n = config.weight_count(input)?;
                config.load_with(input, name, path, &mut |i, _, s| {
                    weights.var(config, &layers[l].h5_key, name, i, n, s)
                })
            })?;
            model.frozen = Frozen {
                layers: layers
                    .iter()
                    .zip(&model.layers)
                    .filter(|(l, m)| match &m.kind {
                        LayerKind::Layer(b) => l.frozen && !b.params().is_empty(),
                        LayerKind::Merge(_) => false,
                    })
                    .map(|(l, _)| l.name.clone())
                    .collect(),
                inference_calls: layers
                    .iter()
                    .filter(|l| l.inference_calls)
                    .map(|l| l.name.clone())
                    .collect(),
            };
            if let Some(c) = compile {
                let names: Vec<String> =
                    model.output_names().iter().map(|s| s.to_string()).collect();
                let (optimizer, losses, loss_weights, metrics) =
                    compile_settings(c, &names).map_err(in_file)?;
                let mut options = ModelCompile::new();
                for (name, loss) in names.iter().zip(losses) {
                    let loss = loss.ok_or_else(|| {
                        Error::format(path, format!("compile_config has no loss for `{name}`"))
                    })?;
                    options = options.output_loss(name, loss);
                }
                for (name, ms) in names.iter().zip(metrics) {
                    for (key, m, weighted) in ms {
                        options = options.named_metric(name, &key, m, weighted);
                    }
                }
                if let Some(w) = loss_weights {
                    options = options.loss_weights(&w);
                }
                model.compile(optimizer, options).map_err(in_file)?;
                let vars = model.weight_sizes();
                let restore = model.frozen.layers.is_empty();
                if let Some(c) = model.compiled.as_mut().filter(|_| restore) {
                    restore_optimizer(&mut c.optimizer, &weights, &vars)?;
                }
            }
            Ok(KerasModel::Functional(Box::new(model)))
        }
    }
}

/// What a Keras tensor reference names: a model input or a call (a node
/// of the file, in its order).
#[derive(Clone, Copy)]
enum Made {
    Input(usize),
    Call(usize),
}

/// Orders the calls of a functional Keras model so that every call comes
/// after the calls that make its inputs, and numbers the tensors as horn
/// does (inputs first, then one per call in that order); returns the
/// calls and the model's output tensors. An error names the layer whose
/// call cannot be placed.
///
/// Keras names a tensor `(layer, call, output)`, a layer's calls numbered
/// in the order its `inbound_nodes` list them, and lists layers, not calls,
/// in a valid order (a shared layer's calls interleave with others). The
/// order is a topological sort (Kahn's, taking the earliest listed call
/// that is ready, so a file in order keeps its order), with a layer's calls
/// kept in their own order as Keras keeps them: O(n log n) in the number
/// of calls and references, with names looked up in hash maps.
fn order_calls(
    inputs: &[(String, Vec<usize>)],
    layers: &[config::KerasLayer],
    nodes: &[config::KerasNode],
    outputs: &[(String, usize, usize)],
) -> std::result::Result<(Vec<NodeEntry>, Vec<usize>), String> {
    use std::cmp::Reverse;
    use std::collections::{BinaryHeap, HashMap};
    let mut input_index: HashMap<&str, usize> = HashMap::with_capacity(inputs.len());
    for (i, (n, _)) in inputs.iter().enumerate() {
        input_index.entry(n.as_str()).or_insert(i);
    }
    let mut layer_index: HashMap<&str, usize> = HashMap::with_capacity(layers.len());
    for (l, layer) in layers.iter().enumerate() {
        layer_index.entry(layer.name.as_str()).or_insert(l);
    }
    // Call j of layer l is node calls[l][j].
    let mut calls: Vec<Vec<usize>> = vec![Vec::new(); layers.len()];
    for (k, node) in nodes.iter().enumerate() {
        calls[node.layer].push(k);
    }
    if let Some(l) = calls.iter().position(Vec::is_empty) {
        return Err(format!("layer `{}` is never called", layers[l].name));
    }
    let resolve = |(name, call, t): &(String, usize, usize)| -> Option<Made> {
        if *t != 0 {
            return None;
        }
        if let Some(&i) = input_index.get(name.as_str()) {
            return (*call == 0).then_some(Made::Input(i));
        }
        let &l = layer_index.get(name.as_str())?;
        calls[l].get(*call).map(|&k| Made::Call(k))
    };
    let mut made: Vec<Vec<Made>> = Vec::with_capacity(nodes.len());
    let mut waiting = vec![0usize; nodes.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    let mut position = vec![0usize; nodes.len()];
    for l in &calls {
        for (j, &k) in l.iter().enumerate() {
            position[k] = j;
        }
    }
    for (k, node) in nodes.iter().enumerate() {
        let ins = node
            .inputs
            .iter()
            .map(|r| {
                resolve(r).ok_or_else(|| {
                    format!(
                        "layer `{}` is called on tensor {:?} of `{}`, which no layer makes (a multi-output layer horn does not have?)",
                        layers[node.layer].name, [r.1, r.2], r.0
                    )
                })
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut deps: Vec<usize> = ins
            .iter()
            .filter_map(|m| match m {
                Made::Call(d) => Some(*d),
                Made::Input(_) => None,
            })
            .collect();
        // A layer's calls run in their listed order.
        if position[k] > 0 {
            deps.push(calls[node.layer][position[k] - 1]);
        }
        waiting[k] = deps.len();
        for d in deps {
            dependents[d].push(k);
        }
        made.push(ins);
    }
    let mut ready: BinaryHeap<Reverse<usize>> = (0..nodes.len())
        .filter(|&k| waiting[k] == 0)
        .map(Reverse)
        .collect();
    let n_in = inputs.len();
    let mut tensor = vec![usize::MAX; nodes.len()];
    let mut entry_nodes = Vec::with_capacity(nodes.len());
    while let Some(Reverse(k)) = ready.pop() {
        tensor[k] = n_in + entry_nodes.len();
        let inputs = made[k]
            .iter()
            .map(|m| match *m {
                Made::Input(i) => i,
                Made::Call(d) => tensor[d],
            })
            .collect();
        entry_nodes.push(NodeEntry {
            layer: nodes[k].layer,
            inputs,
        });
        for &d in &dependents[k] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                ready.push(Reverse(d));
            }
        }
    }
    if let Some(k) = waiting.iter().position(|&w| w > 0) {
        return Err(format!(
            "layer `{}` is called on tensors that depend on its own output (a cycle)",
            layers[nodes[k].layer].name
        ));
    }
    let outputs = outputs
        .iter()
        .map(|r| match resolve(r) {
            Some(Made::Call(k)) => Ok(tensor[k]),
            _ => Err(format!("output `{}` is not made by any layer", r.0)),
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((entry_nodes, outputs))
}

/// One metric of an output: its key, the metric, and whether it is one of
/// the `weighted_metrics`.
type NamedMetric = (String, Metric, bool);

/// Per-output settings: `(optimizer, loss per output, loss weights,
/// metrics per output)`.
type CompileSettings = (
    Optimizer,
    Vec<Option<Loss>>,
    Option<Vec<f32>>,
    Vec<Vec<NamedMetric>>,
);

/// A value given once, per output in a list, or per output name in a dict.
fn per_output<'a>(v: &'a Value, outputs: &[String]) -> Vec<Option<&'a Value>> {
    match v {
        Value::Array(a)
            if outputs.len() > 1
                || a.len() == outputs.len() && a.first().is_some_and(Value::is_array) =>
        {
            (0..outputs.len()).map(|i| a.get(i)).collect()
        }
        Value::Object(o) if o.get("class_name").is_none() => {
            outputs.iter().map(|n| o.get(n)).collect()
        }
        Value::Null => vec![None; outputs.len()],
        other => vec![Some(other); outputs.len()],
    }
}

fn compile_settings(c: &Value, outputs: &[String]) -> Result<CompileSettings> {
    let optimizer = keras_optimizer(c.get("optimizer").unwrap_or(&Value::Null))?;
    let loss_v = c.get("loss").unwrap_or(&Value::Null);
    let losses = per_output(loss_v, outputs)
        .into_iter()
        .map(|v| v.map(keras_loss).transpose())
        .collect::<Result<Vec<_>>>()?;
    let loss_weights = c.get("loss_weights").filter(|v| !v.is_null()).map(|v| {
        per_output(v, outputs)
            .into_iter()
            .map(|x| x.and_then(Value::as_f64).map_or(1.0, |f| f as f32))
            .collect()
    });
    let list = |key: &str, weighted: bool| -> Result<Vec<Vec<NamedMetric>>> {
        per_output(c.get(key).unwrap_or(&Value::Null), outputs)
            .into_iter()
            .map(|v| {
                let one = |m: &Value| keras_metric(m).map(|(k, m)| (k, m, weighted));
                match v {
                    None => Ok(Vec::new()),
                    Some(Value::Array(a)) => a.iter().map(one).collect(),
                    Some(m) => Ok(vec![one(m)?]),
                }
            })
            .collect()
    };
    let mut metrics = list("metrics", false)?;
    for (m, w) in metrics.iter_mut().zip(list("weighted_metrics", true)?) {
        m.extend(w);
    }
    Ok((optimizer, losses, loss_weights, metrics))
}

fn keras_metric(v: &Value) -> Result<(String, Metric)> {
    match v {
        Value::String(s) => Ok((s.clone(), s.parse()?)),
        Value::Object(o) => {
            let class = o.get("class_name").and_then(Value::as_str).unwrap_or("");
            let name = o
                .get("config")
                .and_then(|c| c.get("name"))
                .and_then(Value::as_str)
                .unwrap_or(class);
            // Keras 2 wraps named metrics in `MeanMetricWrapper`: the name
            // says which.
            let metric = name.parse().or_else(|_| class.parse())?;
            Ok((name.to_string(), metric))
        }
        other => Err(Error::arg(
            "metric in compile_config",
            "a name or a metric object",
            other,
        )),
    }
}

fn keras_loss(v: &Value) -> Result<Loss> {
    match v {
        Value::String(s) => s.parse(),
        Value::Object(o) => {
            let class = o.get("class_name").and_then(Value::as_str).unwrap_or("");
            let mut spec = serde_json::Map::new();
            spec.insert("name".into(), Value::from(crate::model::snake_case(class)));
            if let Some(cfg) = o.get("config").and_then(Value::as_object) {
                for key in ["from_logits", "label_smoothing", "delta"] {
                    if let Some(x) = cfg.get(key) {
                        spec.insert(key.into(), x.clone());
                    }
                }
            }
            // horn's losses serialise with Keras' keys; missing keys take
            // Keras' defaults through the name when the class has no config.
            serde_json::from_value(Value::Object(spec.clone()))
                .or_else(|_| class.parse())
                .map_err(|_| Error::arg("loss in compile_config", "a loss horn has", class))
        }
        other => Err(Error::arg(
            "loss in compile_config",
            "a name or a loss object",
            other,
        )),
    }
}

/// A Keras learning-rate schedule (`keras.optimizers.schedules`): horn's
/// schedules have Keras' class names and config keys.
fn keras_schedule(v: &Value) -> Result<crate::optimizers::LearningRateSchedule> {
    let class = v.get("class_name").and_then(Value::as_str).unwrap_or("");
    let mut spec = serde_json::Map::new();
    spec.insert("name".into(), Value::from(crate::model::snake_case(class)));
    if let Some(cfg) = v.get("config").and_then(Value::as_object) {
        for (k, x) in cfg {
            if k != "name" {
                spec.insert(k.clone(), x.clone());
            }
        }
    }
    let s: crate::optimizers::LearningRateSchedule = serde_json::from_value(Value::Object(spec))
        .map_err(|e| Error::arg("learning-rate schedule in compile_config", "a schedule horn has (ExponentialDecay, PiecewiseConstantDecay, CosineDecay, InverseTimeDecay)", format!("{class} ({e})")))?;
    s.validate()?;
    Ok(s)
}

fn keras_optimizer(v: &Value) -> Result<Optimizer> {
    let (class, cfg) = match v {
        Value::String(s) => return s.parse(),
        Value::Object(o) => (
            // Keras 2.11+ registered its optimizers as `Custom>Adam`.
            o.get("class_name")
                .and_then(Value::as_str)
                .map_or("", |c| c.strip_prefix("Custom>").unwrap_or(c)),
            o.get("config").cloned().unwrap_or(Value::Null),
        ),
        other => {
            return Err(Error::arg(
                "optimizer in compile_config",
                "a name or an optimizer object",
                other,
            ))
        }
    };
    let num = |k: &str, d: f32| -> Result<f32> {
        match cfg.get(k).filter(|x| !x.is_null()) {
            None => Ok(d),
            Some(Value::Number(n)) => Ok(n.as_f64().unwrap_or(d as f64) as f32),
            Some(x) => Err(Error::arg(
                format!("optimizer {class} `{k}`"),
                "a number (schedules are not read yet)",
                x,
            )),
        }
    };
    let flag = |k: &str| cfg.get(k).and_then(Value::as_bool).unwrap_or(false);
    // A schedule in place of the number (Keras `learning_rate=ExponentialDecay(...)`).
    let schedule = match cfg.get("learning_rate") {
        Some(v @ Value::Object(_)) => Some(keras_schedule(v)?),
        _ => None,
    };
    let num = |k: &str, d: f32| -> Result<f32> {
        match (k, &schedule) {
            ("learning_rate", Some(s)) => Ok(s.initial_learning_rate()),
            _ => num(k, d),
        }
    };
    let lr = num("learning_rate", 0.001)?;
    let mut opt: Optimizer = match class {
        "SGD" => Sgd {
            learning_rate: num("learning_rate", 0.01)?,
            momentum: num("momentum", 0.0)?,
            nesterov: flag("nesterov"),
        }
        .into(),
        "RMSprop" => RmsProp {
            learning_rate: lr,
            rho: num("rho", 0.9)?,
            momentum: num("momentum", 0.0)?,
            epsilon: num("epsilon", 1e-7)?,
            centered: flag("centered"),
        }
        .into(),
        "Adam" => Adam {
            learning_rate: lr,
            beta_1: num("beta_1", 0.9)?,
            beta_2: num("beta_2", 0.999)?,
            epsilon: num("epsilon", 1e-7)?,
            amsgrad: flag("amsgrad"),
        }
        .into(),
        "AdamW" => AdamW {
            learning_rate: lr,
            weight_decay: num("weight_decay", 0.004)?,
            beta_1: num("beta_1", 0.9)?,
            beta_2: num("beta_2", 0.999)?,
            epsilon: num("epsilon", 1e-7)?,
            amsgrad: flag("amsgrad"),
        }
        .into(),
        "Adagrad" => Adagrad {
            learning_rate: lr,
            initial_accumulator_value: num("initial_accumulator_value", 0.1)?,
            epsilon: num("epsilon", 1e-7)?,
        }
        .into(),
        "Adadelta" => Adadelta {
            learning_rate: lr,
            rho: num("rho", 0.95)?,
            epsilon: num("epsilon", 1e-7)?,
        }
        .into(),
        "Adamax" => Adamax {
            learning_rate: lr,
            beta_1: num("beta_1", 0.9)?,
            beta_2: num("beta_2", 0.999)?,
            epsilon: num("epsilon", 1e-7)?,
        }
        .into(),
        "Nadam" => Nadam {
            learning_rate: lr,
            beta_1: num("beta_1", 0.9)?,
            beta_2: num("beta_2", 0.999)?,
            epsilon: num("epsilon", 1e-7)?,
        }
        .into(),
        "Lion" => Lion {
            learning_rate: lr,
            beta_1: num("beta_1", 0.9)?,
            beta_2: num("beta_2", 0.99)?,
        }
        .into(),
        other => {
            return Err(Error::arg(
                "optimizer in compile_config",
                "a Keras optimizer horn has",
                other,
            ))
        }
    };
    if let Some(s) = schedule {
        opt = opt.with_schedule(s);
    }
    if class != "AdamW" {
        if let Some(wd) = cfg.get("weight_decay").and_then(Value::as_f64) {
            opt = opt.with_weight_decay(wd as f32);
        }
    }
    if let Some(x) = cfg.get("clipnorm").and_then(Value::as_f64) {
        opt = opt.with_clipnorm(x as f32);
    }
    if let Some(x) = cfg.get("clipvalue").and_then(Value::as_f64) {
        opt = opt.with_clipvalue(x as f32);
    }
    if let Some(x) = cfg.get("global_clipnorm").and_then(Value::as_f64) {
        opt = opt.with_global_clipnorm(x as f32);
    }
    for key in [
        "use_ema",
        "gradient_accumulation_steps",
        "loss_scale_factor",
    ] {
        if cfg
            .get(key)
            .is_some_and(|v| !v.is_null() && v != &Value::from(false))
        {
            return Err(Error::arg(
                format!("optimizer {class} `{key}`"),
                "unset (horn does not implement it)",
                &cfg[key],
            ));
        }
    }
    opt.validate()?;
    Ok(opt)
}

/// How Keras lays out an optimizer's slot variables after `iterations` and
/// `learning_rate`: groups of slots, each group written weight by weight
/// with its slots interleaved (Adam: every weight's momentum and velocity,
/// then, with AMSGrad, every weight's velocity_hat; RMSprop: every
/// velocity, then every momentum, then every average gradient). The
/// numbers are horn's slot planes, which follow Keras' slot order.
pub(crate) fn slot_groups(opt: &Optimizer) -> Vec<Vec<usize>> {
    use crate::optimizers::Rule;
    let k = opt.slots_per_weight();
    match opt.rule() {
        Rule::Adam { .. } | Rule::Adamax { .. } | Rule::Adadelta { .. } | Rule::Nadam { .. } => {
            let mut g = vec![vec![0, 1]];
            if k > 2 {
                g.push(vec![2]);
            }
            g
        }
        _ => (0..k).map(|j| vec![j]).collect(),
    }
}

/// Restores the optimizer's iteration count, learning rate and slot
/// variables from `optimizer/vars/*` (laid out as [`slot_groups`] says, in
/// Keras' order of trainable variables; Nadam's momentum product last).
/// Slots that are missing or shaped for other weights are skipped with a
/// note, as Keras skips them with a warning, and the optimizer starts fresh
/// from the saved iteration count; slots that are there but unreadable or
/// not finite are an error.
fn restore_optimizer(opt: &mut Optimizer, w: &Weights<'_>, vars: &[(String, usize)]) -> Result<()> {
    let Some(iterations) = w.int("optimizer/vars/0").filter(|&i| i >= 0) else {
        return Ok(());
    };
    // With a schedule Keras keeps no learning-rate variable.
    let first = if opt.schedule().is_some() { 1 } else { 2 };
    if first == 2 {
        if let Some(lr) = w
            .float("optimizer/vars/1")
            .filter(|x| x.is_finite() && *x > 0.0)
        {
            opt.set_learning_rate(lr)?;
        }
    }
    let k = opt.slots_per_weight();
    let fresh = |opt: &mut Optimizer| {
        eprintln!(
            "note: {}: the optimizer's saved state does not match its weights; training resumes with fresh optimizer slots",
            w.path.display()
        );
        opt.restore_state(iterations as u64, 1.0, Vec::new());
    };
    if k == 0 {
        opt.restore_state(iterations as u64, 1.0, Vec::new());
        return Ok(());
    }
    let mut planes: Vec<Vec<f32>> = vars.iter().map(|(_, len)| vec![0.0; k * len]).collect();
    let mut index = first;
    for group in slot_groups(opt) {
        for ((_, len), plane) in vars.iter().zip(planes.iter_mut()) {
            for &j in &group {
                let name = format!("optimizer/vars/{index}");
                let Ok(ds) = w.h5.dataset(&name) else {
                    fresh(opt);
                    return Ok(());
                };
                let shape: Vec<usize> = ds.shape().iter().map(|&d| d as usize).collect();
                if element_count(&shape) != Some(*len) {
                    fresh(opt);
                    return Ok(());
                }
                plane[j * len..(j + 1) * len].copy_from_slice(&w.f32s(&name, &shape)?);
                index += 1;
            }
        }
    }
    // Nadam keeps the running product of its momentum factors last.
    let u_product = match opt.rule() {
        crate::optimizers::Rule::Nadam { .. } => {
            match w.float(&format!("optimizer/vars/{index}")) {
                Some(u) if u.is_finite() && (0.0..=1.0).contains(&u) => u as f64,
                _ => {
                    fresh(opt);
                    return Ok(());
                }
            }
        }
        _ => 1.0,
    };
    let state = vars
        .iter()
        .map(|(key, _)| key.clone())
        .zip(planes)
        .collect();
    opt.restore_state(iterations as u64, u_product, state);
    Ok(())
}
