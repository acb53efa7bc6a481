//! Callbacks: code that runs at the start and end of training, epochs and batches,
//! with access to the logs and the model (Keras `keras/src/callbacks/`).
//!
//! Callbacks are plain structs passed by mutable reference to
//! [`Sequential::fit_with_callbacks`] or [`Model::fit_with_callbacks`], so
//! their state (e.g.
//! [`EarlyStopping::stopped_epoch`]) is there to read after `fit`, and they can
//! be driven by hand in a loop of your own.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use ndarray::ArrayD;

use crate::error::{Error, Result};
use crate::model::{Logs, Model, Sequential};

/// What a callback can read of the model being trained, whichever kind it
/// is ([`Sequential`] or a functional [`Model`]).
pub trait TrainedModel {
    /// Copies of all weights, in Keras order.
    fn get_weights(&self) -> Result<Vec<ArrayD<f32>>>;
    /// The optimizer's current learning rate, once compiled.
    fn learning_rate(&self) -> Option<f32>;
    /// Saves the whole model (architecture, weights, optimizer state).
    fn save(&self, path: &Path) -> Result<()>;
    /// Saves the weights only, under their Keras names.
    fn save_weights(&self, path: &Path) -> Result<()>;
    /// The `summary()` table.
    fn summary(&self) -> String;
    /// Total number of weights.
    fn count_params(&self) -> usize;
}

macro_rules! trained_model {
    ($t:ty) => {
        impl TrainedModel for $t {
            fn get_weights(&self) -> Result<Vec<ArrayD<f32>>> {
                <$t>::get_weights(self)
            }
            fn learning_rate(&self) -> Option<f32> {
                <$t>::learning_rate(self)
            }
            fn save(&self, path: &Path) -> Result<()> {
                <$t>::save(self, path)
            }
            fn save_weights(&self, path: &Path) -> Result<()> {
                <$t>::save_weights(self, path)
            }
            fn summary(&self) -> String {
                <$t>::summary(self)
            }
            fn count_params(&self) -> usize {
                <$t>::count_params(self)
            }
        }
    };
}
trained_model!(Sequential);
trained_model!(Model);

/// The model a context hands to callbacks.
enum Trained<'a> {
    Sequential(&'a mut Sequential),
    Functional(&'a mut Model),
}

/// What a callback sees: the model (read-only), its weights and learning rate
/// (writable), and a way to stop.
///
/// The handle is deliberately narrower than `&mut Sequential`: `fit` sizes its
/// buffers for the model's architecture once, so a callback may change the
/// values of the weights ([`CallbackContext::set_weights`], shape-checked) and
/// the learning rate, but not the layers or the compile settings.
///
/// ```
/// use horn::prelude::*;
/// let mut model = Sequential::new().seed(1).input(2).dense(1, Linear);
/// model.compile("sgd", "mse", &[] as &[Metric]).unwrap();
/// let mut ctx = CallbackContext::manual(&mut model);
/// let w = ctx.model().get_weights().unwrap();
/// ctx.set_weights(&w).unwrap();
/// ctx.set_learning_rate(0.5).unwrap();
/// assert_eq!(ctx.model().learning_rate(), Some(0.5));
/// assert!(ctx.sequential().is_some());
/// ```
pub struct CallbackContext<'a> {
    model: Trained<'a>,
    stop: bool,
}

impl<'a> CallbackContext<'a> {
    pub(crate) fn new(model: &'a mut Sequential) -> Self {
        CallbackContext {
            model: Trained::Sequential(model),
            stop: false,
        }
    }

    pub(crate) fn functional(model: &'a mut Model) -> Self {
        CallbackContext {
            model: Trained::Functional(model),
            stop: false,
        }
    }

    /// The model being trained, as what every model offers (weights,
    /// learning rate, saving); [`CallbackContext::sequential`] and
    /// [`CallbackContext::functional_model`] give the model itself.
    pub fn model(&self) -> &dyn TrainedModel {
        match &self.model {
            Trained::Sequential(m) => &**m,
            Trained::Functional(m) => &**m,
        }
    }

    /// This process's rank in a data-parallel `fit`
    /// (`FitOptions::distribution`, feature `distribute`), 0 otherwise. Callbacks that write files or print should do so on rank 0
    /// only, as the built-in `ModelCheckpoint` and `CsvLogger` do; callbacks
    /// that decide (stop, change the learning rate) run on every rank and
    /// see the same logs, so they decide alike.
    pub fn rank(&self) -> usize {
        #[cfg(feature = "distribute")]
        return crate::distribute::current_rank();
        #[cfg(not(feature = "distribute"))]
        0
    }

    /// The model, when it is a [`Sequential`].
    pub fn sequential(&self) -> Option<&Sequential> {
        match &self.model {
            Trained::Sequential(m) => Some(m),
            Trained::Functional(_) => None,
        }
    }

    /// The model, when it is a functional [`Model`].
    pub fn functional_model(&self) -> Option<&Model> {
        match &self.model {
            Trained::Functional(m) => Some(m),
            Trained::Sequential(_) => None,
        }
    }

    /// Replaces the weights, in the order of `get_weights`; every shape must
    /// match the model's (checked before anything changes).
    pub fn set_weights(&mut self, weights: &[ArrayD<f32>]) -> Result<()> {
        match &mut self.model {
            Trained::Sequential(m) => m.set_weights(weights),
            Trained::Functional(m) => m.set_weights(weights),
        }
    }

    /// Sets the optimizer's learning rate for the next steps.
    pub fn set_learning_rate(&mut self, lr: f32) -> Result<()> {
        match &mut self.model {
            Trained::Sequential(m) => m.set_learning_rate(lr),
            Trained::Functional(m) => m.set_learning_rate(lr),
        }
    }

    /// Asks `fit` to stop after the current batch or epoch (Keras
    /// `model.stop_training = TRUE`).
    pub fn stop_training(&mut self) {
        self.stop = true;
    }

    /// Whether a callback asked to stop.
    pub fn stop_requested(&self) -> bool {
        self.stop
    }

    /// A context for driving callbacks by hand from a training loop of your own.
    pub fn manual(model: &'a mut Sequential) -> Self {
        Self::new(model)
    }

    /// [`CallbackContext::manual`] for a functional [`Model`].
    pub fn manual_functional(model: &'a mut Model) -> Self {
        Self::functional(model)
    }
}

/// Runs a training run between the callbacks' `on_train_begin` and
/// `on_train_end`: `train` gets the model, the callbacks and the logs to
/// leave for `on_train_end`. `on_train_end` runs on every path once
/// `on_train_begin` has, errors included (callbacks restore weights and
/// close files); the first error wins. A stop requested in
/// `on_train_begin` skips `train`.
pub(crate) fn with_train_hooks<M>(
    model: &mut M,
    context: impl for<'m> Fn(&'m mut M) -> CallbackContext<'m>,
    callbacks: &mut [&mut dyn Callback],
    train: impl FnOnce(&mut M, &mut [&mut dyn Callback], &mut Logs) -> Result<()>,
) -> Result<()> {
    let mut ctx = context(model);
    for cb in callbacks.iter_mut() {
        cb.on_train_begin(&mut ctx)?;
    }
    let stop = ctx.stop_requested();
    let mut last_logs = Logs::default();
    let result = if stop {
        Ok(())
    } else {
        train(model, callbacks, &mut last_logs)
    };
    let mut ctx = context(model);
    let mut end = Ok(());
    for cb in callbacks.iter_mut() {
        let r = cb.on_train_end(&last_logs, &mut ctx);
        if end.is_ok() {
            end = r;
        }
    }
    result.and(end)
}

/// Hooks called by `fit`. Every method has an empty default.
///
/// ```
/// use horn::prelude::*;
/// use horn::callbacks::{Callback, CallbackContext};
///
/// /// Stops once the training loss falls below a target.
/// struct StopBelow(f32);
/// impl Callback for StopBelow {
///     fn on_epoch_end(&mut self, _epoch: usize, logs: &mut Logs, ctx: &mut CallbackContext<'_>)
///         -> horn::Result<()> {
///         if logs.get("loss").is_some_and(|l| l < self.0) { ctx.stop_training(); }
///         Ok(())
///     }
/// }
/// ```
#[allow(unused_variables)]
pub trait Callback {
    /// Before the first epoch.
    fn on_train_begin(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        Ok(())
    }
    /// After the last epoch, with the last epoch's logs.
    fn on_train_end(&mut self, logs: &Logs, ctx: &mut CallbackContext<'_>) -> Result<()> {
        Ok(())
    }
    /// Before each epoch (0-based).
    fn on_epoch_begin(&mut self, epoch: usize, ctx: &mut CallbackContext<'_>) -> Result<()> {
        Ok(())
    }
    /// After each epoch, with its training and validation values; a callback may
    /// add entries (e.g. `lr`).
    fn on_epoch_end(
        &mut self,
        epoch: usize,
        logs: &mut Logs,
        ctx: &mut CallbackContext<'_>,
    ) -> Result<()> {
        Ok(())
    }
    /// Before each batch (0-based within the epoch).
    fn on_batch_begin(&mut self, batch: usize, ctx: &mut CallbackContext<'_>) -> Result<()> {
        Ok(())
    }
    /// After each batch, with the epoch's running values.
    fn on_batch_end(
        &mut self,
        batch: usize,
        logs: &Logs,
        ctx: &mut CallbackContext<'_>,
    ) -> Result<()> {
        Ok(())
    }
}

/// Whether a monitored quantity improves when it goes down or up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `max` for names ending in `acc`, `accuracy` or `auc`, else `min` (Keras).
    Auto,
    /// Lower is better.
    Min,
    /// Higher is better.
    Max,
}

impl Mode {
    /// The starting "best" value: worse than anything the monitor can report.
    fn worst(self, monitor: &str) -> f32 {
        if self.maximize(monitor) {
            f32::NEG_INFINITY
        } else {
            f32::INFINITY
        }
    }

    fn maximize(self, monitor: &str) -> bool {
        match self {
            Mode::Max => true,
            Mode::Min => false,
            Mode::Auto => {
                monitor.ends_with("acc")
                    || monitor.ends_with("accuracy")
                    || monitor.ends_with("auc")
            }
        }
    }
}

fn monitored(logs: &Logs, monitor: &str) -> Result<f32> {
    logs.get(monitor).ok_or_else(|| {
        let keys: Vec<&str> = logs.iter().map(|(k, _)| k).collect();
        Error::arg(
            "monitor",
            format!("one of the logged values ({})", keys.join(", ")),
            monitor,
        )
    })
}

/// Stops training when a monitored value stops improving (Keras `EarlyStopping`).
///
/// Keras defaults: monitor `val_loss`, min_delta 0, patience 0, mode auto, no
/// baseline, restore_best_weights false, start_from_epoch 0. As in Keras 3, with
/// `restore_best_weights` the best weights are restored at the end of training
/// even when stopping never fired.
///
/// ```
/// use horn::callbacks::EarlyStopping;
/// let es = EarlyStopping::default().patience(3).restore_best_weights(true);
/// assert_eq!(es.monitor, "val_loss");
/// ```
#[derive(Debug, Clone)]
pub struct EarlyStopping {
    /// The logged value to watch.
    pub monitor: String,
    /// Smallest change that counts as an improvement.
    pub min_delta: f32,
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// Whether lower or higher is better.
    pub mode: Mode,
    /// A value the monitor must beat for the wait to reset.
    pub baseline: Option<f32>,
    /// Restore the best epoch's weights at the end.
    pub restore_best_weights: bool,
    /// Epochs to train before watching.
    pub start_from_epoch: usize,
    /// 1 prints a line when it stops and when it restores weights (Keras
    /// default 0, silent).
    pub verbose: u8,
    /// The epoch at which training stopped (0 if it did not).
    pub stopped_epoch: usize,
    /// The best epoch seen.
    pub best_epoch: usize,
    /// The best value seen.
    pub best: f32,
    wait: usize,
    best_weights: Option<Vec<ArrayD<f32>>>,
}

impl Default for EarlyStopping {
    fn default() -> Self {
        EarlyStopping {
            monitor: "val_loss".into(),
            min_delta: 0.0,
            patience: 0,
            mode: Mode::Auto,
            baseline: None,
            restore_best_weights: false,
            start_from_epoch: 0,
            verbose: 0,
            stopped_epoch: 0,
            best_epoch: 0,
            best: f32::INFINITY,
            wait: 0,
            best_weights: None,
        }
    }
}

impl EarlyStopping {
    /// Watches `monitor` (default `val_loss`).
    pub fn monitor(mut self, monitor: impl Into<String>) -> Self {
        self.monitor = monitor.into();
        self
    }
    /// Smallest change that counts as an improvement (default 0).
    pub fn min_delta(mut self, v: f32) -> Self {
        self.min_delta = v;
        self
    }
    /// Epochs without improvement before stopping (default 0).
    pub fn patience(mut self, v: usize) -> Self {
        self.patience = v;
        self
    }
    /// Direction of improvement (default auto).
    pub fn mode(mut self, v: Mode) -> Self {
        self.mode = v;
        self
    }
    /// A value the monitor must beat (default none).
    pub fn baseline(mut self, v: f32) -> Self {
        self.baseline = Some(v);
        self
    }
    /// Restore the best weights at the end (default false).
    pub fn restore_best_weights(mut self, v: bool) -> Self {
        self.restore_best_weights = v;
        self
    }
    /// Epochs to train before watching (default 0).
    pub fn start_from_epoch(mut self, v: usize) -> Self {
        self.start_from_epoch = v;
        self
    }
    /// 1 prints Keras' messages when stopping and restoring (default 0).
    pub fn verbose(mut self, v: u8) -> Self {
        self.verbose = v;
        self
    }

    fn improves(&self, current: f32, reference: f32) -> bool {
        let d = self.min_delta.abs();
        if self.mode.maximize(&self.monitor) {
            current - d > reference
        } else {
            current + d < reference
        }
    }
}

impl Callback for EarlyStopping {
    fn on_train_begin(&mut self, _ctx: &mut CallbackContext<'_>) -> Result<()> {
        if !self.min_delta.is_finite() {
            return Err(Error::arg("min_delta", "a finite number", self.min_delta));
        }
        self.wait = 0;
        self.stopped_epoch = 0;
        self.best_epoch = 0;
        self.best_weights = None;
        self.best = self.mode.worst(&self.monitor);
        Ok(())
    }

    fn on_epoch_end(
        &mut self,
        epoch: usize,
        logs: &mut Logs,
        ctx: &mut CallbackContext<'_>,
    ) -> Result<()> {
        let current = monitored(logs, &self.monitor)?;
        if epoch < self.start_from_epoch {
            return Ok(());
        }
        if self.restore_best_weights && self.best_weights.is_none() {
            self.best_weights = Some(ctx.model().get_weights()?);
            self.best_epoch = epoch;
        }
        self.wait += 1;
        if self.improves(current, self.best) {
            self.best = current;
            self.best_epoch = epoch;
            if self.restore_best_weights {
                self.best_weights = Some(ctx.model().get_weights()?);
            }
            if self.baseline.is_none_or(|b| self.improves(current, b)) {
                self.wait = 0;
            }
            return Ok(());
        }
        if self.wait >= self.patience && epoch > 0 {
            self.stopped_epoch = epoch;
            ctx.stop_training();
        }
        Ok(())
    }

    fn on_train_end(&mut self, _logs: &Logs, ctx: &mut CallbackContext<'_>) -> Result<()> {
        if self.stopped_epoch > 0 && self.verbose > 0 {
            println!("Epoch {}: early stopping", self.stopped_epoch + 1);
        }
        if self.restore_best_weights {
            if let Some(w) = self.best_weights.take() {
                if self.verbose > 0 {
                    println!(
                        "Restoring model weights from the end of the best epoch: {}.",
                        self.best_epoch + 1
                    );
                }
                ctx.set_weights(&w)?;
            }
        }
        Ok(())
    }
}

/// Lowers the learning rate when a monitored value plateaus (Keras
/// `ReduceLROnPlateau`); adds `lr` to the logs every epoch, so History shows it.
///
/// Keras defaults: monitor `val_loss`, factor 0.1, patience 10, mode auto,
/// min_delta 1e-4, cooldown 0, min_lr 0.
#[derive(Debug, Clone)]
pub struct ReduceLrOnPlateau {
    /// The logged value to watch.
    pub monitor: String,
    /// Multiplier applied to the rate, in `(0, 1)`.
    pub factor: f32,
    /// Epochs without improvement before reducing.
    pub patience: usize,
    /// Whether lower or higher is better.
    pub mode: Mode,
    /// Smallest change that counts as an improvement.
    pub min_delta: f32,
    /// Epochs to wait after a reduction.
    pub cooldown: usize,
    /// Lower bound on the rate.
    pub min_lr: f32,
    best: f32,
    wait: usize,
    cooldown_counter: usize,
}

impl Default for ReduceLrOnPlateau {
    fn default() -> Self {
        ReduceLrOnPlateau {
            monitor: "val_loss".into(),
            factor: 0.1,
            patience: 10,
            mode: Mode::Auto,
            min_delta: 1e-4,
            cooldown: 0,
            min_lr: 0.0,
            best: f32::INFINITY,
            wait: 0,
            cooldown_counter: 0,
        }
    }
}

impl ReduceLrOnPlateau {
    /// Watches `monitor` (default `val_loss`).
    pub fn monitor(mut self, monitor: impl Into<String>) -> Self {
        self.monitor = monitor.into();
        self
    }
    /// Rate multiplier in `(0, 1)` (default 0.1).
    pub fn factor(mut self, v: f32) -> Self {
        self.factor = v;
        self
    }
    /// Epochs without improvement before reducing (default 10).
    pub fn patience(mut self, v: usize) -> Self {
        self.patience = v;
        self
    }
    /// Direction of improvement (default auto).
    pub fn mode(mut self, v: Mode) -> Self {
        self.mode = v;
        self
    }
    /// Smallest change that counts as an improvement (default 1e-4).
    pub fn min_delta(mut self, v: f32) -> Self {
        self.min_delta = v;
        self
    }
    /// Epochs to wait after a reduction (default 0).
    pub fn cooldown(mut self, v: usize) -> Self {
        self.cooldown = v;
        self
    }
    /// Lower bound on the rate (default 0).
    pub fn min_lr(mut self, v: f32) -> Self {
        self.min_lr = v;
        self
    }
}

impl Callback for ReduceLrOnPlateau {
    fn on_train_begin(&mut self, _ctx: &mut CallbackContext<'_>) -> Result<()> {
        if !(self.factor > 0.0 && self.factor < 1.0) {
            return Err(Error::arg("factor", "a number in (0, 1)", self.factor));
        }
        if self.min_lr.is_nan() || self.min_lr < 0.0 {
            return Err(Error::arg("min_lr", "a non-negative number", self.min_lr));
        }
        self.best = self.mode.worst(&self.monitor);
        self.wait = 0;
        self.cooldown_counter = 0;
        Ok(())
    }

    fn on_epoch_end(
        &mut self,
        _epoch: usize,
        logs: &mut Logs,
        ctx: &mut CallbackContext<'_>,
    ) -> Result<()> {
        let lr = ctx
            .model()
            .learning_rate()
            .ok_or(Error::NotCompiled("ReduceLrOnPlateau"))?;
        logs.insert("lr", lr);
        let current = monitored(logs, &self.monitor)?;
        let better = if self.mode.maximize(&self.monitor) {
            current > self.best + self.min_delta
        } else {
            current < self.best - self.min_delta
        };
        let in_cooldown = self.cooldown_counter > 0;
        if in_cooldown {
            self.cooldown_counter -= 1;
            self.wait = 0;
        }
        if better {
            self.best = current;
            self.wait = 0;
        } else if !in_cooldown {
            self.wait += 1;
            if self.wait >= self.patience && lr > self.min_lr {
                ctx.set_learning_rate((lr * self.factor).max(self.min_lr))?;
                self.cooldown_counter = self.cooldown;
                self.wait = 0;
            }
        }
        Ok(())
    }
}

/// Sets the learning rate at each epoch's start from `schedule(epoch, lr)` (Keras
/// `LearningRateScheduler`); adds `lr` to the logs.
pub struct LearningRateScheduler<F: FnMut(usize, f32) -> f32> {
    /// `(epoch, current rate) -> new rate`.
    pub schedule: F,
}

impl<F: FnMut(usize, f32) -> f32> LearningRateScheduler<F> {
    /// A scheduler from a closure.
    pub fn new(schedule: F) -> Self {
        LearningRateScheduler { schedule }
    }
}

impl<F: FnMut(usize, f32) -> f32> Callback for LearningRateScheduler<F> {
    fn on_epoch_begin(&mut self, epoch: usize, ctx: &mut CallbackContext<'_>) -> Result<()> {
        let lr = ctx
            .model()
            .learning_rate()
            .ok_or(Error::NotCompiled("LearningRateScheduler"))?;
        let new = (self.schedule)(epoch, lr);
        ctx.set_learning_rate(new)
    }

    fn on_epoch_end(
        &mut self,
        _epoch: usize,
        logs: &mut Logs,
        ctx: &mut CallbackContext<'_>,
    ) -> Result<()> {
        if let Some(lr) = ctx.model().learning_rate() {
            logs.insert("lr", lr);
        }
        Ok(())
    }
}

/// Stops training when a logged value becomes NaN or infinite (Keras
/// `TerminateOnNaN`). A NaN *training* loss already ends `fit` with
/// [`Error::Diverged`]; this callback also catches a non-finite validation loss
/// and ends training cleanly instead.
#[derive(Debug, Clone, Default)]
pub struct TerminateOnNaN {
    /// Whether it fired.
    pub terminated: bool,
}

impl Callback for TerminateOnNaN {
    fn on_batch_end(
        &mut self,
        _batch: usize,
        logs: &Logs,
        ctx: &mut CallbackContext<'_>,
    ) -> Result<()> {
        if logs.get("loss").is_some_and(|l| !l.is_finite()) {
            self.terminated = true;
            ctx.stop_training();
        }
        Ok(())
    }

    fn on_epoch_end(
        &mut self,
        _epoch: usize,
        logs: &mut Logs,
        ctx: &mut CallbackContext<'_>,
    ) -> Result<()> {
        if logs
            .iter()
            .any(|(k, v)| k.ends_with("loss") && !v.is_finite())
        {
            self.terminated = true;
            ctx.stop_training();
        }
        Ok(())
    }
}

/// Streams each epoch's logs to a CSV file (Keras `CSVLogger`): an `epoch`
/// column, then the log keys sorted by name, one row per epoch.
#[derive(Debug)]
pub struct CsvLogger {
    /// The file to write.
    pub path: PathBuf,
    /// Field separator (Keras default `,`).
    pub separator: char,
    /// Append to an existing file instead of truncating it (Keras default false).
    pub append: bool,
    writer: Option<BufWriter<File>>,
    keys: Vec<String>,
}

impl CsvLogger {
    /// A logger writing to `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        CsvLogger {
            path: path.into(),
            separator: ',',
            append: false,
            writer: None,
            keys: Vec::new(),
        }
    }
}

impl Callback for CsvLogger {
    fn on_train_begin(&mut self, ctx: &mut CallbackContext<'_>) -> Result<()> {
        if ctx.rank() != 0 {
            // Data-parallel: rank 0 writes the file.
            self.writer = None;
            return Ok(());
        }
        let existed = self.path.exists() && self.append;
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .append(self.append)
            .truncate(!self.append)
            .open(&self.path)
            .map_err(|e| Error::io(&self.path, e))?;
        self.writer = Some(BufWriter::new(file));
        self.keys.clear();
        if existed {
            // Keep appending under the existing header.
            self.keys.push(String::new());
        }
        Ok(())
    }

    fn on_epoch_end(
        &mut self,
        epoch: usize,
        logs: &mut Logs,
        _ctx: &mut CallbackContext<'_>,
    ) -> Result<()> {
        let sep = self.separator.to_string();
        let Some(w) = self.writer.as_mut() else {
            return Ok(());
        };
        let path = self.path.clone();
        let io = |e| Error::io(&path, e);
        if self.keys.is_empty() {
            let mut keys: Vec<String> = logs.iter().map(|(k, _)| k.to_string()).collect();
            keys.sort();
            writeln!(w, "epoch{sep}{}", keys.join(&sep)).map_err(io)?;
            self.keys = keys;
        } else if self.keys.len() == 1 && self.keys[0].is_empty() {
            let mut keys: Vec<String> = logs.iter().map(|(k, _)| k.to_string()).collect();
            keys.sort();
            self.keys = keys;
        }
        let vals: Vec<String> = self
            .keys
            .iter()
            .map(|k| logs.get(k).map_or(String::new(), |v| v.to_string()))
            .collect();
        writeln!(w, "{epoch}{sep}{}", vals.join(&sep)).map_err(io)?;
        w.flush().map_err(io)
    }

    fn on_train_end(&mut self, _logs: &Logs, _ctx: &mut CallbackContext<'_>) -> Result<()> {
        if let Some(mut w) = self.writer.take() {
            w.flush().map_err(|e| Error::io(&self.path, e))?;
        }
        Ok(())
    }
}

type EpochFn<'f> = Box<dyn FnMut(usize, &Logs) + 'f>;
type TrainEndFn<'f> = Box<dyn FnMut(&Logs) + 'f>;

/// A callback made of closures (Keras `LambdaCallback`).
///
/// ```
/// use horn::callbacks::LambdaCallback;
/// let mut seen = Vec::new();
/// let cb = LambdaCallback::default().on_epoch_end(|epoch, logs| seen.push((epoch, logs.get("loss"))));
/// # drop(cb);
/// ```
#[derive(Default)]
pub struct LambdaCallback<'f> {
    epoch_begin: Option<Box<dyn FnMut(usize) + 'f>>,
    epoch_end: Option<EpochFn<'f>>,
    batch_end: Option<EpochFn<'f>>,
    train_end: Option<TrainEndFn<'f>>,
}

impl<'f> LambdaCallback<'f> {
    /// Runs `f(epoch)` before each epoch.
    pub fn on_epoch_begin(mut self, f: impl FnMut(usize) + 'f) -> Self {
        self.epoch_begin = Some(Box::new(f));
        self
    }
    /// Runs `f(epoch, logs)` after each epoch.
    pub fn on_epoch_end(mut self, f: impl FnMut(usize, &Logs) + 'f) -> Self {
        self.epoch_end = Some(Box::new(f));
        self
    }
    /// Runs `f(batch, logs)` after each batch.
    pub fn on_batch_end(mut self, f: impl FnMut(usize, &Logs) + 'f) -> Self {
        self.batch_end = Some(Box::new(f));
        self
    }
    /// Runs `f(logs)` at the end of training.
    pub fn on_train_end(mut self, f: impl FnMut(&Logs) + 'f) -> Self {
        self.train_end = Some(Box::new(f));
        self
    }
}

impl Callback for LambdaCallback<'_> {
    fn on_epoch_begin(&mut self, epoch: usize, _ctx: &mut CallbackContext<'_>) -> Result<()> {
        if let Some(f) = &mut self.epoch_begin {
            f(epoch);
        }
        Ok(())
    }
    fn on_epoch_end(
        &mut self,
        epoch: usize,
        logs: &mut Logs,
        _ctx: &mut CallbackContext<'_>,
    ) -> Result<()> {
        if let Some(f) = &mut self.epoch_end {
            f(epoch, logs);
        }
        Ok(())
    }
    fn on_batch_end(
        &mut self,
        batch: usize,
        logs: &Logs,
        _ctx: &mut CallbackContext<'_>,
    ) -> Result<()> {
        if let Some(f) = &mut self.batch_end {
            f(batch, logs);
        }
        Ok(())
    }
    fn on_train_end(&mut self, logs: &Logs, _ctx: &mut CallbackContext<'_>) -> Result<()> {
        if let Some(f) = &mut self.train_end {
            f(logs);
        }
        Ok(())
    }
}

/// Saves the model (or only its weights) after epochs (Keras `ModelCheckpoint`).
///
/// `filepath` may hold Keras placeholders: `{epoch}` / `{epoch:02d}` (1-based, as
/// Keras), and any log key as `{val_loss}` or `{val_loss:.4f}`. Keras defaults:
/// monitor `val_loss`, save_best_only false, save_weights_only false, mode auto.
///
/// ```
/// use horn::callbacks::ModelCheckpoint;
/// let cp = ModelCheckpoint::new("model-{epoch:02d}-{val_loss:.3f}.safetensors").save_best_only(true);
/// assert_eq!(cp.monitor, "val_loss");
/// ```
#[derive(Debug, Clone)]
pub struct ModelCheckpoint {
    /// Path template.
    pub filepath: String,
    /// The logged value compared with `save_best_only`.
    pub monitor: String,
    /// Save only when the monitored value improves.
    pub save_best_only: bool,
    /// Write weights only ([`Sequential::save_weights`]) instead of the whole model.
    pub save_weights_only: bool,
    /// Whether lower or higher is better.
    pub mode: Mode,
    /// Paths written so far.
    pub saved: Vec<PathBuf>,
    best: Option<f32>,
}

impl ModelCheckpoint {
    /// A checkpoint writing to `filepath` after every epoch.
    pub fn new(filepath: impl Into<String>) -> Self {
        ModelCheckpoint {
            filepath: filepath.into(),
            monitor: "val_loss".into(),
            save_best_only: false,
            save_weights_only: false,
            mode: Mode::Auto,
            saved: Vec::new(),
            best: None,
        }
    }
    /// Watches `monitor` (default `val_loss`).
    pub fn monitor(mut self, monitor: impl Into<String>) -> Self {
        self.monitor = monitor.into();
        self
    }
    /// Save only improvements (default false).
    pub fn save_best_only(mut self, v: bool) -> Self {
        self.save_best_only = v;
        self
    }
    /// Save weights only (default false).
    pub fn save_weights_only(mut self, v: bool) -> Self {
        self.save_weights_only = v;
        self
    }
    /// Direction of improvement (default auto).
    pub fn mode(mut self, v: Mode) -> Self {
        self.mode = v;
        self
    }

    /// The path for an epoch, placeholders filled in as Python's
    /// `str.format` fills Keras' (`{epoch}`, `{epoch:02d}`, `{val_loss}`,
    /// `{val_loss:.3f}`, `{{` for a literal brace). A placeholder naming no
    /// logged value, or a format other than `d`/`0Nd` for the epoch and `.Nf`
    /// for values, is an error (Keras: "Failed to format this callback
    /// filepath"), never a literal file name.
    ///
    /// ```
    /// use horn::callbacks::ModelCheckpoint;
    /// use horn::Logs;
    /// let mut logs = Logs::default();
    /// logs.insert("val_loss", 0.12345);
    /// let cp = ModelCheckpoint::new("ckpt-{epoch:02d}-{val_loss:.2f}.safetensors");
    /// assert_eq!(cp.path_for(2, &logs).unwrap().to_str(), Some("ckpt-03-0.12.safetensors"));
    /// assert!(ModelCheckpoint::new("ckpt-{val_acc}.st").path_for(0, &logs).is_err());
    /// ```
    pub fn path_for(&self, epoch: usize, logs: &Logs) -> Result<PathBuf> {
        let bad = |why: String| Error::arg("filepath", why, &self.filepath);
        let mut out = String::new();
        let mut chars = self.filepath.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    out.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    out.push('}');
                }
                '{' => {
                    let mut field = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(ch) => field.push(ch),
                            None => return Err(bad("a placeholder closed by `}`".into())),
                        }
                    }
                    let (key, spec) = field.split_once(':').unwrap_or((field.as_str(), ""));
                    if key == "epoch" {
                        let e = epoch + 1;
                        let width = spec
                            .strip_suffix('d')
                            .map(|w| w.trim_start_matches('0'))
                            .filter(|_| !spec.is_empty());
                        out.push_str(&match (spec, width) {
                            ("", _) => e.to_string(),
                            (_, Some("")) => e.to_string(),
                            (_, Some(w)) => match w.parse::<usize>() {
                                Ok(w) => format!("{e:0w$}"),
                                Err(_) => {
                                    return Err(bad(format!(
                                        "an epoch format like `02d`, not `{spec}`"
                                    )))
                                }
                            },
                            _ => {
                                return Err(bad(format!(
                                    "an epoch format like `02d`, not `{spec}`"
                                )))
                            }
                        });
                        continue;
                    }
                    let v = logs.get(key).ok_or_else(|| {
                        let keys: Vec<&str> = logs.iter().map(|(k, _)| k).collect();
                        bad(format!(
                            "placeholders naming `epoch` or a logged value ({}); `{key}` is not logged",
                            keys.join(", ")
                        ))
                    })?;
                    let decimals = spec
                        .strip_prefix('.')
                        .and_then(|d| d.strip_suffix('f'))
                        .and_then(|d| d.parse::<usize>().ok());
                    out.push_str(&match (spec, decimals) {
                        ("", _) => v.to_string(),
                        (_, Some(d)) => format!("{v:.d$}"),
                        _ => return Err(bad(format!("a value format like `.3f`, not `{spec}`"))),
                    });
                }
                '}' => {
                    return Err(bad(
                        "`}` only to close a placeholder (write `}}` for a brace)".into(),
                    ))
                }
                c => out.push(c),
            }
        }
        Ok(PathBuf::from(out))
    }
}

impl Callback for ModelCheckpoint {
    fn on_train_begin(&mut self, _ctx: &mut CallbackContext<'_>) -> Result<()> {
        self.best = None;
        Ok(())
    }

    fn on_epoch_end(
        &mut self,
        epoch: usize,
        logs: &mut Logs,
        ctx: &mut CallbackContext<'_>,
    ) -> Result<()> {
        if self.save_best_only {
            let current = monitored(logs, &self.monitor)?;
            let better = match self.best {
                None => true,
                Some(b) if self.mode.maximize(&self.monitor) => current > b,
                Some(b) => current < b,
            };
            if !better {
                return Ok(());
            }
            self.best = Some(current);
        }
        let path = self.path_for(epoch, logs)?;
        if ctx.rank() != 0 {
            // Data-parallel: every rank holds the same model; rank 0 writes it.
            return Ok(());
        }
        // Keras creates the checkpoint's folder; so does horn.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        if self.save_weights_only {
            ctx.model().save_weights(&path)?;
        } else {
            ctx.model().save(&path)?;
        }
        self.saved.push(path);
        Ok(())
    }
}
