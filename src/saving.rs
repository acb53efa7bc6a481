//! Model files: safetensors weights with the architecture as JSON metadata.
//!
//! A horn model file is a standard [safetensors] file, readable from Python with
//! `safetensors.numpy.load_file`:
//! - tensors `"{layer}/kernel"` `(in, units)` and `"{layer}/bias"` `(units)`, f32,
//!   named as Keras names them (`dense/kernel`, `dense_1/bias`, ...);
//! - optionally `"optimizer/{i}"` `(slots, n)`: the slot variables of weight
//!   tensor `i`, one row per slot (e.g. Adam's `m` then `v`);
//! - metadata `"format" = "horn"`, `"format_version" = "1"` and `"model"`, a JSON
//!   document with the model name, seed, input width, every layer's
//!   configuration, the compile settings and the optimizer's iteration count.
//!
//! Loading checks the whole file (version, layer types, every tensor's presence,
//! dtype and shape) before it builds anything, so a bad file never leaves a
//! half-loaded model.
//!
//! [safetensors]: https://huggingface.co/docs/safetensors

use std::collections::HashMap;
use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::activations::Activation;
use crate::error::{Error, Result};
use crate::initializers::Initializer;
use crate::layers::{ActivationLayer, Dense, Dropout};
use crate::losses::Loss;
use crate::metrics::Metric;
use crate::model::Sequential;
use crate::optimizers::Optimizer;
use crate::regularizers::Regularizer;

/// The newest file format version this build reads and the one it writes.
pub const FORMAT_VERSION: u32 = 1;

/// A built-in layer's configuration, as stored in model files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "class_name")]
pub enum LayerConfig {
    /// [`Dense`].
    Dense {
        /// Output width.
        units: usize,
        /// Activation.
        activation: Activation,
        /// Whether there is a bias.
        use_bias: bool,
        /// Kernel initializer.
        kernel_initializer: Initializer,
        /// Bias initializer.
        bias_initializer: Initializer,
        /// Kernel penalty.
        kernel_regularizer: Option<Regularizer>,
        /// Bias penalty.
        bias_regularizer: Option<Regularizer>,
    },
    /// [`Dropout`].
    Dropout {
        /// Drop rate.
        rate: f32,
    },
    /// [`ActivationLayer`].
    Activation {
        /// The function.
        activation: Activation,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct LayerEntry {
    name: String,
    #[serde(flatten)]
    config: LayerConfig,
}

#[derive(Debug, Serialize, Deserialize)]
struct CompileEntry {
    optimizer: Optimizer,
    loss: Loss,
    metrics: Vec<Metric>,
    /// Whether the file holds the optimizer's slot variables.
    optimizer_state: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct ModelEntry {
    name: String,
    seed: u64,
    input_dim: usize,
    layers: Vec<LayerEntry>,
    compile: Option<CompileEntry>,
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// Writes atomically: a temporary file in the same folder, then a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("horn-tmp");
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

fn to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn serialize(
    tensors: Vec<(String, Vec<usize>, Vec<u8>)>,
    meta: HashMap<String, String>,
    path: &Path,
) -> Result<Vec<u8>> {
    let views = tensors
        .iter()
        .map(|(n, s, b)| {
            TensorView::new(Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::format(path, format!("cannot encode tensor `{n}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, Some(meta)).map_err(|e| Error::format(path, e.to_string()))
}

/// A tensor's values after checking dtype and shape.
fn tensor(st: &SafeTensors<'_>, name: &str, shape: &[usize], path: &Path) -> Result<Vec<f32>> {
    let t = st.tensor(name).map_err(|_| {
        Error::format(
            path,
            format!("tensor `{name}` is missing (the file holds another architecture)"),
        )
    })?;
    if t.dtype() != Dtype::F32 {
        return Err(Error::format(
            path,
            format!("tensor `{name}` is {:?}, expected F32", t.dtype()),
        ));
    }
    if t.shape() != shape {
        return Err(Error::shape(
            format!("tensor `{name}` in {}", path.display()),
            format!("{shape:?}"),
            format!("{:?}", t.shape()),
        ));
    }
    Ok(t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

impl Sequential {
    fn weight_tensors(&self) -> Vec<(String, Vec<usize>, Vec<u8>)> {
        let mut out = Vec::new();
        for (l, name) in self.layers().iter().zip(self.layer_names()) {
            for p in l.params() {
                out.push((
                    format!("{name}/{}", p.name),
                    p.shape.clone(),
                    to_bytes(p.values),
                ));
            }
        }
        out
    }

    /// Saves architecture, compile settings, weights and the optimizer state to
    /// one safetensors file, so that `fit` can resume exactly where it stopped.
    ///
    /// ```
    /// use horn::prelude::*;
    /// let mut model = Sequential::new().seed(3).input(4).dense(2, Softmax);
    /// model.compile("adam", "categorical_crossentropy", &["accuracy"]).unwrap();
    /// let path = std::env::temp_dir().join("horn-doc-save.safetensors");
    /// model.save(&path).unwrap();
    /// let loaded = Sequential::load(&path).unwrap();
    /// let x = ndarray::Array2::<f32>::ones((1, 4));
    /// assert_eq!(model.predict(&x).unwrap(), loaded.predict(&x).unwrap());
    /// ```
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        self.ensure_built()?;
        let mut layers = Vec::new();
        for (l, name) in self.layers().iter().zip(self.layer_names()) {
            let config = l.config().ok_or_else(|| {
                Error::arg(
                    "layer",
                    "built-in layers only (custom layers cannot be saved; use save_weights)",
                    format!("{name} ({})", l.class_name()),
                )
            })?;
            layers.push(LayerEntry {
                name: name.clone(),
                config,
            });
        }
        let mut tensors = self.weight_tensors();
        let compile = self.compiled().map(|c| {
            let opt = &c.optimizer;
            let slots = opt.slots();
            let k = opt.slots_per_weight();
            let has_state = k > 0 && !slots.is_empty();
            if has_state {
                for (i, s) in slots.iter().enumerate() {
                    tensors.push((format!("optimizer/{i}"), vec![k, s.len() / k], to_bytes(s)));
                }
            }
            CompileEntry {
                optimizer: opt.clone(),
                loss: c.loss,
                metrics: c.metrics.clone(),
                optimizer_state: has_state,
            }
        });
        let entry = ModelEntry {
            name: self.model_name().to_string(),
            seed: self.default_seed(),
            input_dim: self.input_dim().unwrap_or(0),
            layers,
            compile,
        };
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), "horn".to_string());
        meta.insert("format_version".to_string(), FORMAT_VERSION.to_string());
        meta.insert(
            "model".to_string(),
            serde_json::to_string(&entry).map_err(|e| Error::format(path, e.to_string()))?,
        );
        let bytes = serialize(tensors, meta, path)?;
        write_atomic(path, &bytes)
    }

    /// Loads a model saved by [`Sequential::save`]: architecture, weights, compile
    /// settings and optimizer state. Predictions are bit-identical to the saved
    /// model's.
    pub fn load(path: impl AsRef<Path>) -> Result<Sequential> {
        let path = path.as_ref();
        let bytes = read(path)?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| Error::format(path, format!("not a valid safetensors file ({e})")))?;
        let (_, header) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| Error::format(path, format!("not a valid safetensors file ({e})")))?;
        let meta = header.metadata().clone().ok_or_else(|| {
            Error::format(
                path,
                "no metadata: not a horn model file (weights only? use load_weights)",
            )
        })?;
        if meta.get("format").map(String::as_str) != Some("horn") {
            return Err(Error::format(
                path,
                "not a horn model file (metadata `format` is not \"horn\")",
            ));
        }
        let version: u32 = meta
            .get("format_version")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Error::format(path, "missing or unreadable `format_version`"))?;
        if version > FORMAT_VERSION {
            return Err(Error::format(
                path,
                format!("format version {version} is newer than this horn reads ({FORMAT_VERSION}); upgrade horn"),
            ));
        }
        let json = meta
            .get("model")
            .ok_or_else(|| Error::format(path, "metadata has no `model` entry"))?;
        let entry: ModelEntry = serde_json::from_str(json)
            .map_err(|e| Error::format(path, format!("unreadable architecture: {e}")))?;

        let mut model = Sequential::new()
            .name(entry.name.clone())
            .seed(entry.seed)
            .input(entry.input_dim);
        for l in &entry.layers {
            model = match l.config.clone() {
                LayerConfig::Dense {
                    units,
                    activation,
                    use_bias,
                    kernel_initializer,
                    bias_initializer,
                    kernel_regularizer,
                    bias_regularizer,
                } => {
                    let mut d = Dense::new(units, activation)
                        .use_bias(use_bias)
                        .kernel_initializer(kernel_initializer)
                        .bias_initializer(bias_initializer);
                    d.kernel_regularizer = kernel_regularizer;
                    d.bias_regularizer = bias_regularizer;
                    model.add(d)
                }
                LayerConfig::Dropout { rate } => model.add(Dropout::new(rate)),
                LayerConfig::Activation { activation } => {
                    model.add(ActivationLayer::new(activation))
                }
            };
        }
        model
            .ensure_built()
            .map_err(|e| Error::format(path, format!("invalid architecture: {e}")))?;
        let weights = read_weights(&model, &st, path)?;
        let mut opt_state = None;
        if let Some(c) = &entry.compile {
            if c.optimizer_state {
                let k = c.optimizer.slots_per_weight();
                let mut slots = Vec::new();
                for (i, w) in weights.iter().enumerate() {
                    slots.push(tensor(&st, &format!("optimizer/{i}"), &[k, w.len()], path)?);
                }
                opt_state = Some(slots);
            }
        }
        // Everything is read and checked; now change the model.
        model.set_weights(&weights)?;
        if let Some(c) = entry.compile {
            let iterations = c.optimizer.iterations();
            let u_product = c.optimizer.u_product();
            model.compile(c.optimizer, c.loss, &c.metrics)?;
            if let Some(slots) = opt_state {
                if let Some(comp) = model.compiled_mut() {
                    comp.optimizer.restore_state(iterations, u_product, slots);
                }
            } else if let Some(comp) = model.compiled_mut() {
                comp.optimizer
                    .restore_state(iterations, u_product, Vec::new());
            }
        }
        Ok(model)
    }

    /// Saves only the weights, Keras names (`dense/kernel`, `dense/bias`, ...).
    pub fn save_weights(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        self.ensure_built()?;
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), "horn-weights".to_string());
        let bytes = serialize(self.weight_tensors(), meta, path)?;
        write_atomic(path, &bytes)
    }

    /// Loads weights by Keras name into this architecture, checking every shape
    /// before changing anything. Reads Keras' own `get_weights()` exports.
    pub fn load_weights(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        self.ensure_built()?;
        let bytes = read(path)?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| Error::format(path, format!("not a valid safetensors file ({e})")))?;
        let weights = read_weights(self, &st, path)?;
        self.set_weights(&weights)
    }
}

fn read_weights(model: &Sequential, st: &SafeTensors<'_>, path: &Path) -> Result<Vec<ArrayD<f32>>> {
    let mut out = Vec::new();
    for (l, name) in model.layers().iter().zip(model.layer_names()) {
        for p in l.params() {
            let key = format!("{name}/{}", p.name);
            let v = tensor(st, &key, &p.shape, path)?;
            out.push(
                ArrayD::from_shape_vec(IxDyn(&p.shape), v)
                    .map_err(|e| Error::format(path, e.to_string()))?,
            );
        }
    }
    Ok(out)
}
