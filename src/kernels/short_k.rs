//! Products with a short inner dimension: the first convolution of an image
//! network, whose patches hold `kh * kw * c_in` values (9 for a 3x3 kernel on
//! one channel).
//!
//! A packed GEMM spends most of its time there packing operands and storing
//! partial tiles: with `k = 9` each output tile gets nine multiply-adds
//! between a load and a store. These kernels read both operands in place
//! (the kernel matrix is a few kilobytes and stays in L1), keep a tile of the
//! output in registers, and write each output value once.
//!
//! - [`gemm_short_k`]: `C = A B`, each element an FMA chain over `k` in
//!   order, starting from zero: the arithmetic of the packed AVX2 GEMM for
//!   `k <= 256`, so a convolution gives the same bits on either path.
//! - [`weight_grad_short_k`]: `G = A^T D` and the bias gradient `1^T D` in
//!   one pass over `D`, summed over [`K_SPLITS`] fixed blocks of rows (each
//!   in row order), the blocks then added in block order: the same bits for
//!   any number of threads.

#[cfg(test)]
use rayon::prelude::*;

use super::K_SPLITS;

/// Patches up to this long take the kernels of this module.
pub(crate) const SHORT_K: usize = 16;

/// Rows of `D` per L1-sized chunk of [`weight_grad_short_k`] (each chunk
/// is read once per pair of taps).
const CHUNK_ROWS: usize = 64;

/// `C = A B` for a row-major `m x k` `a`, `k x n` `b` and `m x n` `c`
/// (`m = c.len() / n`), on the calling thread.
///
/// # Panics
/// When the lengths do not agree. The check holds in release builds: the
/// AVX2 kernel reads through raw pointers.
#[track_caller]
pub(crate) fn gemm_short_k(a: &[f32], b: &[f32], c: &mut [f32], k: usize, n: usize) {
    let m = c.len().checked_div(n).unwrap_or(0);
    assert!(
        n > 0 && c.len() == m * n && a.len() == m * k && b.len() == k * n,
        "horn::kernels::gemm_short_k: A has {} values, B {}, C {} (expected {m}x{k}, {k}x{n}, {m}x{n})",
        a.len(),
        b.len(),
        c.len()
    );
    #[cfg(target_arch = "x86_64")]
    {
        if super::avx2_available() {
            // SAFETY: the assert above gave every length the kernel reads or
            // writes, and `avx2_available` checked AVX2 and FMA.
            unsafe { avx2::gemm(a, b, c, m, k, n) };
            return;
        }
    }
    for (ar, cr) in a.chunks_exact(k.max(1)).zip(c.chunks_exact_mut(n)) {
        cr.fill(0.0);
        for (&x, br) in ar.iter().zip(b.chunks_exact(n)) {
            for (o, &bv) in cr.iter_mut().zip(br) {
                *o += x * bv;
            }
        }
    }
}

/// Values of `partials` that [`weight_grad_short_k`] needs.
pub(crate) fn weight_grad_partials(k: usize, n: usize) -> usize {
    K_SPLITS * (k + 1) * n
}

/// `grad = A^T D` (`k x n`) and, when given, `bias_grad = 1^T D` (`n`), for
/// a row-major `m x k` `a` and `m x n` `d`, in parallel over [`K_SPLITS`]
/// fixed blocks of rows summed in block order (see the module docs).
///
/// With a `gate` (`m x n`, a ReLU's output), `D` counts only where the gate
/// is positive: the ReLU's backward pass fused in, so that a first
/// convolution's output gradient is read once and never written.
///
/// # Panics
/// When the lengths do not agree or `partials` is shorter than
/// [`weight_grad_partials`].
///
/// The convolution runs the same blocked sum itself, over blocks of whole
/// samples whose output gradient it may make one sample at a time
/// ([`block_grad`], [`sum_partials`]); the unit tests check the kernels
/// through this whole-matrix form.
#[cfg(test)]
#[track_caller]
#[allow(clippy::too_many_arguments)]
pub(crate) fn weight_grad_short_k(
    a: &[f32],
    d: &[f32],
    gate: Option<&[f32]>,
    k: usize,
    n: usize,
    grad: &mut [f32],
    bias_grad: Option<&mut [f32]>,
    partials: &mut [f32],
) {
    let m = d.len().checked_div(n).unwrap_or(0);
    assert!(
        n > 0
            && d.len() == m * n
            && gate.is_none_or(|g| g.len() == m * n)
            && a.len() == m * k
            && grad.len() == k * n
            && bias_grad.as_ref().is_none_or(|g| g.len() == n)
            && partials.len() >= weight_grad_partials(k, n),
        "horn::kernels::weight_grad_short_k: A has {} values, D {}, the gradient {}, partials {} (expected {m}x{k}, {m}x{n}, {k}x{n}, at least {})",
        a.len(),
        d.len(),
        grad.len(),
        partials.len(),
        weight_grad_partials(k, n)
    );
    let taps = k + usize::from(bias_grad.is_some());
    let part_len = taps * n;
    let block = m.div_ceil(K_SPLITS).max(1);
    let partials = &mut partials[..K_SPLITS * part_len];
    let work = |i: usize, part: &mut [f32]| {
        part.fill(0.0);
        let (r0, r1) = ((i * block).min(m), ((i + 1) * block).min(m));
        let gate = gate.map(|g| &g[r0 * n..r1 * n]);
        block_grad(
            &a[r0 * k..r1 * k],
            &d[r0 * n..r1 * n],
            gate,
            k,
            n,
            taps,
            part,
        );
    };
    if m * n * taps >= 1 << 16 {
        partials
            .par_chunks_mut(part_len)
            .enumerate()
            .for_each(|(i, part)| work(i, part));
    } else {
        partials
            .chunks_mut(part_len)
            .enumerate()
            .for_each(|(i, part)| work(i, part));
    }
    sum_partials(partials, k, n, grad, bias_grad);
}

/// `grad` (`k x n`) and, when given, `bias_grad` (`n`): the sum, in order,
/// of the `(k + 1) x n` (or `k x n` without a bias) blocks of `partials`
/// that [`block_grad`] filled.
pub(crate) fn sum_partials(
    partials: &[f32],
    k: usize,
    n: usize,
    grad: &mut [f32],
    mut bias_grad: Option<&mut [f32]>,
) {
    let part_len = (k + usize::from(bias_grad.is_some())) * n;
    let mut parts = partials.chunks_exact(part_len.max(1));
    let first = parts.next().unwrap_or(&[]);
    let (g0, b0) = first.split_at((k * n).min(first.len()));
    grad.copy_from_slice(g0);
    if let Some(bg) = bias_grad.as_deref_mut() {
        bg.copy_from_slice(b0);
    }
    for part in parts {
        let (gp, bp) = part.split_at(k * n);
        grad.iter_mut().zip(gp).for_each(|(o, &v)| *o += v);
        if let Some(bg) = bias_grad.as_deref_mut() {
            bg.iter_mut().zip(bp).for_each(|(o, &v)| *o += v);
        }
    }
}

/// Adds one block's `A^T D` (and, with `taps = k + 1`, the column sums of
/// `D` as a last row) to `part` (`taps x n`), row by row; `D` counts only
/// where a given `gate` is positive. Each value of `part` is one FMA chain
/// over the rows in order, so calling this on consecutive row ranges gives
/// the bits of one call on all of them.
///
/// # Panics
/// When the lengths do not agree.
#[track_caller]
pub(crate) fn block_grad(
    a: &[f32],
    d: &[f32],
    gate: Option<&[f32]>,
    k: usize,
    n: usize,
    taps: usize,
    part: &mut [f32],
) {
    let rows = d.len().checked_div(n).unwrap_or(0);
    assert!(
        n > 0
            && d.len() == rows * n
            && a.len() == rows * k
            && gate.is_none_or(|g| g.len() == rows * n)
            && taps <= k + 1
            && part.len() == taps * n,
        "horn::kernels::block_grad: A has {} values, D {}, the partial {} (expected {rows}x{k}, {rows}x{n}, {taps}x{n})",
        a.len(),
        d.len(),
        part.len()
    );
    #[cfg(target_arch = "x86_64")]
    {
        if super::avx2_available() {
            // SAFETY: AVX2 and FMA checked; `a` is `rows x k`, `d` and the gate
            // `rows x n`, `part` `taps x n` (all asserted above).
            unsafe { avx2::block_grad(a, d, gate, k, n, taps, part) };
            return;
        }
    }
    for (r, (ar, dr)) in a.chunks_exact(k.max(1)).zip(d.chunks_exact(n)).enumerate() {
        for t in 0..taps {
            let x = if t < k { ar[t] } else { 1.0 };
            for (j, (o, &v)) in part[t * n..(t + 1) * n].iter_mut().zip(dr).enumerate() {
                *o += x * gated(v, gate, r * n + j);
            }
        }
    }
}

/// `d`, or 0 where the gate (when there is one) is not positive.
#[inline]
fn gated(d: f32, gate: Option<&[f32]>, i: usize) -> f32 {
    match gate {
        // `> 0` is false for a NaN gate, which blocks, as in the ReLU's own
        // backward pass.
        Some(g) if g[i] > 0.0 => d,
        Some(_) => 0.0,
        None => d,
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::CHUNK_ROWS;

    /// The constant tap of the bias gradient.
    static ONE: f32 = 1.0;

    /// See [`super::gemm_short_k`].
    ///
    /// # Safety
    /// AVX2 and FMA; `a` holds `m x k`, `b` `k x n` and `c` `m x n` values.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gemm(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize) {
        let (ap, bp, cp) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
        let mut j0 = 0;
        while j0 + 32 <= n {
            // SAFETY: columns j0..j0+32 lie inside `b` and `c` (this function's contract).
            unsafe { rows::<4>(ap, bp, cp, m, k, n, j0) };
            j0 += 32;
        }
        while j0 + 8 <= n {
            // SAFETY: as above, for columns j0..j0+8.
            unsafe { rows::<1>(ap, bp, cp, m, k, n, j0) };
            j0 += 8;
        }
        for j in j0..n {
            for r in 0..m {
                let mut acc = 0.0f32;
                for t in 0..k {
                    acc = a[r * k + t].mul_add(b[t * n + j], acc);
                }
                c[r * n + j] = acc;
            }
        }
    }

    /// Columns `j0..j0 + 8 * NB` of `C = A B`, two rows at a time (eight
    /// independent FMA chains for `NB = 4`, enough to hide the latency).
    ///
    /// # Safety
    /// AVX2 and FMA; `a`, `b` and `c` point to `m x k`, `k x n` and `m x n`
    /// values and `j0 + 8 * NB <= n`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn rows<const NB: usize>(
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        m: usize,
        k: usize,
        n: usize,
        j0: usize,
    ) {
        // SAFETY: in the whole body, every row index is below `m`, every tap below
        // `k`, every column below `j0 + 8 * NB <= n` (this function's contract).
        unsafe {
            let mut r = 0;
            while r + 2 <= m {
                let mut acc0 = [_mm256_setzero_ps(); NB];
                let mut acc1 = [_mm256_setzero_ps(); NB];
                for t in 0..k {
                    let x0 = _mm256_set1_ps(*a.add(r * k + t));
                    let x1 = _mm256_set1_ps(*a.add((r + 1) * k + t));
                    let br = b.add(t * n + j0);
                    for j in 0..NB {
                        let bv = _mm256_loadu_ps(br.add(8 * j));
                        acc0[j] = _mm256_fmadd_ps(x0, bv, acc0[j]);
                        acc1[j] = _mm256_fmadd_ps(x1, bv, acc1[j]);
                    }
                }
                for j in 0..NB {
                    _mm256_storeu_ps(c.add(r * n + j0 + 8 * j), acc0[j]);
                    _mm256_storeu_ps(c.add((r + 1) * n + j0 + 8 * j), acc1[j]);
                }
                r += 2;
            }
            if r < m {
                let mut acc = [_mm256_setzero_ps(); NB];
                for t in 0..k {
                    let x = _mm256_set1_ps(*a.add(r * k + t));
                    for (j, acc) in acc.iter_mut().enumerate() {
                        let bv = _mm256_loadu_ps(b.add(t * n + j0 + 8 * j));
                        *acc = _mm256_fmadd_ps(x, bv, *acc);
                    }
                }
                for (j, acc) in acc.iter().enumerate() {
                    _mm256_storeu_ps(c.add(r * n + j0 + 8 * j), *acc);
                }
            }
        }
    }

    /// See [`super::block_grad`].
    ///
    /// # Safety
    /// AVX2 and FMA; `a` holds `rows x k` and `d` (and the gate) `rows x n`
    /// values (the same `rows`), `part` `taps x n` with `taps <= k + 1`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn block_grad(
        a: &[f32],
        d: &[f32],
        gate: Option<&[f32]>,
        k: usize,
        n: usize,
        taps: usize,
        part: &mut [f32],
    ) {
        let rows = d.len() / n;
        let pp = part.as_mut_ptr();
        // Tap `t`: its value for row `r` is at `src + r * stride`; the bias
        // tap reads the constant 1 with stride 0.
        let tap = |t: usize| -> (*const f32, usize) {
            if t < k {
                (a.as_ptr().wrapping_add(t), k)
            } else {
                (&ONE as *const f32, 0)
            }
        };
        for r0 in (0..rows).step_by(CHUNK_ROWS) {
            let r1 = (r0 + CHUNK_ROWS).min(rows);
            let dp = d.as_ptr().wrapping_add(r0 * n);
            let gp = gate.map_or(std::ptr::null(), |g| g.as_ptr().wrapping_add(r0 * n));
            let mut j0 = 0;
            while j0 + 8 <= n {
                // 32 columns at a time (four registers), then 8.
                let wide = j0 + 32 <= n;
                for t in (0..taps).step_by(2) {
                    let (s0, st0) = tap(t);
                    let (s1, st1) = if t + 1 < taps { tap(t + 1) } else { (s0, st0) };
                    let args = (
                        s0.wrapping_add(r0 * st0),
                        st0,
                        s1.wrapping_add(r0 * st1),
                        st1,
                        dp.wrapping_add(j0),
                        gp.wrapping_add(j0),
                        n,
                        r1 - r0,
                        pp.wrapping_add(t * n + j0),
                        pp.wrapping_add((t + 1).min(taps - 1) * n + j0),
                        t + 1 < taps,
                    );
                    // SAFETY: rows r0..r1 of `a` and `d`, columns j0..j0+32
                    // (when `wide`, else j0..j0+8) of `d` and of part rows t
                    // and t+1 (or t twice) are in bounds.
                    unsafe {
                        match (wide, gate.is_some()) {
                            (true, false) => pair::<4, false>(args),
                            (true, true) => pair::<4, true>(args),
                            (false, false) => pair::<1, false>(args),
                            (false, true) => pair::<1, true>(args),
                        }
                    };
                }
                j0 += if wide { 32 } else { 8 };
            }
            for j in j0..n {
                for t in 0..taps {
                    let (s, st) = tap(t);
                    // SAFETY: part row t < taps, column j < n; row r < rows
                    // of tap t (inside `a`, or the constant).
                    unsafe {
                        let mut acc = *pp.add(t * n + j);
                        for r in r0..r1 {
                            let dv = super::gated(d[r * n + j], gate, r * n + j);
                            acc = (*s.add(r * st)).mul_add(dv, acc);
                        }
                        *pp.add(t * n + j) = acc;
                    }
                }
            }
        }
    }

    /// `(x0, st0, x1, st1, d, gate, n, rows, out0, out1, second)` of [`pair`].
    type PairArgs = (
        *const f32,
        usize,
        *const f32,
        usize,
        *const f32,
        *const f32,
        usize,
        usize,
        *mut f32,
        *mut f32,
        bool,
    );

    /// Adds `sum_r x0[r] * D[r, ..8 NB]` to `out0` and, when `second`, the
    /// same for `x1` to `out1`, over `rows` rows (in order); with `GATED`,
    /// `D` counts only where the gate is positive.
    ///
    /// # Safety
    /// AVX2 and FMA; `x0 + r * st0` and `x1 + r * st1` readable for every
    /// `r < rows`, `d + r * n + ..8 NB` readable (and the same of `gate`
    /// with `GATED`), `out0` and `out1` hold `8 * NB` values (the same
    /// location when `!second`).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn pair<const NB: usize, const GATED: bool>(args: PairArgs) {
        let (x0, st0, x1, st1, d, gate, n, rows, out0, out1, second) = args;
        // SAFETY: the whole body stays inside this function's contract.
        unsafe {
            let mut acc0 = [_mm256_setzero_ps(); NB];
            let mut acc1 = [_mm256_setzero_ps(); NB];
            for j in 0..NB {
                acc0[j] = _mm256_loadu_ps(out0.add(8 * j));
                acc1[j] = _mm256_loadu_ps(out1.add(8 * j));
            }
            for r in 0..rows {
                let v0 = _mm256_set1_ps(*x0.add(r * st0));
                let v1 = _mm256_set1_ps(*x1.add(r * st1));
                let dr = d.add(r * n);
                for j in 0..NB {
                    let mut dv = _mm256_loadu_ps(dr.add(8 * j));
                    if GATED {
                        // `g > 0` is false for a NaN gate, which blocks, as
                        // in the ReLU's own backward pass.
                        let g = _mm256_loadu_ps(gate.add(r * n + 8 * j));
                        dv = _mm256_and_ps(dv, _mm256_cmp_ps::<_CMP_GT_OQ>(g, _mm256_setzero_ps()));
                    }
                    acc0[j] = _mm256_fmadd_ps(v0, dv, acc0[j]);
                    acc1[j] = _mm256_fmadd_ps(v1, dv, acc1[j]);
                }
            }
            for j in 0..NB {
                _mm256_storeu_ps(out0.add(8 * j), acc0[j]);
                if second {
                    _mm256_storeu_ps(out1.add(8 * j), acc1[j]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 37 + seed * 11) % 23) as f32 / 7.0 - 1.5)
            .collect()
    }

    #[test]
    fn the_product_is_an_fma_chain_over_k_for_every_shape() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (5, 9, 32),
            (7, 9, 40),
            (3, 16, 70),
            (2, 3, 8),
            (9, 4, 5),
        ] {
            let (a, b) = (data(m * k, 1), data(k * n, 2));
            let mut c = vec![f32::NAN; m * n];
            gemm_short_k(&a, &b, &mut c, k, n);
            for r in 0..m {
                for j in 0..n {
                    let mut want = 0.0f32;
                    for t in 0..k {
                        want = if crate::kernels::avx2_available() {
                            a[r * k + t].mul_add(b[t * n + j], want)
                        } else {
                            want + a[r * k + t] * b[t * n + j]
                        };
                    }
                    assert_eq!(
                        c[r * n + j].to_bits(),
                        want.to_bits(),
                        "{m}x{k}x{n} at ({r},{j})"
                    );
                }
            }
        }
    }

    #[test]
    fn the_weight_gradient_matches_a_double_precision_sum() {
        for &(m, k, n, bias) in &[
            (1000, 9, 32, true),
            (77, 5, 41, false),
            (3, 2, 8, true),
            (600, 1, 3, true),
        ] {
            let (a, d) = (data(m * k, 3), data(m * n, 4));
            let mut g = vec![f32::NAN; k * n];
            let mut bg = vec![f32::NAN; n];
            let mut partials = vec![f32::NAN; weight_grad_partials(k, n)];
            weight_grad_short_k(
                &a,
                &d,
                None,
                k,
                n,
                &mut g,
                bias.then_some(&mut bg[..]),
                &mut partials,
            );
            for j in 0..n {
                for t in 0..k {
                    let want: f64 = (0..m)
                        .map(|r| a[r * k + t] as f64 * d[r * n + j] as f64)
                        .sum();
                    assert!(
                        (g[t * n + j] as f64 - want).abs() < 1e-4 * (1.0 + want.abs()),
                        "{m}x{k}x{n} tap {t} col {j}"
                    );
                }
                if bias {
                    let want: f64 = (0..m).map(|r| d[r * n + j] as f64).sum();
                    assert!((bg[j] as f64 - want).abs() < 1e-4 * (1.0 + want.abs()));
                } else {
                    assert!(bg[j].is_nan(), "no bias gradient was asked for");
                }
            }
        }
    }

    #[test]
    fn a_gate_gives_the_bits_of_the_relu_backward_pass_then_the_gradient() {
        let (m, k, n) = (700, 9, 44);
        let (a, d) = (data(m * k, 7), data(m * n, 8));
        let mut gate = data(m * n, 9);
        gate[5] = f32::NAN;
        let masked: Vec<f32> = d
            .iter()
            .zip(&gate)
            .map(|(&v, &g)| if g > 0.0 { v } else { 0.0 })
            .collect();
        let run = |d: &[f32], gate: Option<&[f32]>| {
            let mut g = vec![0.0; k * n];
            let mut bg = vec![0.0; n];
            let mut partials = vec![0.0; weight_grad_partials(k, n)];
            weight_grad_short_k(&a, d, gate, k, n, &mut g, Some(&mut bg), &mut partials);
            (g, bg)
        };
        let (want, got) = (run(&masked, None), run(&d, Some(&gate)));
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&want.0), bits(&got.0));
        assert_eq!(bits(&want.1), bits(&got.1));
        assert_ne!(run(&d, None).0, got.0, "the gate must change something");
    }

    #[test]
    fn the_weight_gradient_has_the_same_bits_on_any_pool() {
        let (m, k, n) = (5000, 9, 32);
        let (a, d) = (data(m * k, 5), data(m * n, 6));
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut g = vec![0.0; k * n];
                let mut bg = vec![0.0; n];
                let mut partials = vec![0.0; weight_grad_partials(k, n)];
                weight_grad_short_k(&a, &d, None, k, n, &mut g, Some(&mut bg), &mut partials);
                (g, bg)
            })
        };
        let one = run(1);
        assert_eq!(one, run(3));
        assert!(one.0.iter().any(|&v| v != 0.0));
    }
}
