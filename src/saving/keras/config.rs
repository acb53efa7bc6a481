//! Keras' `config.json`: the architecture (Sequential or Functional) and the
//! compile settings, translated into horn's layer configurations.
//!
//! Every key a layer's behaviour depends on is read, and a value horn does
//! not implement is an error that names the layer and the key (a model that
//! loaded but computed something else would be worse). Keys that only
//! matter for a fresh build (initializers other than Keras' own, seeds) fall
//! back to Keras' defaults.

use serde_json::Value;

use crate::activations::Activation;
use crate::error::{Error, Result};
use crate::initializers::Initializer;
use crate::layers::conv::ConvConfig;
use crate::layers::merge::MergeOp;
use crate::layers::pooling::PoolConfig;
use crate::layers::{BidirectionalConfig, MergeMode, Padding, RecurrentConfig};
use crate::regularizers::Regularizer;
use crate::saving::LayerConfig;

/// One layer of a Keras model: its name, what it is, and its group in the
/// weights file (`layers/dense_1`).
#[derive(Debug)]
pub(crate) struct KerasLayer {
    pub name: String,
    pub body: Body,
    pub h5_key: String,
    /// `trainable: false` on the layer, a layer it wraps, or the model.
    pub frozen: bool,
    /// Called with `training=False` (inference mode, also in `fit`).
    pub inference_calls: bool,
}

#[derive(Debug)]
pub(crate) enum Body {
    Layer(LayerConfig),
    Merge(MergeOp),
}

/// A call of a layer in a functional model: the layer, and its inputs as
/// `(layer name, node index, tensor index)` (Keras' `keras_history`).
#[derive(Debug)]
pub(crate) struct KerasNode {
    pub layer: usize,
    pub inputs: Vec<(String, usize, usize)>,
}

/// The architecture of a `.keras` file.
#[derive(Debug)]
pub(crate) enum Architecture {
    Sequential {
        name: String,
        input_shape: Vec<usize>,
        layers: Vec<KerasLayer>,
    },
    Functional {
        name: String,
        /// Input names and per-sample shapes.
        inputs: Vec<(String, Vec<usize>)>,
        layers: Vec<KerasLayer>,
        nodes: Vec<KerasNode>,
        /// `(layer name, node index, tensor index)` of each output.
        outputs: Vec<(String, usize, usize)>,
    },
}

/// An error about layer `layer`'s key `key`.
fn bad(layer: &str, key: &str, why: impl std::fmt::Display) -> Error {
    Error::arg(
        format!("`{key}` of Keras layer `{layer}`"),
        "a value horn supports",
        why,
    )
}

struct Cfg<'a> {
    layer: &'a str,
    v: &'a Value,
}

impl<'a> Cfg<'a> {
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.v.get(key).filter(|v| !v.is_null())
    }

    fn req(&self, key: &str) -> Result<&'a Value> {
        self.get(key).ok_or_else(|| bad(self.layer, key, "missing"))
    }

    fn usize(&self, key: &str) -> Result<usize> {
        let v = self.req(key)?;
        v.as_u64()
            .filter(|&n| n > 0 && n <= u32::MAX as u64)
            .map(|n| n as usize)
            .ok_or_else(|| bad(self.layer, key, v))
    }

    fn f32_or(&self, key: &str, default: f32) -> Result<f32> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .map(|x| x as f32)
                .filter(|x| x.is_finite())
                .ok_or_else(|| bad(self.layer, key, v)),
        }
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| bad(self.layer, key, v)),
        }
    }

    fn str_or(&self, key: &str, default: &'a str) -> Result<&'a str> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_str().ok_or_else(|| bad(self.layer, key, v)),
        }
    }

    /// `3` or `[3, 3]` as `rank` sizes.
    fn window(&self, key: &str, rank: usize) -> Result<Vec<usize>> {
        let v = self.req(key)?;
        let one = |x: &Value| {
            x.as_u64()
                .filter(|&n| n > 0 && n <= 1 << 20)
                .map(|n| n as usize)
        };
        let w: Option<Vec<usize>> = match v {
            Value::Array(a) => a.iter().map(one).collect(),
            x => one(x).map(|n| vec![n; rank]),
        };
        w.filter(|w| w.len() == rank)
            .ok_or_else(|| bad(self.layer, key, v))
    }

    fn activation(&self, key: &str, default: Activation) -> Result<Activation> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::String(s)) => s.parse().map_err(|_| bad(self.layer, key, s)),
            Some(v) => Err(bad(
                self.layer,
                key,
                format!("{v} (only activations given by name)"),
            )),
        }
    }

    /// Initializers matter only for a fresh build; an unknown one falls
    /// back to `default`.
    fn initializer(&self, key: &str, default: Initializer) -> Initializer {
        let Some(v) = self.get(key) else {
            return default;
        };
        let class = v.get("class_name").and_then(Value::as_str).or(v.as_str());
        let config = v.get("config");
        let num = |k: &str, d: f32| {
            config
                .and_then(|c| c.get(k))
                .and_then(Value::as_f64)
                .map_or(d, |x| x as f32)
        };
        match class {
            Some("RandomUniform") => Initializer::RandomUniform {
                minval: num("minval", -0.05),
                maxval: num("maxval", 0.05),
            },
            Some("RandomNormal") => Initializer::RandomNormal {
                mean: num("mean", 0.0),
                stddev: num("stddev", 0.05),
            },
            Some("Constant") => Initializer::Constant(num("value", 0.0)),
            Some("Orthogonal") => Initializer::Orthogonal {
                gain: num("gain", 1.0),
            },
            Some(c) => c.parse().unwrap_or(default),
            None => default,
        }
    }

    fn regularizer(&self, key: &str) -> Result<Option<Regularizer>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let class = v.get("class_name").and_then(Value::as_str).unwrap_or("");
        let c = Cfg {
            layer: self.layer,
            v: v.get("config").unwrap_or(&Value::Null),
        };
        let r = match class {
            "L2" => Regularizer::l2(c.f32_or("l2", 0.01)?),
            "L1" => Regularizer::l1(c.f32_or("l1", 0.01)?),
            "L1L2" => Regularizer::l1_l2(c.f32_or("l1", 0.0)?, c.f32_or("l2", 0.0)?),
            other => return Err(bad(self.layer, key, format!("regularizer `{other}`"))),
        };
        r.validate().map_err(|e| bad(self.layer, key, e))?;
        Ok(Some(r))
    }

    fn padding(&self) -> Result<Padding> {
        match self.str_or("padding", "valid")? {
            "valid" => Ok(Padding::Valid),
            "same" => Ok(Padding::Same),
            "causal" => Ok(Padding::Causal),
            other => Err(bad(self.layer, "padding", other)),
        }
    }

    /// Refuses keys whose non-default values horn does not implement.
    fn unsupported(&self, keys: &[(&str, Value)]) -> Result<()> {
        for (key, default) in keys {
            if let Some(v) = self.v.get(*key) {
                if !v.is_null() && v != default {
                    return Err(bad(
                        self.layer,
                        key,
                        format!("{v} (horn supports {default})"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn channels_last(&self) -> Result<()> {
        self.unsupported(&[("data_format", Value::from("channels_last"))])
    }
}

/// The common checks of every layer: float32, no activity penalty and no
/// constraints.
fn common(c: &Cfg<'_>) -> Result<()> {
    if let Some(d) = c.get("dtype") {
        let name = d
            .get("config")
            .and_then(|x| x.get("name"))
            .and_then(Value::as_str)
            .or(d.as_str())
            .unwrap_or("float32");
        if name != "float32" {
            return Err(bad(
                c.layer,
                "dtype",
                format!("{name} (horn computes in float32)"),
            ));
        }
    }
    for key in [
        "activity_regularizer",
        "kernel_constraint",
        "bias_constraint",
        "recurrent_constraint",
        "embeddings_constraint",
        "beta_constraint",
        "gamma_constraint",
    ] {
        if c.get(key).is_some() {
            return Err(bad(
                c.layer,
                key,
                "set (horn has no constraints or activity penalties)",
            ));
        }
    }
    Ok(())
}

fn recurrent(c: &Cfg<'_>, class: &str) -> Result<RecurrentConfig> {
    c.unsupported(&[
        ("return_state", Value::from(false)),
        ("stateful", Value::from(false)),
        ("unroll", Value::from(false)),
        ("recurrent_dropout", Value::from(0.0)),
        ("reset_after", Value::from(true)),
        ("use_cudnn", Value::from("auto")),
    ])?;
    if c.get("recurrent_dropout")
        .and_then(Value::as_f64)
        .is_some_and(|d| d != 0.0)
    {
        return Err(bad(c.layer, "recurrent_dropout", "non-zero"));
    }
    let gated = class != "SimpleRNN";
    Ok(RecurrentConfig {
        units: c.usize("units")?,
        activation: c.activation("activation", Activation::Tanh)?,
        recurrent_activation: if gated {
            c.activation("recurrent_activation", Activation::Sigmoid)?
        } else {
            Activation::Sigmoid
        },
        use_bias: c.bool_or("use_bias", true)?,
        return_sequences: c.bool_or("return_sequences", false)?,
        go_backwards: c.bool_or("go_backwards", false)?,
        dropout: c.f32_or("dropout", 0.0)?,
        unit_forget_bias: c.bool_or("unit_forget_bias", true)?,
        kernel_initializer: c.initializer("kernel_initializer", Initializer::GlorotUniform),
        recurrent_initializer: c.initializer(
            "recurrent_initializer",
            Initializer::Orthogonal { gain: 1.0 },
        ),
        bias_initializer: c.initializer("bias_initializer", Initializer::Zeros),
        kernel_regularizer: c.regularizer("kernel_regularizer")?,
        recurrent_regularizer: c.regularizer("recurrent_regularizer")?,
        bias_regularizer: c.regularizer("bias_regularizer")?,
    })
}

fn conv(c: &Cfg<'_>, rank: usize) -> Result<ConvConfig> {
    c.channels_last()?;
    c.unsupported(&[("groups", Value::from(1))])?;
    Ok(ConvConfig {
        filters: c.usize("filters")?,
        kernel_size: c.window("kernel_size", rank)?,
        strides: if c.get("strides").is_some() {
            c.window("strides", rank)?
        } else {
            vec![1; rank]
        },
        padding: c.padding()?,
        dilation_rate: if c.get("dilation_rate").is_some() {
            c.window("dilation_rate", rank)?
        } else {
            vec![1; rank]
        },
        activation: c.activation("activation", Activation::Linear)?,
        use_bias: c.bool_or("use_bias", true)?,
        kernel_initializer: c.initializer("kernel_initializer", Initializer::GlorotUniform),
        bias_initializer: c.initializer("bias_initializer", Initializer::Zeros),
        kernel_regularizer: c.regularizer("kernel_regularizer")?,
        bias_regularizer: c.regularizer("bias_regularizer")?,
    })
}

fn pool(c: &Cfg<'_>, rank: usize) -> Result<PoolConfig> {
    c.channels_last()?;
    let pool_size = c.window("pool_size", rank)?;
    Ok(PoolConfig {
        strides: if c.get("strides").is_some() {
            c.window("strides", rank)?
        } else {
            pool_size.clone()
        },
        pool_size,
        padding: c.padding()?,
    })
}

/// The last axis, as Keras' `axis=-1` (or the positive index of the last
/// axis, which horn cannot know before the input shape; only -1 is taken).
fn last_axis(c: &Cfg<'_>) -> Result<()> {
    match c.get("axis") {
        None => Ok(()),
        Some(Value::Number(n)) if n.as_i64() == Some(-1) => Ok(()),
        Some(Value::Array(a)) if a.len() == 1 && a[0].as_i64() == Some(-1) => Ok(()),
        Some(v) => Err(bad(
            c.layer,
            "axis",
            format!("{v} (horn normalizes the last axis, -1)"),
        )),
    }
}

/// A layer with weights (or none) from its Keras class and config.
pub(crate) fn layer_config(class: &str, layer: &str, v: &Value) -> Result<Body> {
    let c = Cfg { layer, v };
    common(&c)?;
    let merge = |op: MergeOp| Ok(Body::Merge(op));
    let l = match class {
        "Dense" => LayerConfig::Dense {
            units: c.usize("units")?,
            activation: c.activation("activation", Activation::Linear)?,
            use_bias: c.bool_or("use_bias", true)?,
            kernel_initializer: c.initializer("kernel_initializer", Initializer::GlorotUniform),
            bias_initializer: c.initializer("bias_initializer", Initializer::Zeros),
            kernel_regularizer: c.regularizer("kernel_regularizer")?,
            bias_regularizer: c.regularizer("bias_regularizer")?,
        },
        "Dropout" => {
            c.unsupported(&[("noise_shape", Value::Null)])?;
            LayerConfig::Dropout {
                rate: c.f32_or("rate", 0.0)?,
            }
        }
        "Activation" => LayerConfig::Activation {
            activation: c.activation("activation", Activation::Linear)?,
        },
        "Conv1D" => LayerConfig::Conv1D(conv(&c, 1)?),
        "Conv2D" => LayerConfig::Conv2D(conv(&c, 2)?),
        "MaxPooling1D" => LayerConfig::MaxPooling1D(pool(&c, 1)?),
        "MaxPooling2D" => LayerConfig::MaxPooling2D(pool(&c, 2)?),
        "AveragePooling1D" => LayerConfig::AveragePooling1D(pool(&c, 1)?),
        "AveragePooling2D" => LayerConfig::AveragePooling2D(pool(&c, 2)?),
        "GlobalAveragePooling1D" | "GlobalAveragePooling2D" | "GlobalMaxPooling1D" | "GlobalMaxPooling2D" => {
            c.channels_last()?;
            c.unsupported(&[("keepdims", Value::from(false))])?;
            match class {
                "GlobalAveragePooling1D" => LayerConfig::GlobalAveragePooling1D,
                "GlobalAveragePooling2D" => LayerConfig::GlobalAveragePooling2D,
                "GlobalMaxPooling1D" => LayerConfig::GlobalMaxPooling1D,
                _ => LayerConfig::GlobalMaxPooling2D,
            }
        }
        "Flatten" => {
            c.channels_last()?;
            LayerConfig::Flatten
        }
        "Reshape" => {
            let t = c.req("target_shape")?;
            let dims: Option<Vec<i64>> = t.as_array().and_then(|a| a.iter().map(Value::as_i64).collect());
            LayerConfig::Reshape {
                target_shape: dims.ok_or_else(|| bad(layer, "target_shape", t))?,
            }
        }
        "BatchNormalization" => {
            last_axis(&c)?;
            c.unsupported(&[("renorm", Value::from(false)), ("synchronized", Value::from(false))])?;
            LayerConfig::BatchNormalization {
                momentum: c.f32_or("momentum", 0.99)?,
                epsilon: c.f32_or("epsilon", 1e-3)?,
                center: c.bool_or("center", true)?,
                scale: c.bool_or("scale", true)?,
                beta_regularizer: c.regularizer("beta_regularizer")?,
                gamma_regularizer: c.regularizer("gamma_regularizer")?,
            }
        }
        "LayerNormalization" => {
            last_axis(&c)?;
            c.unsupported(&[("rms_scaling", Value::from(false))])?;
            LayerConfig::LayerNormalization {
                epsilon: c.f32_or("epsilon", 1e-3)?,
                center: c.bool_or("center", true)?,
                scale: c.bool_or("scale", true)?,
            }
        }
        "Embedding" => LayerConfig::Embedding {
            input_dim: c.usize("input_dim")?,
            output_dim: c.usize("output_dim")?,
            embeddings_initializer: c.initializer(
                "embeddings_initializer",
                Initializer::RandomUniform {
                    minval: -0.05,
                    maxval: 0.05,
                },
            ),
            embeddings_regularizer: c.regularizer("embeddings_regularizer")?,
            mask_zero: c.bool_or("mask_zero", false)?,
        },
        "SimpleRNN" => LayerConfig::SimpleRNN(recurrent(&c, class)?),
        "LSTM" => LayerConfig::LSTM(recurrent(&c, class)?),
        "GRU" => LayerConfig::GRU(recurrent(&c, class)?),
        "Bidirectional" => {
            let inner = c.req("layer")?;
            let inner_class = inner.get("class_name").and_then(Value::as_str).unwrap_or("");
            if !matches!(inner_class, "SimpleRNN" | "LSTM" | "GRU") {
                return Err(bad(layer, "layer", format!("{inner_class} (horn wraps SimpleRNN, LSTM, GRU)")));
            }
            let inner_cfg = Cfg {
                layer,
                v: inner.get("config").unwrap_or(&Value::Null),
            };
            common(&inner_cfg)?;
            let forward = recurrent(&inner_cfg, inner_class)?;
            if let Some(back) = c.get("backward_layer") {
                let bc = Cfg {
                    layer,
                    v: back.get("config").unwrap_or(&Value::Null),
                };
                let mut b = recurrent(&bc, inner_class)?;
                b.go_backwards = !b.go_backwards;
                if b != forward || back.get("class_name") != inner.get("class_name") {
                    return Err(bad(layer, "backward_layer", "a layer unlike the forward one"));
                }
            }
            if c.v.get("merge_mode") == Some(&Value::Null) {
                return Err(bad(
                    layer,
                    "merge_mode",
                    "None (two outputs, one per direction; horn's Bidirectional merges them: \
                     concat, sum, mul or ave)",
                ));
            }
            let mode = c.str_or("merge_mode", "concat")?;
            LayerConfig::Bidirectional(BidirectionalConfig {
                layer_class: inner_class.to_string(),
                layer: forward,
                merge_mode: mode.parse::<MergeMode>().map_err(|_| bad(layer, "merge_mode", mode))?,
            })
        }
        "TimeDistributed" => {
            let inner = c.req("layer")?;
            let inner_class = inner.get("class_name").and_then(Value::as_str).unwrap_or("");
            match layer_config(inner_class, layer, inner.get("config").unwrap_or(&Value::Null))? {
                Body::Layer(l) => LayerConfig::TimeDistributed { layer: Box::new(l) },
                Body::Merge(_) => return Err(bad(layer, "layer", "a merge layer")),
            }
        }
        "Concatenate" => {
            let axis = c.get("axis").map_or(Some(-1), Value::as_i64);
            return merge(MergeOp::Concatenate {
                axis: axis
                    .and_then(|a| i32::try_from(a).ok())
                    .ok_or_else(|| bad(layer, "axis", c.v))?,
            });
        }
        "Add" => return merge(MergeOp::Add),
        "Subtract" => return merge(MergeOp::Subtract),
        "Multiply" => return merge(MergeOp::Multiply),
        "Average" => return merge(MergeOp::Average),
        "Maximum" => return merge(MergeOp::Maximum),
        "Minimum" => return merge(MergeOp::Minimum),
        "Dot" => {
            let axes = c.req("axes")?;
            let one = |v: &Value| v.as_i64().and_then(|a| i32::try_from(a).ok());
            let pair = match axes {
                Value::Array(a) if a.len() == 2 => one(&a[0]).zip(one(&a[1])).map(|(x, y)| [x, y]),
                v => one(v).map(|x| [x, x]),
            };
            return merge(MergeOp::Dot {
                axes: pair.ok_or_else(|| bad(layer, "axes", axes))?,
                normalize: c.bool_or("normalize", false)?,
            });
        }
        other => {
            return Err(Error::arg(
                format!("class of Keras layer `{layer}`"),
                "a layer class horn supports (Dense, Dropout, Activation, Conv1D, Conv2D, the poolings, \
                 Flatten, Reshape, BatchNormalization, LayerNormalization, Embedding, SimpleRNN, LSTM, GRU, \
                 Bidirectional, TimeDistributed, and the merge layers)",
                other,
            ))
        }
    };
    Ok(Body::Layer(l))
}

/// `[null, 28, 28, 1]` as a per-sample shape.
pub(crate) fn batch_shape(v: &Value, layer: &str) -> Result<Vec<usize>> {
    let a = v.as_array().ok_or_else(|| bad(layer, "batch_shape", v))?;
    if a.len() < 2 || a.len() > 9 {
        return Err(bad(layer, "batch_shape", v));
    }
    let dims: Option<Vec<usize>> = a[1..]
        .iter()
        .map(|d| {
            d.as_u64()
                .filter(|&n| n > 0 && n <= u32::MAX as u64)
                .map(|n| n as usize)
        })
        .collect();
    let dims = dims.ok_or_else(|| {
        bad(
            layer,
            "batch_shape",
            format!("{v} (every axis but the batch must have a fixed size)"),
        )
    })?;
    if dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .is_none()
    {
        return Err(bad(layer, "batch_shape", v));
    }
    Ok(dims)
}

/// A layer's entry: its class, name, config, and whether it is custom.
fn entry(l: &Value) -> Result<(&str, &str, &Value)> {
    let class = l.get("class_name").and_then(Value::as_str).ok_or_else(|| {
        Error::arg(
            "layer entry",
            "a `class_name`",
            l.to_string().chars().take(80).collect::<String>(),
        )
    })?;
    let config = l.get("config").unwrap_or(&Value::Null);
    let name = config
        .get("name")
        .or(l.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| Error::arg(format!("Keras layer of class {class}"), "a name", "none"))?;
    // Keras 2 files name no module; Keras 3 names `keras.layers`.
    let module = l.get("module").and_then(Value::as_str);
    let registered = l.get("registered_name").and_then(Value::as_str);
    if !module.unwrap_or("keras").starts_with("keras")
        || registered.is_some_and(|r| r.contains('>'))
    {
        let from = module.map_or_else(|| "with no module".to_string(), |m| format!("from `{m}`"));
        let reg = registered.map_or_else(String::new, |r| format!(", registered as `{r}`"));
        return Err(Error::arg(
            format!("class of Keras layer `{name}`"),
            "a built-in Keras layer (custom objects cannot be loaded without their code)",
            format!("{class} {from}{reg}"),
        ));
    }
    Ok((class, name, config))
}

/// Names each layer's group in the weights file as Keras does: its class in
/// snake_case, numbered per class in the model's layer order (`dense`,
/// `dense_1`). Used both to read and to write.
#[derive(Default)]
pub(crate) struct H5Names(std::collections::HashMap<String, usize>);

impl H5Names {
    pub(crate) fn next(&mut self, class: &str) -> String {
        let base = crate::model::snake_case(class);
        let n = self.0.entry(base.clone()).or_insert(0);
        let key = if *n == 0 { base } else { format!("{base}_{n}") };
        *n += 1;
        key
    }
}

/// Whether a layer's config freezes its weights (`trainable: false`), or
/// those of a layer it wraps (Bidirectional, TimeDistributed).
fn frozen(config: &Value) -> bool {
    let no = |v: Option<&Value>| v.and_then(|v| v.get("trainable")) == Some(&Value::Bool(false));
    no(Some(config))
        || no(config.get("layer").and_then(|l| l.get("config")))
        || no(config.get("backward_layer").and_then(|l| l.get("config")))
}

/// Whether a keyword argument's value holds no value at all (`null`, or
/// lists of `null`, as Keras writes `mask=None` for each input).
fn is_nothing(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.iter().all(is_nothing),
        _ => false,
    }
}

/// Whether a keyword argument's value refers to a tensor: a
/// `__keras_tensor__` (Keras 3) or a `[layer, node, tensor]` triple
/// (Keras 2), at any depth.
fn holds_tensor(v: &Value, keras2: bool, depth: usize) -> bool {
    if depth > 8 {
        return true;
    }
    match v {
        Value::Object(o) => {
            o.get("class_name").and_then(Value::as_str) == Some("__keras_tensor__")
                || o.values().any(|x| holds_tensor(x, keras2, depth + 1))
        }
        Value::Array(a) => {
            (keras2 && history(v).is_some()) || a.iter().any(|x| holds_tensor(x, keras2, depth + 1))
        }
        _ => false,
    }
}

/// Checks the keyword arguments of one call of layer `layer` (Keras 3's
/// `kwargs`, or the fourth entry of a Keras 2 inbound item) and says whether
/// the call runs in inference mode (`training=False`). horn implements no
/// keyword argument that takes a tensor (`initial_state`, an explicit
/// `mask`, attention's `key` or `attention_mask`), so each is refused by
/// name rather than dropped, which would compute something else;
/// `training=True` is refused too (Keras would predict with dropout and
/// batch statistics on). Unset arguments (`mask=None`) are what Keras
/// writes for most calls.
fn call_kwargs(kwargs: &Value, layer: &str, keras2: bool) -> Result<bool> {
    let what = |key: &str| format!("keyword argument `{key}` of a call of Keras layer `{layer}`");
    let map = match kwargs {
        Value::Null => return Ok(false),
        Value::Object(m) => m,
        other => {
            return Err(Error::arg(
                what("kwargs"),
                "a dict of keyword arguments",
                other,
            ))
        }
    };
    let mut inference = false;
    for (key, v) in map {
        if holds_tensor(v, keras2, 0) {
            return Err(Error::arg(
                what(key),
                "no tensor (horn does not implement tensor keyword arguments such as \
                 `initial_state` or an explicit `mask` yet)",
                "a tensor",
            ));
        }
        match (key.as_str(), v) {
            (_, v) if is_nothing(v) => {}
            ("training", Value::Bool(false)) => inference = true,
            ("training", Value::Bool(true)) => {
                return Err(Error::arg(
                    what(key),
                    "False or None (with True Keras keeps dropout and batch statistics on in \
                     `predict`, which horn does not implement)",
                    v,
                ))
            }
            _ => {
                return Err(Error::arg(
                    what(key),
                    "None, or `training` (the only keyword arguments horn implements)",
                    v,
                ))
            }
        }
    }
    Ok(inference)
}

/// `["layer", node, tensor]`.
fn history(v: &Value) -> Option<(String, usize, usize)> {
    let a = v.as_array()?;
    if a.len() != 3 {
        return None;
    }
    Some((
        a[0].as_str()?.to_string(),
        a[1].as_u64()? as usize,
        a[2].as_u64()? as usize,
    ))
}

/// Collects the `keras_history` of every `__keras_tensor__` in a node's args.
fn node_inputs(v: &Value, out: &mut Vec<(String, usize, usize)>, depth: usize) -> Result<()> {
    if depth > 8 {
        return Err(Error::arg(
            "inbound_nodes",
            "shallow argument lists",
            "nested too deeply",
        ));
    }
    match v {
        Value::Array(a) => {
            for x in a {
                node_inputs(x, out, depth + 1)?;
            }
        }
        Value::Object(o)
            if o.get("class_name").and_then(Value::as_str) == Some("__keras_tensor__") =>
        {
            let h = o
                .get("config")
                .and_then(|c| c.get("keras_history"))
                .and_then(history)
                .ok_or_else(|| {
                    Error::arg("inbound_nodes", "a keras_history [layer, node, tensor]", v)
                })?;
            out.push(h);
        }
        _ => {}
    }
    Ok(())
}

/// The architecture in a parsed `config.json`.
pub(crate) fn architecture(root: &Value) -> Result<Architecture> {
    let class = root.get("class_name").and_then(Value::as_str).unwrap_or("");
    let config = root.get("config").unwrap_or(&Value::Null);
    let name = config
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("model")
        .to_string();
    let layers = config
        .get("layers")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::arg("config.json", "a model with a `layers` list", class))?;
    if layers.len() > crate::saving::MAX_LAYERS {
        return Err(Error::arg(
            "config.json",
            format!("at most {} layers", crate::saving::MAX_LAYERS),
            layers.len(),
        ));
    }
    let mut names = H5Names::default();
    // `model.trainable = False` freezes every layer.
    let model_frozen = config.get("trainable") == Some(&Value::Bool(false));
    match class {
        "Sequential" => {
            let mut input_shape = None;
            let mut out = Vec::new();
            for l in layers {
                let (lclass, lname, lcfg) = entry(l)?;
                if lclass == "InputLayer" {
                    let shape = lcfg.get("batch_shape").or(lcfg.get("batch_input_shape"));
                    input_shape = Some(batch_shape(shape.unwrap_or(&Value::Null), lname)?);
                    continue;
                }
                out.push(KerasLayer {
                    name: lname.to_string(),
                    body: layer_config(lclass, lname, lcfg)?,
                    h5_key: names.next(lclass),
                    frozen: model_frozen || frozen(lcfg),
                    inference_calls: false,
                });
            }
            // Keras 2 put the input shape on the first layer.
            let first_layer_shape = layers
                .iter()
                .find_map(|l| l.get("config").and_then(|c| c.get("batch_input_shape")).filter(|v| !v.is_null()));
            if input_shape.is_none() {
                if let Some(v) = first_layer_shape {
                    input_shape = Some(batch_shape(v, &name)?);
                }
            }
            let input_shape = match input_shape {
                Some(s) => s,
                None => {
                    let built = root
                        .get("build_config")
                        .and_then(|b| b.get("input_shape"))
                        .ok_or_else(|| Error::arg("config.json", "a Sequential model with an input shape", "none"))?;
                    batch_shape(built, &name)?
                }
            };
            if out.iter().any(|l| matches!(l.body, Body::Merge(_))) {
                return Err(Error::arg("config.json", "a Sequential model without merge layers", "a merge layer"));
            }
            Ok(Architecture::Sequential {
                name,
                input_shape,
                layers: out,
            })
        }
        "Functional" | "Model" => {
            let mut inputs = Vec::new();
            let mut out = Vec::new();
            let mut nodes = Vec::new();
            for l in layers {
                let (lclass, lname, lcfg) = entry(l)?;
                let key = names.next(lclass);
                if lclass == "InputLayer" {
                    let shape = lcfg.get("batch_shape").or(lcfg.get("batch_input_shape"));
                    inputs.push((lname.to_string(), batch_shape(shape.unwrap_or(&Value::Null), lname)?));
                    continue;
                }
                let index = out.len();
                let mut layer = KerasLayer {
                    name: lname.to_string(),
                    body: layer_config(lclass, lname, lcfg)?,
                    h5_key: key,
                    frozen: model_frozen || frozen(lcfg),
                    inference_calls: false,
                };
                let inbound = l.get("inbound_nodes").and_then(Value::as_array).ok_or_else(|| {
                    Error::arg(format!("inbound_nodes of Keras layer `{lname}`"), "a list", "none")
                })?;
                for node in inbound {
                    let mut ins = Vec::new();
                    match node {
                        // Keras 2: `[["layer", node, tensor, {kwargs}], ...]`.
                        Value::Array(items) => {
                            for item in items {
                                let a = item.as_array().filter(|a| (3..=4).contains(&a.len()));
                                let h = a.and_then(|a| {
                                    Some((a[0].as_str()?.to_string(), a[1].as_u64()? as usize, a[2].as_u64()? as usize))
                                });
                                ins.push(h.ok_or_else(|| {
                                    Error::arg(format!("inbound_nodes of Keras layer `{lname}`"), "[layer, node, tensor] entries", item)
                                })?);
                                if let Some(kwargs) = a.and_then(|a| a.get(3)) {
                                    layer.inference_calls |= call_kwargs(kwargs, lname, true)?;
                                }
                            }
                        }
                        _ => {
                            node_inputs(node.get("args").unwrap_or(&Value::Null), &mut ins, 0)?;
                            let kwargs = node.get("kwargs").unwrap_or(&Value::Null);
                            layer.inference_calls |= call_kwargs(kwargs, lname, false)?;
                        }
                    }
                    if ins.is_empty() {
                        return Err(Error::arg(
                            format!("inbound_nodes of Keras layer `{lname}`"),
                            "calls on tensors",
                            "a call without tensors",
                        ));
                    }
                    nodes.push(KerasNode { layer: index, inputs: ins });
                }
                out.push(layer);
            }
            let list = |key: &str| -> Result<Vec<(String, usize, usize)>> {
                let v = config.get(key).unwrap_or(&Value::Null);
                // One tensor is `["a", 0, 0]`, several a list of those.
                if let Some(h) = history(v) {
                    return Ok(vec![h]);
                }
                v.as_array()
                    .and_then(|a| a.iter().map(history).collect::<Option<Vec<_>>>())
                    .ok_or_else(|| Error::arg(key, "a list of [layer, node, tensor]", v))
            };
            let input_refs = list("input_layers")?;
            // The model's inputs in the order Keras lists them.
            let mut by_name = std::collections::HashMap::with_capacity(inputs.len());
            for (i, (m, _)) in inputs.iter().enumerate() {
                by_name.entry(m.as_str()).or_insert(i);
            }
            let mut ordered = Vec::with_capacity(input_refs.len());
            for (n, _, _) in &input_refs {
                let &i = by_name
                    .get(n.as_str())
                    .ok_or_else(|| Error::arg("input_layers", "names of InputLayers", n))?;
                ordered.push(inputs[i].clone());
            }
            Ok(Architecture::Functional {
                name,
                inputs: ordered,
                layers: out,
                nodes,
                outputs: list("output_layers")?,
            })
        }
        other => Err(Error::arg(
            "model class in config.json",
            "Sequential or Functional (custom Model subclasses cannot be loaded without their code)",
            other,
        )),
    }
}

/// The group path of a layer's `i`-th variable (of `n`) in the weights file.
pub(crate) fn var_path(config: &LayerConfig, key: &str, i: usize, n: usize) -> String {
    match config {
        LayerConfig::SimpleRNN(_) | LayerConfig::LSTM(_) | LayerConfig::GRU(_) => {
            format!("layers/{key}/cell/vars/{i}")
        }
        LayerConfig::Bidirectional(_) => {
            let half = n / 2;
            if i < half {
                format!("layers/{key}/forward_layer/cell/vars/{i}")
            } else {
                format!("layers/{key}/backward_layer/cell/vars/{}", i - half)
            }
        }
        LayerConfig::TimeDistributed { layer } => {
            let inner = var_path(layer, "", i, n);
            // `layers//vars/0` -> `layers/{key}/layer/vars/0`.
            format!(
                "layers/{key}/layer/{}",
                inner.trim_start_matches("layers//")
            )
        }
        _ => format!("layers/{key}/vars/{i}"),
    }
}
