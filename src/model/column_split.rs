//! A data-parallel `fit`'s first `Dense` layer split by columns across the
//! ranks (tensor parallelism for that one layer, the way Megatron-LM splits
//! an MLP's first product), so that its kernel, most of an MLP's weights,
//! never crosses the wire during an epoch.
//!
//! Every rank holds all of the data, so every rank can read every row of a
//! batch. A step on rank `r` of `P`, whose columns are `cols[r]` (a `1/P`
//! share of the layer's units):
//!
//! ```text
//! 1. all rows of the batch through its columns: y[:, cols[r]]  (the same
//!    multiply-adds as one rank's rows through all columns)
//! 2. all-to-all: rank q gets y[q's rows, cols[r]]; rank r gets the other
//!    ranks' columns of its own rows, i.e. the layer's whole output for its
//!    chunks, and runs the rest of the model on them as before
//! 3. backward down to the layer's output gradient dy (its chunks' rows);
//!    all-to-all: rank q gets dy[r's rows, cols[q]], and rank r gets
//!    dy[every row, cols[r]]
//! 4. the kernel and bias gradients of its columns, chunk by chunk, summed
//!    over the same binary tree of chunks as every other gradient; the
//!    optimizer updates its columns. Nothing is gathered per step (the
//!    other, small, tensors go as one allreduce and every rank updates them
//!    whole).
//! ```
//!
//! A rank keeps its columns of the kernel, and their gradient, apart and
//! contiguous during an epoch, and the optimizer's state of the kernel laid
//! out in blocks of columns, so that the products and the optimizer read
//! each in one run rather than in rows of a few hundred values (the
//! optimizer's step on a split kernel took about 2.5 times as long per value
//! with rows; the epoch 8% longer). At the end of each epoch (and whenever
//! `fit` stops) the columns and their state are put back in rows and
//! gathered, so that validation, callbacks, checkpoints and the returned
//! model see the whole layer on every rank. During an epoch the model's own
//! copy of the kernel is the one from the epoch's start; the bias is updated
//! in place, in this rank's columns.
//!
//! **Same bits as one process.** Each output column is its own dot products
//! (summed over the inputs in one fixed order, whatever block of rows or
//! columns the product is cut into; see [`crate::kernels`]) and its own
//! elementwise steps, and each chunk's gradient comes from the same rows
//! through the same operations, added over the same tree. So a run gives the
//! bits of one process with the same number of chunks.
//!
//! **Why.** Per step a rank sends `2 (P - 1)/P · rows · units` values (the
//! layer's outputs and their gradients) instead of
//! `2 (P - 1)/P · (inputs + 1) · units` (the kernel's gradient segments and
//! updated weights): 128 rows against 785 for the MNIST MLP, six times
//! less. The split is chosen when the batch has fewer rows than the layer
//! has inputs. Each rank also packs only its columns of the kernel for the
//! forward product, instead of all of it.

use std::ops::Range;

use ndarray::{s, ArrayView2, ArrayViewMut2};

use super::infer::gather_rows;
use super::workspace::{view, view_mut, Workspace};
use crate::distribute::{DataParallel, Topology};
use crate::error::Result;
use crate::kernels::{gemm, gemm_add_exact};
use crate::layers::{column_sums, Dense, Layer};
use crate::memory::Budget;
use crate::optimizers::Optimizer;

/// The buffers of the split, allocated once per `fit`.
pub(crate) struct ColumnSplit {
    inputs: usize,
    units: usize,
    /// Each rank's block of the units.
    cols: Vec<Range<usize>>,
    /// Whether the activation's gradient reads the pre-activation values.
    has_z: bool,
    /// The batch's input rows (`rows x inputs`).
    x: Vec<f32>,
    /// This rank's columns of the output, the pre-activation values and the
    /// output gradient, for every row of the batch (`rows x w`).
    y: Vec<f32>,
    z: Vec<f32>,
    dy: Vec<f32>,
    /// The other ranks' columns for this rank's rows: the outputs received
    /// and the gradients to send, rank `q`'s block (`mine x w_q`) at
    /// `mine * cols[q].start`.
    theirs_y: Vec<f32>,
    theirs_dy: Vec<f32>,
    /// A kernel-and-bias gradient (`inputs x w`, then `w`) per level of the
    /// chunk tree below its root.
    temps: Vec<Vec<f32>>,
    /// This rank's columns of the kernel and their gradient, contiguous
    /// (`inputs x w`): the products and the optimizer read them in one run
    /// each instead of in rows of `w` values.
    kernel: Vec<f32>,
    grad: Vec<f32>,
    /// Whether `kernel` holds the model's columns (loaded at an epoch's
    /// first step, stored at its end), and whether the optimizer's state of
    /// the kernel is laid out in blocks of columns (rank `q`'s block,
    /// `inputs x w_q`, at `inputs * cols[q].start`) instead of rows.
    fresh: bool,
    blocked: bool,
    /// Whole tensors gathered at epoch ends, in blocks of columns.
    stage: Vec<f32>,
    /// Staging for the gradients' exchange when it carries the step's other
    /// sums ([`ColumnSplit::carrying`]).
    send: Vec<f32>,
    recv: Vec<f32>,
}

/// Rows `[lo, hi)` of the batch that rank `q`'s chunks cover.
fn rank_rows(topo: &Topology, nb: usize, q: usize) -> (usize, usize) {
    let per = topo.chunks / topo.size;
    (
        topo.chunk_rows(nb, q * per).0,
        topo.chunk_rows(nb, (q + 1) * per - 1).1,
    )
}

/// `(&buf[a], &mut buf[b])` for disjoint ranges.
fn disjoint(buf: &mut [f32], a: Range<usize>, b: Range<usize>) -> (&[f32], &mut [f32]) {
    if a.start < b.start {
        let (lo, hi) = buf.split_at_mut(b.start);
        (&lo[a], &mut hi[..b.len()])
    } else {
        let (lo, hi) = buf.split_at_mut(a.start);
        (&hi[..a.len()], &mut lo[b])
    }
}

impl ColumnSplit {
    /// The split of `layers[0]` for batches of up to `bs` rows, or `None`
    /// where it does not apply or pay: it needs at least two ranks, a first
    /// `Dense` layer on flat inputs with an elementwise activation, all of its
    /// weights trainable and no regularizer (the loss adds a penalty of the
    /// whole kernel every step), a layer after it, and a batch with fewer
    /// rows than the layer has inputs.
    pub fn new(
        layers: &[Box<dyn Layer>],
        ws: &Workspace,
        topo: Topology,
        bs: usize,
        budget: &mut Budget,
    ) -> Result<Option<Self>> {
        let Some(dense) = layers.first().and_then(|l| l.as_dense()) else {
            return Ok(None);
        };
        let (inputs, units) = (dense.kernel.nrows(), dense.units);
        let p = topo.size;
        let applies = p > 1
            && layers.len() > 1
            && !dense.activation.is_row_wise()
            && ws.widths.first() == Some(&inputs)
            && ws.mask_from != Some(0)
            && ws.state.first().is_some_and(Vec::is_empty)
            && ws.trainable.first().is_some_and(|t| t.iter().all(|&t| t))
            && dense.kernel_regularizer.is_none()
            && dense.bias_regularizer.is_none()
            && units >= p
            && bs < inputs;
        if !applies {
            return Ok(None);
        }
        let cols: Vec<Range<usize>> = (0..p).map(|q| q * units / p..(q + 1) * units / p).collect();
        let w = cols[topo.rank].len();
        let has_z = dense.activation.backward_needs_input();
        let levels = topo.chunks.trailing_zeros() as usize;
        let mut rows = |r: usize, c: usize, what: &'static str| {
            budget.rows(r, c, 0.0, || format!("the split layer's {what}"))
        };
        Ok(Some(ColumnSplit {
            inputs,
            units,
            has_z,
            x: rows(bs, inputs, "inputs")?,
            y: rows(bs, w, "outputs")?,
            z: rows(if has_z { bs } else { 0 }, w, "pre-activations")?,
            dy: rows(bs, w, "gradients")?,
            theirs_y: rows(bs, units, "outputs")?,
            theirs_dy: rows(bs, units, "gradients")?,
            temps: (0..levels)
                .map(|_| rows(inputs + 1, w, "sums"))
                .collect::<Result<_>>()?,
            kernel: rows(inputs, w, "kernel")?,
            grad: rows(inputs, w, "kernel gradient")?,
            fresh: false,
            blocked: false,
            send: Vec::new(),
            recv: Vec::new(),
            stage: rows(inputs, units, "kernel")?,
            cols,
        }))
    }

    /// Step part 1: the batch's rows `rows` of `x` through this rank's
    /// columns.
    pub fn forward(
        &mut self,
        dense: &Dense,
        x: ndarray::ArrayView2<f32>,
        rows: &[usize],
        rank: usize,
    ) {
        let nb = rows.len();
        let inputs = self.inputs;
        gather_rows(x, rows, &mut self.x[..nb * inputs]);
        let mine = self.cols[rank].clone();
        let w = mine.len();
        if !self.fresh {
            let kernel = dense.kernel.slice(s![.., mine.clone()]);
            view_mut(&mut self.kernel, inputs, w).assign(&kernel);
            self.fresh = true;
        }
        let bias = if dense.bias.is_empty() {
            &[][..]
        } else {
            &dense.bias[mine]
        };
        let z = self.has_z.then(|| &mut self.z[..nb * w]);
        dense.forward_block(
            view(&self.kernel, inputs, w),
            bias,
            view(&self.x, nb, inputs),
            view_mut(&mut self.y, nb, w),
            z,
        );
    }

    /// Step part 2: each other rank gets this rank's columns of its rows, and
    /// this rank the other columns of its own rows.
    pub fn exchange_outputs(
        &mut self,
        dp: &DataParallel,
        topo: &Topology,
        nb: usize,
    ) -> Result<()> {
        let blocks = Blocks::new(&self.cols, topo, nb);
        blocks.exchange(dp, &mut self.y, &mut self.theirs_y, true, None)
    }

    /// The layer's whole output for rows `lo..hi` of the batch (one of this
    /// rank's chunks), into `out` (`(hi - lo) x units`).
    pub fn chunk_output(&self, topo: &Topology, nb: usize, lo: usize, hi: usize, out: &mut [f32]) {
        let blocks = Blocks::new(&self.cols, topo, nb);
        for (k, row) in out.chunks_exact_mut(self.units).take(hi - lo).enumerate() {
            for (q, cols) in self.cols.iter().enumerate() {
                let (src, at) = match blocks.place(q, lo + k) {
                    Place::Own(at) => (&self.y, at),
                    Place::Theirs(at) => (&self.theirs_y, at),
                };
                row[cols.clone()].copy_from_slice(&src[at]);
            }
        }
    }

    /// Keeps the output gradient `dy` (`(hi - lo) x units`) of rows `lo..hi`
    /// (one of this rank's chunks): its own columns, and the others' to send.
    pub fn keep_chunk_grad(
        &mut self,
        topo: &Topology,
        nb: usize,
        lo: usize,
        hi: usize,
        dy: &[f32],
    ) {
        let blocks = Blocks::new(&self.cols, topo, nb);
        for (k, row) in dy.chunks_exact(self.units).take(hi - lo).enumerate() {
            for (q, cols) in self.cols.iter().enumerate() {
                let (dst, at) = match blocks.place(q, lo + k) {
                    Place::Own(at) => (&mut self.dy, at),
                    Place::Theirs(at) => (&mut self.theirs_dy, at),
                };
                dst[at].copy_from_slice(&row[cols.clone()]);
            }
        }
    }

    /// Room for [`ColumnSplit::exchange_grads`] to carry `len` summed
    /// values.
    pub fn carrying(mut self, len: usize, budget: &mut Budget) -> Result<Self> {
        let most = self.theirs_dy.len().max(self.dy.len()).saturating_add(len);
        self.send = budget.values(most, 0.0, || "the split layer's exchange".into())?;
        self.recv = budget.values(most, 0.0, || "the split layer's exchange".into())?;
        Ok(self)
    }

    /// Step part 3: each other rank gets its columns of this rank's rows'
    /// gradients, and this rank its columns of every row's; `sum` is summed
    /// over all ranks on the way, as [`DataParallel::allreduce`] sums (the
    /// partner `rank ^ 2^k` at level `k` is this exchange's round `2^k`).
    pub fn exchange_grads(
        &mut self,
        dp: &DataParallel,
        topo: &Topology,
        nb: usize,
        sum: &mut [f32],
    ) -> Result<()> {
        let blocks = Blocks::new(&self.cols, topo, nb);
        let carried = Carried {
            values: sum,
            send: &mut self.send,
            recv: &mut self.recv,
        };
        blocks.exchange(dp, &mut self.dy, &mut self.theirs_dy, false, Some(carried))
    }

    /// Step part 4: this rank's columns of the kernel gradient (kept here)
    /// and of the bias gradient (in `grads`, the layer's whole gradient
    /// tensors), summed over the chunks' tree.
    pub fn weight_grads(
        &mut self,
        dense: &Dense,
        topo: &Topology,
        nb: usize,
        grads: &mut [Vec<f32>],
    ) {
        let mine = self.cols[topo.rank].clone();
        let gk = view_mut(&mut self.grad, self.inputs, mine.len());
        let gb = grads.get_mut(1).map(|b| &mut b[mine.clone()]);
        let mut rows = Rows {
            inputs: self.inputs,
            w: mine.len(),
            x: &self.x,
            y: &self.y,
            z: &self.z,
            dy: &mut self.dy,
        };
        tree_grads(
            dense,
            &mut rows,
            topo,
            nb,
            0..topo.chunks,
            &mut self.temps,
            gk,
            gb,
        );
    }

    /// Gathers every rank's columns of `buf` (rows of `units` values: the
    /// kernel, the bias, or a plane of their optimizer state) so that every
    /// rank holds all of them.
    pub fn gather_columns(
        &mut self,
        dp: &DataParallel,
        rank: usize,
        buf: &mut [f32],
    ) -> Result<()> {
        let units = self.units;
        let rows = buf.len() / units;
        let stage = &mut self.stage[..rows * units];
        let mine = self.cols[rank].clone();
        let w = mine.len();
        let at = rows * mine.start;
        for (r, row) in buf.chunks_exact(units).enumerate() {
            stage[at + r * w..at + (r + 1) * w].copy_from_slice(&row[mine.clone()]);
        }
        for k in 1..self.cols.len() {
            let q = rank ^ k;
            let theirs = rows * self.cols[q].start..rows * self.cols[q].end;
            let (send, recv) = disjoint(stage, at..at + rows * w, theirs);
            dp.exchange(q, send, recv)?;
        }
        for (_, cols) in self.cols.iter().enumerate().filter(|&(q, _)| q != rank) {
            let wq = cols.len();
            let from = rows * cols.start;
            for (r, row) in buf.chunks_exact_mut(units).enumerate() {
                row[cols.clone()].copy_from_slice(&stage[from + r * wq..from + (r + 1) * wq]);
            }
        }
        Ok(())
    }

    /// The optimizer step on this rank's columns of the kernel (tensor `i`
    /// of `opt`), its state laid out in blocks of columns first.
    pub fn update_kernel(&mut self, opt: &mut Optimizer, i: usize, rank: usize) {
        if !self.blocked {
            let (slots, planes) = opt.slot_planes_mut(i);
            for plane in slots
                .chunks_exact_mut(self.inputs * self.units)
                .take(planes)
            {
                self.arrange_in_blocks(plane);
            }
            self.blocked = true;
        }
        let at = self.inputs * self.cols[rank].start;
        let n = self.inputs * self.units;
        opt.update_at(i, n, &mut self.kernel, &mut self.grad, at);
    }

    /// Rearranges a plane of the kernel's optimizer state from rows to blocks
    /// of columns.
    fn arrange_in_blocks(&mut self, plane: &mut [f32]) {
        let (inputs, units) = (self.inputs, self.units);
        for cols in &self.cols {
            let w = cols.len();
            let block = &mut self.stage[inputs * cols.start..inputs * cols.end];
            for (r, row) in plane.chunks_exact(units).enumerate() {
                block[r * w..(r + 1) * w].copy_from_slice(&row[cols.clone()]);
            }
        }
        plane.copy_from_slice(&self.stage[..plane.len()]);
    }

    /// The inverse of [`ColumnSplit::arrange_in_blocks`].
    fn arrange_in_rows(&mut self, plane: &mut [f32]) {
        let (inputs, units) = (self.inputs, self.units);
        self.stage[..plane.len()].copy_from_slice(plane);
        for cols in &self.cols {
            let w = cols.len();
            let block = &self.stage[inputs * cols.start..inputs * cols.end];
            for (r, row) in plane.chunks_exact_mut(units).enumerate() {
                row[cols.clone()].copy_from_slice(&block[r * w..(r + 1) * w]);
            }
        }
    }

    /// At an epoch's end: every rank's columns of the kernel (`kernel`, the
    /// model's) and of its optimizer state (`planes`, `n` values each), and
    /// the bias and its state (gathered by the caller), onto every rank, laid
    /// out in rows again.
    pub fn gather_kernel(
        &mut self,
        dp: &DataParallel,
        rank: usize,
        kernel: &mut [f32],
        planes: &mut [f32],
    ) -> Result<()> {
        if self.fresh {
            let mine = self.cols[rank].clone();
            view_mut(kernel, self.inputs, self.units)
                .slice_mut(s![.., mine.clone()])
                .assign(&view(&self.kernel, self.inputs, mine.len()));
        }
        self.gather_columns(dp, rank, kernel)?;
        for plane in planes.chunks_exact_mut(kernel.len().max(1)) {
            if self.blocked {
                self.arrange_in_rows(plane);
            }
            self.gather_columns(dp, rank, plane)?;
        }
        self.fresh = false;
        self.blocked = false;
        Ok(())
    }

    /// This rank's block of the units.
    pub fn columns(&self, rank: usize) -> Range<usize> {
        self.cols[rank].clone()
    }
}

/// Where a step keeps each rank's columns of a row, in the buffers of this
/// rank's columns for every row of the batch (`y`, `dy`: `rows x w`) and of
/// the other ranks' columns for this rank's rows (`theirs_y`,
/// `theirs_dy`: rank `q`'s block, `mine x w_q`, at `mine * cols[q].start`).
struct Blocks<'a> {
    cols: &'a [Range<usize>],
    topo: &'a Topology,
    nb: usize,
    /// This rank's first row and its number of rows.
    lo: usize,
    mine: usize,
}

enum Place {
    Own(Range<usize>),
    Theirs(Range<usize>),
}

impl<'a> Blocks<'a> {
    fn new(cols: &'a [Range<usize>], topo: &'a Topology, nb: usize) -> Self {
        let (lo, hi) = rank_rows(topo, nb, topo.rank);
        Blocks {
            cols,
            topo,
            nb,
            lo,
            mine: hi - lo,
        }
    }

    /// Where rank `q`'s columns of row `g` (one of this rank's) are.
    fn place(&self, q: usize, g: usize) -> Place {
        let w = self.cols[q].len();
        if q == self.topo.rank {
            Place::Own(g * w..(g + 1) * w)
        } else {
            let at = self.mine * self.cols[q].start + (g - self.lo) * w;
            Place::Theirs(at..at + w)
        }
    }

    /// The all-to-all of a step: with every other rank `q`, this rank's
    /// columns of `q`'s rows (in `own`) against `q`'s columns of this rank's
    /// rows (`q`'s block of `theirs`); `send_own` sends the former and
    /// receives the latter (outputs), otherwise the reverse (gradients).
    /// Rounds `2^k` (partner `rank ^ 2^k`) also carry `carried`'s values and
    /// add the partner's: the recursive doubling of
    /// [`DataParallel::allreduce`], level by level in the same order.
    fn exchange(
        &self,
        dp: &DataParallel,
        own: &mut [f32],
        theirs: &mut [f32],
        send_own: bool,
        mut carried: Option<Carried<'_>>,
    ) -> Result<()> {
        let r = self.topo.rank;
        let w = self.cols[r].len();
        for k in 1..self.topo.size {
            let q = r ^ k;
            let (qlo, qhi) = rank_rows(self.topo, self.nb, q);
            let at = self.mine * self.cols[q].start;
            let block = &mut theirs[at..at + self.mine * self.cols[q].len()];
            let rows = &mut own[qlo * w..qhi * w];
            let (out, into) = if send_own {
                (rows, block)
            } else {
                (block, rows)
            };
            match carried.as_mut().filter(|_| k.is_power_of_two()) {
                None => dp.exchange(q, out, into)?,
                Some(c) => {
                    let (a, b, v) = (out.len(), into.len(), c.values.len());
                    c.send[..a].copy_from_slice(out);
                    c.send[a..a + v].copy_from_slice(c.values);
                    dp.exchange(q, &c.send[..a + v], &mut c.recv[..b + v])?;
                    into.copy_from_slice(&c.recv[..b]);
                    // `mine + theirs` here equals `theirs + mine` there.
                    for (x, y) in c.values.iter_mut().zip(&c.recv[b..b + v]) {
                        *x += *y;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Values summed over the ranks on the way of an exchange, and its staging.
struct Carried<'a> {
    values: &'a mut [f32],
    send: &'a mut [f32],
    recv: &'a mut [f32],
}

/// The per-row buffers [`tree_grads`] reads.
struct Rows<'a> {
    inputs: usize,
    w: usize,
    x: &'a [f32],
    y: &'a [f32],
    z: &'a [f32],
    dy: &'a mut [f32],
}

impl Rows<'_> {
    /// Rows `lo..hi`: inputs, outputs, pre-activation values (empty when
    /// not kept) and output gradients.
    #[allow(clippy::type_complexity)]
    fn chunk(
        &mut self,
        (lo, hi): (usize, usize),
    ) -> (
        ArrayView2<'_, f32>,
        ArrayView2<'_, f32>,
        &[f32],
        ArrayViewMut2<'_, f32>,
    ) {
        let (m, inputs, w) = (hi - lo, self.inputs, self.w);
        let z = if self.z.is_empty() {
            &[][..]
        } else {
            &self.z[lo * w..hi * w]
        };
        (
            view(&self.x[lo * inputs..], m, inputs),
            view(&self.y[lo * w..], m, w),
            z,
            view_mut(&mut self.dy[lo * w..], m, w),
        )
    }
}

/// The gradients of chunks `chunks` summed over their perfect binary tree
/// (left half into `gk`/`gb`, right half into the first temp, then added; a
/// right half of one chunk is added by the product itself where the kernel
/// can, [`gemm_add_exact`]): the tree [`crate::distribute::TreeSum`] and the
/// exchanges across ranks sum every other gradient over.
#[allow(clippy::too_many_arguments)]
fn tree_grads(
    dense: &Dense,
    rows: &mut Rows<'_>,
    topo: &Topology,
    nb: usize,
    chunks: Range<usize>,
    temps: &mut [Vec<f32>],
    mut gk: ArrayViewMut2<f32>,
    mut gb: Option<&mut [f32]>,
) {
    let (inputs, w) = (rows.inputs, rows.w);
    assert!(
        chunks.len() == 1 || !temps.is_empty(),
        "a chunk tree deeper than its buffers (an internal invariant: one per level)"
    );
    let Some((temp, deeper)) = temps.split_first_mut().filter(|_| chunks.len() > 1) else {
        let (x, y, z, dy) = rows.chunk(topo.chunk_rows(nb, chunks.start));
        dense.weight_grads(x, y, z, dy, false, gk, gb);
        return;
    };
    let mid = chunks.start + chunks.len() / 2;
    tree_grads(
        dense,
        rows,
        topo,
        nb,
        chunks.start..mid,
        deeper,
        gk.view_mut(),
        gb.as_deref_mut(),
    );
    let (tk, tb) = temp.split_at_mut(inputs * w);
    let mut tk = view_mut(tk, inputs, w);
    let tb = &mut tb[..w];
    let added = if chunks.end - mid == 1 {
        let (x, y, z, mut dz) = rows.chunk(topo.chunk_rows(nb, mid));
        dense.preactivation_grad(y, z, dz.view_mut());
        if let Some(gb) = gb.as_deref_mut() {
            column_sums(dz.view(), tb);
            gb.iter_mut().zip(tb.iter()).for_each(|(a, &b)| *a += b);
        }
        if gemm_add_exact(x.t(), dz.view(), gk.view_mut()) {
            return;
        }
        gemm(x.t(), dz.view(), tk.view_mut());
        true
    } else {
        false
    };
    if !added {
        let has_bias = gb.is_some();
        tree_grads(
            dense,
            rows,
            topo,
            nb,
            mid..chunks.end,
            deeper,
            tk.view_mut(),
            has_bias.then_some(&mut tb[..]),
        );
        if let Some(gb) = gb {
            gb.iter_mut().zip(tb.iter()).for_each(|(a, &b)| *a += b);
        }
    }
    // Row by row: each row of `gk` is contiguous even where `gk` is a block
    // of columns of a wider tensor (a whole-view zip would walk indices).
    for (mut g, t) in gk.rows_mut().into_iter().zip(tk.rows()) {
        match (g.as_slice_mut(), t.to_slice()) {
            (Some(g), Some(t)) => g.iter_mut().zip(t).for_each(|(a, &b)| *a += b),
            (_, _) => g.zip_mut_with(&t, |a, &b| *a += b),
        }
    }
}
