//! Matrix products for the training step, parallel and deterministic.
//!
//! Every product is split over its *output* (row blocks or column blocks of `C`)
//! into a number of blocks that depends only on the shapes, never on the number
//! of threads, and each block runs a single-threaded GEMM. No output element is
//! ever summed across blocks, so each one is computed by the same sequence of
//! floating-point operations however rayon schedules the blocks: a seeded `fit`
//! gives bit-identical weights with 1 thread or 16.
//!
//! One product is split differently: a convolution's weight gradient sums
//! over every position of the batch into a small kernel, which has too few
//! output blocks for two threads. `gemm_tall_k` cuts its inner dimension into
//! 8 blocks fixed by the shape and adds their results in block order: the
//! same bits for any number of threads.
//!
//! The single-threaded GEMM is horn's own on x86-64 CPUs with AVX2 and FMA
//! (detected at run time): a packed 6x16 micro-kernel in the
//! style of BLIS. Each output element is accumulated over `k` in a fixed order
//! (blocks of `KC`, FMA within a block), whatever the block of `C` it belongs to,
//! so the split above cannot change a single bit. Elsewhere (other CPUs, other
//! architectures) ndarray's `general_mat_mul` (matrixmultiply) does the work.
//!
//! Sparse inputs are cheap: packing `A` leaves out the steps `p` where all rows
//! of a 6-row panel are zero, and a single row skips its zero entries. Adding
//! `0 * b` changes no finite sum, so the values are those of the dense product
//! (an infinite or NaN weight facing a zero input gives no NaN here, unlike a
//! dense BLAS). For MNIST, where 81% of the pixels are zero, this leaves about
//! 44% of the first layer's forward work and 34% of its weight gradient, and a
//! one-sample `predict` reads a fifth of the first kernel.
//! `benches/gemm_shapes.rs` compares the kernels at the model's shapes.

mod short_k;

pub(crate) use short_k::{block_grad, gemm_short_k, sum_partials, weight_grad_partials, SHORT_K};

use ndarray::linalg::general_mat_mul;
use ndarray::{s, ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;

/// Below this many multiply-adds a product runs on the calling thread: waking a
/// second worker costs tens of microseconds, as much as such a product takes.
const PAR_MIN_FLOPS: usize = 1 << 20;
/// Preferred block edge of the parallel split.
const BLOCK: usize = 64;

/// `C = A B`, in parallel for large products, bit-identical for any number of
/// threads.
///
/// With the AVX2 kernel, the rows of `C` (or, for a wide product with few rows,
/// its columns) are split into a shape-determined number of tasks. Otherwise `C` is split
/// into fixed row or column blocks, each a single-threaded matrixmultiply call.
///
/// # Panics
/// When the shapes do not agree (`a` is `m x k`, `b` must be `k x n` and `c`
/// `m x n`). The check holds in release builds: the kernel below it writes
/// through raw pointers, so a mismatch must never reach it.
///
/// ```
/// use ndarray::{array, Array2};
/// let a = array![[1.0f32, 2.0], [3.0, 4.0]];
/// let mut c = Array2::zeros((2, 2));
/// horn::kernels::gemm(a.view(), a.view(), c.view_mut());
/// assert_eq!(c, array![[7.0, 10.0], [15.0, 22.0]]);
/// ```
#[track_caller]
pub fn gemm(a: ArrayView2<f32>, b: ArrayView2<f32>, mut c: ArrayViewMut2<f32>) {
    check_shapes("gemm", &a, &b, &c);
    let (m, k) = a.dim();
    let n = b.ncols();
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.fill(0.0);
        return;
    }
    let parallel = m.saturating_mul(n).saturating_mul(k) >= PAR_MIN_FLOPS;
    #[cfg(target_arch = "x86_64")]
    {
        if avx2::usable(&c) {
            // SAFETY: `usable` checked AVX2, FMA and the unit column stride of
            // `c`; `check_shapes` checked that `b` is `k x n` and `c` is `m x n`.
            unsafe { avx2::gemm(a, b, c, parallel, false) };
            return;
        }
    }
    if !parallel {
        general_mat_mul(1.0, &a, &b, 0.0, &mut c);
        return;
    }
    // Split the longer side of C into blocks of BLOCK (or more, for at most 16 blocks).
    if m >= n {
        let rows = block_len(m);
        c.axis_chunks_iter_mut(Axis(0), rows)
            .into_par_iter()
            .enumerate()
            .for_each(|(i, mut cb)| {
                let r0 = i * rows;
                general_mat_mul(1.0, &a.slice(s![r0..r0 + cb.nrows(), ..]), &b, 0.0, &mut cb);
            });
    } else {
        let cols = block_len(n);
        c.axis_chunks_iter_mut(Axis(1), cols)
            .into_par_iter()
            .enumerate()
            .for_each(|(i, mut cb)| {
                let c0 = i * cols;
                general_mat_mul(1.0, &a, &b.slice(s![.., c0..c0 + cb.ncols()]), 0.0, &mut cb);
            });
    }
}

fn block_len(len: usize) -> usize {
    let blocks = len.div_ceil(BLOCK).min(16);
    len.div_ceil(blocks).next_multiple_of(16)
}

/// `C = A B` on the calling thread, with the best kernel this CPU has.
///
/// ```
/// use ndarray::array;
/// let a = array![[1.0f32, 2.0], [3.0, 4.0]];
/// let mut c = ndarray::Array2::zeros((2, 2));
/// horn::kernels::gemm_serial(a.view(), a.view(), c.view_mut());
/// assert_eq!(c, array![[7.0, 10.0], [15.0, 22.0]]);
/// ```
///
/// # Panics
/// When the shapes do not agree, as [`gemm`].
#[track_caller]
pub fn gemm_serial(a: ArrayView2<f32>, b: ArrayView2<f32>, mut c: ArrayViewMut2<f32>) {
    check_shapes("gemm_serial", &a, &b, &c);
    if c.is_empty() {
        return;
    }
    if a.ncols() == 0 {
        c.fill(0.0);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if avx2::usable(&c) {
            // SAFETY: `usable` checked AVX2, FMA and the unit column stride of
            // `c`; `check_shapes` checked that the shapes agree.
            unsafe { avx2::gemm(a, b, c, false, false) };
            return;
        }
    }
    general_mat_mul(1.0, &a, &b, 0.0, &mut c);
}

/// `C += A B` with exactly the bits of `C + P`, `P` being what [`gemm`]
/// gives for `A B`, when that can be done in one pass: horn's own kernel
/// sums each element of `P` in one `KC` slice when `k` is short enough, and
/// adds that sum to `C`. Returns `false`, changing nothing, where it cannot
/// (a long `k`, the portable path, an empty `k`); the caller then computes
/// `P` apart and adds it. (A split layer's chunk tree adds a chunk's
/// gradient to its neighbour's this way, without a pass over a buffer.)
///
/// # Panics
/// When the shapes do not agree, as [`gemm`].
#[track_caller]
#[cfg_attr(not(feature = "distribute"), allow(dead_code))]
pub(crate) fn gemm_add_exact(
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    c: ArrayViewMut2<f32>,
) -> bool {
    check_shapes("gemm_add_exact", &a, &b, &c);
    let (m, k) = a.dim();
    let n = b.ncols();
    if m == 0 || n == 0 {
        return true;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if k > 0 && avx2::usable(&c) && avx2::slice_depth(k) >= k {
            let parallel = m.saturating_mul(n).saturating_mul(k) >= PAR_MIN_FLOPS;
            // SAFETY: `usable` checked AVX2, FMA and the unit column stride of
            // `c`; `check_shapes` checked that `b` is `k x n` and `c` is `m x n`.
            unsafe { avx2::gemm(a, b, c, parallel, true) };
            return true;
        }
    }
    let _ = (k, c);
    false
}

/// Blocks of `k` a tall product ([`gemm_tall_k`]) is split into.
pub(crate) const K_SPLITS: usize = 8;

/// `C = A B` for a small output and a long inner dimension (a convolution's
/// weight gradient: `patches^T dz` sums over every position of the batch):
/// `k` is cut into [`K_SPLITS`] fixed blocks whose products run in parallel
/// into `partials` (at least `K_SPLITS * m * n` values), then added in block
/// order. The blocks depend only on `k`, so the result is the same for any
/// number of threads; with a short `k` (or too small a `partials`) it is
/// [`gemm`].
///
/// # Panics
/// When the shapes do not agree, as [`gemm`].
#[track_caller]
pub(crate) fn gemm_tall_k(
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    mut c: ArrayViewMut2<f32>,
    partials: &mut [f32],
) {
    check_shapes("gemm_tall_k", &a, &b, &c);
    let (m, k) = a.dim();
    let n = b.ncols();
    let size = m * n;
    if k < K_SPLITS * 512 || partials.len() < K_SPLITS * size || size == 0 {
        gemm(a, b, c);
        return;
    }
    let block = k.div_ceil(K_SPLITS);
    partials[..K_SPLITS * size]
        .par_chunks_mut(size)
        .enumerate()
        .for_each(|(i, part)| {
            let (k0, k1) = ((i * block).min(k), ((i + 1) * block).min(k));
            let pc = matrix_mut(part, m, n);
            gemm_serial(a.slice(s![.., k0..k1]), b.slice(s![k0..k1, ..]), pc);
        });
    c.fill(0.0);
    for part in partials[..K_SPLITS * size].chunks_exact(size) {
        let p = matrix(part, m, n);
        c.zip_mut_with(&p, |o, &v| *o += v);
    }
}

/// Values [`pack_b`] needs for a `k x n` matrix.
pub(crate) fn packed_b_len(k: usize, n: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        avx2::packed_len(k, n)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (k, n);
        0
    }
}

/// A matrix `B` packed once for many products `A B` (a recurrent kernel,
/// used at every time step).
pub(crate) struct PackedB<'a> {
    values: &'a [f32],
    k: usize,
    n: usize,
}

/// Packs `b` into `buf` (at least [`packed_b_len`] values) for
/// [`gemm_packed`]; `None` where the AVX2 kernel is not used (the product
/// then reads `b` itself).
pub(crate) fn pack_b<'a>(b: ArrayView2<f32>, buf: &'a mut [f32]) -> Option<PackedB<'a>> {
    #[cfg(target_arch = "x86_64")]
    {
        if avx2::available() && !b.is_empty() && buf.len() >= avx2::packed_len(b.nrows(), b.ncols())
        {
            let (k, n) = b.dim();
            return Some(PackedB {
                values: avx2::pack(b, buf),
                k,
                n,
            });
        }
    }
    let _ = (b, buf);
    None
}

/// `C = A B` on the calling thread, reading `B` from `packed` when given
/// (which must be `b` packed by [`pack_b`]): the same bits as
/// [`gemm_serial`], without packing `B` for every product.
///
/// # Panics
/// When the shapes do not agree, as [`gemm`], or `packed` has another shape.
#[track_caller]
pub(crate) fn gemm_packed(
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    packed: Option<&PackedB<'_>>,
    c: ArrayViewMut2<f32>,
) {
    check_shapes("gemm_packed", &a, &b, &c);
    if let Some(p) = packed {
        assert!(
            (p.k, p.n) == b.dim(),
            "horn::kernels::gemm_packed: packed B is {}x{}, B is {}x{}",
            p.k,
            p.n,
            b.nrows(),
            b.ncols()
        );
        #[cfg(target_arch = "x86_64")]
        {
            if avx2::usable(&c) && !c.is_empty() && a.ncols() > 0 {
                // SAFETY: `usable` checked AVX2, FMA and `c`'s unit column stride,
                // `check_shapes` the shapes, the assert that `pack_b` packed a k x n
                // matrix of `b`'s shape into `p.values`; nothing is empty.
                unsafe { avx2::gemm_prepacked(a, p.values, p.n, c) };
                return;
            }
        }
    }
    gemm_serial(a, b, c);
}

/// Where the rows of an implicit `A` lie in a convolution's input: row `i`
/// (`0..rows`) is `runs` runs of `run_len` contiguous values of `x`, run `s`
/// starting at `start(i) + s * run_stride` (one run per kernel row: its
/// columns and channels are contiguous in a channels-last image).
pub(crate) struct PatchRows<'a, F: Fn(usize) -> usize> {
    /// The input the patches are read from.
    pub x: &'a [f32],
    /// Rows of `A` (output positions).
    pub rows: usize,
    /// Where row `i`'s first run starts in `x`.
    pub start: F,
    /// Runs per row.
    pub runs: usize,
    /// Values per run.
    pub run_len: usize,
    /// Distance in `x` between the starts of consecutive runs.
    pub run_stride: usize,
}

/// `C = A B` with the rows of `A` read in place from a convolution's input
/// ([`PatchRows`]) instead of unrolled first, and `B` packed by [`pack_b`]:
/// the bits of [`gemm_packed`] on the unrolled patches (the same FMA chain per
/// `KC` slice), without writing and reading them. A [`PackedB`] exists only
/// where the AVX2 kernel is used ([`pack_b`] returns `None` elsewhere, and
/// the caller unrolls the patches).
///
/// # Panics
/// When `c` is not `rows x n` with a unit column stride, `packed` is not
/// `runs * run_len` deep, or a row's runs reach past the end of `x` (checked
/// in every build: the kernel reads through raw pointers).
#[track_caller]
pub(crate) fn gemm_patch_rows<F: Fn(usize) -> usize>(
    a: &PatchRows<'_, F>,
    packed: &PackedB<'_>,
    c: ArrayViewMut2<f32>,
) {
    let k = a.runs * a.run_len;
    assert!(
        packed.k == k && c.dim() == (a.rows, packed.n) && c.strides()[1] == 1,
        "horn::kernels::gemm_patch_rows: A is {}x{k}, packed B {}x{}, C {:?}",
        a.rows,
        packed.k,
        packed.n,
        c.dim()
    );
    #[cfg(target_arch = "x86_64")]
    {
        if !c.is_empty() && k > 0 {
            // SAFETY: a `PackedB` exists only where `pack_b` found AVX2 and FMA;
            // `c` is rows x n with unit column stride, `packed` k x n (asserted
            // above); the kernel checks every row's reach inside `x` first.
            unsafe { avx2::gemm_patch_rows(a, packed.values, packed.n, c) };
        }
    }
}

/// Panics unless `a` is `m x k`, `b` is `k x n` and `c` is `m x n`. Runs in
/// every build: it is what keeps the raw-pointer kernel inside its buffers.
#[track_caller]
fn check_shapes(what: &str, a: &ArrayView2<f32>, b: &ArrayView2<f32>, c: &ArrayViewMut2<f32>) {
    let (m, k) = a.dim();
    let (kb, n) = b.dim();
    assert!(
        kb == k && c.dim() == (m, n),
        "horn::kernels::{what}: shapes do not agree: A is {m}x{k}, B is {kb}x{n}, C is {}x{} (expected B {k}x{n} and C {m}x{n})",
        c.nrows(),
        c.ncols()
    );
}

/// Whether horn's AVX2 and FMA kernels run on this CPU (not forced portable).
pub(crate) fn avx2_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        avx2::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the portable kernel was forced with `HORN_PORTABLE_GEMM=1` (read
/// once per process): CI runs the whole suite this way too, so the fallback
/// that other CPUs use is tested on this one.
pub fn portable_forced() -> bool {
    static FORCED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FORCED.get_or_init(|| {
        std::env::var_os("HORN_PORTABLE_GEMM").is_some_and(|v| !v.is_empty() && v != "0")
    })
}

/// The first `rows * cols` values of `buf` as a row-major `rows x cols`
/// matrix: how the layers and the workspace see their flat buffers.
///
/// # Panics
/// When `buf` holds fewer than `rows * cols` values (a caller's sizing bug:
/// every buffer is sized for its layer's shapes before it is used).
#[track_caller]
pub(crate) fn matrix(buf: &[f32], rows: usize, cols: usize) -> ArrayView2<'_, f32> {
    // A slice of exactly rows * cols values always has this 2-D shape: the
    // `expect` cannot fail once the slicing above it succeeded.
    ArrayView2::from_shape((rows, cols), &buf[..rows * cols]).expect("exact length")
}

/// Mutable [`matrix`].
#[track_caller]
pub(crate) fn matrix_mut(buf: &mut [f32], rows: usize, cols: usize) -> ArrayViewMut2<'_, f32> {
    // As in `matrix`: the slice has exactly rows * cols values.
    ArrayViewMut2::from_shape((rows, cols), &mut buf[..rows * cols]).expect("exact length")
}

/// The values of a row-major block. Every block the model hands to a layer or a
/// loss is a view of one of its own contiguous workspace buffers (the documented
/// `Layer` contract), so a strided view here is a bug in the caller, not bad data.
pub(crate) fn values(a: ArrayView2<'_, f32>) -> &'_ [f32] {
    a.to_slice()
        .expect("Layer contract: blocks are standard-layout views")
}

/// Mutable values of a row-major block; see [`values`].
pub(crate) fn values_mut(a: ArrayViewMut2<'_, f32>) -> &'_ mut [f32] {
    a.into_slice()
        .expect("Layer contract: blocks are standard-layout views")
}

/// The AVX2 + FMA single-precision GEMM.
///
/// BLIS-style blocking: `B` is packed into `KC`-deep slices of `NR`-column
/// panels (once and shared by row tasks, or per column task), each `MC x KC` block of
/// `A` into `MR`-row panels (kept in L2), and the micro-kernel multiplies one `A`
/// panel by one `B` panel into a 6x16 tile of `C` held in twelve `ymm`
/// registers. Panels are zero-padded at the edges, and partial tiles go through
/// a small buffer, so every tile runs the same arithmetic.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;
    use std::cell::RefCell;

    use ndarray::{ArrayView2, ArrayViewMut2};
    use rayon::prelude::*;

    const MR: usize = 6;
    const NR: usize = 16;
    /// The deepest `KC` slice: one `B` panel (`NR x KC_MAX`, 20 KB) and one
    /// `A` panel (7.5 KB) stay in the 32 KB L1 cache while the kernel runs.
    const KC_MAX: usize = 320;
    const MC: usize = 96;

    /// Extra values in a packing buffer, to start it at a 64-byte boundary.
    const ALIGN_SLACK: usize = 16;

    /// Values past the last packed `A` panel that [`pack_a`] may overwrite.
    const PACK_SLACK: usize = 8;

    /// Products with at most this many rows skip packing (see [`few_rows`]).
    const FEW_ROWS: usize = 4;

    thread_local! {
        /// The packed `B`, owned by the thread that runs the product.
        static BPACK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
        /// A task's slice of the packed `B` in [`col_block`], one per worker thread.
        static BSLICE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
        /// The packed block of `A`, one per worker thread.
        static APACK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
        /// The column positions of the packed `A` panels (see [`pack_a`]).
        static AIDX: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    }

    /// Runs `f` on this thread's buffer `key`, grown to at least `len` values
    /// (grow only: shrinking and growing back would re-zero it for every product
    /// of a different shape). A thread that waits inside a parallel product may
    /// run a job of another product (another thread's `predict`) whose buffer it
    /// already holds; that job gets a fresh buffer.
    fn with_buf<T: Copy + Default, R>(
        key: &'static std::thread::LocalKey<RefCell<Vec<T>>>,
        len: usize,
        f: impl FnOnce(&mut [T]) -> R,
    ) -> R {
        // Start at a 64-byte boundary: the kernel's 32-byte loads of a packed
        // panel then never straddle two cache lines (an allocation is only
        // 16-byte aligned, which cost up to a third of the kernel's speed).
        fn aligned<T: Copy + Default>(buf: &mut Vec<T>, len: usize) -> &mut [T] {
            if buf.len() < len + ALIGN_SLACK {
                buf.resize(len + ALIGN_SLACK, T::default());
            }
            let off = buf.as_ptr().align_offset(64).min(ALIGN_SLACK);
            &mut buf[off..off + len]
        }
        key.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => f(aligned(&mut buf, len)),
            Err(_) => f(aligned(&mut Vec::new(), len)),
        })
    }

    /// Whether this CPU and this output can use the kernel.
    pub fn usable(c: &ArrayViewMut2<f32>) -> bool {
        c.strides()[1] == 1 && available()
    }

    /// Whether this CPU has AVX2 and FMA (and the portable path is not forced).
    pub fn available() -> bool {
        !super::portable_forced()
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
    }

    /// The depth of the `KC` slices of a `k`-deep product: `k` cut into the
    /// fewest slices of at most [`KC_MAX`], all of (nearly) equal depth. A
    /// fixed depth left short remainders (`k = 784` was `256 + 256 + 256 + 16`,
    /// `k = 288`, a 3x3x32 convolution, `256 + 32`) that reload and store all of
    /// `C` for a few steps. Every path (packed, prepacked, few rows) slices
    /// with this one rule, so an element gets the same bits on all of them.
    pub(crate) fn slice_depth(k: usize) -> usize {
        k.div_ceil(k.div_ceil(KC_MAX).max(1)).max(1)
    }

    /// Values a packed `k x n` matrix needs, alignment slack included.
    pub fn packed_len(k: usize, n: usize) -> usize {
        k * n.next_multiple_of(NR) + ALIGN_SLACK
    }

    /// Packs all of `b` as [`gemm`] does (`KC`-deep slices of `NR`-column
    /// panels) into `buf`, starting at a 64-byte boundary, and returns the
    /// packed values.
    ///
    /// # Panics
    /// When `buf` is shorter than [`packed_len`].
    pub fn pack<'a>(b: ArrayView2<f32>, buf: &'a mut [f32]) -> &'a [f32] {
        let (k, n) = b.dim();
        assert!(buf.len() >= packed_len(k, n), "packed B buffer too small");
        let n_pad = n.next_multiple_of(NR);
        let off = buf.as_ptr().align_offset(64).min(ALIGN_SLACK);
        let dst = &mut buf[off..off + k * n_pad];
        let (brs, bcs) = (b.strides()[0], b.strides()[1]);
        let depth = slice_depth(k);
        for pc in (0..k).step_by(depth) {
            let kc = depth.min(k - pc);
            for j0 in (0..n).step_by(NR) {
                let panel = &mut dst[pc * n_pad + j0 * kc..][..kc * NR];
                // SAFETY: rows pc..pc+kc < k and columns j0..j0+w <= n lie
                // inside `b`; the panel holds kc x NR values.
                unsafe { pack_b_panel(b.as_ptr(), brs, bcs, pc, kc, j0, NR.min(n - j0), panel) };
            }
        }
        dst
    }

    /// `C = A B` with `B` (`k x n`) already packed by [`pack`], on the
    /// calling thread: the arithmetic of [`gemm`], without packing `B` again.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA, `c` must have a unit column stride
    /// and be `m x n` for an `m x k` `a`, `packed` must hold `k x n` packed
    /// (at least `k * n.next_multiple_of(16)` values), and nothing may be empty.
    pub unsafe fn gemm_prepacked(
        a: ArrayView2<f32>,
        packed: &[f32],
        n: usize,
        mut c: ArrayViewMut2<f32>,
    ) {
        let m = a.nrows();
        let ldc = c.strides()[0];
        let out = SharedPtr(c.as_mut_ptr());
        // SAFETY: this function's contract is row_block's, for rows 0..m.
        unsafe { row_block(a, n, packed, n.next_multiple_of(NR), out, ldc, 0, m, false) };
    }

    /// A pointer shared by tasks that write disjoint parts of one buffer.
    #[derive(Clone, Copy)]
    struct SharedPtr(*mut f32);
    // SAFETY: every task writes a disjoint range (panels of the packed `B`, or
    // rows of `C`), and the buffer outlives the tasks.
    unsafe impl Send for SharedPtr {}
    unsafe impl Sync for SharedPtr {}

    impl SharedPtr {
        /// The pointer (a method, so closures capture the whole `Send` wrapper).
        fn get(self) -> *mut f32 {
            self.0
        }
    }

    /// `C = A B`. A wide product with few rows splits the columns of `C` into
    /// tasks, each packing its own slices of `B` ([`col_block`]). Otherwise all
    /// of `B` is packed first (`KC`-deep slices of `NR`-column panels) and the
    /// rows of `C` are split ([`row_block`]). Task counts depend only on the
    /// shape, and every task walks the `KC` slices in order, so every element's
    /// arithmetic is the same with one task or many.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA, `c` must have a column stride of 1
    /// (see [`usable`]), `b` must be `k x n` and `c` `m x n` for an `m x k`
    /// `a`, and none of them may be empty. With `add`, `C += A B`: every
    /// slice's sum is added to `C`, the first one too.
    pub unsafe fn gemm(
        a: ArrayView2<f32>,
        b: ArrayView2<f32>,
        mut c: ArrayViewMut2<f32>,
        parallel: bool,
        add: bool,
    ) {
        let (m, k) = a.dim();
        let n = b.ncols();
        if m <= FEW_ROWS && b.strides()[1] == 1 {
            // SAFETY: this function's own contract (AVX2/FMA, agreeing,
            // non-empty shapes), and `b` has the unit column stride it reads.
            unsafe { few_rows(a, b, c, add) };
            return;
        }
        let n_pad = n.next_multiple_of(NR);
        let panels = n_pad / NR;
        let depth = slice_depth(k);
        let slices = k.div_ceil(depth);
        let (brs, bcs) = (b.strides()[0], b.strides()[1]);
        let ldc = c.strides()[0];
        let out = SharedPtr(c.as_mut_ptr());
        if parallel && n >= 2 * m && panels >= 8 {
            // Few rows, many columns (a training batch times a large kernel):
            // split the columns instead, so that each task packs and reads only
            // its own part of `B`, one L2-sized slice at a time, and the tasks
            // do equal work whatever the sparsity of `A`. At least 256 columns
            // a task (each task packs all of `A`: for dense products, 4 tasks
            // for 512 columns were 5% slower than 2), an even number of tasks,
            // both fixed by the shape.
            let tasks = (n / 256).max(2).next_multiple_of(2).min(panels);
            (0..tasks).into_par_iter().for_each(|t| {
                let (p0, p1) = (t * panels / tasks, (t + 1) * panels / tasks);
                // SAFETY: AVX2/FMA were checked by the caller; the task writes
                // only columns p0*NR..p1*NR (clipped to n) of `c`.
                unsafe { col_block(a, b, out, ldc, p0, p1, add) };
            });
            return;
        }
        // An even number of tasks (when parallel) with boundaries at the nearest
        // multiple of MR keeps two workers equally busy; the count depends only on m.
        let tasks = if parallel {
            m.div_ceil(MC).next_multiple_of(2).min(m.div_ceil(MR))
        } else {
            1
        };
        let boundary = |t: usize| {
            if t >= tasks {
                m
            } else {
                ((t * m + tasks * MR / 2) / (tasks * MR) * MR).min(m)
            }
        };
        with_buf(&BPACK, k * n_pad, |bpack| {
            let dst = SharedPtr(bpack.as_mut_ptr());
            let bptr = SharedPtr(b.as_ptr() as *mut f32);
            // Slice `s` starts at row s*depth, so its panels start at s*depth*n_pad.
            let pack = |job: usize| {
                let (s, jr) = (job / panels, job % panels);
                let pc = s * depth;
                let kc = depth.min(k - pc);
                let j0 = jr * NR;
                // SAFETY: panel (s, jr) is the disjoint range
                // [pc*n_pad + j0*kc, + kc*NR) of the buffer sized k*n_pad above,
                // and the reads stay inside `b` (k x n).
                unsafe {
                    let panel = std::slice::from_raw_parts_mut(
                        dst.get().add(pc * n_pad + j0 * kc),
                        kc * NR,
                    );
                    pack_b_panel(bptr.get(), brs, bcs, pc, kc, j0, NR.min(n - j0), panel);
                }
            };
            if parallel {
                (0..slices * panels).into_par_iter().for_each(pack);
            } else {
                (0..slices * panels).for_each(pack);
            }
            let packed_b: &[f32] = bpack;
            let run = |t: usize| {
                let (r0, r1) = (boundary(t), boundary(t + 1));
                if r0 < r1 {
                    // SAFETY: AVX2/FMA were checked by the caller; the task writes
                    // only rows r0..r1 of `c`.
                    unsafe { row_block(a, n, packed_b, n_pad, out, ldc, r0, r1, add) };
                }
            };
            if tasks > 1 {
                (0..tasks).into_par_iter().for_each(run);
            } else {
                run(0);
            }
        });
    }

    /// [`super::gemm_patch_rows`]: for each `KC` slice, each panel of `MR`
    /// rows (pointers into the input, one per output position) against every
    /// packed `B` panel, the arithmetic of [`row_block`] reading `A` in place.
    ///
    /// # Safety
    /// AVX2 and FMA; `c` is `a.rows x n` with a unit column stride, `packed`
    /// holds the `k x n` matrix packed by [`pack`], nothing is empty.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gemm_patch_rows<F: Fn(usize) -> usize>(
        a: &super::PatchRows<'_, F>,
        packed: &[f32],
        n: usize,
        mut c: ArrayViewMut2<f32>,
    ) {
        let (m, k) = (a.rows, a.runs * a.run_len);
        let reach = (a.runs - 1) * a.run_stride + a.run_len;
        let n_pad = n.next_multiple_of(NR);
        let panels = n_pad / NR;
        let depth = slice_depth(k);
        let ldc = c.strides()[0];
        let out = c.as_mut_ptr();
        for ir in (0..m).step_by(MR) {
            let mr = MR.min(m - ir);
            // Rows past `mr` repeat the last one; their results are discarded.
            let starts: [usize; MR] = std::array::from_fn(|r| (a.start)(ir + r.min(mr - 1)));
            for &s in &starts {
                assert!(
                    s.checked_add(reach).is_some_and(|end| end <= a.x.len()),
                    "horn::kernels::gemm_patch_rows: a row reaches past the input"
                );
            }
            for pc in (0..k).step_by(depth) {
                let kc = depth.min(k - pc);
                for jr in 0..panels {
                    let j0 = jr * NR;
                    // SAFETY: every run of these rows lies inside `x`
                    // (asserted above); panel jr of slice pc holds kc x NR
                    // values of `packed`; the tile lies inside `c`.
                    unsafe {
                        let b = packed.as_ptr().add(pc * n_pad + j0 * kc);
                        let acc = kernel_runs(a, &starts, pc, kc, b);
                        let ctile = out.offset(ir as isize * ldc + j0 as isize);
                        store_tile(acc, ctile, ldc, mr, NR.min(n - j0), pc == 0);
                    }
                }
            }
        }
    }

    /// [`kernel`] over steps `pc..pc + kc` of rows given as runs in the input
    /// (`starts[r]` is row r's first run): the same FMA chain, walking from
    /// one run to the next where a run ends.
    ///
    /// # Safety
    /// AVX2 and FMA; every run of every row lies inside `a.x`; `b` holds
    /// kc x NR values.
    #[inline(always)]
    unsafe fn kernel_runs<F: Fn(usize) -> usize>(
        a: &super::PatchRows<'_, F>,
        starts: &[usize; MR],
        pc: usize,
        kc: usize,
        b: *const f32,
    ) -> [__m256; 2 * MR] {
        // SAFETY: the caller guarantees the reach of every run and of `b`.
        unsafe {
            let mut acc = [_mm256_setzero_ps(); 2 * MR];
            let (mut p, end, mut bp) = (pc, pc + kc, b);
            while p < end {
                let (run, off) = (p / a.run_len, p % a.run_len);
                let len = (a.run_len - off).min(end - p);
                let rows: [*const f32; MR] =
                    std::array::from_fn(|r| a.x.as_ptr().add(starts[r] + run * a.run_stride + off));
                for q in 0..len {
                    let b0 = _mm256_loadu_ps(bp.add(q * NR));
                    let b1 = _mm256_loadu_ps(bp.add(q * NR + 8));
                    for r in 0..MR {
                        let av = _mm256_broadcast_ss(&*rows[r].add(q));
                        acc[2 * r] = _mm256_fmadd_ps(av, b0, acc[2 * r]);
                        acc[2 * r + 1] = _mm256_fmadd_ps(av, b1, acc[2 * r + 1]);
                    }
                }
                bp = bp.add(len * NR);
                p += len;
            }
            acc
        }
    }

    /// `C = A B` for a handful of rows (a single-sample `predict`) and a row-major
    /// `B`: streams `B` once per row of `A` instead of packing it. Each block
    /// of 64 columns of the row is accumulated in eight registers over a whole
    /// `KC` slice (the loads of `B` then go straight to the FMA units, with no
    /// accumulator round trip through memory). The arithmetic is the kernel's:
    /// per `KC` slice, an FMA chain over `p` from zero, then `C = acc` or
    /// `C += acc`, so a row gets the same bits whatever the batch it is
    /// predicted in.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn few_rows(
        a: ArrayView2<f32>,
        b: ArrayView2<f32>,
        mut c: ArrayViewMut2<f32>,
        add: bool,
    ) {
        let (m, k) = a.dim();
        let n = b.ncols();
        let (ars, acs) = (a.strides()[0], a.strides()[1]);
        let brs = b.strides()[0];
        let ldc = c.strides()[0];
        let (ap, bp, cp) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
        for i in 0..m {
            // SAFETY: i < m: row i of `a` and of `c`.
            let (arow, crow) =
                unsafe { (ap.offset(i as isize * ars), cp.offset(i as isize * ldc)) };
            let depth = slice_depth(k);
            for pc in (0..k).step_by(depth) {
                let end = depth.min(k - pc) + pc;
                // The slice's nonzero inputs and their steps, in order: zero
                // inputs add nothing (see `kernel_sparse`), so a sparse row (an
                // MNIST image) reads a fraction of `B`, and the column blocks
                // below run without a branch.
                let mut vals = [0.0f32; KC_MAX];
                let mut steps = [0usize; KC_MAX];
                let mut nz = 0;
                for p in pc..end {
                    // SAFETY: p < k: inside row i of `a`.
                    let av = unsafe { *arow.offset(p as isize * acs) };
                    if av != 0.0 {
                        vals[nz] = av;
                        steps[nz] = p;
                        nz += 1;
                    }
                }
                let (vals, steps) = (&vals[..nz], &steps[..nz]);
                let mut j0 = 0;
                while j0 + 8 <= n {
                    let wide = j0 + 64 <= n;
                    // SAFETY: columns j0..j0+64 (wide) or j0..j0+8 lie inside
                    // `b` (unit column stride) and row i of `c`; every step is
                    // below k.
                    unsafe {
                        if wide {
                            few_rows_block::<8>(vals, steps, bp, brs, crow, pc == 0 && !add, j0)
                        } else {
                            few_rows_block::<1>(vals, steps, bp, brs, crow, pc == 0 && !add, j0)
                        }
                    };
                    j0 += if wide { 64 } else { 8 };
                }
                for j in j0..n {
                    let mut acc = 0.0f32;
                    for (&av, &p) in vals.iter().zip(steps) {
                        // SAFETY: p < k, j < n: inside `b`.
                        acc = av.mul_add(unsafe { *bp.offset(p as isize * brs).add(j) }, acc);
                    }
                    // SAFETY: j < n: inside row i of `c`.
                    unsafe {
                        let out = crow.add(j);
                        *out = if pc == 0 && !add { acc } else { *out + acc };
                    }
                }
            }
        }
    }

    /// Columns `j0..j0 + 8 * NB` of one row of [`few_rows`] over one `KC`
    /// slice (its nonzero inputs `vals` at `steps`), accumulated in `NB`
    /// registers, then stored (`first` slice) or added to `C`.
    ///
    /// # Safety
    /// AVX2 and FMA; every step a row of `b` (row stride `brs`, unit column
    /// stride), columns `j0..j0 + 8 * NB` inside `b` and the row `crow`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn few_rows_block<const NB: usize>(
        vals: &[f32],
        steps: &[usize],
        bp: *const f32,
        brs: isize,
        crow: *mut f32,
        first: bool,
        j0: usize,
    ) {
        // SAFETY: the whole body stays inside this function's contract.
        unsafe {
            let mut acc = [_mm256_setzero_ps(); NB];
            for (&av, &p) in vals.iter().zip(steps) {
                let bv = _mm256_set1_ps(av);
                let brow = bp.offset(p as isize * brs).add(j0);
                for (j, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm256_fmadd_ps(bv, _mm256_loadu_ps(brow.add(8 * j)), *acc);
                }
            }
            for (j, acc) in acc.iter().enumerate() {
                let out = crow.add(j0 + 8 * j);
                let v = if first {
                    *acc
                } else {
                    _mm256_add_ps(_mm256_loadu_ps(out), *acc)
                };
                _mm256_storeu_ps(out, v);
            }
        }
    }

    /// Rows `r0..r1` of `C`: for each `KC` slice in order, pack the `A` panels
    /// and run the kernel against every packed `B` panel.
    ///
    /// Packing leaves out the steps `p` where all `MR` rows of a panel are zero
    /// (see [`pack_a`]), and such a panel runs [`kernel_sparse`]: sparse inputs
    /// (MNIST pixels, one-hot columns) skip most of their work, with the same
    /// values as the dense sum.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn row_block(
        a: ArrayView2<f32>,
        n: usize,
        packed_b: &[f32],
        n_pad: usize,
        out: SharedPtr,
        ldc: isize,
        r0: usize,
        r1: usize,
        add: bool,
    ) {
        // SAFETY: the caller guarantees AVX2/FMA, agreeing shapes, `packed_b` holding all of `B` packed (k x n_pad) and exclusive access to rows r0..r1 of `C` (m x n at `out`, row stride `ldc`).
        unsafe {
            let k = a.ncols();
            let ars = a.strides()[0];
            // A row-major `A` can be read in place; it is still packed (which finds
            // its zero steps) when many `B` panels share each `A` panel.
            let in_place = a.strides()[1] == 1 && n <= 4 * NR;
            let panels = n.div_ceil(NR);
            with_buf(&APACK, MC * KC_MAX + PACK_SLACK, |apack| {
                with_buf(&AIDX, MC / MR * KC_MAX, |aidx| {
                    // KC slices outermost, so one slice of the packed `B` stays in
                    // cache for every row block of this task.
                    let depth = slice_depth(k);
                    for pc in (0..k).step_by(depth) {
                        let kc = depth.min(k - pc);
                        let bslice = packed_b.as_ptr().add(pc * n_pad);
                        let bpanel = |jr: usize| bslice.add(jr * NR * kc);
                        for ic in (r0..r1).step_by(MC) {
                            let mc = MC.min(r1 - ic);
                            if !in_place {
                                let rows = (a, ic, mc, pc, kc);
                                let first = pc == 0 && !add;
                                packed_rows(
                                    rows,
                                    apack,
                                    aidx,
                                    0..panels,
                                    bpanel,
                                    n,
                                    out,
                                    ldc,
                                    first,
                                );
                                continue;
                            }
                            // SAFETY (pointer use below): indices stay inside `a`
                            // (m x k) and `c` (m x n); rows past `mr` point at a
                            // valid row and their results are discarded.
                            for jr in 0..panels {
                                let j0 = jr * NR;
                                for ir in (0..mc).step_by(MR) {
                                    let mr = MR.min(mc - ir);
                                    let base =
                                        a.as_ptr().offset((ic + ir) as isize * ars + pc as isize);
                                    let rows = std::array::from_fn(|r| {
                                        base.offset(r.min(mr - 1) as isize * ars)
                                    });
                                    let ctile =
                                        out.get().offset((ic + ir) as isize * ldc + j0 as isize);
                                    let acc = kernel(kc, rows, 1, bpanel(jr));
                                    let first = pc == 0 && !add;
                                    store_tile(acc, ctile, ldc, mr, NR.min(n - j0), first);
                                }
                            }
                        }
                    }
                })
            });
        }
    }

    /// Columns `p0 * NR..p1 * NR` (clipped to `n`) of `C`, for a product with
    /// few rows: for each `KC` slice in order, pack this task's panels of that
    /// slice of `B` (an L2-sized block), then each `MC` block of `A`, and run
    /// the kernel on every pair. Each element sees the arithmetic of
    /// [`row_block`].
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn col_block(
        a: ArrayView2<f32>,
        b: ArrayView2<f32>,
        out: SharedPtr,
        ldc: isize,
        p0: usize,
        p1: usize,
        add: bool,
    ) {
        // SAFETY: the caller guarantees AVX2/FMA, agreeing shapes and exclusive access to columns p0*NR..min(p1*NR, n) of `C` (m x n at `out`, row stride `ldc`).
        unsafe {
            let (m, k) = a.dim();
            let n = b.ncols();
            let (brs, bcs) = (b.strides()[0], b.strides()[1]);
            let width = (p1 - p0) * NR;
            let depth = slice_depth(k);
            with_buf(&BSLICE, depth * width, |bslice| {
                with_buf(&APACK, MC * KC_MAX + PACK_SLACK, |apack| {
                    with_buf(&AIDX, MC / MR * KC_MAX, |aidx| {
                        for pc in (0..k).step_by(depth) {
                            let kc = depth.min(k - pc);
                            // SAFETY: reads stay inside `b` (k x n), writes inside
                            // the buffer sized above.
                            for jr in p0..p1 {
                                let j0 = jr * NR;
                                let panel = &mut bslice[(jr - p0) * NR * kc..][..NR * kc];
                                pack_b_panel(
                                    b.as_ptr(),
                                    brs,
                                    bcs,
                                    pc,
                                    kc,
                                    j0,
                                    NR.min(n - j0),
                                    panel,
                                );
                            }
                            let bpanel = |jr: usize| bslice.as_ptr().add((jr - p0) * NR * kc);
                            for ic in (0..m).step_by(MC) {
                                let rows = (a, ic, MC.min(m - ic), pc, kc);
                                let first = pc == 0 && !add;
                                packed_rows(rows, apack, aidx, p0..p1, bpanel, n, out, ldc, first);
                            }
                        }
                    })
                })
            });
        }
    }

    /// Packs rows `ic..ic+mc` of slice `pc..pc+kc` of `A` (`rows` is
    /// `(a, ic, mc, pc, kc)`) and runs every tile of those rows against the
    /// packed `B` panels `panels` (panel `jr` at `bpanel(jr)`, columns
    /// `jr * NR..`), writing `C` as [`store_tile`] does.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn packed_rows(
        rows: (ArrayView2<f32>, usize, usize, usize, usize),
        apack: &mut [f32],
        aidx: &mut [u32],
        panels: std::ops::Range<usize>,
        bpanel: impl Fn(usize) -> *const f32,
        n: usize,
        out: SharedPtr,
        ldc: isize,
        first: bool,
    ) {
        // SAFETY: the caller guarantees that rows ic..ic+mc and steps pc..pc+kc lie inside `a`, that `bpanel(jr)` points at a packed panel of kc x NR values for every jr in `panels`, and that those rows and panels' columns of `C` are its own to write.
        unsafe {
            let (a, ic, mc, pc, kc) = rows;
            let (ars, acs) = (a.strides()[0], a.strides()[1]);
            let mut counts = [0usize; MC / MR];
            // SAFETY (pointer use below): indices stay inside `a` (m x k), `c`
            // (m x n) and the packed buffers.
            pack_a(
                a.as_ptr(),
                ars,
                acs,
                ic,
                mc,
                pc,
                kc,
                apack,
                aidx,
                &mut counts,
            );
            for jr in panels {
                let j0 = jr * NR;
                let b = bpanel(jr);
                for ir in (0..mc).step_by(MR) {
                    let ctile = out.get().offset((ic + ir) as isize * ldc + j0 as isize);
                    let acc = packed_tile(apack, aidx, counts[ir / MR], ir, kc, b);
                    store_tile(acc, ctile, ldc, MR.min(mc - ir), NR.min(n - j0), first);
                }
            }
        }
    }

    /// The tile of the packed `A` panel starting at row `ir` of its block, which
    /// holds `used` of its `kc` steps, against one packed `B` panel.
    #[inline(always)]
    unsafe fn packed_tile(
        apack: &[f32],
        aidx: &[u32],
        used: usize,
        ir: usize,
        kc: usize,
        bpanel: *const f32,
    ) -> [__m256; 2 * MR] {
        // SAFETY: the caller guarantees that `apack` holds the packed panel at row `ir` (kc x MR values), `aidx` its step indices, and `bpanel` kc x NR packed values.
        unsafe {
            let panel = apack.as_ptr().add(ir * kc);
            if used == kc {
                kernel(kc, std::array::from_fn(|r| panel.add(r)), MR, bpanel)
            } else {
                kernel_sparse(used, panel, aidx.as_ptr().add(ir / MR * kc), bpanel)
            }
        }
    }

    /// Packs the panel `B[pc..pc+kc, j0..j0+w]` as `kc` rows of `NR` values,
    /// zero-padded past `w`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn pack_b_panel(
        b: *const f32,
        rs: isize,
        cs: isize,
        pc: usize,
        kc: usize,
        j0: usize,
        w: usize,
        out: &mut [f32],
    ) {
        assert!(out.len() >= kc * NR, "packed B panel buffer too small");
        // SAFETY: the caller guarantees that rows pc..pc+kc and columns
        // j0..j0+w lie inside `b`; `out` holds kc x NR values (checked above).
        unsafe {
            for p in 0..kc {
                let row = b.offset((pc + p) as isize * rs + j0 as isize * cs);
                let o = p * NR;
                if cs == 1 && w == NR {
                    std::ptr::copy_nonoverlapping(row, out.as_mut_ptr().add(o), NR);
                } else {
                    for j in 0..NR {
                        out[o + j] = if j < w {
                            *row.offset(j as isize * cs)
                        } else {
                            0.0
                        };
                    }
                }
            }
        }
    }

    /// Packs `A[ic..ic+mc, pc..pc+kc]` into `MR`-row panels (`MR` values of one
    /// column after another, zero-padded past `mc`), leaving out the columns
    /// where all `MR` values are zero. Panel `q` starts at `q * MR * kc` in `out`,
    /// holds `counts[q]` columns, and their positions `p` are in
    /// `idx[q * kc..][..counts[q]]`. `out` needs `PACK_SLACK` values past the
    /// last panel.
    ///
    /// The two layouts the model uses are vectorized: a row-major `A` (a batch
    /// of inputs) tests eight columns of six rows at once and skips all-zero
    /// runs outright; a transposed one (the inputs in a weight gradient) loads a
    /// column's six values as one vector.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn pack_a(
        a: *const f32,
        rs: isize,
        cs: isize,
        ic: usize,
        mc: usize,
        pc: usize,
        kc: usize,
        out: &mut [f32],
        idx: &mut [u32],
        counts: &mut [usize; MC / MR],
    ) {
        // SAFETY: the caller guarantees that rows ic..ic+mc and steps pc..pc+kc lie inside `a` (strides rs, cs) and that `out` holds mc rounded up to MR times kc values plus PACK_SLACK (checked below).
        unsafe {
            // Checked in every build: the packing below writes through raw pointers.
            assert!(
                out.len() >= mc.next_multiple_of(MR) * kc + PACK_SLACK
                    && idx.len() >= mc.div_ceil(MR) * kc
            );
            let zero = _mm256_setzero_ps();
            // Lanes that compare unequal to zero (NaN included, as in `x != 0.0`).
            let nonzero = |v: __m256| _mm256_cmp_ps::<_CMP_NEQ_UQ>(v, zero);
            for (q, i0) in (0..mc).step_by(MR).enumerate() {
                let h = MR.min(mc - i0);
                let base = a.offset((ic + i0) as isize * rs + pc as isize * cs);
                let panel = out.as_mut_ptr().add(i0 * kc);
                let pidx = &mut idx[q * kc..][..kc];
                let mut used = 0;
                let mut p = 0;
                if cs == 1 {
                    let rows: [*const f32; MR] =
                        std::array::from_fn(|i| base.offset(i.min(h - 1) as isize * rs));
                    while p + 8 <= kc {
                        let v: [__m256; MR] = std::array::from_fn(|i| {
                            if i < h {
                                _mm256_loadu_ps(rows[i].add(p))
                            } else {
                                zero
                            }
                        });
                        let any = v[1..]
                            .iter()
                            .fold(nonzero(v[0]), |m, &x| _mm256_or_ps(m, nonzero(x)));
                        let mut mask = _mm256_movemask_ps(any) as u32;
                        if mask != 0 {
                            // SAFETY: six vectors of eight lanes are 6x8 values.
                            let t: [[f32; 8]; MR] = std::mem::transmute(v);
                            while mask != 0 {
                                let j = mask.trailing_zeros() as usize;
                                mask &= mask - 1;
                                for (i, row) in t.iter().enumerate() {
                                    *panel.add(used * MR + i) = row[j];
                                }
                                pidx[used] = (p + j) as u32;
                                used += 1;
                            }
                        }
                        p += 8;
                    }
                } else if rs == 1 {
                    let lanes = _mm256_cmpgt_epi32(
                        _mm256_set1_epi32(h as i32),
                        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                    );
                    while p < kc {
                        // Masked lanes read nothing, so this never leaves `a`.
                        let v = _mm256_maskload_ps(base.offset(p as isize * cs), lanes);
                        if _mm256_movemask_ps(nonzero(v)) != 0 {
                            // Eight values land where six belong: the two extra
                            // fall on the next column's slot or the slack.
                            _mm256_storeu_ps(panel.add(used * MR), v);
                            pidx[used] = p as u32;
                            used += 1;
                        }
                        p += 1;
                    }
                }
                // The rest (a general layout, or the last columns of a row-major A).
                while p < kc {
                    let col = base.offset(p as isize * cs);
                    let v: [f32; MR] = std::array::from_fn(|i| {
                        if i < h {
                            *col.offset(i as isize * rs)
                        } else {
                            0.0
                        }
                    });
                    if v.iter().any(|&x| x != 0.0) {
                        std::ptr::copy_nonoverlapping(v.as_ptr(), panel.add(used * MR), MR);
                        pidx[used] = p as u32;
                        used += 1;
                    }
                    p += 1;
                }
                counts[q] = used;
            }
        }
    }

    /// One 6x16 tile: `acc = sum_p a[p] b[p]` over a packed `B` panel. Row `r`
    /// of the `A` tile is read at `rows[r] + p * step`: from a packed panel
    /// (`step = MR`) or straight from a row-major `A` (`step = 1`); either way
    /// the same FMAs run in the same order.
    #[inline(always)]
    unsafe fn kernel(
        kc: usize,
        rows: [*const f32; MR],
        step: usize,
        b: *const f32,
    ) -> [__m256; 2 * MR] {
        // SAFETY: the caller guarantees that each `rows[r] + p * step` for p < kc lies inside `A` and that `b` holds kc x NR values.
        unsafe {
            let mut acc = [_mm256_setzero_ps(); 2 * MR];
            for p in 0..kc {
                let b0 = _mm256_loadu_ps(b.add(p * NR));
                let b1 = _mm256_loadu_ps(b.add(p * NR + 8));
                for r in 0..MR {
                    let av = _mm256_broadcast_ss(&*rows[r].add(p * step));
                    acc[2 * r] = _mm256_fmadd_ps(av, b0, acc[2 * r]);
                    acc[2 * r + 1] = _mm256_fmadd_ps(av, b1, acc[2 * r + 1]);
                }
            }
            acc
        }
    }

    /// [`kernel`] over the `used` nonzero columns of a compressed `A` panel
    /// (see [`pack_a`]): the steps it leaves out would add `0 * b`, which
    /// changes no sum (for finite `B`), so it gives the dense kernel's values.
    #[inline(always)]
    unsafe fn kernel_sparse(
        used: usize,
        a: *const f32,
        idx: *const u32,
        b: *const f32,
    ) -> [__m256; 2 * MR] {
        // SAFETY: the caller guarantees that `a` holds used x MR values, `idx` used step indices, and `b` a packed panel with a row for every index.
        unsafe {
            let mut acc = [_mm256_setzero_ps(); 2 * MR];
            for q in 0..used {
                let bp = b.add(*idx.add(q) as usize * NR);
                let b0 = _mm256_loadu_ps(bp);
                let b1 = _mm256_loadu_ps(bp.add(8));
                for r in 0..MR {
                    let av = _mm256_broadcast_ss(&*a.add(q * MR + r));
                    acc[2 * r] = _mm256_fmadd_ps(av, b0, acc[2 * r]);
                    acc[2 * r + 1] = _mm256_fmadd_ps(av, b1, acc[2 * r + 1]);
                }
            }
            acc
        }
    }

    /// Writes the first `mr x nr` values of a 6x16 tile to `C`: `C = acc` on the
    /// first `KC` slice, `C += acc` after it.
    #[inline(always)]
    unsafe fn store_tile(
        acc: [__m256; 2 * MR],
        c: *mut f32,
        ldc: isize,
        mr: usize,
        nr: usize,
        first: bool,
    ) {
        // SAFETY: the caller guarantees that the mr x nr tile at `c` (row stride `ldc`) lies inside `C` and is this task's to write.
        unsafe {
            if mr == MR && nr == NR {
                for r in 0..MR {
                    let row = c.offset(r as isize * ldc);
                    let (lo, hi) = if first {
                        (acc[2 * r], acc[2 * r + 1])
                    } else {
                        (
                            _mm256_add_ps(_mm256_loadu_ps(row), acc[2 * r]),
                            _mm256_add_ps(_mm256_loadu_ps(row.add(8)), acc[2 * r + 1]),
                        )
                    };
                    _mm256_storeu_ps(row, lo);
                    _mm256_storeu_ps(row.add(8), hi);
                }
            } else {
                // SAFETY: `[__m256; 12]` and `[f32; 96]` have the same size, and
                // acc[2r], acc[2r + 1] hold columns 0-7 and 8-15 of row r.
                let tile: [f32; MR * NR] = std::mem::transmute(acc);
                for r in 0..mr {
                    let row = c.offset(r as isize * ldc);
                    for j in 0..nr {
                        let v = tile[r * NR + j];
                        *row.add(j) = if first { v } else { *row.add(j) + v };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    /// `gemm_add_exact` gives the bits of `C + gemm(A, B)` on every path of
    /// the kernel (a few rows, rows read in place, packed rows, column tasks,
    /// strided operands, a block of columns of a wider `C`), and refuses
    /// where one pass cannot (a long `k`, an empty one).
    #[test]
    fn an_exact_add_gives_the_bits_of_c_plus_the_product() {
        let shapes = [
            (3, 40, 70),
            (37, 64, 48),
            (130, 64, 256),
            (20, 300, 600),
            (784, 64, 256),
        ];
        for (m, k, n) in shapes {
            let a = Array2::from_shape_fn((m, k), |(i, j)| {
                if (i * 7 + j * 3) % 5 == 0 {
                    0.0
                } else {
                    ((i * 31 + j * 17) % 23) as f32 / 7.0 - 1.5
                }
            });
            let at = Array2::from_shape_fn((k, m), |(j, i)| a[[i, j]]);
            let b =
                Array2::from_shape_fn((k, n), |(i, j)| ((i * 13 + j * 5) % 19) as f32 / 9.0 - 1.0);
            let c0 =
                Array2::from_shape_fn((m, n + 8), |(i, j)| ((i + 3 * j) % 11) as f32 / 3.0 - 1.7);
            for a in [a.view(), at.t()] {
                let mut p = Array2::zeros((m, n));
                gemm(a, b.view(), p.view_mut());
                let mut c = c0.clone();
                let done = gemm_add_exact(a, b.view(), c.slice_mut(s![.., 4..4 + n]));
                if !done {
                    // Refused: nothing written (the portable path, for one).
                    assert_eq!(c, c0);
                    continue;
                }
                for i in 0..m {
                    for j in 0..n + 8 {
                        let want = if (4..4 + n).contains(&j) {
                            c0[[i, j]] + p[[i, j - 4]]
                        } else {
                            c0[[i, j]]
                        };
                        assert_eq!(
                            c[[i, j]].to_bits(),
                            want.to_bits(),
                            "{m}x{k}x{n} at {i},{j}"
                        );
                    }
                }
            }
        }
        let (a, b) = (Array2::<f32>::ones((8, 900)), Array2::<f32>::ones((900, 8)));
        let mut c = Array2::<f32>::zeros((8, 8));
        assert!(
            !gemm_add_exact(a.view(), b.view(), c.view_mut()),
            "k = 900 needs three slices"
        );
        assert_eq!(c, Array2::<f32>::zeros((8, 8)));
    }

    fn naive(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Array2<f32> {
        let mut c = Array2::zeros((a.nrows(), b.ncols()));
        for i in 0..a.nrows() {
            for j in 0..b.ncols() {
                c[[i, j]] = (0..a.ncols())
                    .map(|p| a[[i, p]] as f64 * b[[p, j]] as f64)
                    .sum::<f64>() as f32;
            }
        }
        c
    }

    fn data(r: usize, c: usize, seed: usize) -> Array2<f32> {
        Array2::from_shape_fn((r, c), |(i, j)| {
            (((i * 31 + j * 17 + seed) % 23) as f32 - 11.0) / 7.0
        })
    }

    #[test]
    fn matches_a_naive_product_on_odd_and_strided_shapes() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (3, 300, 53),
            (7, 5, 3),
            (37, 300, 53),
            (128, 784, 40),
            (13, 257, 129),
            (200, 20, 1),
        ] {
            let a = data(m, k, 1);
            let b = data(k, n, 2);
            let bt = data(n, k, 3);
            let at = data(k, m, 4);
            for (av, bv) in [
                (a.view(), b.view()),
                (at.t(), b.view()),
                (a.view(), bt.t()),
                (at.t(), bt.t()),
            ] {
                let expect = naive(av, bv);
                let mut c = Array2::from_elem((m, n), f32::NAN);
                gemm(av, bv, c.view_mut());
                for (x, y) in c.iter().zip(expect.iter()) {
                    assert!(
                        (x - y).abs() <= 1e-3 * (1.0 + y.abs()),
                        "{m}x{k}x{n}: {x} vs {y}"
                    );
                }
            }
        }
    }

    #[test]
    fn blocks_of_c_give_bit_identical_values() {
        let a = data(150, 700, 5);
        let b = data(700, 90, 6);
        let mut whole = Array2::zeros((150, 90));
        gemm_serial(a.view(), b.view(), whole.view_mut());
        let mut pieces = Array2::zeros((150, 90));
        for (r0, r1) in [(0, 7), (7, 64), (64, 150)] {
            for (c0, c1) in [(0, 16), (16, 35), (35, 90)] {
                gemm_serial(
                    a.slice(s![r0..r1, ..]),
                    b.slice(s![.., c0..c1]),
                    pieces.slice_mut(s![r0..r1, c0..c1]),
                );
            }
        }
        assert!(whole
            .iter()
            .zip(pieces.iter())
            .all(|(x, y)| x.to_bits() == y.to_bits()));
    }

    /// The AVX2 kernel's arithmetic, one element at a time: per `KC` slice an
    /// FMA chain over every `p` from zero, then `C = acc` or `C += acc`.
    #[cfg(target_arch = "x86_64")]
    fn kernel_order(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Array2<f32> {
        let (m, k) = a.dim();
        let depth = avx2::slice_depth(k);
        Array2::from_shape_fn((m, b.ncols()), |(i, j)| {
            let mut c = 0.0f32;
            for pc in (0..k).step_by(depth) {
                let mut acc = 0.0f32;
                for p in pc..k.min(pc + depth) {
                    acc = a[[i, p]].mul_add(b[[p, j]], acc);
                }
                c = if pc == 0 { acc } else { c + acc };
            }
            c
        })
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn sparse_inputs_skip_zero_steps_without_changing_a_value() {
        // This checks horn's own kernel; the portable one has its own order.
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
            || portable_forced()
        {
            return;
        }
        // Like MNIST: zero borders, and scattered zeros inside, so that panels
        // run dense, sparse and empty; shapes with one and several KC slices.
        for &(m, k, n) in &[(1, 784, 70), (3, 300, 33), (130, 784, 100), (50, 600, 512)] {
            let sparse = |r: usize, c: usize, seed: usize| {
                let mut x = data(r, c, seed);
                x.indexed_iter_mut().for_each(|((i, j), v)| {
                    if j < c / 5 || (i * 7 + j * 3) % 5 < 3 || (i / 6) % 4 == 1 {
                        *v = 0.0;
                    }
                });
                x
            };
            let b = data(k, n, 2);
            let a = sparse(m, k, 1);
            let at = sparse(k, m, 3).reversed_axes();
            for av in [a.view(), at.view()] {
                let expect = kernel_order(av, b.view());
                let mut c = Array2::from_elem((m, n), f32::NAN);
                gemm(av, b.view(), c.view_mut());
                assert_eq!(c, expect, "{m}x{k}x{n}");
            }
            // The weight gradient's form: a transposed sparse input times a dense B.
            let xt = sparse(m.max(7), k, 4);
            let d = data(m.max(7), n, 5);
            let expect = kernel_order(xt.t(), d.view());
            let mut c = Array2::from_elem((k, n), f32::NAN);
            gemm(xt.t(), d.view(), c.view_mut());
            assert_eq!(c, expect, "{k}x{}x{n} transposed", m.max(7));
        }
    }

    #[test]
    fn a_row_gets_the_same_bits_alone_or_in_a_batch() {
        let a = data(40, 700, 7);
        let b = data(700, 37, 8);
        let mut batch = Array2::zeros((40, 37));
        gemm(a.view(), b.view(), batch.view_mut());
        for r in [0, 13, 39] {
            let mut one = Array2::zeros((1, 37));
            gemm(a.slice(s![r..r + 1, ..]), b.view(), one.view_mut());
            assert!(one
                .row(0)
                .iter()
                .zip(batch.row(r).iter())
                .all(|(x, y)| x.to_bits() == y.to_bits()));
        }
    }

    #[test]
    fn patches_read_in_place_give_the_bits_of_unrolled_patches() {
        // Two 9x11 images of `ch` channels, a (kh, kw) kernel with strides
        // (sy, sx) and row dilation dy, valid padding: every patch row is
        // `kh` runs of `kw * ch` values. 3x3x48 = 432 steps are two KC slices
        // of 216, whose boundary falls inside a run.
        for &(ch, kh, kw, sy, sx, dy, n) in &[
            (32, 3, 3, 1, 1, 1, 64),
            (48, 3, 3, 2, 1, 2, 20),
            (5, 2, 4, 1, 3, 1, 7),
        ] {
            let (h, w, samples) = (9usize, 11usize, 2usize);
            let x = data(samples, h * w * ch, 3);
            let x = x.as_slice().unwrap();
            let oh = (h - (kh - 1) * dy - 1) / sy + 1;
            let ow = (w - kw) / sx + 1;
            let k = kh * kw * ch;
            let rows = samples * oh * ow;
            let start = |r: usize| {
                let (s, pos) = (r / (oh * ow), r % (oh * ow));
                s * h * w * ch + ((pos / ow) * sy * w + (pos % ow) * sx) * ch
            };
            let mut cols = Array2::<f32>::zeros((rows, k));
            for r in 0..rows {
                for ky in 0..kh {
                    let at = start(r) + ky * dy * w * ch;
                    for j in 0..kw * ch {
                        cols[[r, ky * kw * ch + j]] = x[at + j];
                    }
                }
            }
            let kernel = data(k, n, 5);
            let mut buf = vec![0.0; packed_b_len(k, n)];
            let Some(packed) = pack_b(kernel.view(), &mut buf) else {
                return; // no AVX2 here: the layer unrolls its patches
            };
            let mut expect = Array2::from_elem((rows, n), f32::NAN);
            gemm_packed(cols.view(), kernel.view(), Some(&packed), expect.view_mut());
            let a = PatchRows {
                x,
                rows,
                start,
                runs: kh,
                run_len: kw * ch,
                run_stride: dy * w * ch,
            };
            let mut got = Array2::from_elem((rows, n), f32::NAN);
            gemm_patch_rows(&a, &packed, got.view_mut());
            assert!(
                got.iter()
                    .zip(expect.iter())
                    .all(|(g, e)| g.to_bits() == e.to_bits()),
                "{ch} channels, {kh}x{kw}"
            );
        }
    }
}
