//! One rank's share of a data-parallel `fit`, `evaluate` and `predict`
//! (the design is in [`crate::distribute`]).
//!
//! A step on a rank: for each of its chunks, gather the chunk's rows, run
//! forward, the loss gradient (scaled by `w_i / nb` of the *whole* batch,
//! so that the chunks' gradients add up to the batch's), and backward
//! without the regularization gradient; the weight gradients, the batch
//! statistics and each row's loss and output are summed over the chunk tree
//! and then across ranks (the gradients reduce-scattered, so that each rank
//! updates its segment of each weight tensor before the weights are
//! gathered). Every rank computes the loss and metrics from all rows and
//! adds the regularization gradient once. The buffers are allocated once per
//! `fit`.

use ndarray::{s, Array2, ArrayView2};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::column_split::ColumnSplit;
use super::fit::{stream_seed, FitOptions, ParallelData, StepContext};
use super::history::Logs;
use super::infer::{eval_context, gather_rows, zeros_rows, MIN_BLOCK};
use super::workspace::{view, view_mut, Workspace};
use super::{Compiled, Sequential};
use crate::distribute::{hash_f32s, hash_words, DataParallel, RankGuard, Topology, TreeSum};
use crate::error::{Error, Result};
use crate::layers::Layer;
use crate::memory::Budget;
use crate::metrics::MetricState;

/// The buffers of one rank's data-parallel `fit`.
///
/// The message of a step is a list of parts: the workspace's own gradient
/// tensors and batch statistics (exchanged in place, never copied) and the
/// rows' losses and outputs. With several chunks per rank, the chunks'
/// parts are swapped into the leaves of a [`TreeSum`] and the sum swapped
/// back.
pub(crate) struct ParallelRun {
    pub dp: DataParallel,
    pub topo: Topology,
    tree: TreeSum,
    recv: Vec<f32>,
    /// Each row's loss and output (`1 + out_w` values), this rank's rows
    /// filled and the others zero until the exchange fills them.
    rows: Vec<f32>,
    /// Whether each rank updates only its segment of every weight tensor
    /// (the optimizer is elementwise), and those segments.
    sharded: bool,
    segments: Vec<std::ops::Range<usize>>,
    /// The first layer split by columns across the ranks, when it pays
    /// ([`ColumnSplit`]): its gradients are then not parts of the message,
    /// and the other parts travel packed in `packed`, summed on the way of
    /// the split layer's gradient exchange.
    split: Option<ColumnSplit>,
    packed: Vec<f32>,
    /// The whole batch's targets, weights and outputs, for the metrics.
    targets: Vec<f32>,
    weights: Vec<f32>,
    outputs: Vec<f32>,
}

impl ParallelRun {
    /// Buffers for batches of up to `bs` rows through a model whose training
    /// workspace is `ws`.
    pub fn new(
        dp: DataParallel,
        layers: &[Box<dyn Layer>],
        ws: &Workspace,
        bs: usize,
        out_w: usize,
        elementwise_optimizer: bool,
    ) -> Result<Self> {
        let topo = dp.topology()?;
        let mut budget = Budget::new("fit")?;
        let row_w = out_w.saturating_add(1);
        let sharded = elementwise_optimizer && topo.size > 1;
        let split = if sharded {
            ColumnSplit::new(layers, ws, topo, bs, &mut budget)?
        } else {
            None
        };
        let rows = budget.rows(bs, row_w, 0.0, || "each row's loss and output".into())?;
        let parts: Vec<usize> = ws
            .param_grads
            .iter()
            .skip(split.is_some() as usize)
            .flatten()
            .chain(&ws.state)
            .map(Vec::len)
            .chain([rows.len()])
            .collect();
        let per_rank = topo.chunks / topo.size;
        let packed_len: usize = if split.is_some() {
            parts.iter().fold(0, |a, &b| a.saturating_add(b))
        } else {
            0
        };
        let split = match split {
            Some(s) => Some(s.carrying(packed_len, &mut budget)?),
            None => None,
        };
        let most = parts.iter().copied().max().unwrap_or(0);
        Ok(ParallelRun {
            // One chunk per rank needs no tree.
            tree: TreeSum::new(
                if per_rank > 1 { &parts } else { &[] },
                per_rank,
                &mut budget,
            )?,
            recv: budget.values(most, 0.0, || "the exchange's buffer".into())?,
            packed: budget.values(packed_len, 0.0, || "the packed exchange".into())?,
            rows,
            sharded,
            segments: Vec::with_capacity(parts.len() + 2),
            split,
            targets: budget.rows(bs, ws.target_cols, 0.0, || "the targets".into())?,
            weights: budget.rows(bs, 1, 0.0, || "the sample weights".into())?,
            outputs: budget.rows(bs, out_w, 0.0, || "the outputs".into())?,
            dp,
            topo,
        })
    }
}

impl ParallelRun {
    /// Whether the ranks are threads sharing this process's pool.
    pub fn shares_thread_pool(&self) -> bool {
        self.dp.shares_thread_pool()
    }
}

/// Rows of the training workspace: one chunk of a batch on a data-parallel
/// rank, the batch otherwise.
pub(crate) fn workspace_rows(o: &FitOptions, bs: usize) -> Result<usize> {
    Ok(match &o.distribution {
        Some(dp) => dp.topology()?.chunk_capacity(bs),
        None => bs,
    })
}

/// The rank callbacks see during this `fit` ([`crate::callbacks::CallbackContext::rank`]).
pub(crate) fn rank_guard(o: &FitOptions) -> RankGuard {
    RankGuard::set(o.distribution.as_ref().map_or(0, |d| d.rank()))
}

/// `verbose`, or 0 on a rank other than 0: only rank 0 prints.
pub(crate) fn verbose(o: &FitOptions) -> u8 {
    if o.distribution.as_ref().is_some_and(|d| !d.is_chief()) {
        0
    } else {
        o.verbose
    }
}

/// Swaps the workspace's gradient tensors (those of the layers after the
/// first `skip`) and batch statistics with the first parts of `parts` (same
/// lengths, same order).
fn swap_parts(ws: &mut Workspace, parts: &mut [Vec<f32>], skip: usize) {
    for (w, p) in ws
        .param_grads
        .iter_mut()
        .skip(skip)
        .flatten()
        .chain(ws.state.iter_mut())
        .zip(parts.iter_mut())
    {
        std::mem::swap(w, p);
    }
}

/// The dropout seed of chunk `chunk` of a step: the step's own seed when
/// the batch is one chunk, so one rank with one chunk is a plain `fit`.
fn chunk_seed(step_seed: u64, chunk: usize, chunks: usize) -> u64 {
    if chunks == 1 {
        step_seed
    } else {
        stream_seed(step_seed, chunk as u64 + 1, 0)
    }
}

/// Hashes a block of rows, whatever its memory layout.
fn hash_rows(h: u64, x: ArrayView2<f32>) -> u64 {
    match x.as_slice() {
        Some(s) => hash_f32s(h, s),
        None => x
            .rows()
            .into_iter()
            .fold(h, |h, r| hash_f32s(h, &r.to_vec())),
    }
}

/// Hashes each array's shape and values, then the sample weights if any:
/// what ranks compare before they split work over data each holds a copy of.
fn hash_data<'a>(
    mut h: u64,
    arrays: impl IntoIterator<Item = ArrayView2<'a, f32>>,
    weights: Option<&[f32]>,
) -> u64 {
    for x in arrays {
        h = hash_words(h, &[x.nrows() as u64, x.ncols() as u64]);
        h = hash_rows(h, x);
    }
    if let Some(w) = weights {
        h = hash_f32s(h, w);
    }
    h
}

impl Sequential {
    /// A fingerprint of the weights alone (what `predict` depends on).
    fn params_fingerprint(&self) -> u64 {
        let mut h = 0x5EED;
        for l in self.layers() {
            for p in l.params() {
                h = hash_f32s(h, p.values);
            }
        }
        h
    }

    /// A fingerprint of the weights and the optimizer's state.
    pub(crate) fn weights_fingerprint(&self) -> u64 {
        let mut h = self.params_fingerprint();
        if let Some(c) = self.compiled() {
            for (_, v) in c.optimizer.slots() {
                h = hash_f32s(h, v);
            }
            h = hash_words(h, &[c.optimizer.iterations()]);
        }
        h
    }

    /// The buffers of a data-parallel `fit` (`None` without
    /// `FitOptions::distribution`), once every rank has shown that it starts
    /// with the same data, options, weights and optimizer state.
    pub(super) fn parallel_start(
        &self,
        o: &FitOptions,
        ws: &Workspace,
        d: ParallelData<'_>,
    ) -> Result<Option<ParallelRun>> {
        let Some(dp) = &o.distribution else {
            return Ok(None);
        };
        let topo = dp.topology()?;
        let options = [
            d.x.nrows() as u64,
            d.n_train as u64,
            d.bs as u64,
            o.epochs as u64,
            o.initial_epoch as u64,
            o.shuffle as u64,
            d.seed,
            topo.chunks as u64,
            o.validation_batch_size.unwrap_or(o.batch_size) as u64,
        ];
        let val = d.val.iter().flat_map(|(vx, vy)| [*vx, *vy]);
        let h = hash_data(
            hash_words(0, &options),
            [d.x, d.y].into_iter().chain(val),
            d.weights,
        );
        dp.agree(
            "data, options, weights or optimizer state",
            hash_words(h, &[self.weights_fingerprint()]),
        )?;
        let elementwise = self
            .compiled()
            .is_some_and(|c| c.optimizer.is_elementwise());
        Ok(Some(ParallelRun::new(
            dp.clone(),
            &self.layers,
            ws,
            d.bs,
            d.out_dim,
            elementwise,
        )?))
    }

    /// The validation logs (`val_` keys), each rank forwarding its block.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn parallel_validate(
        &self,
        c: &Compiled,
        x: ArrayView2<f32>,
        y: ArrayView2<f32>,
        weights: Option<&[f32]>,
        batch_size: usize,
        run: &ParallelRun,
    ) -> Result<Logs> {
        self.evaluate_parallel(c, x, y, weights, batch_size, "val_", &run.dp)
    }

    /// With [`DataParallel::verify_weights`], fails unless every rank holds
    /// the same weights and optimizer state after epoch `epoch`.
    pub(super) fn parallel_verify(&self, run: &ParallelRun, epoch: usize) -> Result<()> {
        if !run.dp.verifies() {
            return Ok(());
        }
        run.dp.agree(
            &format!("weights after epoch {}", epoch + 1),
            self.weights_fingerprint(),
        )
    }

    /// One data-parallel training step on this rank's chunks of `c.rows`;
    /// returns the batch's loss (every rank the same), and like the
    /// one-process step changes no weight when it is not finite.
    pub(super) fn parallel_train_step(
        &mut self,
        ws: &mut Workspace,
        states: &mut [MetricState],
        weighted: &[bool],
        c: &StepContext<'_>,
        run: &mut ParallelRun,
    ) -> Result<f32> {
        let nb = c.rows.len();
        let topo = run.topo;
        let out_w = self.output_dim();
        let tc = ws.target_cols;
        let row_w = 1 + out_w;
        let inv = 1.0 / nb as f32;
        let per_rank = topo.chunks / topo.size;
        ws.regularize = false;
        run.tree.reset();
        // The chunks run inside the thread pool (their parallel parts hand
        // work between its workers). Ranks that share one pool (threads of
        // one process) call this outside the pool, so that the exchange
        // waits outside it and never holds a worker another rank needs.
        let layers = &self.layers;
        let positions = self.output_positions();
        // With the first layer split by columns, its part of the forward pass
        // for every row, then the whole output of this rank's rows.
        let split_dense = match (&mut run.split, layers.first().and_then(|l| l.as_dense())) {
            (Some(split), Some(dense)) => {
                rayon::scope(|_| split.forward(dense, c.x, c.rows, topo.rank));
                split.exchange_outputs(&run.dp, &topo, nb)?;
                Some(dense)
            }
            _ => None,
        };
        let first = split_dense.is_some() as usize;
        let mut split = run.split.as_mut().filter(|_| first == 1);
        rayon::scope(|_| {
            for chunk in topo.my_chunks() {
                let (lo, hi) = topo.chunk_rows(nb, chunk);
                let m = hi - lo;
                // This chunk's rows part: only its own rows are non-zero.
                let leaf = (per_rank > 1).then(|| run.tree.next_leaf());
                let rows_part = match leaf {
                    Some(i) => run.tree.leaf_mut(i).last_mut().map(Vec::as_mut_slice),
                    None => Some(run.rows.as_mut_slice()),
                };
                let rows_part = &mut rows_part.unwrap_or_default()[..nb * row_w];
                rows_part.fill(0.0);
                if m == 0 {
                    // An empty chunk (a batch smaller than the chunk count)
                    // adds zeros.
                    match leaf {
                        Some(i) => run.tree.leaf_mut(i).iter_mut().for_each(|p| p.fill(0.0)),
                        None => {
                            let grads = ws.param_grads.iter_mut().skip(first).flatten();
                            for p in grads.chain(&mut ws.state) {
                                p.fill(0.0);
                            }
                        }
                    }
                } else {
                    let rows = &c.rows[lo..hi];
                    match &split {
                        Some(split) => {
                            let out = &mut ws.acts[1];
                            split.chunk_output(&topo, nb, lo, hi, out);
                        }
                        None => gather_rows(c.x, rows, ws.input_mut(m)),
                    }
                    gather_rows(c.y, rows, &mut ws.targets[..m * tc]);
                    for (k, &r) in rows.iter().enumerate() {
                        ws.sample_weights[k] = c.weights.map_or(1.0, |w| w[r]);
                    }
                    let mut rng = StdRng::seed_from_u64(chunk_seed(c.seed, chunk, topo.chunks));
                    ws.forward_from(layers, first, m, true, &mut rng);
                    let mut grad = std::mem::take(&mut ws.grad_a);
                    let mut losses = std::mem::take(&mut ws.losses);
                    {
                        let logits = if c.fused { ws.logits(layers, m) } else { None };
                        c.loss.per_sample(
                            ws.output(m),
                            view(&ws.targets, m, tc),
                            logits,
                            &mut losses[..m],
                            Some(view_mut(&mut grad, m, out_w)),
                            positions,
                        );
                    }
                    for (k, row) in grad[..m * out_w].chunks_exact_mut(out_w).enumerate() {
                        let f = ws.sample_weights[k] * inv;
                        row.iter_mut().for_each(|g| *g *= f);
                    }
                    let out = ws.output(m);
                    for (k, dst) in rows_part[lo * row_w..hi * row_w]
                        .chunks_exact_mut(row_w)
                        .enumerate()
                    {
                        dst[0] = losses[k];
                        for (d, v) in dst[1..].iter_mut().zip(out.row(k)) {
                            *d = *v;
                        }
                    }
                    ws.grad_a = grad;
                    ws.losses = losses;
                    ws.backward_until(layers, first, m, c.fused);
                    if let Some(split) = split.as_mut() {
                        split.keep_chunk_grad(&topo, nb, lo, hi, &ws.grad_a);
                    }
                    if let Some(i) = leaf {
                        swap_parts(ws, run.tree.leaf_mut(i), first);
                    }
                }
                if let Some(i) = leaf {
                    run.tree.push(i);
                }
            }
        });
        if per_rank > 1 {
            let root = run.tree.root();
            let parts = run.tree.leaf_mut(root);
            swap_parts(ws, parts, first);
            if let Some(r) = parts.last_mut() {
                std::mem::swap(r, &mut run.rows);
            }
        }
        run.segments.clear();
        if let (Some(split), Some(dense)) = (run.split.as_mut(), split_dense) {
            // The split layer's kernel was most of the message: the rest is
            // small, so it goes as one allreduce, carried by the exchange of
            // the split layer's output gradients (the same sums over the
            // same tree, fewer points where a rank waits for another), and
            // every rank updates all of it.
            let mut at = 0;
            for p in ws.param_grads.iter().skip(first).flatten().chain(&ws.state) {
                run.packed[at..at + p.len()].copy_from_slice(p);
                at += p.len();
            }
            run.packed[at..at + nb * row_w].copy_from_slice(&run.rows[..nb * row_w]);
            let len = at + nb * row_w;
            split.exchange_grads(&run.dp, &topo, nb, &mut run.packed[..len])?;
            let mut at = 0;
            for p in ws
                .param_grads
                .iter_mut()
                .skip(first)
                .flatten()
                .chain(&mut ws.state)
            {
                let n = p.len();
                p.copy_from_slice(&run.packed[at..at + n]);
                at += n;
            }
            run.rows[..nb * row_w].copy_from_slice(&run.packed[at..len]);
            // The split layer's gradients: its columns, from every row.
            rayon::scope(|_| split.weight_grads(dense, &topo, nb, &mut ws.param_grads[0]));
            let mine = split.columns(topo.rank);
            run.segments
                .extend(ws.param_grads[0].iter().map(|_| mine.clone()));
            for p in ws.param_grads.iter().skip(first).flatten() {
                run.segments.push(0..p.len());
            }
        } else {
            // Every part summed across ranks, in place; with a sharded
            // update, each rank sums only its segment of each gradient tensor.
            for p in ws.param_grads.iter_mut().flatten() {
                if run.sharded {
                    run.segments.push(run.dp.reduce_scatter(p, &mut run.recv)?);
                } else {
                    run.dp.allreduce(p, &mut run.recv)?;
                }
            }
            for p in ws.state.iter_mut() {
                run.dp.allreduce(p, &mut run.recv)?;
            }
            run.dp
                .allreduce(&mut run.rows[..nb * row_w], &mut run.recv)?;
        }
        let total = &run.rows[..nb * row_w];

        // The loss and metrics of the whole batch, in row order.
        let mut sum = 0.0f64;
        for (k, &r) in c.rows.iter().enumerate() {
            let w = c.weights.map_or(1.0, |w| w[r]);
            run.weights[k] = w;
            sum += (total[k * row_w] * w) as f64;
            run.outputs[k * out_w..(k + 1) * out_w]
                .copy_from_slice(&total[k * row_w + 1..][..out_w]);
        }
        let batch_loss = (sum / nb as f64) as f32 + self.regularization_penalty();
        if !batch_loss.is_finite() {
            return Ok(batch_loss);
        }
        gather_rows(c.y, c.rows, &mut run.targets[..nb * tc]);
        {
            let targets = view(&run.targets, nb, tc);
            let outputs = view(&run.outputs, nb, out_w);
            let w = c.weights.map(|_| &run.weights[..nb]);
            for (s, &weighted) in states.iter_mut().zip(weighted) {
                s.update(targets, outputs, if weighted { w } else { None });
            }
        }

        // Batch statistics: the mean over the chunks that had rows.
        let filled = (0..topo.chunks)
            .filter(|&i| {
                let (lo, hi) = topo.chunk_rows(nb, i);
                hi > lo
            })
            .count()
            .max(1);
        if filled > 1 {
            let scale = 1.0 / filled as f32;
            for st in ws.state.iter_mut() {
                st.iter_mut().for_each(|v| *v *= scale);
            }
        }
        for (layer, g) in self.layers.iter().zip(ws.param_grads.iter_mut()) {
            layer.add_regularization_gradient(g);
        }
        if run.sharded {
            self.apply_sharded(ws, run)?;
        } else {
            self.apply_step(ws)?;
        }
        Ok(batch_loss)
    }

    /// The optimizer step on this rank's segment of each weight tensor, then
    /// the updated segments gathered from all ranks: every element gets the
    /// arithmetic of the whole update, so every rank ends with the weights a
    /// replicated update gives, for `1/P` of the optimizer's work. The
    /// optimizer's own state is then current on this rank's segments only;
    /// [`Sequential::parallel_sync_optimizer`] gathers it at epoch ends.
    fn apply_sharded(&mut self, ws: &mut Workspace, run: &mut ParallelRun) -> Result<()> {
        let compiled = self.compiled.as_mut().ok_or(Error::NotCompiled("fit"))?;
        let opt = &mut compiled.optimizer;
        let mut idx = 0;
        let mut gathered = Ok(());
        // The split first layer: its columns of each row (the kernel) or of
        // its one row (the bias), never gathered during the epoch.
        let (rank, split_any) = (run.topo.rank, run.split.is_some());
        for (l, layer) in self.layers.iter_mut().enumerate() {
            let (grads, flags) = (&mut ws.param_grads[l], &ws.trainable[l]);
            let (mut j, mut k) = (0, 0);
            let mut split = run.split.as_mut().filter(|_| l == 0);
            layer.visit_params_mut(&mut |p| {
                if flags.get(k).copied().unwrap_or(false) {
                    match (run.segments.get(idx), split.as_mut()) {
                        // The split kernel: this rank's columns, kept apart.
                        (Some(_), Some(split)) if j == 0 => split.update_kernel(opt, idx, rank),
                        (Some(seg), _) => opt.update_range(idx, p, &mut grads[j], seg.clone()),
                        (None, _) => {}
                    }
                    // With a split first layer every rank updates all of
                    // the other tensors (replicated), so nothing to gather.
                    if gathered.is_ok() && !split_any {
                        gathered = run.dp.allgather(p);
                    }
                    idx += 1;
                    j += 1;
                }
                k += 1;
            });
        }
        gathered?;
        opt.finish_step();
        for (layer, state) in self.layers.iter_mut().zip(&ws.state) {
            if !state.is_empty() {
                layer.end_train_step(state);
            }
        }
        Ok(())
    }

    /// After sharded steps, gathers the optimizer's state so that every rank
    /// holds all of it (before a checkpoint is written, and when `fit` ends),
    /// and the columns of a split first layer.
    pub(super) fn parallel_sync_optimizer(&mut self, run: &mut ParallelRun) -> Result<()> {
        if !run.sharded {
            return Ok(());
        }
        // The split layer's tensors come first in the optimizer's order:
        // its kernel, then its bias, with their state.
        let compiled = self.compiled.as_mut().ok_or(Error::NotCompiled("fit"))?;
        let mut split_tensors = 0;
        if let (Some(split), Some(layer)) = (run.split.as_mut(), self.layers.first_mut()) {
            let (dp, rank) = (&run.dp, run.topo.rank);
            let opt = &mut compiled.optimizer;
            let mut gathered = Ok(());
            layer.visit_params_mut(&mut |p| {
                let (slots, _) = opt.slot_planes_mut(split_tensors);
                if gathered.is_ok() {
                    gathered = if split_tensors == 0 {
                        split.gather_kernel(dp, rank, p, slots)
                    } else {
                        split.gather_columns(dp, rank, p).and_then(|()| {
                            for plane in slots.chunks_exact_mut(p.len().max(1)) {
                                split.gather_columns(dp, rank, plane)?;
                            }
                            Ok(())
                        })
                    };
                }
                split_tensors += 1;
            });
            gathered?;
        }
        for i in split_tensors..run.segments.len() {
            let (slots, planes) = compiled.optimizer.slot_planes_mut(i);
            if planes == 0 {
                continue;
            }
            let n = slots.len() / planes;
            for plane in slots.chunks_exact_mut(n.max(1)) {
                run.dp.allgather(plane)?;
            }
        }
        Ok(())
    }

    /// `evaluate` on `(x, y)` with each rank forwarding one contiguous block
    /// of rows; the same numbers as one process, on every rank. Fails on
    /// every rank unless all hold the same data, options and weights (as
    /// `fit` does): a rank's block of other data would be summed in silently.
    /// In `fit`'s validation that costs one pass over the validation rows and
    /// the weights per epoch, far less than forwarding them.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn evaluate_parallel(
        &self,
        c: &Compiled,
        x: ArrayView2<f32>,
        y: ArrayView2<f32>,
        weights: Option<&[f32]>,
        batch_size: usize,
        prefix: &str,
        dp: &DataParallel,
    ) -> Result<Logs> {
        let h = hash_words(0, &[batch_size as u64, weights.is_some() as u64]);
        dp.agree(
            "data (`x`, `y`, `sample_weight`), batch size or weights",
            hash_words(hash_data(h, [x, y], weights), &[self.params_fingerprint()]),
        )?;
        let topo = dp.topology()?;
        let n = x.nrows();
        let out_w = self.output_dim();
        let row_w = 1 + out_w;
        let (lo, hi) = topo.my_rows(n);
        let block = n.min(self.rows_per_block(batch_size.max(MIN_BLOCK))).max(1);
        let context = eval_context(prefix);
        let mut budget = Budget::new(context)?;
        let mut rows = budget.rows(n, row_w, 0.0, || "each row's loss and output".into())?;
        let mut recv = budget.rows(n, row_w, 0.0, || "the exchange's buffer".into())?;
        let mut outputs = budget.rows(block, out_w, 0.0, || "the outputs".into())?;
        let mut losses = vec![0.0f32; block];
        self.forward_blocks(x.slice(s![lo..hi, ..]), block, context, |start, nb, ws| {
            let at = lo + start;
            self.inference_losses(c, ws, y.slice(s![at..at + nb, ..]), &mut losses[..nb]);
            let out = ws.output(nb);
            for (k, dst) in rows[at * row_w..(at + nb) * row_w]
                .chunks_exact_mut(row_w)
                .enumerate()
            {
                dst[0] = losses[k];
                for (d, v) in dst[1..].iter_mut().zip(out.row(k)) {
                    *d = *v;
                }
            }
        })?;
        dp.allreduce(&mut rows, &mut recv)?;

        // Folded as one process folds its blocks.
        let mut states: Vec<MetricState> = c
            .entries
            .iter()
            .map(|e| MetricState::new(e.resolved).per_position(self.output_positions()))
            .collect();
        let mut total = 0.0f64;
        for start in (0..n).step_by(block) {
            let nb = block.min(n - start);
            let wb = weights.map(|w| &w[start..start + nb]);
            for (k, r) in rows[start * row_w..(start + nb) * row_w]
                .chunks_exact(row_w)
                .enumerate()
            {
                total += r[0] as f64 * wb.map_or(1.0, |w| w[k] as f64);
                outputs[k * out_w..(k + 1) * out_w].copy_from_slice(&r[1..]);
            }
            let yb = y.slice(s![start..start + nb, ..]);
            let yb = yb.as_standard_layout();
            for (s, e) in states.iter_mut().zip(&c.entries) {
                let w = if e.weighted { wb } else { None };
                s.update(yb.view(), view(&outputs, nb, out_w), w);
            }
        }
        let mut logs = Logs::default();
        let loss = (total / n.max(1) as f64) as f32 + self.regularization_penalty();
        logs.insert(format!("{prefix}loss"), loss);
        for (e, s) in c.entries.iter().zip(&states) {
            logs.insert(format!("{prefix}{}", e.key), s.result());
        }
        Ok(logs)
    }

    /// `predict` with each rank forwarding one contiguous block of rows;
    /// every rank returns all predictions. Fails on every rank unless all
    /// hold the same `x` and weights (as `fit` does): otherwise each would
    /// return a patchwork of the ranks' rows.
    pub(crate) fn predict_parallel(
        &self,
        x: ArrayView2<f32>,
        dp: &DataParallel,
    ) -> Result<Array2<f32>> {
        let topo = dp.topology()?;
        dp.agree(
            "inputs `x` or weights",
            hash_words(hash_data(0, [x], None), &[self.params_fingerprint()]),
        )?;
        let n = x.nrows();
        let (lo, hi) = topo.my_rows(n);
        let mine = self.predict_view(x.slice(s![lo..hi, ..]))?;
        let mut out = zeros_rows("predict", n, self.output_dim(), "the predictions")?;
        out.slice_mut(s![lo..hi, ..]).assign(&mine);
        let mut recv =
            Budget::new("predict")?.values(out.len(), 0.0, || "the exchange's buffer".into())?;
        let buf = out
            .as_slice_mut()
            .ok_or_else(|| Error::Distributed("predictions are not contiguous".into()))?;
        dp.allreduce(buf, &mut recv)?;
        Ok(out)
    }
}
