//! Model files: horn's own (safetensors weights with the architecture as JSON
//! metadata, below) and Keras' (`.keras` archives and Keras 2 `.h5` model
//! files: [`load_keras`], `save_keras`, with the feature `keras`).
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

use ndarray::{ArrayD, IxDyn};
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::activations::Activation;
use crate::error::{Error, Result};
use crate::files::{read_file, write_atomic};
use crate::initializers::Initializer;
use crate::layers::conv::ConvConfig;
use crate::layers::pooling::{PoolConfig, PoolKind};
use crate::layers::recurrent::recurrent_weight_shapes;
use crate::layers::{
    ActivationLayer, AveragePooling1D, AveragePooling2D, BatchNormalization, Bidirectional,
    BidirectionalConfig, Conv1D, Conv2D, Dense, Dropout, Embedding, Flatten,
    GlobalAveragePooling1D, GlobalAveragePooling2D, GlobalMaxPooling1D, GlobalMaxPooling2D, Layer,
    LayerNormalization, MaxPooling1D, MaxPooling2D, RecurrentConfig, Reshape, SimpleRNN,
    TimeDistributed, GRU, LSTM,
};
use crate::losses::Loss;
use crate::metrics::Metric;
use crate::model::{check_layer_name, Sequential};
use crate::optimizers::Optimizer;
use crate::regularizers::Regularizer;
use crate::shape::Shape;

mod functional;
#[cfg(feature = "keras")]
mod keras;
#[cfg(feature = "keras")]
pub use keras::{load_keras, load_keras_bytes, KerasModel};

/// The newest file format version this build reads and the one it writes
/// (2: optimizer state named by weight; 1: numbered, still read).
pub const FORMAT_VERSION: u32 = 2;

/// The most layers a model file may list, and the most calls (nodes) and
/// inputs a functional model may have: horn's own files and Keras' (a
/// `.keras` file also stops at 64 MiB of `config.json`, about 150,000
/// layers). Loading is O(n log n) in them; a file over the limit is an
/// error that says so.
///
/// ```
/// assert_eq!(horn::saving::MAX_LAYERS, 1 << 20);
/// ```
pub const MAX_LAYERS: usize = 1 << 20;

/// Fetches a layer's weight: `(index, name, shape)` to its values.
pub(crate) type FetchWeight<'a> = dyn FnMut(usize, &str, &[usize]) -> Result<Vec<f32>> + 'a;

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
    /// [`Conv1D`].
    Conv1D(ConvConfig),
    /// [`Conv2D`].
    Conv2D(ConvConfig),
    /// [`MaxPooling1D`].
    MaxPooling1D(PoolConfig),
    /// [`MaxPooling2D`].
    MaxPooling2D(PoolConfig),
    /// [`AveragePooling1D`].
    AveragePooling1D(PoolConfig),
    /// [`AveragePooling2D`].
    AveragePooling2D(PoolConfig),
    /// [`GlobalAveragePooling1D`].
    GlobalAveragePooling1D,
    /// [`GlobalAveragePooling2D`].
    GlobalAveragePooling2D,
    /// [`GlobalMaxPooling1D`].
    GlobalMaxPooling1D,
    /// [`GlobalMaxPooling2D`].
    GlobalMaxPooling2D,
    /// [`Flatten`].
    Flatten,
    /// [`Reshape`].
    Reshape {
        /// The per-sample target shape (one `-1` allowed).
        target_shape: Vec<i64>,
    },
    /// [`BatchNormalization`].
    BatchNormalization {
        /// Moving-average momentum.
        momentum: f32,
        /// Variance offset.
        epsilon: f32,
        /// Whether `beta` exists.
        center: bool,
        /// Whether `gamma` exists.
        scale: bool,
        /// Penalty on `beta`.
        beta_regularizer: Option<Regularizer>,
        /// Penalty on `gamma`.
        gamma_regularizer: Option<Regularizer>,
    },
    /// [`LayerNormalization`].
    LayerNormalization {
        /// Variance offset.
        epsilon: f32,
        /// Whether `beta` exists.
        center: bool,
        /// Whether `gamma` exists.
        scale: bool,
    },
    /// [`Embedding`].
    Embedding {
        /// Vocabulary size.
        input_dim: usize,
        /// Vector width.
        output_dim: usize,
        /// Table initializer.
        embeddings_initializer: Initializer,
        /// Table penalty.
        embeddings_regularizer: Option<Regularizer>,
        /// Id 0 masks its step.
        #[serde(default)]
        mask_zero: bool,
    },
    /// [`SimpleRNN`].
    SimpleRNN(RecurrentConfig),
    /// [`LSTM`].
    LSTM(RecurrentConfig),
    /// [`GRU`].
    GRU(RecurrentConfig),
    /// [`Bidirectional`].
    Bidirectional(BidirectionalConfig),
    /// [`TimeDistributed`].
    TimeDistributed {
        /// The wrapped layer.
        layer: Box<LayerConfig>,
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
    /// The per-sample input shape; absent in files of flat-input models
    /// written before shapes existed (then `[input_dim]`).
    #[serde(default)]
    input_shape: Vec<usize>,
    layers: Vec<LayerEntry>,
    compile: Option<CompileEntry>,
}

/// The most axes a model file's input shape may have.
const MAX_RANK: usize = 8;

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
///
/// Two tensors with one key would make a file that no reader accepts (a
/// JSON header with a duplicate key), so they are an error, never written.
fn encode(tensors: &mut [Tensor<'_>], meta: BTreeMap<String, String>) -> Result<Vec<u8>> {
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(w) = tensors.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(Error::arg(
            "layer names",
            "names that give each weight its own key in the model file",
            format!("two tensors named `{}`", w[0].name),
        ));
    }
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
    Ok(out)
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
            "this is a zip archive (a Keras `.keras` file?); open it with `horn::saving::load_keras` or `Sequential::load_keras`",
        ));
    }
    if bytes.starts_with(b"\x89HDF\r\n\x1a\n") {
        return Err(Error::format(
            path,
            "this is an HDF5 file (a Keras `.h5` file?); open a Keras model file with `horn::saving::load_keras`",
        ));
    }
    SafeTensors::deserialize(bytes)
        .map_err(|e| Error::format(path, format!("not a valid safetensors file ({e})")))
}

/// Parses a horn model file: the safetensors container, its metadata and
/// its format version (checked: 1 up to [`FORMAT_VERSION`]).
fn open_model_file<'a>(
    bytes: &'a [u8],
    path: &Path,
) -> Result<(
    SafeTensors<'a>,
    std::collections::HashMap<String, String>,
    u32,
)> {
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
    Ok((st, meta, version))
}

/// An optimizer's progress as a model file holds it, checked.
struct SavedOptimizer {
    iterations: u64,
    u_product: f64,
    state: Vec<(String, Vec<f32>)>,
}

impl SavedOptimizer {
    /// Reads and checks the iteration count, Nadam's momentum product and,
    /// when the file has them, the slot variables of every trainable
    /// weight (`vars`: names and sizes).
    fn read(
        optimizer: &Optimizer,
        has_state: bool,
        vars: &[(String, usize)],
        st: &SafeTensors<'_>,
        version: u32,
        path: &Path,
    ) -> Result<Self> {
        let iterations = optimizer.iterations();
        if iterations > MAX_ITERATIONS {
            return Err(Error::format(
                path,
                format!("optimizer iterations {iterations} is beyond Keras' int64 range"),
            ));
        }
        let u_product = optimizer.u_product();
        if !(u_product.is_finite() && (0.0..=1.0).contains(&u_product)) {
            return Err(Error::format(
                path,
                format!("optimizer momentum product {u_product} is not in [0, 1]"),
            ));
        }
        let mut state = Vec::new();
        if has_state {
            let k = optimizer.slots_per_weight();
            for (i, (key, len)) in vars.iter().enumerate() {
                let name = if version == 1 {
                    format!("optimizer/{i}")
                } else {
                    format!("optimizer/{key}")
                };
                state.push((key.clone(), tensor(st, &name, &[k, *len], path)?));
            }
        }
        Ok(SavedOptimizer {
            iterations,
            u_product,
            state,
        })
    }

    fn restore(self, optimizer: &mut Optimizer) {
        optimizer.restore_state(self.iterations, self.u_product, self.state);
    }
}

/// The optimizer's slot variables as tensors named `optimizer/{weight}`;
/// returns whether there were any.
fn optimizer_tensors<'a>(opt: &'a Optimizer, tensors: &mut Vec<Tensor<'a>>) -> bool {
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
    has_state
}

impl LayerConfig {
    /// The Keras class name (`Dense`, `Dropout`, `Activation`).
    pub fn class_name(&self) -> &'static str {
        match self {
            LayerConfig::Dense { .. } => "Dense",
            LayerConfig::Dropout { .. } => "Dropout",
            LayerConfig::Activation { .. } => "Activation",
            LayerConfig::Conv1D(_) => "Conv1D",
            LayerConfig::Conv2D(_) => "Conv2D",
            LayerConfig::MaxPooling1D(_) => "MaxPooling1D",
            LayerConfig::MaxPooling2D(_) => "MaxPooling2D",
            LayerConfig::AveragePooling1D(_) => "AveragePooling1D",
            LayerConfig::AveragePooling2D(_) => "AveragePooling2D",
            LayerConfig::GlobalAveragePooling1D => "GlobalAveragePooling1D",
            LayerConfig::GlobalAveragePooling2D => "GlobalAveragePooling2D",
            LayerConfig::GlobalMaxPooling1D => "GlobalMaxPooling1D",
            LayerConfig::GlobalMaxPooling2D => "GlobalMaxPooling2D",
            LayerConfig::Flatten => "Flatten",
            LayerConfig::Reshape { .. } => "Reshape",
            LayerConfig::BatchNormalization { .. } => "BatchNormalization",
            LayerConfig::LayerNormalization { .. } => "LayerNormalization",
            LayerConfig::Embedding { .. } => "Embedding",
            LayerConfig::SimpleRNN(_) => "SimpleRNN",
            LayerConfig::LSTM(_) => "LSTM",
            LayerConfig::GRU(_) => "GRU",
            LayerConfig::Bidirectional(_) => "Bidirectional",
            LayerConfig::TimeDistributed { .. } => "TimeDistributed",
        }
    }

    /// The layer this configuration describes, not built yet.
    fn instantiate(&self) -> Result<Box<dyn Layer>> {
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
                let mut d = Dense::new(units, activation)
                    .use_bias(use_bias)
                    .kernel_initializer(kernel_initializer)
                    .bias_initializer(bias_initializer);
                d.kernel_regularizer = kernel_regularizer;
                d.bias_regularizer = bias_regularizer;
                Box::new(d)
            }
            LayerConfig::Dropout { rate } => Box::new(Dropout::new(rate)),
            LayerConfig::Activation { activation } => Box::new(ActivationLayer::new(activation)),
            LayerConfig::Conv1D(c) => Box::new(Conv1D(c.layer(1)?)),
            LayerConfig::Conv2D(c) => Box::new(Conv2D(c.layer(2)?)),
            LayerConfig::MaxPooling1D(c) => Box::new(MaxPooling1D(c.layer(PoolKind::Max, 1)?)),
            LayerConfig::MaxPooling2D(c) => Box::new(MaxPooling2D(c.layer(PoolKind::Max, 2)?)),
            LayerConfig::AveragePooling1D(c) => {
                Box::new(AveragePooling1D(c.layer(PoolKind::Average, 1)?))
            }
            LayerConfig::AveragePooling2D(c) => {
                Box::new(AveragePooling2D(c.layer(PoolKind::Average, 2)?))
            }
            LayerConfig::GlobalAveragePooling1D => Box::new(GlobalAveragePooling1D::new()),
            LayerConfig::GlobalAveragePooling2D => Box::new(GlobalAveragePooling2D::new()),
            LayerConfig::GlobalMaxPooling1D => Box::new(GlobalMaxPooling1D::new()),
            LayerConfig::GlobalMaxPooling2D => Box::new(GlobalMaxPooling2D::new()),
            LayerConfig::Flatten => Box::new(Flatten),
            LayerConfig::Reshape { target_shape } => Box::new(Reshape::new(&target_shape)),
            LayerConfig::BatchNormalization {
                momentum,
                epsilon,
                center,
                scale,
                beta_regularizer,
                gamma_regularizer,
            } => {
                let mut b = BatchNormalization::new()
                    .momentum(momentum)
                    .epsilon(epsilon)
                    .center(center)
                    .scale(scale);
                b.beta_regularizer = beta_regularizer;
                b.gamma_regularizer = gamma_regularizer;
                Box::new(b)
            }
            LayerConfig::LayerNormalization {
                epsilon,
                center,
                scale,
            } => Box::new(
                LayerNormalization::new()
                    .epsilon(epsilon)
                    .center(center)
                    .scale(scale),
            ),
            LayerConfig::Embedding {
                input_dim,
                output_dim,
                embeddings_initializer,
                embeddings_regularizer,
                mask_zero,
            } => {
                let mut e = Embedding::new(input_dim, output_dim)
                    .embeddings_initializer(embeddings_initializer)
                    .mask_zero(mask_zero);
                e.embeddings_regularizer = embeddings_regularizer;
                Box::new(e)
            }
            LayerConfig::SimpleRNN(c) => Box::new(SimpleRNN::from_config(c)),
            LayerConfig::LSTM(c) => Box::new(LSTM::from_config(c)),
            LayerConfig::GRU(c) => Box::new(GRU::from_config(c)),
            LayerConfig::Bidirectional(c) => Box::new(Bidirectional::from_config(c)?),
            LayerConfig::TimeDistributed { layer } => {
                Box::new(TimeDistributed::new_boxed(layer.instantiate()?))
            }
        })
    }

    /// The names and shapes of the weights the layer has on `input`, in
    /// `params()` order, computed from the configuration alone (nothing is
    /// allocated for them).
    fn weight_shapes(&self, input: &Shape) -> Result<Vec<(&'static str, Vec<usize>)>> {
        let last = input.last();
        let with_bias = |kernel: Vec<usize>, units: usize, bias: bool| {
            let mut v = vec![("kernel", kernel)];
            if bias {
                v.push(("bias", vec![units]));
            }
            v
        };
        Ok(match self {
            LayerConfig::Dense {
                units, use_bias, ..
            } => with_bias(vec![last, *units], *units, *use_bias),
            LayerConfig::Conv1D(c) | LayerConfig::Conv2D(c) => {
                let rank = if matches!(self, LayerConfig::Conv1D(_)) {
                    1
                } else {
                    2
                };
                let layer = c.layer(rank)?;
                let g = layer.geometry(input)?;
                with_bias(layer.kernel_shape(g.channels), c.filters, c.use_bias)
            }
            LayerConfig::BatchNormalization { center, scale, .. } => {
                let mut v = Vec::new();
                if *scale {
                    v.push(("gamma", vec![last]));
                }
                if *center {
                    v.push(("beta", vec![last]));
                }
                v.push(("moving_mean", vec![last]));
                v.push(("moving_variance", vec![last]));
                v
            }
            LayerConfig::Embedding {
                input_dim,
                output_dim,
                ..
            } => vec![("embeddings", vec![*input_dim, *output_dim])],
            LayerConfig::SimpleRNN(c) | LayerConfig::LSTM(c) | LayerConfig::GRU(c) => {
                recurrent_weight_shapes(self.class_name(), c, input, false)?
            }
            LayerConfig::Bidirectional(b) => {
                recurrent_weight_shapes(&b.layer_class, &b.layer, input, true)?
            }
            LayerConfig::TimeDistributed { layer } => {
                if input.rank() < 2 {
                    return Err(Error::shape(
                        "TimeDistributed input",
                        "(steps, ...)",
                        input.to_string(),
                    ));
                }
                layer.weight_shapes(&Shape::new(&input.dims()[1..]))?
            }
            LayerConfig::LayerNormalization { center, scale, .. } => {
                let mut v = Vec::new();
                if *scale {
                    v.push(("gamma", vec![last]));
                }
                if *center {
                    v.push(("beta", vec![last]));
                }
                v
            }
            _ => Vec::new(),
        })
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
            LayerConfig::Conv1D(c) | LayerConfig::Conv2D(c) => {
                c.activation.validate()?;
                c.kernel_initializer.validate()?;
                c.bias_initializer.validate()?;
                for r in [&c.kernel_regularizer, &c.bias_regularizer]
                    .into_iter()
                    .flatten()
                {
                    r.validate()?;
                }
                Ok(())
            }
            LayerConfig::Embedding {
                input_dim,
                output_dim,
                embeddings_initializer,
                embeddings_regularizer,
                ..
            } => {
                let mut e = Embedding::new(*input_dim, *output_dim)
                    .embeddings_initializer(*embeddings_initializer);
                e.embeddings_regularizer = *embeddings_regularizer;
                e.validate()
            }
            LayerConfig::SimpleRNN(c) | LayerConfig::LSTM(c) | LayerConfig::GRU(c) => {
                c.validate(self.class_name())
            }
            LayerConfig::Bidirectional(b) => b.layer.validate(&b.layer_class),
            LayerConfig::TimeDistributed { layer } => layer.validate(),
            // The remaining layers check their options when built.
            _ => Ok(()),
        }
    }

    /// Builds the layer on an input shape from the weights in the file (each
    /// checked for presence, shape and finite values before the layer is
    /// built, so its allocations are bounded by the file's own tensors),
    /// returning it with its output shape. `prefix` is the layer's name
    /// (`dense_1`).
    fn load(
        &self,
        input: &Shape,
        prefix: &str,
        st: &SafeTensors<'_>,
        path: &Path,
    ) -> Result<(Box<dyn Layer>, Shape)> {
        self.load_with(input, prefix, path, &mut |_, name, shape| {
            tensor(st, &format!("{prefix}/{name}"), shape, path)
        })
    }

    /// [`LayerConfig::load`] with the weights from `fetch(index, name,
    /// shape)`, which returns the values of the layer's `index`-th weight
    /// (named `name`, e.g. `kernel`) after checking its shape.
    pub(crate) fn load_with(
        &self,
        input: &Shape,
        prefix: &str,
        path: &Path,
        fetch: &mut FetchWeight<'_>,
    ) -> Result<(Box<dyn Layer>, Shape)> {
        let invalid = |e: Error| Error::format(path, format!("layer `{prefix}`: {e}"));
        self.validate().map_err(invalid)?;
        let shapes = self.weight_shapes(input).map_err(invalid)?;
        let mut tensors = Vec::with_capacity(shapes.len());
        for (i, (name, shape)) in shapes.iter().enumerate() {
            tensors.push(fetch(i, name, shape)?);
        }
        let mut layer = self.instantiate().map_err(invalid)?;
        let mut rng = rand::SeedableRng::seed_from_u64(0);
        let out = layer.build(input, &mut rng).map_err(invalid)?;
        let mut it = tensors.into_iter();
        let mut mismatch = false;
        layer.visit_params_mut(&mut |p| match it.next() {
            Some(t) if t.len() == p.len() => p.copy_from_slice(&t),
            _ => mismatch = true,
        });
        if mismatch || it.next().is_some() {
            return Err(invalid(Error::format(
                path,
                "the layer's weights do not match its configuration",
            )));
        }
        Ok((layer, out))
    }

    /// The number of weight tensors the layer has on this input shape.
    #[cfg_attr(not(feature = "keras"), allow(dead_code))]
    pub(crate) fn weight_count(&self, input: &Shape) -> Result<usize> {
        Ok(self.weight_shapes(input)?.len())
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
        self.frozen().check_save()?;
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
            let has_state = optimizer_tensors(opt, &mut tensors);
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
            input_shape: self
                .get_input_shape()
                .map_or_else(Vec::new, |s| s.dims().to_vec()),
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
        encode(&mut tensors, meta)
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
        let (st, meta, version) = open_model_file(bytes, path)?;
        if meta.get("model_kind").map(String::as_str) == Some("functional") {
            return Err(Error::format(
                path,
                "this file holds a functional model; load it with `Model::load`",
            ));
        }
        let json = meta
            .get("model")
            .ok_or_else(|| Error::format(path, "metadata has no `model` entry"))?;
        let entry: ModelEntry = serde_json::from_str(json)
            .map_err(|e| Error::format(path, format!("unreadable architecture: {e}")))?;
        if entry.input_dim == 0 {
            return Err(Error::format(path, "invalid architecture: input width 0"));
        }
        let input_shape = if entry.input_shape.is_empty() {
            vec![entry.input_dim]
        } else {
            entry.input_shape.clone()
        };
        if input_shape.len() > MAX_RANK
            || input_shape.contains(&0)
            || input_shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                != Some(entry.input_dim)
        {
            return Err(Error::format(
                path,
                format!(
                    "invalid architecture: input shape {input_shape:?} does not hold input_dim {} values",
                    entry.input_dim
                ),
            ));
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
            .input_shape(&input_shape);
        let mut shape = Shape::new(&input_shape);
        // The saved names: the weights are stored under them (checked
        // first, so that a bad name is reported as such).
        let mut names = std::collections::HashSet::new();
        for l in &entry.layers {
            let bad_name = |why: String| {
                Error::format(
                    path,
                    format!("invalid architecture: layer `{}`: {why}", l.name),
                )
            };
            check_layer_name(&l.name).map_err(|e| bad_name(e.to_string()))?;
            if !names.insert(l.name.as_str()) {
                return Err(bad_name(
                    "the name is used twice; names must be unique".into(),
                ));
            }
            let (layer, out) = l.config.load(&shape, &l.name, &st, path)?;
            model
                .push_built_named(layer, out.clone(), &l.name)
                .map_err(|e| Error::format(path, format!("invalid architecture: {e}")))?;
            shape = out;
        }
        model
            .ensure_built()
            .map_err(|e| Error::format(path, format!("invalid architecture: {e}")))?;

        if let Some(c) = entry.compile {
            let vars = model.weight_sizes();
            let saved =
                SavedOptimizer::read(&c.optimizer, c.optimizer_state, &vars, &st, version, path)?;
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
                saved.restore(&mut comp.optimizer);
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
        write_atomic(path, &encode(&mut self.weight_tensors(), meta)?)
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
