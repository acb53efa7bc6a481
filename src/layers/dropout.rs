//! `Dropout`: inverted dropout, active only in training.

use ndarray::{ArrayView2, ArrayViewMut2};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use super::{expect_shape, BackwardContext, Buffers, ForwardContext, Layer};
use crate::error::{Error, Result};
use crate::kernels::{values, values_mut};
use crate::saving::LayerConfig;
use crate::shape::Shape;

/// Values per random stream of a dropout mask: the mask is drawn in blocks
/// of this many values, each from its own stream seeded from the step's, so
/// blocks fill in parallel and the mask is the same for any thread count.
const MASK_BLOCK: usize = 4096;

/// One block of a dropout pass: its index, mask, output and input values.
type MaskBlock<'a> = (usize, (&'a mut [f32], (&'a mut [f32], &'a [f32])));

/// Inverted dropout (Keras `Dropout`): in training each value is kept with
/// probability `1 - rate` and scaled by `1 / (1 - rate)`, else set to 0; at
/// inference the layer is the identity. A value is kept when a uniform 32-bit
/// draw is below `(1 - rate) * 2^32` (Keras: `U[0, 1) < 1 - rate`), drawn from
/// per-block streams seeded from the step's seeded stream.
///
/// ```
/// use horn::prelude::*;
/// let model = Sequential::new().input(8).dense(16, Relu).dropout(0.25).dense(1, Sigmoid);
/// # let _ = model;
/// ```
#[derive(Debug, Clone)]
pub struct Dropout {
    pub(crate) rate: f32,
}

impl Dropout {
    /// Dropout with the given rate in `[0, 1]`.
    pub fn new(rate: f32) -> Self {
        Dropout { rate }
    }

    /// The fraction of values dropped in training.
    pub fn rate(&self) -> f32 {
        self.rate
    }
}

impl Layer for Dropout {
    fn propagates_mask(&self) -> bool {
        true
    }

    fn class_name(&self) -> &str {
        "Dropout"
    }

    fn build(&mut self, input: &Shape, _rng: &mut StdRng) -> Result<Shape> {
        if !(0.0..=1.0).contains(&self.rate) {
            return Err(Error::arg("rate", "a number in [0, 1]", self.rate));
        }
        Ok(input.clone())
    }

    fn buffers(&self, input: &Shape, training: bool) -> Buffers {
        // One mask value per output, used only in training.
        Buffers {
            aux: if training { input.size() } else { 0 },
            ..Buffers::default()
        }
    }

    fn forward(
        &self,
        x: ArrayView2<f32>,
        mut y: ArrayViewMut2<f32>,
        mut aux: ArrayViewMut2<f32>,
        ctx: &mut ForwardContext<'_>,
    ) {
        expect_shape("Dropout", "y", y.shape(), x.shape());
        if ctx.training {
            expect_shape("Dropout", "aux", aux.shape(), x.shape());
        }
        if !ctx.training || self.rate == 0.0 {
            y.assign(&x);
            if ctx.training {
                aux.fill(1.0);
            }
            return;
        }
        let keep = 1.0 - self.rate;
        let scale = if keep > 0.0 { 1.0 / keep } else { 0.0 };
        // Keep a value when a uniform 32-bit draw is below keep * 2^32: every
        // draw when that is 2^32 (keep rounded to 1), which `below` cannot hold.
        let threshold = (keep as f64 * 4_294_967_296.0) as u64;
        let below = threshold.min(u64::from(u32::MAX)) as u32;
        let all = if threshold > u64::from(u32::MAX) {
            u32::MAX
        } else {
            0
        };
        let scale_bits = scale.to_bits();
        // One stream per fixed block of values, seeded from the step's stream:
        // the blocks fill in parallel, and the mask depends only on the seed.
        let base: u64 = ctx.rng.random();
        let fill = |(b, (mask, (ys, xs))): MaskBlock<'_>| {
            let mut rng =
                StdRng::seed_from_u64(base ^ (b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            // Draws in bulk, 64 at a time (one call instead of 64).
            let mut draws = [0u32; 64];
            for ((mask, ys), xs) in mask
                .chunks_mut(64)
                .zip(ys.chunks_mut(64))
                .zip(xs.chunks(64))
            {
                rng.fill(&mut draws[..]);
                // The mask value's bits are `scale`'s and-ed with all ones or
                // zeros: no branch on a random draw (the branch was taken half
                // the time at rate 0.5, and its mispredictions cost about 3 ns
                // a value), and the loop compiles to vector compares.
                let n = mask.len();
                let (ys, xs, draws) = (&mut ys[..n], &xs[..n], &draws[..n]);
                for j in 0..n {
                    let kept = 0u32.wrapping_sub(u32::from(draws[j] < below)) | all;
                    let m = f32::from_bits(scale_bits & kept);
                    mask[j] = m;
                    ys[j] = xs[j] * m;
                }
            }
        };
        let mask = values_mut(aux.view_mut());
        let ys = values_mut(y.view_mut());
        let xs = values(x);
        if mask.len() >= 1 << 14 {
            mask.par_chunks_mut(MASK_BLOCK)
                .zip(ys.par_chunks_mut(MASK_BLOCK).zip(xs.par_chunks(MASK_BLOCK)))
                .enumerate()
                .for_each(fill);
        } else {
            mask.chunks_mut(MASK_BLOCK)
                .zip(ys.chunks_mut(MASK_BLOCK).zip(xs.chunks(MASK_BLOCK)))
                .enumerate()
                .for_each(fill);
        }
    }

    fn backward(
        &self,
        _x: ArrayView2<f32>,
        _y: ArrayView2<f32>,
        aux: ArrayView2<f32>,
        dy: ArrayViewMut2<f32>,
        dx: Option<ArrayViewMut2<f32>>,
        _grads: &mut [Vec<f32>],
        _ctx: &mut BackwardContext<'_>,
    ) {
        if let Some(dx) = dx {
            expect_shape("Dropout", "dy", dy.shape(), dx.shape());
            expect_shape("Dropout", "aux", aux.shape(), dx.shape());
            for ((o, &g), &k) in values_mut(dx)
                .iter_mut()
                .zip(values(dy.view()))
                .zip(values(aux))
            {
                *o = g * k;
            }
        }
    }

    fn config(&self) -> Option<LayerConfig> {
        Some(LayerConfig::Dropout { rate: self.rate })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mask as first written: one 64-bit compare per draw, from the same
    /// per-block streams.
    fn reference_mask(rate: f32, base: u64, len: usize) -> Vec<f32> {
        let keep = 1.0 - rate;
        let scale = if keep > 0.0 { 1.0 / keep } else { 0.0 };
        let threshold = (keep as f64 * 4_294_967_296.0) as u64;
        let mut out = Vec::with_capacity(len);
        for b in 0..len.div_ceil(MASK_BLOCK) {
            let mut rng =
                StdRng::seed_from_u64(base ^ (b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let block = MASK_BLOCK.min(len - b * MASK_BLOCK);
            let mut draws = [0u32; 64];
            for chunk in 0..block.div_ceil(64) {
                rng.fill(&mut draws[..]);
                for &r in &draws[..64.min(block - chunk * 64)] {
                    out.push(if (r as u64) < threshold { scale } else { 0.0 });
                }
            }
        }
        out
    }

    #[test]
    fn the_branch_free_mask_keeps_the_values_of_the_compare() {
        // Parallel and serial block paths, a partial last block and chunk;
        // rate 1e-9 rounds keep to 1 (every draw kept, threshold 2^32).
        for &(rows, cols) in &[(3, 50), (7, 5003)] {
            for rate in [0.5f32, 0.1, 0.999, 1e-9, 1.0] {
                let x = ndarray::Array2::from_shape_fn((rows, cols), |(i, j)| {
                    (i * 31 + j) as f32 * 0.01 - 1.0
                });
                let mut y = ndarray::Array2::zeros((rows, cols));
                let mut aux = ndarray::Array2::zeros((rows, cols));
                let mut rng = StdRng::seed_from_u64(11);
                let base: u64 = StdRng::seed_from_u64(11).random();
                let layer = Dropout::new(rate);
                let mut ctx = ForwardContext::new(true, &mut rng);
                layer.forward(x.view(), y.view_mut(), aux.view_mut(), &mut ctx);
                let expect = reference_mask(rate, base, rows * cols);
                let got = aux.iter().copied().collect::<Vec<f32>>();
                assert!(
                    got.iter()
                        .zip(&expect)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "rate {rate}, {rows}x{cols}"
                );
                assert!(y
                    .iter()
                    .zip(x.iter().zip(&expect))
                    .all(|(o, (i, m))| o.to_bits() == (i * m).to_bits()));
            }
        }
    }
}
