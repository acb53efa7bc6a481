//! Matrix products for the training step, parallel and deterministic.
//!
//! Every product is split over its *output* (row blocks or column blocks of `C`)
//! into a number of blocks that depends only on the shapes, never on the number
//! of threads, and each block runs a single-threaded GEMM. No output element is
//! ever summed across blocks, so each one is computed by the same sequence of
//! floating-point operations however rayon schedules the blocks: a seeded `fit`
//! gives bit-identical weights with 1 thread or 16.

use ndarray::linalg::general_mat_mul;
use ndarray::{s, ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;

/// Below this many multiply-adds a product runs on the calling thread.
const PAR_MIN_FLOPS: usize = 1 << 18;
/// Preferred block edge (a multiple of the micro-kernel sizes).
const BLOCK: usize = 64;

/// `C = alpha * A B + beta * C`, split over `C` in fixed blocks run in parallel.
pub fn gemm(
    alpha: f32,
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    beta: f32,
    mut c: ArrayViewMut2<f32>,
) {
    let (m, k) = a.dim();
    let n = b.ncols();
    debug_assert_eq!(b.nrows(), k);
    debug_assert_eq!(c.dim(), (m, n));
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.mapv_inplace(|v| v * beta);
        return;
    }
    if m * n * k < PAR_MIN_FLOPS {
        general_mat_mul(alpha, &a, &b, beta, &mut c);
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
                let ab = a.slice(s![r0..r0 + cb.nrows(), ..]);
                general_mat_mul(alpha, &ab, &b, beta, &mut cb);
            });
    } else {
        let cols = block_len(n);
        c.axis_chunks_iter_mut(Axis(1), cols)
            .into_par_iter()
            .enumerate()
            .for_each(|(i, mut cb)| {
                let c0 = i * cols;
                let bb = b.slice(s![.., c0..c0 + cb.ncols()]);
                general_mat_mul(alpha, &a, &bb, beta, &mut cb);
            });
    }
}

fn block_len(len: usize) -> usize {
    let blocks = len.div_ceil(BLOCK).min(16);
    len.div_ceil(blocks).next_multiple_of(16)
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
