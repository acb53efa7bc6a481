//! Writing `.keras` files: `config.json` in Keras 3's layout (the
//! architecture with `build_config`s, `compile_config`), `metadata.json`,
//! and `model.weights.h5` written with `hdf5-writer` (pure Rust; its output
//! is validated against libhdf5 by its authors, and against h5py and Keras
//! by `scripts/keras_roundtrip.py` here), zipped uncompressed as Keras does.

use std::io::{Cursor, Write};

use hdf5_writer::{DatasetBuilder, Hdf5Builder, WriteOptions};
use serde_json::{json, Value};

use super::config::{var_path, H5Names};
use crate::activations::Activation;
use crate::error::{Error, Result};
use crate::initializers::Initializer;
use crate::layers::merge::MergeOp;
use crate::layers::{Layer, MergeMode, Padding, RecurrentConfig};
use crate::losses::Loss;
use crate::metrics::Metric;
use crate::optimizers::Optimizer;
use crate::regularizers::Regularizer;
use crate::saving::LayerConfig;
use crate::shape::Shape;

/// The Keras version written into `metadata.json` (the format horn writes
/// is Keras 3's).
const KERAS_VERSION: &str = "3.15.1";

fn keras_error(what: impl Into<String>, why: impl std::fmt::Display) -> Error {
    Error::arg(what, "something Keras' file format can express", why)
}

fn activation(a: Activation) -> Result<Value> {
    let plain = match a {
        Activation::Elu(alpha) => alpha == 1.0,
        Activation::LeakyRelu(s) => s == 0.2,
        Activation::Gelu { approximate } => !approximate,
        _ => true,
    };
    if !plain {
        return Err(keras_error(
            "activation",
            format!("{a} (its parameters have no Keras name)"),
        ));
    }
    Ok(Value::from(a.name()))
}

fn initializer(i: Initializer) -> Value {
    let (class, config) = match i {
        Initializer::GlorotUniform => ("GlorotUniform", json!({"seed": null})),
        Initializer::GlorotNormal => ("GlorotNormal", json!({"seed": null})),
        Initializer::HeUniform => ("HeUniform", json!({"seed": null})),
        Initializer::HeNormal => ("HeNormal", json!({"seed": null})),
        Initializer::LecunUniform => ("LecunUniform", json!({"seed": null})),
        Initializer::LecunNormal => ("LecunNormal", json!({"seed": null})),
        Initializer::RandomUniform { minval, maxval } => (
            "RandomUniform",
            json!({"minval": minval, "maxval": maxval, "seed": null}),
        ),
        Initializer::RandomNormal { mean, stddev } => (
            "RandomNormal",
            json!({"mean": mean, "stddev": stddev, "seed": null}),
        ),
        Initializer::Zeros => ("Zeros", json!({})),
        Initializer::Ones => ("Ones", json!({})),
        Initializer::Constant(v) => ("Constant", json!({"value": v})),
        Initializer::Orthogonal { gain } => ("Orthogonal", json!({"gain": gain, "seed": null})),
    };
    json!({"module": "keras.initializers", "class_name": class, "config": config, "registered_name": null})
}

fn regularizer(r: Option<Regularizer>) -> Value {
    match r {
        None => Value::Null,
        Some(r) if r.l1 == 0.0 => {
            json!({"module": "keras.regularizers", "class_name": "L2", "config": {"l2": r.l2}, "registered_name": null})
        }
        Some(r) if r.l2 == 0.0 => {
            json!({"module": "keras.regularizers", "class_name": "L1", "config": {"l1": r.l1}, "registered_name": null})
        }
        Some(r) => json!({"module": "keras.regularizers", "class_name": "L1L2",
                          "config": {"l1": r.l1, "l2": r.l2}, "registered_name": null}),
    }
}

fn padding(p: Padding) -> &'static str {
    match p {
        Padding::Valid => "valid",
        Padding::Same => "same",
        Padding::Causal => "causal",
    }
}

fn recurrent(class: &str, name: &str, c: &RecurrentConfig) -> Result<Value> {
    let mut v = json!({
        "name": name, "trainable": true, "dtype": "float32",
        "return_sequences": c.return_sequences, "return_state": false,
        "go_backwards": c.go_backwards, "stateful": false, "unroll": false,
        "units": c.units, "activation": activation(c.activation)?,
        "use_bias": c.use_bias,
        "kernel_initializer": initializer(c.kernel_initializer),
        "recurrent_initializer": initializer(c.recurrent_initializer),
        "bias_initializer": initializer(c.bias_initializer),
        "kernel_regularizer": regularizer(c.kernel_regularizer),
        "recurrent_regularizer": regularizer(c.recurrent_regularizer),
        "bias_regularizer": regularizer(c.bias_regularizer),
        "activity_regularizer": null, "kernel_constraint": null,
        "recurrent_constraint": null, "bias_constraint": null,
        "dropout": c.dropout, "recurrent_dropout": 0.0, "seed": null,
    });
    if class != "SimpleRNN" {
        v["recurrent_activation"] = activation(c.recurrent_activation)?;
    }
    if class == "LSTM" {
        v["unit_forget_bias"] = Value::from(c.unit_forget_bias);
    }
    if class == "GRU" {
        v["reset_after"] = Value::from(true);
    }
    Ok(v)
}

/// Keras' class name and `config` of a layer named `name`.
pub(crate) fn layer_json(config: &LayerConfig, name: &str) -> Result<(String, Value)> {
    let class = config.class_name().to_string();
    let base = json!({"name": name, "trainable": true, "dtype": "float32"});
    let mut v = base.clone();
    let mut set = |pairs: Value| {
        if let (Value::Object(dst), Value::Object(src)) = (&mut v, pairs) {
            dst.extend(src);
        }
    };
    match config {
        LayerConfig::Dense {
            units,
            activation: a,
            use_bias,
            kernel_initializer,
            bias_initializer,
            kernel_regularizer,
            bias_regularizer,
        } => set(json!({
            "units": units, "activation": activation(*a)?, "use_bias": use_bias,
            "kernel_initializer": initializer(*kernel_initializer),
            "bias_initializer": initializer(*bias_initializer),
            "kernel_regularizer": regularizer(*kernel_regularizer),
            "bias_regularizer": regularizer(*bias_regularizer),
            "activity_regularizer": null, "kernel_constraint": null, "bias_constraint": null,
        })),
        LayerConfig::Dropout { rate } => {
            set(json!({"rate": rate, "seed": null, "noise_shape": null}))
        }
        LayerConfig::Activation { activation: a } => set(json!({"activation": activation(*a)?})),
        LayerConfig::Conv1D(c) | LayerConfig::Conv2D(c) => set(json!({
            "filters": c.filters, "kernel_size": c.kernel_size, "strides": c.strides,
            "padding": padding(c.padding), "data_format": "channels_last",
            "dilation_rate": c.dilation_rate, "groups": 1, "activation": activation(c.activation)?,
            "use_bias": c.use_bias, "kernel_initializer": initializer(c.kernel_initializer),
            "bias_initializer": initializer(c.bias_initializer),
            "kernel_regularizer": regularizer(c.kernel_regularizer),
            "bias_regularizer": regularizer(c.bias_regularizer),
            "activity_regularizer": null, "kernel_constraint": null, "bias_constraint": null,
        })),
        LayerConfig::MaxPooling1D(p)
        | LayerConfig::MaxPooling2D(p)
        | LayerConfig::AveragePooling1D(p)
        | LayerConfig::AveragePooling2D(p) => set(json!({
            "pool_size": p.pool_size, "strides": p.strides, "padding": padding(p.padding),
            "data_format": "channels_last",
        })),
        LayerConfig::GlobalAveragePooling1D
        | LayerConfig::GlobalAveragePooling2D
        | LayerConfig::GlobalMaxPooling1D
        | LayerConfig::GlobalMaxPooling2D => {
            set(json!({"data_format": "channels_last", "keepdims": false}))
        }
        LayerConfig::Flatten => set(json!({"data_format": "channels_last"})),
        LayerConfig::Reshape { target_shape } => set(json!({"target_shape": target_shape})),
        LayerConfig::BatchNormalization {
            momentum,
            epsilon,
            center,
            scale,
            beta_regularizer,
            gamma_regularizer,
        } => set(json!({
            "axis": -1, "momentum": momentum, "epsilon": epsilon, "center": center, "scale": scale,
            "beta_initializer": initializer(Initializer::Zeros),
            "gamma_initializer": initializer(Initializer::Ones),
            "moving_mean_initializer": initializer(Initializer::Zeros),
            "moving_variance_initializer": initializer(Initializer::Ones),
            "beta_regularizer": regularizer(*beta_regularizer),
            "gamma_regularizer": regularizer(*gamma_regularizer),
            "beta_constraint": null, "gamma_constraint": null, "synchronized": false,
        })),
        LayerConfig::LayerNormalization {
            epsilon,
            center,
            scale,
        } => set(json!({
            "axis": [-1], "epsilon": epsilon, "center": center, "scale": scale, "rms_scaling": false,
            "beta_initializer": initializer(Initializer::Zeros),
            "gamma_initializer": initializer(Initializer::Ones),
            "beta_regularizer": null, "gamma_regularizer": null,
            "beta_constraint": null, "gamma_constraint": null,
        })),
        LayerConfig::Embedding {
            input_dim,
            output_dim,
            embeddings_initializer,
            embeddings_regularizer,
            mask_zero,
        } => set(json!({
            "input_dim": input_dim, "output_dim": output_dim,
            "embeddings_initializer": initializer(*embeddings_initializer),
            "embeddings_regularizer": regularizer(*embeddings_regularizer),
            "activity_regularizer": null, "embeddings_constraint": null,
            "mask_zero": mask_zero,
        })),
        LayerConfig::SimpleRNN(c) | LayerConfig::LSTM(c) | LayerConfig::GRU(c) => {
            v = recurrent(&class, name, c)?;
        }
        LayerConfig::Bidirectional(b) => {
            let cell = crate::model::snake_case(&b.layer_class);
            let forward = recurrent(&b.layer_class, &format!("forward_{cell}"), &b.layer)?;
            let mut back_cfg = b.layer.clone();
            back_cfg.go_backwards = !back_cfg.go_backwards;
            let backward = recurrent(&b.layer_class, &format!("backward_{cell}"), &back_cfg)?;
            let mode = match b.merge_mode {
                MergeMode::Concat => "concat",
                MergeMode::Sum => "sum",
                MergeMode::Mul => "mul",
                MergeMode::Ave => "ave",
            };
            set(json!({
                "merge_mode": mode,
                "layer": {"module": "keras.layers", "class_name": b.layer_class, "config": forward, "registered_name": null},
                "backward_layer": {"module": "keras.layers", "class_name": b.layer_class, "config": backward, "registered_name": null},
            }));
        }
        LayerConfig::TimeDistributed { layer } => {
            let inner_name = format!("{}_inner", name);
            let (inner_class, inner) = layer_json(layer, &inner_name)?;
            set(
                json!({"layer": {"module": "keras.layers", "class_name": inner_class, "config": inner, "registered_name": null}}),
            );
        }
    }
    Ok((class, v))
}

/// The Keras class and config of a layer, checked by the reader: what
/// horn writes it must read back (and Keras with it), so a value the
/// reader refuses (a stride over 2^20) is an error here, not a file that
/// cannot be opened.
fn readable_layer(config: &LayerConfig, name: &str) -> Result<(String, Value)> {
    let (class, v) = layer_json(config, name)?;
    read_back(&class, name, &v)?;
    Ok((class, v))
}

/// Refuses a layer config the reader would refuse.
fn read_back(class: &str, name: &str, config: &Value) -> Result<()> {
    super::config::layer_config(class, name, config)
        .map(|_| ())
        .map_err(|e| {
            keras_error(
                format!("layer `{name}`"),
                format!("{e} (horn does not write what it cannot read back)"),
            )
        })
}

/// Refuses more layers (or calls) than the reader takes.
fn readable_count(layers: usize, calls: usize) -> Result<()> {
    let max = crate::saving::MAX_LAYERS;
    if layers.max(calls) > max {
        return Err(keras_error(
            "model",
            format!("{layers} layers and {calls} calls (horn reads at most {max} of each)"),
        ));
    }
    Ok(())
}

/// `[null, d1, ...]` of an input, checked as the reader checks it.
fn readable_input(name: &str, shape: &Shape) -> Result<Value> {
    let v = batch_shape(shape);
    super::config::batch_shape(&v, name).map_err(|e| {
        keras_error(
            format!("input `{name}`"),
            format!("{e} (horn does not write what it cannot read back)"),
        )
    })?;
    Ok(v)
}

fn merge_json(op: &MergeOp, name: &str) -> Value {
    let mut v = json!({"name": name, "trainable": true, "dtype": "float32"});
    match op {
        MergeOp::Concatenate { axis } => v["axis"] = Value::from(*axis),
        MergeOp::Dot { axes, normalize } => {
            v["axes"] = json!(axes);
            v["normalize"] = Value::from(*normalize);
        }
        _ => {}
    }
    v
}

/// `[null, d1, d2, ...]`.
fn batch_shape(s: &Shape) -> Value {
    let mut v = vec![Value::Null];
    v.extend(s.dims().iter().map(|&d| Value::from(d)));
    Value::Array(v)
}

fn wrap(class: &str, config: Value, build_input: Option<&Shape>) -> Value {
    let mut v = json!({"module": "keras.layers", "class_name": class, "config": config, "registered_name": null});
    if let Some(s) = build_input {
        v["build_config"] = json!({"input_shape": batch_shape(s)});
    }
    v
}

fn input_layer(name: &str, shape: &Shape) -> Result<Value> {
    Ok(json!({"module": "keras.layers", "class_name": "InputLayer",
           "config": {"batch_shape": readable_input(name, shape)?, "dtype": "float32", "sparse": false,
                      "ragged": false, "name": name, "optional": false},
           "registered_name": null}))
}

fn keras_tensor(shape: &Shape, layer: &str, node: usize) -> Value {
    json!({"class_name": "__keras_tensor__",
           "config": {"shape": batch_shape(shape), "dtype": "float32", "keras_history": [layer, node, 0]}})
}

/// The Keras form of an optimizer, from horn's serialised form.
fn optimizer_json(opt: &Optimizer) -> Result<Value> {
    let o = serde_json::to_value(opt).map_err(|e| keras_error("optimizer", e))?;
    let rule = &o["rule"];
    let name = rule["name"].as_str().unwrap_or("");
    let class = match name {
        "sgd" => "SGD",
        "rmsprop" | "rms_prop" => "RMSprop",
        "adam" => "Adam",
        "adagrad" => "Adagrad",
        "adadelta" => "Adadelta",
        "adamax" => "Adamax",
        "nadam" => "Nadam",
        "lion" => "Lion",
        other => return Err(keras_error("optimizer", other)),
    };
    let mut cfg = json!({
        "name": class.to_lowercase(),
        "learning_rate": match opt.schedule() {
            Some(sched) => schedule_json(sched),
            None => Value::from(opt.learning_rate()),
        },
        "weight_decay": o["weight_decay"], "clipnorm": o["clipnorm"],
        "global_clipnorm": o["global_clipnorm"], "clipvalue": o["clipvalue"],
        "use_ema": false, "ema_momentum": 0.99, "ema_overwrite_frequency": null,
        "loss_scale_factor": null, "gradient_accumulation_steps": null,
    });
    if let (Value::Object(dst), Value::Object(src)) = (&mut cfg, rule.clone()) {
        for (k, v) in src {
            if k != "name" {
                dst.insert(k, v);
            }
        }
    }
    Ok(
        json!({"module": "keras.optimizers", "class_name": class, "config": cfg, "registered_name": null}),
    )
}

/// `exponential_decay` -> `ExponentialDecay` (horn's serialised names back
/// to Keras class names).
fn camel_case(name: &str) -> String {
    name.split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next().map_or(String::new(), |f| {
                f.to_uppercase().collect::<String>() + c.as_str()
            })
        })
        .collect()
}

/// A learning-rate schedule as Keras serialises it (horn's schedules have
/// Keras' class names and config keys).
fn schedule_json(s: &crate::optimizers::LearningRateSchedule) -> Value {
    let mut cfg = serde_json::to_value(s).unwrap_or(Value::Null);
    let name = cfg["name"].as_str().unwrap_or("").to_string();
    let class = camel_case(&name);
    cfg["name"] = Value::from(class.as_str());
    json!({"module": "keras.optimizers.schedules", "class_name": class, "config": cfg, "registered_name": null})
}

/// A loss as Keras names it: a string for the defaults, a class otherwise.
fn loss_json(loss: &Loss) -> Value {
    let v = serde_json::to_value(loss).unwrap_or(Value::Null);
    let name = v["name"].as_str().unwrap_or("").to_string();
    let has_params = v.as_object().is_some_and(|o| {
        o.iter().any(|(k, x)| {
            k != "name"
                && x != &Value::from(false)
                && x != &Value::from(0.0)
                && x != &Value::from(0)
        })
    });
    if !has_params {
        return Value::from(name);
    }
    let class = camel_case(&name);
    let mut cfg = v.clone();
    cfg["reduction"] = Value::from("sum_over_batch_size");
    json!({"module": "keras.losses", "class_name": class, "config": cfg, "registered_name": null})
}

fn metric_json(key: &str, m: &Metric) -> Value {
    // A key that names the metric itself (`accuracy`, `mae`) is what Keras
    // wrote; otherwise the metric's Keras name.
    match key.parse::<Metric>() {
        Ok(k) if &k == m => Value::from(key),
        _ => Value::from(m.name()),
    }
}

/// The layers a model read from a Keras file froze, written back as Keras
/// wrote them (`trainable: false`, calls with `training=False`).
struct FrozenNames<'a> {
    trainable: std::collections::HashSet<&'a str>,
    inference: std::collections::HashSet<&'a str>,
}

impl<'a> FrozenNames<'a> {
    fn of(f: &'a crate::model::Frozen) -> Self {
        let set = |v: &'a [String]| v.iter().map(String::as_str).collect();
        FrozenNames {
            trainable: set(&f.layers),
            inference: set(&f.inference_calls),
        }
    }

    /// Marks layer `name`'s config as frozen if it is.
    fn mark(&self, name: &str, config: &mut Value) {
        if self.trainable.contains(name) {
            config["trainable"] = Value::Bool(false);
        }
    }
}

/// What a `.keras` file needs from a model, whichever kind it is.
pub(crate) struct Exported<'a> {
    pub config: Value,
    /// `(path, shape, values)` of every dataset.
    pub datasets: Vec<(String, Vec<usize>, &'a [f32])>,
    /// The step count and the learning rate (none with a schedule, which
    /// Keras keeps no variable for).
    pub iterations: Option<(u64, Option<f32>)>,
    /// Nadam's running momentum product (its last optimizer variable).
    pub nadam_u: Option<f32>,
}

/// Everything a file keeps of an optimizer besides its config: the step
/// count and learning rate (none with a schedule), the slot datasets (added
/// to `datasets`) and Nadam's momentum product.
#[allow(clippy::type_complexity)]
fn optimizer_exports<'a>(
    opt: &'a Optimizer,
    datasets: &mut Vec<(String, Vec<usize>, &'a [f32])>,
    trainable_shapes: &[Vec<usize>],
) -> (Option<(u64, Option<f32>)>, Option<f32>) {
    let lr = opt.schedule().is_none().then(|| opt.learning_rate());
    optimizer_datasets(opt, datasets, trainable_shapes);
    (Some((opt.iterations(), lr)), nadam_u(opt))
}

/// Nadam's momentum product, when the optimizer is Nadam with state.
fn nadam_u(opt: &Optimizer) -> Option<f32> {
    matches!(opt.rule(), crate::optimizers::Rule::Nadam { .. })
        .then(|| opt.u_product() as f32)
        .filter(|_| opt.slots().next().is_some())
}

/// The weight datasets of one layer, where Keras puts them.
fn layer_datasets<'a>(
    config: &LayerConfig,
    layer: &'a dyn Layer,
    key: &str,
    out: &mut Vec<(String, Vec<usize>, &'a [f32])>,
) {
    let params = layer.params();
    let n = params.len();
    for (i, p) in params.into_iter().enumerate() {
        out.push((var_path(config, key, i, n), p.shape, p.values));
    }
}

/// The optimizer's slot variables as Keras lays them out after
/// `iterations` and `learning_rate` (see [`super::slot_groups`]); Nadam's
/// momentum product follows them, in `nadam_u`.
fn optimizer_datasets<'a>(
    opt: &'a Optimizer,
    out: &mut Vec<(String, Vec<usize>, &'a [f32])>,
    shapes: &[Vec<usize>],
) {
    let k = opt.slots_per_weight();
    let slots: Vec<&[f32]> = opt.slots().map(|(_, s)| s).collect();
    if k == 0 || slots.len() != shapes.len() {
        return;
    }
    if slots
        .iter()
        .zip(shapes)
        .any(|(s, shape)| s.len() != k * shape.iter().product::<usize>())
    {
        return;
    }
    // With a schedule Keras keeps no learning-rate variable: slots start at 1.
    let mut index = if opt.schedule().is_some() { 1 } else { 2 };
    for group in super::slot_groups(opt) {
        for (s, shape) in slots.iter().zip(shapes) {
            let n: usize = shape.iter().product();
            for j in group.iter().copied() {
                out.push((
                    format!("optimizer/vars/{index}"),
                    shape.clone(),
                    &s[j * n..(j + 1) * n],
                ));
                index += 1;
            }
        }
    }
}

impl<'a> Exported<'a> {
    /// A Sequential model's file contents.
    pub fn sequential(m: &'a crate::Sequential) -> Result<Self> {
        m.ensure_built()?;
        readable_count(m.layers().len(), 0)?;
        let input = m.get_input_shape().cloned().unwrap_or_default();
        let mut layers = vec![input_layer("input_layer", &input)?];
        let mut datasets = Vec::new();
        let mut keys = H5Names::default();
        let shapes = m.all_shapes();
        let mut trainable_shapes = Vec::new();
        let frozen = FrozenNames::of(m.frozen());
        for (i, (l, name)) in m.layers().iter().zip(m.layer_names()).enumerate() {
            let config = l
                .config()
                .ok_or_else(|| keras_error(format!("layer `{name}`"), "a custom layer"))?;
            let (class, mut cfg) = readable_layer(&config, name)?;
            frozen.mark(name, &mut cfg);
            layers.push(wrap(&class, cfg, Some(&shapes[i])));
            layer_datasets(&config, l.as_ref(), &keys.next(&class), &mut datasets);
            trainable_shapes.extend(
                l.params()
                    .into_iter()
                    .filter(|p| p.trainable)
                    .map(|p| p.shape),
            );
        }
        let mut config = json!({
            "module": "keras", "class_name": "Sequential",
            "config": {"name": m.model_name(), "trainable": true, "dtype": "float32", "layers": layers},
            "registered_name": null,
            "build_config": {"input_shape": batch_shape(&input)},
        });
        let mut iterations = None;
        let mut nadam = None;
        if let Some(c) = m.compiled() {
            let metrics: Vec<Value> = c
                .metric_names
                .iter()
                .zip(&c.metrics)
                .map(|(k, m)| metric_json(k, m))
                .collect();
            let weighted: Vec<Value> = c
                .weighted_names
                .iter()
                .zip(&c.weighted_metrics)
                .map(|(k, m)| metric_json(k, m))
                .collect();
            config["compile_config"] = json!({
                "optimizer": optimizer_json(&c.optimizer)?, "loss": loss_json(&c.loss),
                "loss_weights": null, "metrics": metrics,
                "weighted_metrics": if weighted.is_empty() { Value::Null } else { Value::Array(weighted) },
                "run_eagerly": false, "steps_per_execution": 1, "jit_compile": false,
            });
            (iterations, nadam) = optimizer_exports(&c.optimizer, &mut datasets, &trainable_shapes);
        }
        Ok(Exported {
            config,
            datasets,
            iterations,
            nadam_u: nadam,
        })
    }

    /// A functional model's file contents.
    pub fn functional(m: &'a crate::Model) -> Result<Self> {
        use crate::model::functional::graph::LayerKind;
        readable_count(m.layers.len() + m.inputs.len(), m.nodes.len())?;
        let n_in = m.inputs.len();
        // Each layer's calls, in order (Keras numbers them so).
        let mut call_index = vec![0usize; m.nodes.len()];
        let mut calls: Vec<Vec<&crate::model::functional::Node>> = vec![Vec::new(); m.layers.len()];
        for (k, node) in m.nodes.iter().enumerate() {
            call_index[k] = calls[node.layer].len();
            calls[node.layer].push(node);
        }
        let tensor = |t: usize| -> Value {
            if t < n_in {
                keras_tensor(&m.shapes[t], &m.inputs[t].0, 0)
            } else {
                let k = t - n_in;
                keras_tensor(
                    &m.shapes[t],
                    &m.layers[m.nodes[k].layer].name,
                    call_index[k],
                )
            }
        };
        let reference = |t: usize| -> Value {
            if t < n_in {
                json!([m.inputs[t].0, 0, 0])
            } else {
                let k = t - n_in;
                json!([m.layers[m.nodes[k].layer].name, call_index[k], 0])
            }
        };
        let mut layers: Vec<Value> = Vec::new();
        let mut keys = H5Names::default();
        for (name, shape) in &m.inputs {
            let mut v = input_layer(name, shape)?;
            v["name"] = Value::from(name.as_str());
            v["inbound_nodes"] = json!([]);
            keys.next("InputLayer");
            layers.push(v);
        }
        let mut datasets = Vec::new();
        let mut trainable_shapes = Vec::new();
        let frozen = FrozenNames::of(&m.frozen);
        for (l, layer) in m.layers.iter().enumerate() {
            let nodes = &calls[l];
            let first_in = nodes.first().map(|n| &m.shapes[n.inputs[0]]);
            let inbound: Vec<Value> = nodes
                .iter()
                .map(|n| {
                    let args: Vec<Value> = n.inputs.iter().map(|&t| tensor(t)).collect();
                    let kwargs = if frozen.inference.contains(layer.name.as_str()) {
                        json!({"training": false})
                    } else {
                        json!({})
                    };
                    match &layer.kind {
                        LayerKind::Merge(_) => json!({"args": [args], "kwargs": kwargs}),
                        LayerKind::Layer(_) => json!({"args": args, "kwargs": kwargs}),
                    }
                })
                .collect();
            let mut v = match &layer.kind {
                LayerKind::Layer(b) => {
                    let config = b.config().ok_or_else(|| {
                        keras_error(format!("layer `{}`", layer.name), "a custom layer")
                    })?;
                    let (class, mut cfg) = readable_layer(&config, &layer.name)?;
                    frozen.mark(&layer.name, &mut cfg);
                    layer_datasets(&config, b.as_ref(), &keys.next(&class), &mut datasets);
                    trainable_shapes.extend(
                        b.params()
                            .into_iter()
                            .filter(|p| p.trainable)
                            .map(|p| p.shape),
                    );
                    wrap(&class, cfg, first_in)
                }
                LayerKind::Merge(op) => {
                    keys.next(op.class_name());
                    let v = merge_json(op, &layer.name);
                    read_back(op.class_name(), &layer.name, &v)?;
                    wrap(op.class_name(), v, None)
                }
            };
            v["name"] = Value::from(layer.name.as_str());
            v["inbound_nodes"] = Value::Array(inbound);
            layers.push(v);
        }
        let inputs: Vec<Value> = (0..n_in).map(reference).collect();
        let outputs: Vec<Value> = m.outputs.iter().map(|&t| reference(t)).collect();
        let mut config = json!({
            "module": "keras.src.models.functional", "class_name": "Functional",
            "config": {"name": m.name, "trainable": true, "layers": layers,
                       "input_layers": inputs, "output_layers": outputs},
            "registered_name": "Functional",
            "build_config": {"input_shape": null},
        });
        let mut iterations = None;
        let mut nadam = None;
        if let Some(c) = &m.compiled {
            let names = m.output_names();
            let losses: Vec<Value> = c.outputs.iter().map(|o| loss_json(&o.loss)).collect();
            let weights: Vec<f32> = c.outputs.iter().map(|o| o.weight).collect();
            let mut metrics = serde_json::Map::new();
            let mut weighted = serde_json::Map::new();
            for (name, o) in names.iter().zip(&c.outputs) {
                let plain: Vec<Value> = o
                    .given
                    .iter()
                    .filter(|g| !g.2)
                    .map(|g| metric_json(&g.0, &g.1))
                    .collect();
                let w: Vec<Value> = o
                    .given
                    .iter()
                    .filter(|g| g.2)
                    .map(|g| metric_json(&g.0, &g.1))
                    .collect();
                if !plain.is_empty() {
                    metrics.insert(name.to_string(), Value::Array(plain));
                }
                if !w.is_empty() {
                    weighted.insert(name.to_string(), Value::Array(w));
                }
            }
            config["compile_config"] = json!({
                "optimizer": optimizer_json(&c.optimizer)?,
                "loss": if losses.len() == 1 { losses[0].clone() } else { Value::Array(losses) },
                "loss_weights": if weights.iter().all(|&w| w == 1.0) { Value::Null } else { json!(weights) },
                "metrics": if metrics.is_empty() { Value::Null } else { Value::Object(metrics) },
                "weighted_metrics": if weighted.is_empty() { Value::Null } else { Value::Object(weighted) },
                "run_eagerly": false, "steps_per_execution": 1, "jit_compile": false,
            });
            (iterations, nadam) = optimizer_exports(&c.optimizer, &mut datasets, &trainable_shapes);
        }
        Ok(Exported {
            config,
            datasets,
            iterations,
            nadam_u: nadam,
        })
    }

    /// The `.keras` archive's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let h5_error = |e: hdf5_writer::Error| keras_error("model.weights.h5", e);
        let mut b = Hdf5Builder::new();
        for (path, shape, values) in &self.datasets {
            let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
            b = b.dataset(
                DatasetBuilder::typed_data(path.as_str(), shape, values).map_err(h5_error)?,
            );
        }
        if let Some((it, lr)) = self.iterations {
            b = b.dataset(
                DatasetBuilder::typed_data("optimizer/vars/0", Vec::<u64>::new(), &[it as i64])
                    .map_err(h5_error)?,
            );
            if let Some(lr) = lr {
                b = b.dataset(
                    DatasetBuilder::typed_data("optimizer/vars/1", Vec::<u64>::new(), &[lr])
                        .map_err(h5_error)?,
                );
            }
            let first = if lr.is_some() { 2 } else { 1 };
            if let Some(u) = self.nadam_u {
                let slots = self
                    .datasets
                    .iter()
                    .filter(|d| d.0.starts_with("optimizer/"))
                    .count();
                let path = format!("optimizer/vars/{}", first + slots);
                b = b.dataset(
                    DatasetBuilder::typed_data(path.as_str(), Vec::<u64>::new(), &[u])
                        .map_err(h5_error)?,
                );
            }
        }
        let h5 = b
            .into_plan()
            .and_then(|p| p.encode(WriteOptions::default()))
            .map_err(h5_error)?;
        let config = serde_json::to_vec(&self.config).map_err(|e| keras_error("config.json", e))?;
        let metadata = json!({"keras_version": KERAS_VERSION, "date_saved": "horn"}).to_string();
        let mut buf = Cursor::new(Vec::new());
        {
            let mut zip = zip::ZipWriter::new(&mut buf);
            let opts = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored)
                .large_file(h5.len() > u32::MAX as usize / 2);
            for (name, data) in [
                ("metadata.json", metadata.as_bytes()),
                ("config.json", &config[..]),
                ("model.weights.h5", &h5[..]),
            ] {
                zip.start_file(name, opts)
                    .map_err(|e| keras_error("zip", e))?;
                zip.write_all(data).map_err(|e| keras_error("zip", e))?;
            }
            zip.finish().map_err(|e| keras_error("zip", e))?;
        }
        Ok(buf.into_inner())
    }
}
