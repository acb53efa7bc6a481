//! `fit`: the epoch loop.
//!
//! One training step, for a batch of `nb` row indices:
//! 1. gather the rows of `x`, `y` and the sample weights into the workspace;
//! 2. forward through every layer (dropout draws from a stream seeded by
//!    `(seed, epoch, step)`);
//! 3. per-sample losses and their gradients (fused softmax/sigmoid +
//!    cross-entropy gives `p - y` directly), scaled by `w_i / nb`;
//! 4. backward through every layer into the parameter gradients;
//! 5. one optimizer pass over each weight tensor.
//!
//! The matrix products split their output into blocks fixed by the shapes, and
//! every other reduction runs in row order, so the result does not depend on the
//! number of rayon threads.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ndarray::{Array2, ArrayView2};

use super::IntoInput;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::data_parallel::{self, ParallelRun};
use super::history::{History, HistoryParams, Logs};
use super::infer::gather_rows;
use super::progress::Progress;
use super::validate;
use super::workspace::{view, view_mut, Workspace};
use super::Sequential;
use crate::callbacks::{with_train_hooks, Callback, CallbackContext};
#[cfg(feature = "distribute")]
use crate::distribute::DataParallel;
use crate::error::{Error, Result};
use crate::losses::Loss;
use crate::metrics::{argmax, MetricState};

/// Options of [`Sequential::fit`], with Keras' names and defaults.
///
/// ```
/// use horn::FitOptions;
/// let opts = FitOptions { epochs: 10, batch_size: 128, validation_split: 0.25, ..Default::default() };
/// assert!(opts.shuffle);
/// ```
#[derive(Debug, Clone)]
pub struct FitOptions {
    /// Passes over the training data (Keras default 1).
    pub epochs: usize,
    /// Rows per gradient step (Keras default 32). The last batch may be smaller.
    pub batch_size: usize,
    /// Fraction of rows held out for validation, taken from the *end* of the data
    /// before any shuffling: the first `floor(n * (1 - split))` rows train.
    /// Must be in `[0, 1)`; 0 (the default) means none.
    pub validation_split: f32,
    /// Explicit validation `(x, y)`; overrides `validation_split`.
    pub validation_data: Option<(Array2<f32>, Array2<f32>)>,
    /// Per-sample weights of `validation_data` (Keras' third element of the
    /// `validation_data` tuple): they weight `val_loss` and the `val_` weighted
    /// metrics. With `validation_split`, the held-out rows keep their
    /// `sample_weight` instead, as Keras splits `(x, y, sample_weight)` together.
    pub validation_sample_weight: Option<Vec<f32>>,
    /// Rows per validation batch (defaults to `batch_size`; results do not depend on it).
    pub validation_batch_size: Option<usize>,
    /// Shuffle the training rows before each epoch (Keras default true).
    pub shuffle: bool,
    /// Seed of shuffling and dropout; defaults to the model's seed.
    pub seed: Option<u64>,
    /// Epoch to start from (to resume a run; Keras default 0).
    pub initial_epoch: usize,
    /// 0 silent, 1 progress bar, 2 one line per epoch (Keras default 1, "auto").
    pub verbose: u8,
    /// Per-sample weights multiplying each sample's loss; the mean still divides
    /// by the number of samples (Keras). They weight the loss and the
    /// `weighted_metrics`, not the plain `metrics` (Keras).
    pub sample_weight: Option<Vec<f32>>,
    /// Weight per class index (one-hot argmax, sparse index, or 0/1 for one
    /// output); classes not listed weigh 1. Applies to the training rows only,
    /// as in Keras (validation keeps its sample weights alone). Keras 3 refuses
    /// `class_weight` together with `sample_weight`; horn multiplies them, as
    /// Keras 2 did, since "weigh this class and these rows" is a fair request.
    pub class_weight: Option<BTreeMap<usize, f32>>,
    /// Set to true from any thread to stop: `fit` checks it before every batch,
    /// runs no further batch once it is set, skips that epoch's validation and
    /// marks the epoch in [`History::partial_epoch`]. `fit` never clears it: a
    /// flag still set when the next `fit` starts stops that one before its
    /// first batch.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Data-parallel training over several processes (Keras'
    /// `DataParallel`; see [`crate::distribute`]): every rank runs the same
    /// `fit` on the same data and model, computes its share of each batch,
    /// and all ranks end with the same weights and History. Only rank 0
    /// prints. `None` (the default) trains in this process alone. Feature
    /// `distribute` (or `mpi`).
    #[cfg(feature = "distribute")]
    pub distribution: Option<DataParallel>,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            epochs: 1,
            batch_size: 32,
            validation_split: 0.0,
            validation_data: None,
            validation_sample_weight: None,
            validation_batch_size: None,
            shuffle: true,
            seed: None,
            initial_epoch: 0,
            verbose: 1,
            sample_weight: None,
            class_weight: None,
            cancel: None,
            #[cfg(feature = "distribute")]
            distribution: None,
        }
    }
}

pub(crate) fn check_sample_weight(w: &[f32], n: usize, name: &str) -> Result<()> {
    if w.len() != n {
        return Err(Error::shape(
            format!("`{name}`"),
            format!("{n} weights, one per row"),
            format!("{} weights", w.len()),
        ));
    }
    if let Some((i, &v)) = w
        .iter()
        .enumerate()
        .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
    {
        return Err(Error::arg(
            format!("{name}[{i}]"),
            "a finite, non-negative weight",
            v,
        ));
    }
    Ok(())
}

/// The class of a target row, for class weights and the single-class warning.
fn class_of(loss: &Loss, row: &[f32]) -> usize {
    if loss.is_sparse() || row.len() == 1 {
        row[0].round().max(0.0) as usize
    } else {
        argmax(row)
    }
}

/// What one training step reads, besides the model and its workspace.
pub(super) struct StepContext<'a> {
    pub x: ArrayView2<'a, f32>,
    pub y: ArrayView2<'a, f32>,
    pub rows: &'a [usize],
    pub weights: Option<&'a [f32]>,
    /// Seed of this step's dropout stream.
    pub seed: u64,
    pub loss: Loss,
    pub fused: bool,
}

/// A 64-bit mix (SplitMix64) of the run seed with the epoch and step.
pub(crate) fn stream_seed(seed: u64, epoch: u64, step: u64) -> u64 {
    let mut z =
        seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ step.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Validation rows and their weights.
struct Validation<'a> {
    x: ArrayView2<'a, f32>,
    y: ArrayView2<'a, f32>,
    weights: Option<&'a [f32]>,
}

/// Why the batch loop of an epoch ended early.
#[derive(Clone, Copy, PartialEq, Eq)]
enum EarlyEnd {
    /// A callback asked to stop (the epoch still validates, as in Keras).
    Stop,
    /// The cancel flag was set.
    Cancel,
}

impl Sequential {
    /// Trains the model (Keras `fit`) and returns the per-epoch [`History`].
    ///
    /// `x` has samples on its first axis and the model's input shape after it
    /// (`(samples, features)`, `(samples, h, w, c)`; flattened rows
    /// `(samples, h * w * c)` are accepted too); `y` is one-hot (or any target)
    /// rows of the output width, or one column of class indices for the
    /// sparse loss.
    pub fn fit<'a, 'b>(
        &mut self,
        x: impl IntoInput<'a>,
        y: impl IntoInput<'b>,
        options: FitOptions,
    ) -> Result<History> {
        self.fit_with_callbacks(x, y, options, &mut [])
    }

    /// [`Sequential::fit`] with callbacks, which keep their state afterwards (e.g.
    /// `EarlyStopping::stopped_epoch`).
    ///
    /// Every callback's `on_train_end` runs whenever `on_train_begin` did, also
    /// when training ends with an error (a diverged loss, a callback's error):
    /// `EarlyStopping(restore_best_weights)` then restores the best weights
    /// before the error is returned.
    pub fn fit_with_callbacks<'a, 'b>(
        &mut self,
        x: impl IntoInput<'a>,
        y: impl IntoInput<'b>,
        options: FitOptions,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<History> {
        self.compiled().ok_or(Error::NotCompiled("fit"))?;
        self.frozen().check_fit()?;
        let x_in = x.into_input();
        let y_in = y.into_input();
        let x = x_in.view();
        if self.awaits_input() {
            // Keras builds the model on its first call, for the data's shape.
            let sample = if x.ndim() == 1 {
                vec![1]
            } else {
                x.shape()[1..].to_vec()
            };
            self.build_for(&sample)?;
            self.resolve_metrics();
        }
        self.ensure_built()?;
        let x = validate::as_rows(x, self.get_input_shape(), "x")?;
        let y = validate::as_rows(y_in.view(), self.output_shape(), "y")?;
        let (x, y) = (x.view(), y.view());
        let compiled = self.compiled().ok_or(Error::NotCompiled("fit"))?;
        let loss = compiled.loss;
        let o = &options;
        validate::check_batch_size(o.batch_size)?;
        if let Some(vb) = o.validation_batch_size {
            validate::check_batch_size(vb)
                .map_err(|_| Error::arg("validation_batch_size", "a positive integer", vb))?;
        }
        if o.verbose > 2 {
            return Err(Error::arg("verbose", "0, 1 or 2", o.verbose));
        }
        if !(0.0..1.0).contains(&o.validation_split) {
            return Err(Error::arg(
                "validation_split",
                "a number in [0, 1) (the fraction of rows held out)",
                o.validation_split,
            ));
        }
        let out_dim = self.output_dim();
        self.check_x(x, "x")?;
        let positions = self.output_positions();
        validate::check_targets(&loss, y, out_dim, positions, "y")?;
        validate::check_rows(x, y, "x", "y")?;
        let n = x.nrows();
        if let Some(w) = &o.sample_weight {
            check_sample_weight(w, n, "sample_weight")?;
        }
        if let Some(cw) = &o.class_weight {
            if let Some((k, v)) = cw.iter().find(|(_, v)| !(v.is_finite() && **v >= 0.0)) {
                return Err(Error::arg(
                    format!("class_weight[{k}]"),
                    "a finite, non-negative weight",
                    v,
                ));
            }
        }
        if o.validation_sample_weight.is_some() && o.validation_data.is_none() {
            return Err(Error::arg(
                "validation_sample_weight",
                "`validation_data` to go with it (with validation_split the held-out rows keep their `sample_weight`)",
                "weights without validation_data",
            ));
        }

        // Validation rows: explicit data, or the last fraction before shuffling,
        // with their sample weights (never class weights, as Keras).
        let (n_train, val) = if let Some((vx, vy)) = &o.validation_data {
            self.check_x(vx.view(), "validation_data.x")?;
            validate::check_targets(&loss, vy.view(), out_dim, positions, "validation_data.y")?;
            validate::check_rows(
                vx.view(),
                vy.view(),
                "validation_data.x",
                "validation_data.y",
            )?;
            if let Some(w) = &o.validation_sample_weight {
                check_sample_weight(w, vx.nrows(), "validation_sample_weight")?;
            }
            let weights = o.validation_sample_weight.as_deref();
            (
                n,
                Some(Validation {
                    x: vx.view(),
                    y: vy.view(),
                    weights,
                }),
            )
        } else if o.validation_split > 0.0 {
            let split_at = (n as f64 * (1.0 - o.validation_split as f64)).floor() as usize;
            if split_at == 0 || split_at == n {
                return Err(Error::arg(
                        "validation_split",
                        format!(
                            "a fraction that leaves rows on both sides ({n} rows give {split_at} for training and {} for validation)",
                            n - split_at
                        ),
                        o.validation_split,
                    ));
            }
            let vx = x.slice(ndarray::s![split_at.., ..]);
            let vy = y.slice(ndarray::s![split_at.., ..]);
            warn_single_class(&loss, vy);
            let weights = o.sample_weight.as_deref().map(|w| &w[split_at..]);
            (
                split_at,
                Some(Validation {
                    x: vx,
                    y: vy,
                    weights,
                }),
            )
        } else {
            (n, None)
        };

        // Per-row training weights: sample_weight times class_weight.
        let weights: Option<Vec<f32>> = if o.sample_weight.is_some() || o.class_weight.is_some() {
            Some(
                (0..n_train)
                    .map(|i| {
                        let sw = o.sample_weight.as_ref().map_or(1.0, |w| w[i]);
                        let cw = o.class_weight.as_ref().map_or(1.0, |cw| {
                            let row = y.row(i).to_vec();
                            *cw.get(&class_of(&loss, &row)).unwrap_or(&1.0)
                        });
                        sw * cw
                    })
                    .collect(),
            )
        } else {
            None
        };

        // The optimizer's state belongs to these weights (built on first use,
        // checked against them afterwards).
        let vars = self.weight_sizes();
        if let Some(c) = self.compiled_mut() {
            c.optimizer.build(&vars)?;
        }

        hint_if_unoptimized(n_train, self.count_params(), o.verbose);
        let seed = o.seed.unwrap_or(self.default_seed());
        let bs = o.batch_size.min(n_train);
        let steps = n_train.div_ceil(bs);
        let mut history = History::default();
        history.params = HistoryParams {
            epochs: o.epochs,
            steps,
            verbose: o.verbose,
        };
        // A data-parallel rank's workspace holds one chunk of a batch.
        let cap = data_parallel::workspace_rows(o, bs)?;
        let mut ws = Workspace::new(
            self.layers(),
            self.layer_names(),
            &self.all_shapes(),
            cap,
            true,
            y.ncols(),
            "fit",
        )?;
        let mut parallel = self.parallel_start(
            o,
            &ws,
            ParallelData {
                x,
                y,
                val: val.as_ref().map(|v| (v.x, v.y)),
                weights: weights.as_deref(),
                n_train,
                bs,
                seed,
                out_dim,
            },
        )?;
        let _rank = data_parallel::rank_guard(o);
        let plan = Plan {
            x,
            y,
            n_train,
            bs,
            steps,
            seed,
            weights: weights.as_deref(),
            val,
            loss,
            // Only rank 0 prints.
            verbose: data_parallel::verbose(o),
        };

        let result = with_train_hooks(
            self,
            |m| CallbackContext::new(m),
            callbacks,
            |m, cbs, last| m.run_epochs(&plan, o, &mut ws, &mut parallel, &mut history, last, cbs),
        );
        // Keras' `model.history`: the epochs done survive an error.
        self.set_history(history.clone());
        result.map(|_| history)
    }

    /// The epoch loop of `fit`.
    #[allow(clippy::too_many_arguments)]
    fn run_epochs(
        &mut self,
        plan: &Plan<'_>,
        o: &FitOptions,
        ws: &mut Workspace,
        parallel: &mut Option<ParallelRun>,
        history: &mut History,
        last_logs: &mut Logs,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<()> {
        let compiled = self.compiled().ok_or(Error::NotCompiled("fit"))?;
        let entries = compiled.entries.clone();
        let fused = compiled.fused;
        let mut states: Vec<MetricState> = entries
            .iter()
            .map(|e| MetricState::new(e.resolved).per_position(self.output_positions()))
            .collect();
        let weighted: Vec<bool> = entries.iter().map(|e| e.weighted).collect();
        let val_bs = o.validation_batch_size.unwrap_or(o.batch_size);
        let mut progress = Progress::new(plan.verbose, plan.steps);
        let mut order: Vec<usize> = (0..plan.n_train).collect();
        let cancelled = || o.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed));
        let mut stop = false;
        for epoch in o.initial_epoch..o.epochs {
            if stop || cancelled() {
                break;
            }
            let mut ctx = CallbackContext::new(self);
            for cb in callbacks.iter_mut() {
                cb.on_epoch_begin(epoch, &mut ctx)?;
            }
            stop |= ctx.stop_requested();
            progress.epoch_begin(epoch, o.epochs);
            if o.shuffle {
                order.sort_unstable();
                let mut rng = StdRng::seed_from_u64(stream_seed(plan.seed, epoch as u64, u64::MAX));
                order.shuffle(&mut rng);
            }
            for s in &mut states {
                s.reset();
            }
            let mut loss_total = 0.0f64;
            let mut seen = 0usize;
            let mut logs = Logs::default();
            let mut early = None;
            for step in 0..plan.steps {
                if cancelled() {
                    early = Some(EarlyEnd::Cancel);
                    break;
                }
                let start = step * plan.bs;
                let end = (start + plan.bs).min(plan.n_train);
                let nb = end - start;
                let rows = &order[start..end];
                if !callbacks.is_empty() {
                    let mut ctx = CallbackContext::new(self);
                    for cb in callbacks.iter_mut() {
                        cb.on_batch_begin(step, &mut ctx)?;
                    }
                    stop |= ctx.stop_requested();
                }

                let step_ctx = StepContext {
                    x: plan.x,
                    y: plan.y,
                    rows,
                    weights: plan.weights,
                    seed: stream_seed(plan.seed, epoch as u64, step as u64),
                    loss: plan.loss,
                    fused,
                };
                // The whole step runs inside the pool, so its parallel parts hand
                // work between rayon's workers instead of waking this thread.
                let batch_loss = match parallel.as_mut() {
                    // A process per rank runs the whole step, exchanges
                    // included, inside its pool, as the one-process step does.
                    Some(run) if !run.shares_thread_pool() => rayon::scope(|_| {
                        self.parallel_train_step(ws, &mut states, &weighted, &step_ctx, run)
                    })?,
                    Some(run) => {
                        self.parallel_train_step(ws, &mut states, &weighted, &step_ctx, run)?
                    }
                    None => {
                        rayon::scope(|_| self.train_step(ws, &mut states, &weighted, &step_ctx))?
                    }
                };
                if !batch_loss.is_finite() {
                    if let Some(run) = parallel.as_mut() {
                        // Every rank stops at this step: leave whole state.
                        self.parallel_sync_optimizer(run)?;
                    }
                    if plan.verbose > 0 {
                        println!();
                    }
                    return Err(Error::Diverged {
                        epoch: epoch + 1,
                        batch: step,
                        loss: batch_loss,
                        history: Box::new(history.clone()),
                    });
                }
                loss_total += batch_loss as f64 * nb as f64;
                seen += nb;
                // Updated in place: no allocation per batch once the keys exist.
                logs.set("loss", (loss_total / seen as f64) as f32);
                for (e, s) in entries.iter().zip(&states) {
                    logs.set(&e.key, s.result());
                }
                progress.batch_end(step + 1, &logs);
                if !callbacks.is_empty() {
                    let mut ctx = CallbackContext::new(self);
                    for cb in callbacks.iter_mut() {
                        cb.on_batch_end(step, &logs, &mut ctx)?;
                    }
                    stop |= ctx.stop_requested();
                }
                if stop && step + 1 < plan.steps {
                    early = Some(EarlyEnd::Stop);
                    break;
                }
            }
            if let Some(run) = parallel.as_mut() {
                // Whole weights and optimizer state on every rank before
                // validation, callbacks (checkpoints) and the end of `fit`.
                self.parallel_sync_optimizer(run)?;
            }
            if seen == 0 {
                // Cancelled before its first batch: nothing to record.
                break;
            }
            // After the sync above every rank holds the same weights, so every
            // rank stops here alike.
            let named = self.names.iter().map(String::as_str);
            let layers = named.zip(self.layers.iter().map(|l| l.as_ref()));
            super::weights::check_finite_at_epoch_end(layers, epoch, history, plan.verbose > 0)?;
            if early != Some(EarlyEnd::Cancel) {
                if let Some(v) = &plan.val {
                    let c = self.compiled().ok_or(Error::NotCompiled("fit"))?;
                    let vl = match parallel.as_ref() {
                        Some(run) => self.parallel_validate(c, v.x, v.y, v.weights, val_bs, run)?,
                        None => self.evaluate_unchecked(c, v.x, v.y, v.weights, val_bs, "val_")?,
                    };
                    for (k, v) in vl.iter() {
                        logs.insert(k, v);
                    }
                }
            }
            if early.is_some() {
                history.partial_epoch = Some(epoch);
            }
            if let Some(run) = parallel.as_ref() {
                self.parallel_verify(run, epoch)?;
            }
            let mut ctx = CallbackContext::new(self);
            for cb in callbacks.iter_mut() {
                cb.on_epoch_end(epoch, &mut logs, &mut ctx)?;
            }
            stop |= ctx.stop_requested() || early.is_some();
            progress.epoch_end(&logs);
            history.push(epoch, &logs);
            *last_logs = logs;
        }
        Ok(())
    }

    /// One training step on the rows `c.rows`: gather, forward, loss and its
    /// gradient, metrics, backward, optimizer. Returns the batch loss; a
    /// non-finite loss returns before any weight changes.
    fn train_step(
        &mut self,
        ws: &mut Workspace,
        states: &mut [MetricState],
        weighted: &[bool],
        c: &StepContext<'_>,
    ) -> Result<f32> {
        let nb = c.rows.len();
        // 1. gather
        gather_rows(c.x, c.rows, ws.input_mut(nb));
        let tc = ws.target_cols;
        gather_rows(c.y, c.rows, &mut ws.targets[..nb * tc]);
        for (k, &r) in c.rows.iter().enumerate() {
            ws.sample_weights[k] = c.weights.map_or(1.0, |w| w[r]);
        }
        // 2. forward
        let mut rng = StdRng::seed_from_u64(c.seed);
        ws.forward(&self.layers, nb, true, &mut rng)?;
        // 3. loss and its gradient
        let batch_loss = {
            let out_w = self.output_dim();
            let positions = self.output_positions();
            let mut grad = std::mem::take(&mut ws.grad_a);
            let mut losses = std::mem::take(&mut ws.losses);
            {
                let logits = if c.fused {
                    ws.logits(&self.layers, nb)
                } else {
                    None
                };
                let targets = view(&ws.targets, nb, tc);
                c.loss.per_sample(
                    ws.output(nb),
                    targets,
                    logits,
                    &mut losses[..nb],
                    Some(view_mut(&mut grad, nb, out_w)),
                    positions,
                );
            }
            let inv = 1.0 / nb as f32;
            let mut total = 0.0f64;
            for (k, row) in grad[..nb * out_w].chunks_exact_mut(out_w).enumerate() {
                let w = ws.sample_weights[k];
                total += (losses[k] * w) as f64;
                let f = w * inv;
                row.iter_mut().for_each(|g| *g *= f);
            }
            ws.grad_a = grad;
            ws.losses = losses;
            (total / nb as f64) as f32 + self.regularization_penalty()
        };
        if !batch_loss.is_finite() {
            return Ok(batch_loss);
        }
        {
            // Plain metrics ignore the weights; weighted metrics use them (Keras).
            let targets = view(&ws.targets, nb, tc);
            let w = c.weights.map(|_| &ws.sample_weights[..nb]);
            for (s, &weighted) in states.iter_mut().zip(weighted) {
                s.update(targets, ws.output(nb), if weighted { w } else { None });
            }
        }
        // 4. backward
        ws.backward(&self.layers, nb, c.fused);
        // 5. optimizer, 6. moving statistics
        self.apply_step(ws)?;
        Ok(batch_loss)
    }

    /// The end of a training step, once `ws.param_grads` holds the batch's
    /// gradients: one optimizer pass over each weight tensor, then the state
    /// that follows the step (BatchNormalization's moving statistics).
    pub(super) fn apply_step(&mut self, ws: &mut Workspace) -> Result<()> {
        let compiled = self.compiled.as_mut().ok_or(Error::NotCompiled("fit"))?;
        super::weights::optimizer_step(
            &mut compiled.optimizer,
            self.layers
                .iter_mut()
                .map(|l| Some(l.as_mut() as &mut dyn crate::layers::Layer)),
            &mut ws.param_grads,
            &ws.trainable,
        );
        for (layer, state) in self.layers.iter_mut().zip(&ws.state) {
            if !state.is_empty() {
                layer.end_train_step(state);
            }
        }
        Ok(())
    }
}

/// What `fit` trains on, as a data-parallel start checks it (every rank
/// must hold the same).
#[cfg_attr(not(feature = "distribute"), allow(dead_code))]
pub(super) struct ParallelData<'a> {
    pub x: ArrayView2<'a, f32>,
    pub y: ArrayView2<'a, f32>,
    pub val: Option<(ArrayView2<'a, f32>, ArrayView2<'a, f32>)>,
    pub weights: Option<&'a [f32]>,
    pub n_train: usize,
    pub bs: usize,
    pub seed: u64,
    pub out_dim: usize,
}

/// What `fit` trains on, fixed for the whole run.
struct Plan<'a> {
    x: ArrayView2<'a, f32>,
    y: ArrayView2<'a, f32>,
    n_train: usize,
    bs: usize,
    steps: usize,
    seed: u64,
    /// Per training row: sample weight times class weight.
    weights: Option<&'a [f32]>,
    val: Option<Validation<'a>>,
    loss: Loss,
    /// `FitOptions::verbose`, or 0 on a data-parallel rank other than 0.
    verbose: u8,
}

/// The optimization level horn was compiled at (from `build.rs`).
const OPT_LEVEL: &str = env!("HORN_OPT_LEVEL");

/// Prints, once per process, that horn itself is an unoptimized build when a
/// training run is large enough for it to matter (about 100x slower: the MNIST
/// epoch took 100 s instead of 0.8 s).
fn hint_if_unoptimized(rows: usize, params: usize, verbose: u8) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    if OPT_LEVEL != "0" || verbose == 0 || rows.saturating_mul(params) < 100_000_000 {
        return;
    }
    ONCE.call_once(|| {
        eprintln!(
            "note: horn was compiled without optimizations (a debug build), so training runs \
             about 100x slower. Run with `cargo run --release`, or keep debug builds fast by \
             adding to your Cargo.toml:\n\n[profile.dev.package.\"*\"]\nopt-level = 3\n"
        );
    });
}

/// Warns when `validation_split` holds out rows of a single class (data sorted
/// by class, as the penguins table is).
fn warn_single_class(loss: &Loss, vy: ArrayView2<f32>) {
    if !matches!(
        loss,
        Loss::CategoricalCrossentropy { .. }
            | Loss::SparseCategoricalCrossentropy { .. }
            | Loss::BinaryCrossentropy { .. }
    ) || vy.ncols() == 0
        || vy.nrows() < 2
    {
        return;
    }
    let first = class_of(loss, vy.row(0).to_vec().as_slice());
    if vy
        .rows()
        .into_iter()
        .all(|r| class_of(loss, r.to_vec().as_slice()) == first)
    {
        eprintln!(
            "warning: validation_split takes the last {} rows, and all of them are class {first}; \
             validation accuracy will be misleading. Shuffle the data before fit (Keras splits before shuffling).",
            vy.nrows()
        );
    }
}
