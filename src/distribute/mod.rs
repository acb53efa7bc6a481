//! Data-parallel training over several processes (Keras'
//! `keras.distribution.DataParallel`, Horovod's allreduce), on MPI or any
//! [`Communicator`].
//!
//! Every rank (process) holds the same model and the same data, and runs the
//! same `fit`; [`FitOptions::distribution`](crate::FitOptions::distribution)
//! turns one process's loop into one rank's share of a data-parallel run:
//!
//! ```text
//! global batch (the rows fit would take, in the same shuffled order)
//!   └─ cut into C chunks by a rule of the batch alone: chunk i = rows [i·nb/C, (i+1)·nb/C)
//!        rank r computes chunks [r·C/P, (r+1)·C/P): forward, loss, backward per chunk
//!        (dropout seeded by (seed, epoch, step, chunk))
//!   └─ summed over a fixed binary tree of the C chunks, part by part:
//!        [each weight gradient | batch statistics | per-row loss and output]
//!        locally: the rank's chunks pairwise, in order; across ranks: partners
//!        rank XOR 2^k for k = 0, 1, ..., which continues the same tree
//!   └─ gradients: reduce-scatter (recursive halving) leaves each rank the sum
//!        of its segment of every tensor; it runs the optimizer on that segment
//!        and all-gathers the updated weights (norm clipping: the whole update
//!        on every rank instead); statistics and rows: summed on every rank
//!   └─ every rank: the batch loss and metrics from all rows in row order (as one
//!      process computes them), the regularization gradient, the optimizer step
//! ```
//!
//! **Why this design.**
//! - *Determinism across scale.* A chunk's gradient depends only on its rows
//!   and the weights, and the tree over the chunks is fixed by `C`, so a run
//!   with `C` chunks gives bit-identical weights on 1, 2, 4, ... `C` ranks
//!   ([`DataParallel::chunks`]); MPI's own `MPI_Allreduce` sums in an order
//!   that changes with the number of ranks, so horn sums itself, over
//!   point-to-point exchanges. The default `C` is the number of ranks
//!   (one chunk each: the fastest); a single rank with one chunk is exactly a
//!   plain `fit`. Adding zeros is exact, which gathers the per-row results
//!   with the same sum: each rank fills its own rows and zeros elsewhere.
//! - *History equal to one process.* The loss and every metric are computed
//!   from all rows' per-sample losses and outputs, in row order, on every
//!   rank: History is the same on every rank and the numbers one process
//!   would compute for the same weights. Validation rows are split into one
//!   contiguous block per rank and gathered the same way.
//! - *Same weights everywhere.* Each weight element is updated by one rank
//!   with exactly the arithmetic of a whole update (the optimizers are
//!   elementwise), and gathered; the optimizer's state is gathered at each
//!   epoch's end, so checkpoints hold all of it. At the start of `fit` the ranks compare a
//!   fingerprint of the data, the options, the weights and the optimizer
//!   state, and refuse to start if any differs; with
//!   [`DataParallel::verify_weights`] (on in debug builds) they compare the
//!   weights' checksum after every epoch.
//! - *Batch statistics.* `BatchNormalization` normalizes each chunk by its
//!   own statistics (as each replica does in Keras' `DataParallel`), and the
//!   moving averages take the mean of the chunks' statistics.
//! - *One rank writes.* Only rank 0 prints progress; the built-in
//!   `ModelCheckpoint` and `CsvLogger` write on rank 0 only
//!   ([`CallbackContext::rank`](crate::callbacks::CallbackContext::rank)).
//!   Callbacks run on every rank and see the same logs, so `EarlyStopping`
//!   and `ReduceLrOnPlateau` decide the same everywhere. A callback (or a
//!   `cancel` flag) that stops one rank alone leaves the others waiting for
//!   it until the timeout.
//! - *Faults.* A rank that dies or stops answering makes the others fail
//!   after [`DataParallel::timeout`] instead of hanging: with threads
//!   ([`local_group`]) `fit` returns [`Error::Distributed`]; with MPI the rank
//!   that times out prints the reason and aborts the job (`MPI_Abort`), since
//!   MPI cannot abandon a transfer in flight (`mpirun` also stops the job at
//!   once when a rank's process dies). Restarting from the last
//!   `ModelCheckpoint` with `initial_epoch` gives the same final weights as a
//!   run that never stopped: shuffling and dropout are seeded by epoch and
//!   step, and the checkpoint holds the optimizer's state.
//!
//! - *The first layer split by columns.* When the model starts with a `Dense`
//!   layer that has more inputs than a batch has rows (an MLP on images: 784
//!   inputs, batches of 128), each rank computes its block of that layer's
//!   units for every row of the batch (every rank holds all the data) and the
//!   ranks exchange the layer's outputs and their gradients instead of its
//!   kernel, which then never crosses the wire during an epoch; it is
//!   gathered at the epoch's end. The same bits as without the split (each
//!   output column is its own dot products); the details are in
//!   `src/model/column_split.rs`. The other parts are then small: they
//!   travel as one allreduce per step and every rank updates them whole. It
//!   needs an elementwise optimizer and no regularizer on that layer, and
//!   applies from two ranks on.
//!
//! **Cost.** Per step, each rank sends and receives about `2 (P - 1) / P`
//! times the weights' size and runs the optimizer on `1 / P` of the weights;
//! with the first layer split, that layer's share is replaced by `2 (P - 1) /
//! P` times its output rows (for the MNIST MLP at batch 128: 0.13 MB each way
//! per step instead of 1.6 MB). See BENCHMARKS.md for the measured scaling
//! and a model of how an epoch's time scales with machines and links.
//!
//! ```
//! use horn::distribute::{local_group, DataParallel};
//! use horn::prelude::*;
//! use ndarray::Array2;
//!
//! # fn main() -> horn::Result<()> {
//! let x = Array2::<f32>::from_shape_fn((64, 3), |(i, j)| ((i * 7 + j * 3) % 11) as f32 / 11.0);
//! let y = Array2::<f32>::from_shape_fn((64, 1), |(i, _)| (i % 3) as f32 / 3.0);
//! // Two ranks as two threads (with MPI: `Mpi::init()?.data_parallel()` in each process).
//! let weights: Vec<Vec<ndarray::ArrayD<f32>>> = std::thread::scope(|s| {
//!     let handles: Vec<_> = local_group(2)
//!         .into_iter()
//!         .map(|comm| {
//!             let (x, y) = (&x, &y);
//!             s.spawn(move || -> horn::Result<_> {
//!                 let mut model = Sequential::new().seed(1).input(3).dense(4, Relu).dense(1, Linear);
//!                 model.compile(Sgd::default(), MeanSquaredError, &[Metric::MeanAbsoluteError])?;
//!                 let dp = DataParallel::new(comm)?;
//!                 model.fit(x, y, FitOptions { epochs: 2, batch_size: 16, verbose: 0,
//!                     distribution: Some(dp), ..Default::default() })?;
//!                 model.get_weights()
//!             })
//!         })
//!         .collect();
//!     handles.into_iter().map(|h| h.join().expect("rank thread")).collect::<horn::Result<_>>()
//! })?;
//! assert_eq!(weights[0], weights[1]);
//! # Ok(()) }
//! ```

mod local;
#[cfg(feature = "mpi")]
mod mpi;

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};

pub use local::{local_group, LocalCommunicator};
#[cfg(feature = "mpi")]
pub use mpi::{Mpi, MpiCommunicator};

/// A group of ranks that can exchange buffers of `f32`: what
/// [`DataParallel`] needs from a transport. `Mpi` (feature `mpi`)
/// and [`local_group`] (threads) implement it.
///
/// ```
/// use horn::distribute::{local_group, Communicator};
/// let group = local_group(2);
/// assert_eq!((group[1].rank(), group[1].size()), (1, 2));
/// ```
pub trait Communicator: Send + Sync + fmt::Debug {
    /// This rank's index, `0..size()`.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn size(&self) -> usize;
    /// Sends `send` to rank `peer` and receives `recv.len()` values from it;
    /// the peer makes the matching call with this rank at the same time
    /// (its `send` as long as this `recv`, and the other way round). Fails
    /// instead of waiting more than `timeout` for the peer.
    fn exchange(
        &self,
        peer: usize,
        send: &[f32],
        recv: &mut [f32],
        timeout: Duration,
    ) -> Result<()>;

    /// Whether the ranks are threads of this process sharing its rayon pool:
    /// then a rank must not wait for another inside the pool, where it would
    /// hold a worker the other needs. The default, `false`, is one process
    /// per rank, whose whole step then runs inside its own pool (no hand-off
    /// between threads around each exchange).
    fn shares_thread_pool(&self) -> bool {
        false
    }
}

/// Data-parallel training over the ranks of a [`Communicator`], set in
/// [`FitOptions::distribution`](crate::FitOptions::distribution) (see the
/// [module docs](self) for the design).
///
/// The number of ranks must be a power of two (so that the reduction tree of
/// any chunk count is the same on every number of ranks).
///
/// ```
/// use horn::distribute::{local_group, DataParallel};
/// use std::time::Duration;
/// let comm = local_group(1).remove(0);
/// let dp = DataParallel::new(comm)?.chunks(4).timeout(Duration::from_secs(30));
/// assert_eq!(dp.size(), 1);
/// # Ok::<(), horn::Error>(())
/// ```
#[derive(Clone)]
pub struct DataParallel {
    comm: Arc<dyn Communicator>,
    /// `comm`'s rank and size, read once and checked at construction, so
    /// that a communicator cannot change them later.
    rank: usize,
    size: usize,
    chunks: Option<usize>,
    timeout: Duration,
    verify: bool,
}

impl fmt::Debug for DataParallel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataParallel")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("chunks", &self.chunks)
            .field("timeout", &self.timeout)
            .field("verify_weights", &self.verify)
            .finish()
    }
}

impl PartialEq for DataParallel {
    /// Same communicator (the same object) and the same settings.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.comm, &other.comm)
            && self.chunks == other.chunks
            && self.timeout == other.timeout
            && self.verify == other.verify
    }
}

/// The default [`DataParallel::timeout`]: long enough for a slow step of a
/// large model, short enough that a lost rank does not hold a cluster job
/// for long.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// The most ranks a [`DataParallel`] group may have (65,536). Agreeing on
/// data allocates a few values per rank, and a [`Communicator`] may report
/// any size: a larger one is refused before anything is sized by it.
///
/// ```
/// assert_eq!(horn::distribute::MAX_RANKS, 1 << 16);
/// ```
pub const MAX_RANKS: usize = 1 << 16;

/// The most chunks [`DataParallel::chunks`] accepts (65,536, as many as
/// [`MAX_RANKS`]): every step walks all of them, so a count such as `1 << 40`
/// would spin for hours without ever reaching an exchange that could time out.
///
/// ```
/// assert_eq!(horn::distribute::MAX_CHUNKS, horn::distribute::MAX_RANKS);
/// ```
pub const MAX_CHUNKS: usize = 1 << 16;

impl DataParallel {
    /// Data parallelism over `comm`'s ranks. Fails unless the number of ranks
    /// is a power of two, at most [`MAX_RANKS`], and the rank is below it.
    pub fn new(comm: impl Communicator + 'static) -> Result<Self> {
        Self::from_arc(Arc::new(comm))
    }

    /// [`DataParallel::new`] for a communicator already shared.
    pub fn from_arc(comm: Arc<dyn Communicator>) -> Result<Self> {
        let (rank, size) = (comm.rank(), comm.size());
        if !size.is_power_of_two() || rank >= size || size > MAX_RANKS {
            return Err(Error::Distributed(format!(
                "the number of ranks must be a power of two (1, 2, 4, ...) up to {MAX_RANKS}, \
                 and the rank below it; got rank {rank} of {size}"
            )));
        }
        Ok(DataParallel {
            comm,
            rank,
            size,
            chunks: None,
            timeout: DEFAULT_TIMEOUT,
            verify: cfg!(debug_assertions),
        })
    }

    /// Cuts every batch into `chunks` pieces whose gradients are summed over a
    /// fixed tree: the same `chunks` gives bit-identical weights on any number
    /// of ranks that divides it. A power of two, at least the number of ranks
    /// and at most [`MAX_CHUNKS`] (checked when `fit` starts); the default is
    /// the number of ranks. More chunks than ranks cost speed (smaller matrix
    /// products), and chunks beyond the batch size stay empty. The count is
    /// not checked against the batch size: that would make a count valid on
    /// `P` ranks invalid on one, where it must give the same weights.
    pub fn chunks(mut self, chunks: usize) -> Self {
        self.chunks = Some(chunks);
        self
    }

    /// How long a rank waits for another at any exchange before failing
    /// (default [`DEFAULT_TIMEOUT`], 120 s). It must exceed the longest time
    /// one rank can lag another: a step, an epoch's validation, and at the
    /// start of `fit` the other ranks' loading of their data.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Compares the weights' checksum across ranks after every epoch and
    /// fails if any rank differs (default: on in debug builds, off in
    /// release builds; the cost is one pass over the weights per epoch).
    pub fn verify_weights(mut self, on: bool) -> Self {
        self.verify = on;
        self
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of ranks.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether this is rank 0, the one that prints and writes files.
    pub fn is_chief(&self) -> bool {
        self.rank() == 0
    }

    pub(crate) fn shares_thread_pool(&self) -> bool {
        self.comm.shares_thread_pool()
    }

    pub(crate) fn verifies(&self) -> bool {
        self.verify
    }

    /// The chunk count and this rank's share of it, checked.
    pub(crate) fn topology(&self) -> Result<Topology> {
        let size = self.size();
        let chunks = self.chunks.unwrap_or(size);
        if !chunks.is_power_of_two() || chunks < size || chunks > MAX_CHUNKS {
            return Err(Error::arg(
                "DataParallel::chunks",
                format!(
                    "a power of two, at least the number of ranks ({size}) and at most {MAX_CHUNKS}"
                ),
                chunks,
            ));
        }
        Ok(Topology {
            rank: self.rank(),
            size,
            chunks,
        })
    }

    /// Sends `send` to rank `peer` and receives `recv.len()` values from it,
    /// within the timeout (the peer makes the matching call).
    pub(crate) fn exchange(&self, peer: usize, send: &[f32], recv: &mut [f32]) -> Result<()> {
        self.comm.exchange(peer, send, recv, self.timeout)
    }

    /// Sums `buf` over all ranks in place, over the recursive-doubling tree
    /// (partner `rank ^ 2^k` at level `k`); `recv` is scratch of the same
    /// length. Every rank ends with the same bits.
    pub(crate) fn allreduce(&self, buf: &mut [f32], recv: &mut [f32]) -> Result<()> {
        let (rank, size) = (self.rank(), self.size());
        let recv = &mut recv[..buf.len()];
        let mut d = 1;
        while d < size {
            self.comm.exchange(rank ^ d, buf, recv, self.timeout)?;
            // IEEE addition is commutative bit for bit, so `mine + theirs` on
            // one side equals `theirs + mine` on the other.
            for (a, b) in buf.iter_mut().zip(recv.iter()) {
                *a += *b;
            }
            d <<= 1;
        }
        Ok(())
    }

    /// Sums `buf` over all ranks, leaving this rank only its segment of the
    /// sum (returned), by recursive halving: at level `k` the partner is
    /// `rank ^ 2^k`, and each keeps the half of its segment its bit `k`
    /// picks. Every element is summed over the same tree as
    /// [`DataParallel::allreduce`]; each rank sends and sums about
    /// `len * (P - 1) / P` values instead of `len * log2(P)`.
    pub(crate) fn reduce_scatter(
        &self,
        buf: &mut [f32],
        recv: &mut [f32],
    ) -> Result<std::ops::Range<usize>> {
        let (rank, size) = (self.rank(), self.size());
        let (mut lo, mut hi) = (0, buf.len());
        let mut d = 1;
        while d < size {
            let mid = lo + (hi - lo) / 2;
            let (keep, give) = if rank & d == 0 {
                (lo..mid, mid..hi)
            } else {
                (mid..hi, lo..mid)
            };
            let got = &mut recv[..keep.len()];
            self.comm
                .exchange(rank ^ d, &buf[give], got, self.timeout)?;
            for (a, b) in buf[keep.clone()].iter_mut().zip(got.iter()) {
                *a += *b;
            }
            (lo, hi) = (keep.start, keep.end);
            d <<= 1;
        }
        Ok(lo..hi)
    }

    /// The inverse of [`DataParallel::reduce_scatter`] on a buffer of the
    /// same length: each rank holds its segment, and ends with all of them.
    pub(crate) fn allgather(&self, buf: &mut [f32]) -> Result<()> {
        let (rank, size) = (self.rank(), self.size());
        // The segments of every level, from the whole buffer down.
        let mut levels = [(0usize, 0usize, 0usize); usize::BITS as usize];
        let (mut lo, mut hi, mut depth) = (0, buf.len(), 0);
        let mut d = 1;
        while d < size {
            levels[depth] = (lo, hi, d);
            let mid = lo + (hi - lo) / 2;
            (lo, hi) = if rank & d == 0 { (lo, mid) } else { (mid, hi) };
            depth += 1;
            d <<= 1;
        }
        for &(lo, hi, d) in levels[..depth].iter().rev() {
            let mid = lo + (hi - lo) / 2;
            let (lower, upper) = buf[lo..hi].split_at_mut(mid - lo);
            let (mine, theirs) = if rank & d == 0 {
                (lower, upper)
            } else {
                (upper, lower)
            };
            self.comm.exchange(rank ^ d, mine, theirs, self.timeout)?;
        }
        Ok(())
    }

    /// Fails unless every rank holds the same 64-bit `fingerprint` of `what`.
    pub(crate) fn agree(&self, what: &str, fingerprint: u64) -> Result<()> {
        let size = self.size();
        let mut buf = vec![0.0f32; size * 4];
        // 16-bit pieces as whole numbers: exact under the zero-padded sum.
        for (k, v) in buf[self.rank() * 4..][..4].iter_mut().enumerate() {
            *v = ((fingerprint >> (16 * k)) & 0xffff) as f32;
        }
        let mut recv = vec![0.0f32; buf.len()];
        self.allreduce(&mut buf, &mut recv)?;
        let prints: Vec<&[f32]> = buf.chunks_exact(4).collect();
        let differ: Vec<usize> = (0..size).filter(|&r| prints[r] != prints[0]).collect();
        if differ.is_empty() {
            Ok(())
        } else {
            Err(Error::Distributed(format!(
                "rank(s) {differ:?} hold other {what} than rank 0; every rank must build the same \
                 model (same seed), load the same data and use the same options"
            )))
        }
    }
}

/// Ranks, chunks, and which chunks are this rank's.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Topology {
    pub rank: usize,
    pub size: usize,
    pub chunks: usize,
}

impl Topology {
    /// Rows `[lo, hi)` of chunk `i` of a batch of `nb` rows.
    pub fn chunk_rows(&self, nb: usize, i: usize) -> (usize, usize) {
        (i * nb / self.chunks, (i + 1) * nb / self.chunks)
    }

    /// This rank's chunks.
    pub fn my_chunks(&self) -> std::ops::Range<usize> {
        let per = self.chunks / self.size;
        self.rank * per..(self.rank + 1) * per
    }

    /// This rank's contiguous share `[lo, hi)` of `n` rows (validation,
    /// `predict`).
    pub fn my_rows(&self, n: usize) -> (usize, usize) {
        (self.rank * n / self.size, (self.rank + 1) * n / self.size)
    }

    /// The most rows of any chunk of a batch of `bs` rows.
    pub fn chunk_capacity(&self, bs: usize) -> usize {
        bs.div_ceil(self.chunks)
    }
}

/// Sums a power-of-two run of leaves pairwise in order (a perfect binary
/// tree), keeping at most `log2(n) + 1` leaves alive. A leaf is a list of
/// buffers (a model's gradient tensors, ...), summed part by part; leaves are
/// filled by swapping buffers in and out, not by copying.
pub(crate) struct TreeSum {
    bufs: Vec<Vec<Vec<f32>>>,
    free: Vec<usize>,
    /// (level, leaf) of the finished subtrees, lowest chunks first.
    stack: Vec<(u32, usize)>,
}

impl TreeSum {
    /// Room for a tree of `leaves` leaves whose parts have the lengths
    /// `parts`, taken from `budget`.
    pub fn new(
        parts: &[usize],
        leaves: usize,
        budget: &mut crate::memory::Budget,
    ) -> crate::Result<Self> {
        let n = leaves.max(1).trailing_zeros() as usize + 1;
        let mut bufs = Vec::with_capacity(n);
        for _ in 0..n {
            let mut leaf = Vec::with_capacity(parts.len());
            for &l in parts {
                leaf.push(budget.values(l, 0.0, || "the chunk tree's sums".into())?);
            }
            bufs.push(leaf);
        }
        Ok(TreeSum {
            bufs,
            free: (0..n).rev().collect(),
            stack: Vec::with_capacity(n),
        })
    }

    /// Starts a new tree: every leaf free again.
    pub fn reset(&mut self) {
        self.stack.clear();
        self.free.clear();
        self.free.extend((0..self.bufs.len()).rev());
    }

    /// A free leaf for the next chunk, by index.
    pub fn next_leaf(&mut self) -> usize {
        // The stack holds at most log2(leaves) subtrees plus this leaf.
        self.free.pop().unwrap_or(0)
    }

    /// The parts of leaf `i`.
    pub fn leaf_mut(&mut self, i: usize) -> &mut [Vec<f32>] {
        &mut self.bufs[i]
    }

    /// Adds the filled leaf `i`, merging equal-level subtrees (left + right).
    pub fn push(&mut self, i: usize) {
        let mut node = (0u32, i);
        while let Some(&(level, left)) = self.stack.last() {
            if level != node.0 {
                break;
            }
            self.stack.pop();
            let (l, r) = if left < node.1 {
                let (a, b) = self.bufs.split_at_mut(node.1);
                (&mut a[left], &b[0])
            } else {
                let (a, b) = self.bufs.split_at_mut(left);
                (&mut b[0], &a[node.1])
            };
            for (lp, rp) in l.iter_mut().zip(r.iter()) {
                for (x, y) in lp.iter_mut().zip(rp.iter()) {
                    *x += *y;
                }
            }
            self.free.push(node.1);
            node = (level + 1, left);
        }
        self.stack.push(node);
    }

    /// The root leaf's index (valid until the next [`TreeSum::reset`]).
    pub fn root(&mut self) -> usize {
        debug_assert!(self.stack.len() == 1, "leaves must be a power of two");
        self.stack.last().map_or(0, |&(_, i)| i)
    }
}

/// A fast 64-bit hash of f32 bit patterns (for fingerprints, not security).
pub(crate) fn hash_f32s(mut h: u64, values: &[f32]) -> u64 {
    let mut it = values.chunks_exact(2);
    for p in &mut it {
        let w = (p[0].to_bits() as u64) | ((p[1].to_bits() as u64) << 32);
        h = (h ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^= h >> 29;
    }
    for v in it.remainder() {
        h = (h ^ v.to_bits() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^= h >> 29;
    }
    h
}

/// Mixes whole numbers into a hash.
pub(crate) fn hash_words(mut h: u64, words: &[u64]) -> u64 {
    for &w in words {
        h = (h ^ w).wrapping_mul(0xD1B5_4A32_D192_ED03);
        h ^= h >> 31;
    }
    h
}

thread_local! {
    static RANK: Cell<usize> = const { Cell::new(0) };
}

/// The rank of the data-parallel `fit` running on this thread (0 outside one).
pub(crate) fn current_rank() -> usize {
    RANK.with(Cell::get)
}

/// Sets [`current_rank`] for this thread until dropped.
pub(crate) struct RankGuard(usize);

impl RankGuard {
    pub fn set(rank: usize) -> Self {
        RankGuard(RANK.with(|r| r.replace(rank)))
    }
}

impl Drop for RankGuard {
    fn drop(&mut self) {
        RANK.with(|r| r.set(self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_sum_is_the_perfect_binary_tree() {
        let leaves = [1.0e8f32, 1.0, -1.0e8, 3.0, 0.5, 7.0, -2.0, 1.0e-3];
        let mut budget = crate::memory::Budget::new("test").unwrap();
        let mut t = TreeSum::new(&[1], leaves.len(), &mut budget).unwrap();
        for &v in &leaves {
            let i = t.next_leaf();
            t.leaf_mut(i)[0][0] = v;
            t.push(i);
        }
        let r = t.root();
        let want = ((leaves[0] + leaves[1]) + (leaves[2] + leaves[3]))
            + ((leaves[4] + leaves[5]) + (leaves[6] + leaves[7]));
        assert_eq!(t.leaf_mut(r)[0][0].to_bits(), want.to_bits());
        // Not the left fold, whose rounding differs here.
        let fold: f32 = leaves.iter().sum();
        assert_ne!(want.to_bits(), fold.to_bits());
    }

    #[test]
    fn chunks_cover_the_batch_in_order() {
        let t = Topology {
            rank: 1,
            size: 2,
            chunks: 4,
        };
        let ranges: Vec<_> = (0..4).map(|i| t.chunk_rows(10, i)).collect();
        assert_eq!(ranges, [(0, 2), (2, 5), (5, 7), (7, 10)]);
        assert_eq!(t.my_chunks(), 2..4);
        assert_eq!(t.my_rows(9), (4, 9));
        assert_eq!(t.chunk_capacity(10), 3);
    }
}
