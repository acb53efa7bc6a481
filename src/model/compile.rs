//! `compile`: binding an optimizer, a loss and metrics to a model.
//!
//! Metrics follow Keras 3 (`keras/src/trainers/compile_utils.py`):
//! - `metrics` are computed without sample or class weights, `weighted_metrics`
//!   with them;
//! - a metric given as a string logs under that string, a typed one under its
//!   Keras class's default name;
//! - a key used twice among `metrics` gets `_1`, `_2`, ...; a weighted metric
//!   whose key is taken gets the prefix `weighted_` (then `_1`, ...).

use super::Sequential;
use crate::error::{Error, Result};
use crate::losses::{IntoLoss, Loss};
use crate::metrics::{IntoMetric, Metric};
use crate::optimizers::{IntoOptimizer, Optimizer};

/// The metrics of [`Sequential::compile_with`] (Keras `compile(metrics=...,
/// weighted_metrics=...)`).
///
/// ```
/// use horn::prelude::*;
/// let mut model = Sequential::new().input(4).dense(3, Softmax);
/// model.compile_with("adam", "categorical_crossentropy",
///     CompileOptions::new().metrics(&["accuracy"]).weighted_metrics(&["accuracy"]))?;
/// assert_eq!(model.metric_keys(), ["accuracy", "weighted_accuracy"]);
/// # Ok::<(), horn::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct CompileOptions {
    metrics: Vec<(String, Metric)>,
    weighted_metrics: Vec<(String, Metric)>,
    /// The first unknown or invalid metric, reported by `compile_with`.
    error: Option<Error>,
}

impl CompileOptions {
    /// No metrics.
    pub fn new() -> Self {
        Self::default()
    }

    /// Metrics computed without sample or class weights (Keras `metrics`).
    pub fn metrics<M: IntoMetric + Clone>(mut self, metrics: &[M]) -> Self {
        let named = self.convert(metrics);
        self.metrics.extend(named);
        self
    }

    /// Metrics weighted by `sample_weight` and `class_weight` in `fit` and
    /// `evaluate` (Keras `weighted_metrics`).
    pub fn weighted_metrics<M: IntoMetric + Clone>(mut self, metrics: &[M]) -> Self {
        let named = self.convert(metrics);
        self.weighted_metrics.extend(named);
        self
    }

    /// Options from metrics with their keys (model loading).
    pub(crate) fn named(
        metrics: Vec<(String, Metric)>,
        weighted_metrics: Vec<(String, Metric)>,
    ) -> Self {
        let mut o = CompileOptions::new();
        for (_, m) in metrics.iter().chain(&weighted_metrics) {
            if let Err(e) = m.validate() {
                o.error.get_or_insert(e);
            }
        }
        o.metrics = metrics;
        o.weighted_metrics = weighted_metrics;
        o
    }

    fn convert<M: IntoMetric + Clone>(&mut self, metrics: &[M]) -> Vec<(String, Metric)> {
        let mut out = Vec::new();
        for m in metrics {
            match m.clone().into_named_metric().and_then(|(k, m)| {
                m.validate()?;
                Ok((k, m))
            }) {
                Ok(nm) => out.push(nm),
                Err(e) => {
                    self.error.get_or_insert(e);
                }
            }
        }
        out
    }
}

/// One compiled metric: its log key, its resolved form, and whether it is weighted.
#[derive(Debug, Clone)]
pub(crate) struct MetricEntry {
    pub key: String,
    pub resolved: Metric,
    pub weighted: bool,
}

/// What `compile` binds to a model.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    pub optimizer: Optimizer,
    pub loss: Loss,
    /// As given (unweighted), with the keys the user wrote.
    pub metrics: Vec<Metric>,
    pub metric_names: Vec<String>,
    /// As given (weighted), with their keys.
    pub weighted_metrics: Vec<Metric>,
    pub weighted_names: Vec<String>,
    /// Every metric in log order: unweighted, then weighted, keys made unique.
    pub entries: Vec<MetricEntry>,
    /// Loss fused with the output softmax/sigmoid.
    pub fused: bool,
}

/// Log keys in Keras' order and with its rules for repeated names.
pub(crate) fn unique_keys(plain: &[String], weighted: &[String]) -> Vec<String> {
    let mut counters: std::collections::HashMap<String, usize> = Default::default();
    let mut keys = Vec::new();
    for name in plain {
        let c = counters.entry(name.clone()).or_insert(0);
        keys.push(if *c == 0 {
            name.clone()
        } else {
            format!("{name}_{c}")
        });
        *c += 1;
    }
    for name in weighted {
        if !counters.contains_key(name) {
            counters.insert(name.clone(), 1);
            keys.push(name.clone());
            continue;
        }
        let base = format!("weighted_{name}");
        let c = counters.entry(base.clone()).or_insert(0);
        keys.push(if *c == 0 {
            base.clone()
        } else {
            format!("{base}_{c}")
        });
        *c += 1;
    }
    keys
}

impl Sequential {
    /// Binds an optimizer, a loss and metrics, as Keras' `compile`. Accepts typed
    /// values or Keras names:
    ///
    /// ```
    /// use horn::prelude::*;
    /// let mut model = Sequential::new().input(10).dense(1, Sigmoid);
    /// model.compile(Adam::default(), BinaryCrossentropy::default(), &[Metric::Accuracy]).unwrap();
    /// model.compile("rmsprop", "binary_crossentropy", &["accuracy"]).unwrap();
    /// assert!(model.compile("rmsprop", "binary_crossentropy", &["accurracy"]).is_err());
    /// ```
    ///
    /// Compiling again replaces the optimizer (and its state) but keeps the
    /// weights. The metrics are unweighted, as Keras' `metrics`; see
    /// [`Sequential::compile_with`] for `weighted_metrics`.
    pub fn compile<M: IntoMetric + Clone>(
        &mut self,
        optimizer: impl IntoOptimizer,
        loss: impl IntoLoss,
        metrics: &[M],
    ) -> Result<()> {
        self.compile_with(optimizer, loss, CompileOptions::new().metrics(metrics))
    }

    /// [`Sequential::compile`] with [`CompileOptions`] (weighted metrics).
    pub fn compile_with(
        &mut self,
        optimizer: impl IntoOptimizer,
        loss: impl IntoLoss,
        options: CompileOptions,
    ) -> Result<()> {
        // Without an input shape the model is built by the first `fit`, as
        // Keras builds on the first call; every other build problem is
        // reported now.
        if !self.awaits_input() {
            self.ensure_built()?;
        }
        let optimizer = optimizer.into_optimizer()?;
        optimizer.validate()?;
        let loss = loss.into_loss()?;
        loss.validate()?;
        if let Some(e) = options.error {
            return Err(e);
        }
        let (metric_names, metrics): (Vec<String>, Vec<Metric>) =
            options.metrics.into_iter().unzip();
        let (weighted_names, weighted_metrics): (Vec<String>, Vec<Metric>) =
            options.weighted_metrics.into_iter().unzip();
        let out = self.output_classes();
        let keys = unique_keys(&metric_names, &weighted_names);
        // Resolved again by `resolve_metrics` once an unbuilt model is built.
        let entries = metrics
            .iter()
            .map(|m| (m, false))
            .chain(weighted_metrics.iter().map(|m| (m, true)))
            .zip(keys)
            .map(|((m, weighted), key)| MetricEntry {
                key,
                resolved: m.resolve(&loss, out),
                weighted,
            })
            .collect();
        let last = self.layers.len() - 1;
        let fused = self.layers[last]
            .output_activation()
            .is_some_and(|a| loss.fuses_with(a));
        self.layers[last].keep_preactivation(fused);
        self.compiled = Some(Compiled {
            optimizer,
            loss,
            metrics,
            metric_names,
            weighted_metrics,
            weighted_names,
            entries,
            fused,
        });
        Ok(())
    }
}

impl Sequential {
    /// Positions per sample of the output: the product of every axis but
    /// the last (1 for a vector). Keras computes classification losses and
    /// metrics per position, over the last axis, and averages them.
    pub(crate) fn output_positions(&self) -> usize {
        self.output_shape().map_or(1, |s| {
            if s.rank() > 1 {
                s.size() / s.last().max(1)
            } else {
                1
            }
        })
    }

    /// The output width of one position (the last axis).
    pub(crate) fn output_classes(&self) -> usize {
        self.output_dim() / self.output_positions().max(1)
    }

    pub(crate) fn resolve_metrics(&mut self) {
        let out = self.output_classes();
        if let Some(c) = self.compiled_mut() {
            let loss = c.loss;
            let all: Vec<Metric> = c
                .metrics
                .iter()
                .chain(&c.weighted_metrics)
                .cloned()
                .collect();
            for (e, m) in c.entries.iter_mut().zip(&all) {
                e.resolved = m.resolve(&loss, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::unique_keys;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn keys_follow_keras_rules_for_repeats() {
        assert_eq!(
            unique_keys(&s(&["mae", "mae", "acc"]), &s(&["acc", "acc", "mse"])),
            s(&[
                "mae",
                "mae_1",
                "acc",
                "weighted_acc",
                "weighted_acc_1",
                "mse"
            ])
        );
    }
}
