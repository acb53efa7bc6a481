//! Model files: safetensors weights with the architecture as JSON metadata.
//!
//! A horn model file is a standard [safetensors] file, readable from Python with
//! `safetensors.numpy.load_file`:
//! - tensors `"{layer}/kernel"` `(in, units)` and `"{layer}/bias"` `(units)`, f32,
//!   named as Keras names them (`dense/kernel`, `dense_1/bias`, ...);
//! - optionally `"optimizer/{weight}"` `(slots, n)`: the slot variables of
//!   one weight tensor (`optimizer/dense/kernel`), one row per slot (e.g.
//!   Adam's `m` then `v`); version 1 files numbered them `optimizer/{i}`;
//! - metadata `"format" = "horn"`, `"format_version" = "2"` and `"model"`, a JSON
//!   document with the model name, seed, input width, every layer's
//!   configuration, the compile settings and the optimizer's iteration count.
//!
//! Loading treats the file as untrusted. It checks the whole file (version,
//! layer types and options, every tensor's presence, dtype, shape and finite
//! values) before it builds anything, and it allocates nothing the file's own
//! size does not justify: every weight a layer configuration asks for must be
//! present in the file, and loaded layers are built from those tensors, never
//! initialised at random. A bad file gives an [`Error`], never a half-loaded
//! model, a panic or an abort.
//!
//! Saving writes the same bytes for the same model (keys sorted), to a unique
//! temporary file beside the target that is flushed to disk and then renamed
//! over it: a crash or a concurrent save leaves either the old file or the new
//! one, never a mix. A symbolic link is followed (its target is replaced) and an
//! existing file keeps its permissions.
//!
//! [safetensors]: https://huggingface.co/docs/safetensors

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::{Array2, ArrayD, IxDyn};
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::activations::Activation;
use crate::error::{Error, Result};
use crate::files::{read_file, write_atomic};
use crate::initializers::Initializer;
use crate::layers::{ActivationLayer, Dense, Dropout, Layer};
use crate::losses::Loss;
use crate::metrics::Metric;
use crate::model::Sequential;
use crate::optimizers::Optimizer;
use crate::regularizers::Regularizer;

/// The newest file format version this build reads and the one it writes
/// (2: optimizer state named by weight; 1: numbered, still read).
pub const FORMAT_VERSION: u32 = 2;

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
    /// The keys the metrics log under (as the user wrote them); absent in
    /// version 1 files, where each metric's default name is used.
    #[serde(default)]
    metric_names: Vec<String>,
    #[serde(default)]
    weighted_metrics: Vec<Metric>,
    #[serde(default)]
    weighted_metric_names: Vec<String>,
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

/// Keras stores `iterations` as an int64; a larger count is not a real file.
const MAX_ITERATIONS: u64 = i64::MAX as u64;

/// One f32 tensor to write.
struct Tensor<'a> {
    name: String,
    shape: Vec<usize>,
    values: &'a [f32],
}

/// Encodes a safetensors file with sorted keys (header and metadata), so the
/// same model always gives the same bytes. The `safetensors` crate's writer
/// takes the metadata as a `HashMap`, whose order changes from run to run.
fn encode(tensors: &mut [Tensor<'_>], meta: BTreeMap<String, String>) -> Vec<u8> {
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!(meta));
    let mut offset = 0usize;
    for t in tensors.iter() {
        let end = offset + t.values.len() * 4;
        header.insert(
            t.name.clone(),
            serde_json::json!({"dtype": "F32", "shape": t.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    // serde_json's map keeps keys sorted; pad the header to 8 bytes as the
    // reference writer does, so the data is aligned.
    let mut text = serde_json::Value::Object(header).to_string();
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + offset);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    for t in tensors.iter() {
        for v in t.values {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

/// A tensor's values after checking dtype, shape and that every value is finite.
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
    // The shape matches the file's own tensor, so this allocation is at most
    // the size of data that is really there.
    let values: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::format(
            path,
            format!(
                "tensor `{name}` holds a non-finite value ({}) at index {i}",
                values[i]
            ),
        ));
    }
    Ok(values)
}

fn parse_file<'a>(bytes: &'a [u8], path: &Path) -> Result<SafeTensors<'a>> {
    if bytes.starts_with(b"PK\x03\x04") {
        return Err(Error::format(
            path,
            "this is a zip archive (a Keras `.keras` file?); horn reads its own safetensors model files and safetensors weights, not Keras' zip format yet",
        ));
    }
    if bytes.starts_with(b"\x89HDF\r\n\x1a\n") {
        return Err(Error::format(
            path,
            "this is an HDF5 file (a Keras `.h5` file?); horn reads safetensors files, not HDF5 yet",
        ));
    }
    SafeTensors::deserialize(bytes)
        .map_err(|e| Error::format(path, format!("not a valid safetensors file ({e})")))
}

impl LayerConfig {
    /// The Keras class name (`Dense`, `Dropout`, `Activation`).
    pub fn class_name(&self) -> &'static str {
        match self {
            LayerConfig::Dense { .. } => "Dense",
            LayerConfig::Dropout { .. } => "Dropout",
            LayerConfig::Activation { .. } => "Activation",
        }
    }

    /// Checks the configuration's options, as building the layer would.
    fn validate(&self) -> Result<()> {
        match self {
            LayerConfig::Dense {
                units,
                activation,
                kernel_initializer,
                bias_initializer,
                kernel_regularizer,
                bias_regularizer,
                ..
            } => {
                if *units == 0 {
                    return Err(Error::arg("units", "a positive integer", units));
                }
                activation.validate()?;
                kernel_initializer.validate()?;
                bias_initializer.validate()?;
                for r in [kernel_regularizer, bias_regularizer].into_iter().flatten() {
                    r.validate()?;
                }
                Ok(())
            }
            LayerConfig::Dropout { rate } => {
                if (0.0..=1.0).contains(rate) {
                    Ok(())
                } else {
                    Err(Error::arg("rate", "a number in [0, 1]", rate))
                }
            }
            LayerConfig::Activation { activation } => activation.validate(),
        }
    }

    /// Builds the layer on an input width from the weights in the file (each
    /// checked for presence, shape and finite values), returning it with its
    /// output width. `prefix` is the layer's name (`dense_1`).
    fn load(
        &self,
        input_dim: usize,
        prefix: &str,
        st: &SafeTensors<'_>,
        path: &Path,
    ) -> Result<(Box<dyn Layer>, usize)> {
        self.validate()
            .map_err(|e| Error::format(path, format!("layer `{prefix}`: {e}")))?;
        Ok(match self.clone() {
            LayerConfig::Dense {
                units,
                activation,
                use_bias,
                kernel_initializer,
                bias_initializer,
                kernel_regularizer,
                bias_regularizer,
            } => {
                let kernel = tensor(st, &format!("{prefix}/kernel"), &[input_dim, units], path)?;
                let kernel = Array2::from_shape_vec((input_dim, units), kernel)
                    .map_err(|e| Error::format(path, e.to_string()))?;
                let bias = if use_bias {
                    tensor(st, &format!("{prefix}/bias"), &[units], path)?
                } else {
                    Vec::new()
                };
                let mut d = Dense::new(units, activation)
                    .use_bias(use_bias)
                    .kernel_initializer(kernel_initializer)
                    .bias_initializer(bias_initializer)
                    .with_weights(kernel, bias);
                d.kernel_regularizer = kernel_regularizer;
                d.bias_regularizer = bias_regularizer;
                (Box::new(d), units)
            }
            LayerConfig::Dropout { rate } => (Box::new(Dropout::new(rate)), input_dim),
            LayerConfig::Activation { activation } => {
                (Box::new(ActivationLayer::new(activation)), input_dim)
            }
        })
    }
}

impl Sequential {
    fn weight_tensors(&self) -> Vec<Tensor<'_>> {
        let mut out = Vec::new();
        for (l, name) in self.layers().iter().zip(self.layer_names()) {
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

    /// Saves architecture, compile settings, weights and the optimizer state to
    /// one safetensors file, so that `fit` can resume exactly where it stopped.
    /// The same model always gives the same bytes; the write is atomic (see the
    /// [module docs](crate::saving)).
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
        write_atomic(path, &self.encode_model(path)?)
    }

    /// The model file's bytes; `path` names it in errors.
    fn encode_model(&self, path: &Path) -> Result<Vec<u8>> {
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
            let k = opt.slots_per_weight();
            let mut has_state = false;
            if k > 0 {
                for (key, s) in opt.slots() {
                    has_state = true;
                    tensors.push(Tensor {
                        name: format!("optimizer/{key}"),
                        shape: vec![k, s.len() / k],
                        values: s,
                    });
                }
            }
            CompileEntry {
                optimizer: opt.clone(),
                loss: c.loss,
                metrics: c.metrics.clone(),
                metric_names: c.metric_names.clone(),
                weighted_metrics: c.weighted_metrics.clone(),
                weighted_metric_names: c.weighted_names.clone(),
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
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), "horn".to_string());
        meta.insert("format_version".to_string(), FORMAT_VERSION.to_string());
        meta.insert(
            "model".to_string(),
            serde_json::to_string(&entry).map_err(|e| Error::format(path, e.to_string()))?,
        );
        Ok(encode(&mut tensors, meta))
    }

    /// Loads a model saved by [`Sequential::save`]: architecture, weights, compile
    /// settings and optimizer state. Predictions are bit-identical to the saved
    /// model's. The file is checked as untrusted input (see the
    /// [module docs](crate::saving)).
    pub fn load(path: impl AsRef<Path>) -> Result<Sequential> {
        let path = path.as_ref();
        Self::decode(&read_file(path)?, path)
    }

    /// [`Sequential::load`] from the bytes of a model file (one embedded with
    /// `include_bytes!`, or received over a network), with the same checks.
    ///
    /// ```
    /// use horn::prelude::*;
    /// let model = Sequential::new().seed(3).input(4).dense(2, Softmax);
    /// let bytes = model.to_bytes().unwrap();
    /// let copy = Sequential::from_bytes(&bytes).unwrap();
    /// assert_eq!(copy.get_weights().unwrap(), model.get_weights().unwrap());
    /// assert!(Sequential::from_bytes(b"not a model").is_err());
    /// ```
    pub fn from_bytes(bytes: &[u8]) -> Result<Sequential> {
        Self::decode(bytes, Path::new("<bytes>"))
    }

    /// The bytes [`Sequential::save`] writes, without touching the disk.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.encode_model(Path::new("<bytes>"))
    }

    /// Parses and checks a model file's bytes; `path` names it in errors.
    fn decode(bytes: &[u8], path: &Path) -> Result<Sequential> {
        let st = parse_file(bytes, path)?;
        let (_, header) = SafeTensors::read_metadata(bytes)
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
        if version == 0 {
            return Err(Error::format(path, "format version 0 does not exist"));
        }
        let json = meta
            .get("model")
            .ok_or_else(|| Error::format(path, "metadata has no `model` entry"))?;
        let entry: ModelEntry = serde_json::from_str(json)
            .map_err(|e| Error::format(path, format!("unreadable architecture: {e}")))?;
        if entry.input_dim == 0 {
            return Err(Error::format(path, "invalid architecture: input width 0"));
        }
        if entry.layers.is_empty() {
            return Err(Error::format(path, "invalid architecture: no layers"));
        }

        // Each layer is built from the file's tensors: a configuration that asks
        // for weights the file does not hold fails here, before any allocation
        // larger than the file.
        let mut model = Sequential::new()
            .name(entry.name.clone())
            .seed(entry.seed)
            .input(entry.input_dim);
        let mut width = entry.input_dim;
        for l in &entry.layers {
            let prefix = model.next_layer_name(l.config.class_name());
            let (layer, out) = l.config.load(width, &prefix, &st, path)?;
            model.push_built(layer, out)?;
            width = out;
        }
        model
            .ensure_built()
            .map_err(|e| Error::format(path, format!("invalid architecture: {e}")))?;

        if let Some(c) = entry.compile {
            let iterations = c.optimizer.iterations();
            if iterations > MAX_ITERATIONS {
                return Err(Error::format(
                    path,
                    format!("optimizer iterations {iterations} is beyond Keras' int64 range"),
                ));
            }
            let u_product = c.optimizer.u_product();
            if !(u_product.is_finite() && (0.0..=1.0).contains(&u_product)) {
                return Err(Error::format(
                    path,
                    format!("optimizer momentum product {u_product} is not in [0, 1]"),
                ));
            }
            let vars = model.weight_sizes();
            let mut state = Vec::new();
            if c.optimizer_state {
                let k = c.optimizer.slots_per_weight();
                for (i, (key, len)) in vars.iter().enumerate() {
                    let name = if version == 1 {
                        format!("optimizer/{i}")
                    } else {
                        format!("optimizer/{key}")
                    };
                    state.push((key.clone(), tensor(&st, &name, &[k, *len], path)?));
                }
            }
            let names = |names: Vec<String>, metrics: &[Metric]| -> Vec<String> {
                if names.len() == metrics.len() {
                    names
                } else {
                    metrics.iter().map(Metric::name).collect()
                }
            };
            let metric_names = names(c.metric_names, &c.metrics);
            let weighted_names = names(c.weighted_metric_names, &c.weighted_metrics);
            let options = crate::model::CompileOptions::named(
                metric_names.into_iter().zip(c.metrics).collect(),
                weighted_names.into_iter().zip(c.weighted_metrics).collect(),
            );
            model
                .compile_with(c.optimizer, c.loss, options)
                .map_err(|e| Error::format(path, format!("invalid compile settings: {e}")))?;
            if let Some(comp) = model.compiled_mut() {
                comp.optimizer.restore_state(iterations, u_product, state);
            }
        }
        Ok(model)
    }

    /// Saves only the weights, Keras names (`dense/kernel`, `dense/bias`, ...).
    pub fn save_weights(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        self.ensure_built()?;
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), "horn-weights".to_string());
        write_atomic(path, &encode(&mut self.weight_tensors(), meta))
    }

    /// Loads weights by Keras name into this architecture, checking every shape
    /// (and that every value is finite) before changing anything. Reads Keras'
    /// own `get_weights()` exports.
    pub fn load_weights(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        self.ensure_built()?;
        let bytes = read_file(path)?;
        self.decode_weights(&bytes, path)
    }

    /// [`Sequential::load_weights`] from a weights file's bytes.
    pub fn load_weights_from_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        self.ensure_built()?;
        self.decode_weights(bytes, Path::new("<bytes>"))
    }

    fn decode_weights(&mut self, bytes: &[u8], path: &Path) -> Result<()> {
        let st = parse_file(bytes, path)?;
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
