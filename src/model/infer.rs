//! `predict` and `evaluate`: forward passes over large blocks of rows.
//!
//! Each row's output depends only on that row (the matrix products never sum
//! across rows), so the block size changes speed, not results: blocks are at least
//! `MIN_BLOCK` rows whatever `batch_size` says. Loss and metric totals are summed
//! in row order in f64, so `evaluate` gives the same numbers for any batch size.

use ndarray::{Array2, ArrayD, ArrayView2, IxDyn};

use super::IntoInput;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rayon::prelude::*;

use super::history::Logs;
use super::validate;
use super::workspace::Workspace;
use super::{Compiled, Sequential};
use crate::error::{Error, Result};
use crate::metrics::MetricState;

/// Smallest block `evaluate` runs, whatever `batch_size` says (fewer when a
/// row's buffers are large, see [`Sequential::rows_per_block`]).
pub(crate) const MIN_BLOCK: usize = 2048;
/// Rows per block in `predict`.
const PREDICT_BLOCK: usize = 2048;
/// The most f32 values one inference block's buffers may hold (32 MiB): a
/// convolutional network's rows are large, so its blocks are fewer rows
/// (about 200 for the MNIST convnet), which keeps `predict`'s memory small
/// and its buffers in cache. A dense model's blocks keep their 2048 rows.
const BLOCK_VALUES: usize = 1 << 23;
/// Blocks keep at least 32 rows (fewer rows cost more than their buffers
/// save) while those stay within this many values (128 MiB); a model whose
/// rows are larger runs as many rows as fit, at least one.
const LARGE_BLOCK_VALUES: usize = 4 * BLOCK_VALUES;

/// Rows per inference block for rows whose buffers hold `per_row` values:
/// at most `rows`, within [`BLOCK_VALUES`] but at least 32 rows while those
/// fit in [`LARGE_BLOCK_VALUES`], and at least one.
pub(crate) fn block_rows(rows: usize, per_row: usize) -> usize {
    let per_row = per_row.max(1);
    let floor = 32.min(LARGE_BLOCK_VALUES / per_row);
    rows.min((BLOCK_VALUES / per_row).max(floor)).max(1)
}

/// A workspace for `block` rows from `make`, or for half as many when that
/// cannot be allocated, down to one row (whose error is returned), with its
/// rows: rows are independent in inference, so smaller blocks give the same
/// results.
pub(crate) fn workspace_halving<W>(
    block: usize,
    mut make: impl FnMut(usize) -> Result<W>,
) -> Result<(W, usize)> {
    let mut rows = block.max(1);
    loop {
        match make(rows) {
            Err(Error::OutOfMemory { .. }) if rows > 1 => rows /= 2,
            other => return other.map(|w| (w, rows)),
        }
    }
}

/// An `(n, width)` array of zeros, allocated fallibly against the memory
/// limit (a result whose size comes from the model and the data).
pub(crate) fn zeros_rows(
    context: &'static str,
    n: usize,
    width: usize,
    what: &str,
) -> Result<Array2<f32>> {
    let v = crate::memory::Budget::new(context)?.rows(n, width, 0.0, || what.to_string())?;
    Array2::from_shape_vec((n, width), v)
        .map_err(|e| Error::shape(context, format!("({n}, {width})"), e.to_string()))
}

/// Options of [`Sequential::evaluate_with`] (Keras `evaluate` arguments).
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluateOptions {
    /// Rows per batch (Keras default 32). Results do not depend on it.
    pub batch_size: usize,
    /// Per-sample weights multiplying each sample's loss and its value in the
    /// `weighted_metrics`; plain `metrics` stay unweighted (Keras).
    pub sample_weight: Option<Vec<f32>>,
    /// Splits the rows across the ranks of a data-parallel group, each rank
    /// forwarding one contiguous block; every rank returns the numbers one
    /// process would (`horn::distribute`; feature `distribute` or `mpi`).
    #[cfg(feature = "distribute")]
    pub distribution: Option<crate::distribute::DataParallel>,
}

impl Default for EvaluateOptions {
    fn default() -> Self {
        EvaluateOptions {
            batch_size: 32,
            sample_weight: None,
            #[cfg(feature = "distribute")]
            distribution: None,
        }
    }
}

/// Copies the rows of `x` into the contiguous buffer `dst` (one memcpy when
/// `x` is already row-major).
pub(crate) fn copy_block(x: ArrayView2<f32>, dst: &mut [f32]) {
    match x.as_slice() {
        Some(s) => dst[..s.len()].copy_from_slice(s),
        None => {
            for (d, v) in dst.iter_mut().zip(x.iter()) {
                *d = *v;
            }
        }
    }
}

/// Copies rows `rows` of `x` into the contiguous buffer `dst`.
pub(crate) fn gather_rows(x: ArrayView2<f32>, rows: &[usize], dst: &mut [f32]) {
    let w = x.ncols();
    if w == 0 {
        return;
    }
    let copy = |(d, &r): (&mut [f32], &usize)| {
        let src = x.row(r);
        match src.as_slice() {
            Some(s) => d.copy_from_slice(s),
            None => d.iter_mut().zip(src.iter()).for_each(|(o, &v)| *o = v),
        }
    };
    if rows.len() * w >= 1 << 16 {
        dst[..rows.len() * w]
            .par_chunks_mut(w)
            .zip(rows.par_iter())
            .for_each(copy);
    } else {
        dst[..rows.len() * w]
            .chunks_mut(w)
            .zip(rows.iter())
            .for_each(copy);
    }
}

impl Sequential {
    /// Runs the model forward over `x` in blocks of at most `block` rows,
    /// calling `each(start, rows, workspace)` after each block. Inference
    /// draws no random numbers, so the stream handed to the layers is a fixed
    /// dummy. When the buffers of `block` rows cannot be allocated the blocks
    /// are halved, down to one row (whose failure is the error).
    pub(crate) fn forward_blocks(
        &self,
        x: ArrayView2<f32>,
        block: usize,
        context: &'static str,
        mut each: impl FnMut(usize, usize, &Workspace) + Send,
    ) -> Result<()> {
        let n = x.nrows();
        let input_dim = self.input_dim().unwrap_or(0);
        let shapes = self.all_shapes();
        let mut run = || -> Result<()> {
            let (mut ws, block) = workspace_halving(block, |rows| {
                Workspace::new(
                    self.layers(),
                    self.layer_names(),
                    &shapes,
                    rows,
                    false,
                    0,
                    context,
                )
            })?;
            let mut rng = StdRng::seed_from_u64(0);
            for start in (0..n).step_by(block.max(1)) {
                let nb = block.min(n - start);
                copy_block(
                    x.slice(ndarray::s![start..start + nb, ..]),
                    ws.input_mut(nb),
                );
                ws.forward(self.layers(), nb, false, &mut rng)?;
                each(start, nb, &ws);
            }
            Ok(())
        };
        // A large input runs inside the pool, so that the parallel products
        // hand work between workers instead of waking this thread each time;
        // a few rows stay on the calling thread (entering the pool would cost
        // more than their whole forward pass).
        if n.saturating_mul(input_dim) >= 1 << 16 {
            rayon::scope(|_| run())
        } else {
            run()
        }
    }

    /// Predictions for every row of `x` (Keras `predict`), one output row per
    /// input row. Works on owned arrays and views; runs in parallel blocks.
    ///
    /// ```
    /// use horn::prelude::*;
    /// let model = Sequential::new().seed(1).input(3).dense(2, Softmax);
    /// let p = model.predict(&ndarray::Array2::<f32>::zeros((5, 3))).unwrap();
    /// assert_eq!(p.dim(), (5, 2));
    /// assert!((p.row(0).sum() - 1.0).abs() < 1e-6);
    /// ```
    pub fn predict<'a>(&self, x: impl IntoInput<'a>) -> Result<Array2<f32>> {
        self.ensure_built()?;
        if let Some(s) = self.output_shape().filter(|s| s.rank() > 1) {
            return Err(Error::shape(
                "predict",
                "a model whose output is one vector per sample (use `predict_nd` for others)",
                s.to_string(),
            ));
        }
        self.predict_rows(x)
    }

    /// Predictions shaped like the model's output: `(samples, ...output
    /// shape)`, e.g. `(n, steps, units)` for a model that ends with `Dense` on
    /// sequences. [`Sequential::predict`] returns the common 2-D case as an
    /// `Array2`.
    ///
    /// ```
    /// use horn::prelude::*;
    /// let model = Sequential::new().seed(1).input_shape(&[5, 3]).dense(2, Linear);
    /// let p = model.predict_nd(&ndarray::Array3::<f32>::zeros((4, 5, 3))).unwrap();
    /// assert_eq!(p.shape(), &[4, 5, 2]);
    /// ```
    pub fn predict_nd<'a>(&self, x: impl IntoInput<'a>) -> Result<ArrayD<f32>> {
        self.ensure_built()?;
        let out = self.predict_rows(x)?;
        let mut shape = vec![out.nrows()];
        shape.extend_from_slice(self.output_shape().map_or(&[][..], |s| s.dims()));
        out.into_shape_with_order(IxDyn(&shape))
            .map_err(|e| Error::shape("predict_nd", format!("{shape:?}"), e.to_string()))
    }

    /// [`Sequential::predict`] split across the ranks of a data-parallel
    /// group: each rank forwards one contiguous block of rows, and every rank
    /// returns all the predictions (the same values as `predict`).
    ///
    /// ```
    /// use horn::distribute::{local_group, DataParallel};
    /// use horn::prelude::*;
    /// let model = Sequential::new().seed(3).input(4).dense(2, Softmax);
    /// let dp = DataParallel::new(local_group(1).remove(0))?;
    /// let x = ndarray::Array2::<f32>::ones((5, 4));
    /// assert_eq!(model.predict_distributed(&x, &dp)?, model.predict(&x)?);
    /// # Ok::<(), horn::Error>(())
    /// ```
    #[cfg(feature = "distribute")]
    pub fn predict_distributed<'a>(
        &self,
        x: impl IntoInput<'a>,
        distribution: &crate::distribute::DataParallel,
    ) -> Result<Array2<f32>> {
        self.ensure_built()?;
        if let Some(s) = self.output_shape().filter(|s| s.rank() > 1) {
            return Err(Error::shape(
                "predict_distributed",
                "a model whose output is one vector per sample",
                s.to_string(),
            ));
        }
        let x_in = x.into_input();
        let x = validate::as_rows(x_in.view(), self.get_input_shape(), "x")?;
        self.check_x(x.view(), "x")?;
        self.predict_parallel(x.view(), distribution)
    }

    /// Predictions as rows of the output's size.
    fn predict_rows<'a>(&self, x: impl IntoInput<'a>) -> Result<Array2<f32>> {
        let x_in = x.into_input();
        let x = validate::as_rows(x_in.view(), self.get_input_shape(), "x")?;
        self.predict_view(x.view())
    }

    /// Predictions for rows already shaped as the model's input.
    pub(crate) fn predict_view(&self, x: ArrayView2<f32>) -> Result<Array2<f32>> {
        self.check_x(x, "x")?;
        let n = x.nrows();
        let mut out = zeros_rows("predict", n, self.output_dim(), "the predictions")?;
        self.forward_blocks(
            x,
            n.min(self.rows_per_block(PREDICT_BLOCK)),
            "predict",
            |start, nb, ws| {
                out.slice_mut(ndarray::s![start..start + nb, ..])
                    .assign(&ws.output(nb));
            },
        )?;
        Ok(out)
    }

    /// At most `rows` rows, fewer when the buffers of a row are large (see
    /// [`block_rows`]).
    pub(crate) fn rows_per_block(&self, rows: usize) -> usize {
        let shapes = self.all_shapes();
        let per_row = shapes
            .iter()
            .map(|s| s.size())
            .chain(self.layers().iter().zip(&shapes).map(|(l, s)| {
                let b = l.buffers(s, false);
                b.aux.saturating_add(b.scratch_per_row)
            }))
            .fold(0usize, usize::saturating_add);
        block_rows(rows, per_row)
    }

    /// The predicted class of every row (Keras: `predict(x) |> k_argmax()`): the
    /// index of the largest output (first one on ties), or, for a model with a
    /// single output (a sigmoid), 1 when it exceeds 0.5 and 0 otherwise.
    ///
    /// ```
    /// use horn::prelude::*;
    /// let model = Sequential::new().seed(1).input(3).dense(4, Softmax);
    /// let classes = model.predict_classes(&ndarray::Array2::<f32>::ones((5, 3))).unwrap();
    /// assert_eq!(classes.len(), 5);
    /// assert!(classes.iter().all(|&c| c < 4));
    /// ```
    pub fn predict_classes<'a>(&self, x: impl IntoInput<'a>) -> Result<Vec<usize>> {
        let p = self.predict(x)?;
        Ok(p.rows()
            .into_iter()
            .map(|r| match r.as_slice() {
                Some([v]) => (*v > 0.5) as usize,
                Some(row) => crate::metrics::argmax(row),
                None => 0,
            })
            .collect())
    }

    /// Loss and metrics on `(x, y)` in inference mode (Keras `evaluate` with
    /// `return_dict = TRUE`): `{"loss": .., "accuracy": ..}`. The loss includes
    /// regularization penalties, as in Keras.
    pub fn evaluate<'a, 'b>(&self, x: impl IntoInput<'a>, y: impl IntoInput<'b>) -> Result<Logs> {
        self.evaluate_with(x, y, EvaluateOptions::default())
    }

    /// [`Sequential::evaluate`] with options.
    pub fn evaluate_with<'a, 'b>(
        &self,
        x: impl IntoInput<'a>,
        y: impl IntoInput<'b>,
        options: EvaluateOptions,
    ) -> Result<Logs> {
        let c = self.compiled().ok_or(Error::NotCompiled("evaluate"))?;
        self.ensure_built()?;
        let (x_in, y_in) = (x.into_input(), y.into_input());
        let x = validate::as_rows(x_in.view(), self.get_input_shape(), "x")?;
        let y = validate::as_rows(y_in.view(), self.output_shape(), "y")?;
        let (x, y) = (x.view(), y.view());
        validate::check_batch_size(options.batch_size)?;
        self.check_x(x, "x")?;
        validate::check_targets(&c.loss, y, self.output_dim(), self.output_positions(), "y")?;
        validate::check_rows(x, y, "x", "y")?;
        if let Some(w) = &options.sample_weight {
            super::fit::check_sample_weight(w, x.nrows(), "sample_weight")?;
        }
        let weights = options.sample_weight.as_deref();
        #[cfg(feature = "distribute")]
        if let Some(dp) = &options.distribution {
            return self.evaluate_parallel(c, x, y, weights, options.batch_size, "", dp);
        }
        self.evaluate_unchecked(c, x, y, weights, options.batch_size, "")
    }

    /// Each row's loss for the block of outputs in `ws` (from the logits
    /// when softmax/sigmoid + cross-entropy are fused).
    pub(crate) fn inference_losses(
        &self,
        c: &Compiled,
        ws: &Workspace,
        y: ArrayView2<f32>,
        losses: &mut [f32],
    ) {
        let nb = losses.len();
        let y = y.as_standard_layout();
        let logits = if c.fused {
            ws.logits(self.layers(), nb)
        } else {
            None
        };
        c.loss.per_sample(
            ws.output(nb),
            y.view(),
            logits,
            losses,
            None,
            self.output_positions(),
        );
    }

    /// `evaluate` without argument checks (`fit` checks its data once up front).
    pub(crate) fn evaluate_unchecked(
        &self,
        c: &Compiled,
        x: ArrayView2<f32>,
        y: ArrayView2<f32>,
        weights: Option<&[f32]>,
        batch_size: usize,
        prefix: &str,
    ) -> Result<Logs> {
        let n = x.nrows();
        let block = n.min(self.rows_per_block(batch_size.max(MIN_BLOCK)));
        let mut states: Vec<MetricState> = c
            .entries
            .iter()
            .map(|e| MetricState::new(e.resolved).per_position(self.output_positions()))
            .collect();
        let mut losses = vec![0.0f32; block];
        let mut total = 0.0f64;
        self.forward_blocks(x, block, eval_context(prefix), |start, nb, ws| {
            let yb = y.slice(ndarray::s![start..start + nb, ..]);
            self.inference_losses(c, ws, yb, &mut losses[..nb]);
            let yb = yb.as_standard_layout();
            let wb = weights.map(|w| &w[start..start + nb]);
            for (i, &l) in losses[..nb].iter().enumerate() {
                total += l as f64 * wb.map_or(1.0, |w| w[i] as f64);
            }
            for (s, e) in states.iter_mut().zip(&c.entries) {
                let w = if e.weighted { wb } else { None };
                s.update(yb.view(), ws.output(nb), w);
            }
        })?;
        let mut logs = Logs::default();
        let loss = (total / n as f64) as f32 + self.regularization_penalty();
        logs.insert(format!("{prefix}loss"), loss);
        for (e, s) in c.entries.iter().zip(&states) {
            logs.insert(format!("{prefix}{}", e.key), s.result());
        }
        Ok(logs)
    }
}

/// The call an evaluation with key prefix `prefix` belongs to, for errors:
/// `fit`'s validation (`val_`) or `evaluate`.
pub(crate) fn eval_context(prefix: &str) -> &'static str {
    if prefix.is_empty() {
        "evaluate"
    } else {
        "fit (validation)"
    }
}
