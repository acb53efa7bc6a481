//! `Conv1D` and `Conv2D`: convolutions as matrix products over patches.
//!
//! Data flow of one batch (channels last, as Keras). The kernel in Keras'
//! `(kh, kw, in, out)` layout, row-major, is already the
//! `(kh * kw * c_in) x filters` right-hand matrix, and the product's output
//! is already NHWC.
//! - forward, in parallel over tiles of samples (a tile's patches fit in L2):
//!   each sample's receptive fields are unrolled into `positions x (kh * kw *
//!   c_in)` patches ("im2col"), multiplied by the kernel while they are in
//!   cache (packed once per batch; patches of at most 16 values, a first
//!   convolution, take a direct kernel with no packing), then the bias and
//!   activation are applied to the tile's output in the same task. Long
//!   patches whose windows all lie inside the input are not unrolled: the
//!   product reads each patch row in place, as `kh` runs of `kw * c_in`
//!   contiguous input values (`kernels::gemm_patch_rows`, same bits). A
//!   sample-local layer after the convolution (pooling) runs on each tile
//!   right after it, while the tile's output is in cache
//!   (`Layer::forward_then`).
//! - backward: `dK = patches^T dz` and `db = sum dz` are sums over the whole
//!   batch. Short patches (kept from forward) take one direct pass in fixed
//!   blocks of samples added in block order. Long ones go tile by tile in a
//!   fixed number of lanes: the activation's gradient, the lane's partial
//!   bias and kernel gradients (the tile's patches unrolled again), and the
//!   input gradient `d patches = dz K^T` into the lane's buffer, added back
//!   into the input gradient ("col2im") while it is in cache; lane partials
//!   are added in lane order. When a sample-local layer (pooling) follows,
//!   each block's `dz` is made from that layer's backward in the lane's own
//!   buffer when the block needs it (`Layer::backward_after`), with the
//!   same bits as from a whole-batch `dy`.
//!
//! In training the patches live in the layer's `aux` rows (the weight
//! gradient needs them); in inference, and for the input gradient, each of
//! a fixed number of lanes has its own tile-sized buffer in the shared
//! scratch space, so `predict` needs little memory. Every sample's values
//! come from its own arithmetic, whatever the lane or thread, so results do
//! not depend on the number of threads. A `1 x 1` convolution with stride 1
//! uses its input directly.

use ndarray::{ArrayView2, ArrayViewMut2};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{
    add_bias_activate, backward_in_turn, bias_activate_block, expect_grads, expect_shape,
    BackwardContext, Buffers, ForwardContext, Layer, NextLayer, NextLayerGrad, ParamView,
};
use crate::activations::{Activation, IntoActivation};
use crate::error::{Error, Result};
use crate::initializers::Initializer;
use crate::kernels::{
    block_grad, gemm, gemm_packed, gemm_patch_rows, gemm_serial, gemm_short_k, gemm_tall_k, matrix,
    matrix_mut, pack_b, packed_b_len, sum_partials, values, values_mut, weight_grad_partials,
    PackedB, PatchRows, K_SPLITS, SHORT_K,
};
use crate::regularizers::Regularizer;
use crate::saving::LayerConfig;
use crate::shape::Shape;

/// How a convolution or pooling window treats the borders (Keras `padding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Padding {
    /// No padding: the output shrinks to the positions where the window fits
    /// (Keras' default).
    #[default]
    Valid,
    /// Zero padding so that the output has `ceil(input / stride)` positions;
    /// the extra row or column goes at the end, as in TensorFlow.
    Same,
    /// (`Conv1D` only) padding on the left only, so that an output step never
    /// sees later input steps.
    Causal,
}

impl std::str::FromStr for Padding {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match crate::name_key(s).as_str() {
            "valid" => Ok(Padding::Valid),
            "same" => Ok(Padding::Same),
            "causal" => Ok(Padding::Causal),
            _ => Err(Error::arg(
                "padding",
                "\"valid\", \"same\" or \"causal\"",
                s,
            )),
        }
    }
}

/// One spatial axis of a window: input length, window, stride, dilation and
/// padding give the output length and the padding before the first cell.
impl Padding {
    /// Keras' name of the mode (`valid`, `same`, `causal`).
    pub(crate) fn keras_name(self) -> &'static str {
        match self {
            Padding::Valid => "valid",
            Padding::Same => "same",
            Padding::Causal => "causal",
        }
    }
}

/// The error of a window (`what` = `kernel_size` or `pool_size`, of size
/// `dims`) that [`Axis1::new`] refused on `input`: with `valid` padding it
/// is larger than the input (`fits` says what the input must hold); with
/// any padding, its positions would not fit in 64 bits.
pub(crate) fn window_error(
    class: &str,
    what: &str,
    dims: &[usize],
    padding: Padding,
    fits: &str,
    input: &Shape,
) -> Error {
    let expected = match padding {
        Padding::Valid => format!("at least {fits} on every spatial axis"),
        Padding::Same | Padding::Causal => {
            "a window and strides whose positions fit in 64 bits".to_string()
        }
    };
    Error::shape(
        format!(
            "{class} input ({what} {dims:?}, padding {})",
            padding.keras_name()
        ),
        expected,
        input.to_string(),
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Axis1 {
    pub input: usize,
    pub window: usize,
    pub stride: usize,
    pub dilation: usize,
    pub pad_before: usize,
    pub output: usize,
}

impl Axis1 {
    /// The geometry of one axis, or `None` when the window does not fit a
    /// `valid` input (the caller names the layer and the shapes).
    pub(crate) fn new(
        input: usize,
        window: usize,
        stride: usize,
        dilation: usize,
        padding: Padding,
    ) -> Option<Axis1> {
        // Checked: a window from a model file may be absurd; it must give an
        // error, not an overflow.
        let span = (window - 1).checked_mul(dilation)?.checked_add(1)?;
        let (output, pad_before) = match padding {
            Padding::Valid => {
                if input < span {
                    return None;
                }
                ((input - span) / stride + 1, 0)
            }
            Padding::Same => {
                let out = input.div_ceil(stride);
                let total = ((out - 1) * stride)
                    .checked_add(span)?
                    .saturating_sub(input);
                (out, total / 2)
            }
            Padding::Causal => ((input - 1) / stride + 1, span - 1),
        };
        // Every window cell of every output stays addressable.
        (output - 1)
            .checked_mul(stride)?
            .checked_add(span)?
            .checked_add(input)?;
        Some(Axis1 {
            input,
            window,
            stride,
            dilation,
            pad_before,
            output,
        })
    }

    /// The input indices `[start, end)` that output `o`'s (undilated) window
    /// covers inside the input: padding cells are left out.
    #[inline]
    pub(crate) fn window_range(&self, o: usize) -> (usize, usize) {
        let first = o * self.stride;
        let start = first.saturating_sub(self.pad_before).min(self.input);
        let end = (first + self.window)
            .saturating_sub(self.pad_before)
            .min(self.input);
        (start, end.max(start))
    }

    /// The input index of output `o`'s window cell `k`, if inside the input.
    #[inline]
    pub(crate) fn source(&self, o: usize, k: usize) -> Option<usize> {
        let i = (o * self.stride + k * self.dilation).checked_sub(self.pad_before)?;
        (i < self.input).then_some(i)
    }
}

/// The geometry of a convolution or pooling over `(h, w, c)` samples (1-D
/// layers use `h = 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Geometry {
    pub rows: Axis1,
    pub cols: Axis1,
    pub channels: usize,
}

impl Geometry {
    pub(crate) fn positions(&self) -> usize {
        self.rows.output * self.cols.output
    }
    pub(crate) fn in_size(&self) -> usize {
        self.rows.input * self.cols.input * self.channels
    }
}

/// Splits an input shape into `(h, w, c)` for a 1-D (`(steps, c)`) or 2-D
/// (`(h, w, c)`) spatial layer.
pub(crate) fn spatial_dims(layer: &str, input: &Shape, rank: usize) -> Result<[usize; 3]> {
    let what = if rank == 1 {
        "(steps, channels)"
    } else {
        "(height, width, channels)"
    };
    input.expect_rank(layer, rank + 1, what)?;
    let d = input.dims();
    Ok(if rank == 1 {
        [1, d[0], d[1]]
    } else {
        [d[0], d[1], d[2]]
    })
}

/// Checks a window setting: every entry positive.
pub(crate) fn check_window(name: &str, v: &[usize]) -> Result<()> {
    if v.contains(&0) {
        return Err(Error::arg(name, "positive integers", format!("{v:?}")));
    }
    Ok(())
}

/// Values per sample above which the per-sample passes run in parallel.
const PAR_MIN_VALUES: usize = 1 << 14;
/// Patch values per tile of the per-sample passes (128 KiB: a quarter of
/// this CPU's L2, leaving room for the tile's outputs and the kernel).
const TILE_PATCH_VALUES: usize = 1 << 15;
/// Patch buffers of the passes that do not keep their patches (inference and
/// the input gradient): a fixed count, each lane working through a
/// contiguous run of tiles. Results never depend on it (each sample's
/// arithmetic is its own), only the memory does.
const LANES: usize = 8;

/// Row blocks of a parallel column sum: a fixed count, so the order of the
/// additions depends only on the shape.
const SUM_BLOCKS: usize = 16;

/// `out[j] = sum_i m[i][j]` over the rows of a `rows x f` matrix, in
/// [`SUM_BLOCKS`] row blocks summed in parallel (into `partials`, when it is
/// large enough) and then added in block order: the same bits for any number
/// of threads.
fn column_sums(m: &[f32], f: usize, out: &mut [f32], partials: &mut [f32]) {
    let rows = m.len() / f.max(1);
    let sum = |block: &[f32], acc: &mut [f32]| {
        acc.fill(0.0);
        for row in block.chunks_exact(f) {
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += v;
            }
        }
    };
    if m.len() < PAR_MIN_VALUES || partials.len() < SUM_BLOCKS * f || rows < SUM_BLOCKS {
        sum(m, out);
        return;
    }
    let block = rows.div_ceil(SUM_BLOCKS) * f;
    let partials = &mut partials[..SUM_BLOCKS * f];
    partials
        .par_chunks_mut(f)
        .zip(m.par_chunks(block))
        .for_each(|(acc, rows)| sum(rows, acc));
    // Blocks beyond the data (when rows divide unevenly) are zero.
    let used = m.len().div_ceil(block);
    partials[used * f..].fill(0.0);
    out.fill(0.0);
    for acc in partials.chunks_exact(f) {
        for (o, &v) in out.iter_mut().zip(acc) {
            *o += v;
        }
    }
}

/// The shared core of `Conv1D` and `Conv2D`.
#[derive(Debug, Clone)]
pub(crate) struct Conv {
    pub(crate) rank: usize,
    pub(crate) filters: usize,
    /// `(kh, kw)`; 1-D layers have `kh = 1`.
    pub(crate) kernel_size: [usize; 2],
    pub(crate) strides: [usize; 2],
    pub(crate) padding: Padding,
    pub(crate) dilation_rate: [usize; 2],
    pub(crate) activation: Activation,
    pub(crate) use_bias: bool,
    pub(crate) kernel_initializer: Initializer,
    pub(crate) bias_initializer: Initializer,
    pub(crate) kernel_regularizer: Option<Regularizer>,
    pub(crate) bias_regularizer: Option<Regularizer>,
    /// `(kh * kw * c_in) x filters`, row-major (Keras' kernel layout).
    pub(crate) kernel: Vec<f32>,
    pub(crate) bias: Vec<f32>,
    pub(crate) geo: Geometry,
    keep_z: bool,
    /// An unknown activation name given to the constructor, reported by `build`.
    bad_activation: Option<String>,
}

impl Conv {
    fn new(rank: usize, filters: usize, kernel_size: [usize; 2], activation: Activation) -> Self {
        Conv {
            rank,
            filters,
            kernel_size,
            strides: [1, 1],
            padding: Padding::Valid,
            dilation_rate: [1, 1],
            activation,
            use_bias: true,
            kernel_initializer: Initializer::GlorotUniform,
            bias_initializer: Initializer::Zeros,
            kernel_regularizer: None,
            bias_regularizer: None,
            kernel: Vec::new(),
            bias: Vec::new(),
            geo: Geometry::default(),
            keep_z: false,
            bad_activation: None,
        }
    }

    fn class(&self) -> &'static str {
        if self.rank == 1 {
            "Conv1D"
        } else {
            "Conv2D"
        }
    }

    /// Keras' kernel shape: `(k, in, filters)` or `(kh, kw, in, filters)`.
    pub(crate) fn kernel_shape(&self, in_channels: usize) -> Vec<usize> {
        let [kh, kw] = self.kernel_size;
        if self.rank == 1 {
            vec![kw, in_channels, self.filters]
        } else {
            vec![kh, kw, in_channels, self.filters]
        }
    }

    /// Patch values per output position.
    fn patch_len(&self) -> usize {
        self.patch_len_at(&self.geo)
    }

    /// [`Conv::patch_len`] for the geometry `g`.
    fn patch_len_at(&self, g: &Geometry) -> usize {
        self.kernel_size[0] * self.kernel_size[1] * g.channels
    }

    /// Whether the patches are the input itself (1x1, stride 1, no padding).
    fn identity_patches(&self) -> bool {
        self.kernel_size == [1, 1] && self.strides == [1, 1]
    }

    fn needs_z(&self) -> bool {
        self.keep_z || self.activation.backward_needs_input()
    }

    /// Checks the options and computes the geometry for `input`.
    pub(crate) fn geometry(&self, input: &Shape) -> Result<Geometry> {
        let class = self.class();
        if let Some(e) = &self.bad_activation {
            return Err(Error::arg("activation", "a Keras activation", e));
        }
        if self.filters == 0 {
            return Err(Error::arg("filters", "a positive integer", 0));
        }
        check_window("kernel_size", &self.kernel_size)?;
        check_window("strides", &self.strides)?;
        check_window("dilation_rate", &self.dilation_rate)?;
        if (self.strides[0] > 1 || self.strides[1] > 1)
            && (self.dilation_rate[0] > 1 || self.dilation_rate[1] > 1)
        {
            return Err(Error::arg(
                "strides",
                "1 when dilation_rate > 1 (Keras refuses both at once)",
                format!("{:?}", self.strides),
            ));
        }
        if self.padding == Padding::Causal && self.rank != 1 {
            return Err(Error::arg(
                "padding",
                "\"valid\" or \"same\" for Conv2D",
                "causal",
            ));
        }
        let [h, w, c] = spatial_dims(class, input, self.rank)?;
        let rows = Axis1::new(
            h,
            self.kernel_size[0],
            self.strides[0],
            self.dilation_rate[0],
            {
                if self.padding == Padding::Causal {
                    Padding::Valid
                } else {
                    self.padding
                }
            },
        );
        let cols = Axis1::new(
            w,
            self.kernel_size[1],
            self.strides[1],
            self.dilation_rate[1],
            self.padding,
        );
        match (rows, cols) {
            (Some(rows), Some(cols)) => Ok(Geometry {
                rows,
                cols,
                channels: c,
            }),
            _ => Err(window_error(
                class,
                "kernel_size",
                &self.window_dims(),
                // A causal Conv1D's one spatial axis is the causal one.
                self.padding,
                "the dilated kernel's size",
                input,
            )),
        }
    }

    fn window_dims(&self) -> Vec<usize> {
        if self.rank == 1 {
            vec![self.kernel_size[1]]
        } else {
            self.kernel_size.to_vec()
        }
    }

    fn output_shape(&self) -> Shape {
        let g = &self.geo;
        if self.rank == 1 {
            Shape::new(&[g.cols.output, self.filters])
        } else {
            Shape::new(&[g.rows.output, g.cols.output, self.filters])
        }
    }

    fn build(&mut self, input: &Shape, rng: &mut StdRng) -> Result<Shape> {
        self.activation.validate()?;
        for r in [self.kernel_regularizer, self.bias_regularizer]
            .into_iter()
            .flatten()
        {
            r.validate()?;
        }
        self.geo = self.geometry(input)?;
        let shape = self.kernel_shape(self.geo.channels);
        self.kernel = self
            .kernel_initializer
            .sample(&shape, rng)?
            .into_iter()
            .collect();
        self.bias = if self.use_bias {
            self.bias_initializer
                .sample(&[self.filters], rng)?
                .into_iter()
                .collect()
        } else {
            Vec::new()
        };
        Ok(self.output_shape())
    }

    /// Unrolls one sample's receptive fields into `positions x patch_len`.
    /// Without dilation a window row is `kw * c` contiguous input values, so
    /// a row fully inside the input is one copy.
    fn im2col(&self, x: &[f32], cols: &mut [f32]) {
        let g = &self.geo;
        let c = g.channels;
        let [kh, kw] = self.kernel_size;
        let run = kw * c;
        let contiguous = g.cols.dilation == 1;
        let mut k = 0;
        for oy in 0..g.rows.output {
            for ox in 0..g.cols.output {
                let first = (ox * g.cols.stride).checked_sub(g.cols.pad_before);
                let inside = contiguous && first.is_some_and(|f| f + kw <= g.cols.input);
                for ky in 0..kh {
                    let iy = g.rows.source(oy, ky);
                    match (iy, inside) {
                        (Some(iy), true) => {
                            let s = (iy * g.cols.input + first.unwrap_or(0)) * c;
                            copy_run(&mut cols[k..k + run], &x[s..s + run]);
                        }
                        (None, _) => cols[k..k + run].fill(0.0),
                        (Some(iy), false) => {
                            for kx in 0..kw {
                                let dst = &mut cols[k + kx * c..k + (kx + 1) * c];
                                match g.cols.source(ox, kx) {
                                    Some(ix) => {
                                        let s = (iy * g.cols.input + ix) * c;
                                        copy_run(dst, &x[s..s + c]);
                                    }
                                    None => dst.fill(0.0),
                                }
                            }
                        }
                    }
                    k += run;
                }
            }
        }
    }

    /// Adds one sample's patch gradients back into its input gradient
    /// (`dx` is overwritten), in a fixed order.
    fn col2im(&self, dcols: &[f32], dx: &mut [f32]) {
        let g = &self.geo;
        let c = g.channels;
        let [kh, kw] = self.kernel_size;
        dx.fill(0.0);
        let mut k = 0;
        for oy in 0..g.rows.output {
            for ox in 0..g.cols.output {
                for ky in 0..kh {
                    let iy = g.rows.source(oy, ky);
                    for kx in 0..kw {
                        if let (Some(iy), Some(ix)) = (iy, g.cols.source(ox, kx)) {
                            let s = (iy * g.cols.input + ix) * c;
                            for (d, &v) in dx[s..s + c].iter_mut().zip(&dcols[k..k + c]) {
                                *d += v;
                            }
                        }
                        k += c;
                    }
                }
            }
        }
    }

    /// Samples per tile of the per-sample passes: a tile's patches (at
    /// least one sample's) fit in the L2 cache next to its outputs, so the
    /// product reads them while they are hot.
    fn tile_samples(&self) -> usize {
        self.tile_samples_at(&self.geo)
    }

    /// [`Conv::tile_samples`] for the geometry `g`.
    fn tile_samples_at(&self, g: &Geometry) -> usize {
        (TILE_PATCH_VALUES / (g.positions() * self.patch_len_at(g)).max(1)).max(1)
    }

    /// Scratch values of one lane: a tile's patches, a tile's patch
    /// gradients, two kernel-sized buffers (the lane's product and its
    /// partial kernel gradient), its partial bias gradient and a tile's
    /// output gradient.
    fn lane_len(&self) -> usize {
        self.lane_len_at(&self.geo)
    }

    /// [`Conv::lane_len`] for the geometry `g`.
    fn lane_len_at(&self, g: &Geometry) -> usize {
        let (plen, f) = (self.patch_len_at(g), self.filters);
        let tile = self.tile_samples_at(g);
        2 * tile * g.positions() * plen + 2 * plen * f + f + tile * g.positions() * f
    }

    /// Scratch values of the per-lane buffers (forward without kept
    /// patches, and backward): [`LANES`] lanes.
    fn lane_values(&self) -> usize {
        LANES * self.lane_len()
    }

    /// Whether training keeps the patches in `aux` for the weight gradient:
    /// short ones (a first convolution, cheap to keep, read by one direct
    /// pass). Long ones are unrolled again, tile by tile, in backward: that
    /// reads the input again instead of writing and reading back the patches
    /// (`kh * kw` times the input's size).
    fn keeps_patches(&self) -> bool {
        self.keeps_patches_at(&self.geo)
    }

    /// [`Conv::keeps_patches`] for the geometry `g`.
    fn keeps_patches_at(&self, g: &Geometry) -> bool {
        self.patch_len_at(g) <= SHORT_K && !self.identity_patches()
    }

    /// Whether the patches are short enough for the direct kernels of
    /// [`crate::kernels::gemm_short_k`] (no packing).
    fn short_patches(&self) -> bool {
        self.patch_len() <= SHORT_K
    }

    /// Whether the forward product can read long patches in place from the
    /// input ([`gemm_patch_rows`]) instead of unrolling them: every window
    /// lies inside the input (no padding reaches it) and a window row's
    /// columns are adjacent (no column dilation), so each kernel row of a
    /// patch is one contiguous run of `kw * channels` values.
    fn patches_in_place(&self) -> bool {
        let g = &self.geo;
        let inside = |a: &Axis1, k: usize| {
            a.pad_before == 0
                && (a.output == 0 || (a.output - 1) * a.stride + (k - 1) * a.dilation < a.input)
        };
        !self.short_patches()
            && !self.identity_patches()
            && g.cols.dilation == 1
            && inside(&g.rows, self.kernel_size[0])
            && inside(&g.cols, self.kernel_size[1])
    }

    /// `patches K` for the `rows` samples of `xs` into `y`, reading the
    /// patches in place ([`Conv::patches_in_place`]).
    fn product_in_place(&self, xs: &[f32], rows: usize, packed: &PackedB<'_>, y: &mut [f32]) {
        let g = &self.geo;
        let (p, f, c) = (g.positions(), self.filters, g.channels);
        let (in_size, width) = (g.in_size(), g.cols.input);
        let [kh, kw] = self.kernel_size;
        let a = PatchRows {
            x: xs,
            rows: rows * p,
            start: |r: usize| {
                let (sample, pos) = (r / p, r % p);
                let (oy, ox) = (pos / g.cols.output, pos % g.cols.output);
                sample * in_size + (oy * g.rows.stride * width + ox * g.cols.stride) * c
            },
            runs: kh,
            run_len: kw * c,
            run_stride: g.rows.dilation * width * c,
        };
        gemm_patch_rows(&a, packed, matrix_mut(y, rows * p, f))
    }

    /// `y = act(patches K + b)` for the samples of one tile, on the calling
    /// thread; `z` keeps `patches K + b`.
    fn tile_product(
        &self,
        patches: &[f32],
        packed: Option<&PackedB<'_>>,
        y: &mut [f32],
        z: Option<&mut [f32]>,
    ) {
        let (f, plen) = (self.filters, self.patch_len());
        if self.short_patches() {
            gemm_short_k(patches, &self.kernel, y, plen, f);
        } else {
            let m = y.len() / f;
            let k = matrix(&self.kernel, plen, f);
            gemm_packed(matrix(patches, m, plen), k, packed, matrix_mut(y, m, f));
        }
        bias_activate_block(y, z, &self.bias, self.activation, f);
    }

    /// `y = act(patches K + b)` for `n` samples; `z` keeps `patches K + b`.
    fn product(&self, patches: &[f32], y: &mut [f32], z: Option<&mut [f32]>) {
        let (f, plen) = (self.filters, self.patch_len());
        let m = y.len() / f;
        let a = matrix(patches, m, plen);
        let k = matrix(&self.kernel, plen, f);
        gemm(a, k, matrix_mut(y, m, f));
        add_bias_activate(y, z, &self.bias, self.activation, f, 256);
    }

    /// Packs the kernel (`transposed` for the input gradient) at the start of
    /// `scratch` for the per-tile products, when the patches are long and
    /// there is room; returns the packed kernel and the rest of `scratch`.
    fn pack_kernel<'s>(
        &self,
        scratch: &'s mut [f32],
        transposed: bool,
    ) -> (Option<PackedB<'s>>, &'s mut [f32]) {
        let (f, plen) = (self.filters, self.patch_len());
        let need = packed_b_len(plen, f);
        if (self.short_patches() && !transposed) || scratch.len() < need + self.lane_values() {
            return (None, scratch);
        }
        let (area, rest) = scratch.split_at_mut(need);
        let k = matrix(&self.kernel, plen, f);
        let b = if transposed { k.t() } else { k };
        (pack_b(b, area), rest)
    }

    fn forward(
        &self,
        x: ArrayView2<f32>,
        y: ArrayViewMut2<f32>,
        aux: ArrayViewMut2<f32>,
        ctx: &mut ForwardContext<'_>,
    ) {
        self.forward_tiles(x, y, aux, ctx, None);
    }

    /// The forward pass, then `next` (a sample-local layer) on each tile's
    /// samples while they are in cache.
    fn forward_then(
        &self,
        x: ArrayView2<f32>,
        y: ArrayViewMut2<f32>,
        aux: ArrayViewMut2<f32>,
        ctx: &mut ForwardContext<'_>,
        next: NextLayer<'_>,
    ) {
        self.forward_tiles(x, y, aux, ctx, Some(next));
    }

    /// The forward pass, tile by tile, running `next` (a sample-local layer)
    /// on each tile's samples as soon as they are done.
    fn forward_tiles(
        &self,
        x: ArrayView2<f32>,
        mut y: ArrayViewMut2<f32>,
        mut aux: ArrayViewMut2<f32>,
        ctx: &mut ForwardContext<'_>,
        next: Option<NextLayer<'_>>,
    ) {
        let class = self.class();
        let n = x.nrows();
        let (p, f) = (self.geo.positions(), self.filters);
        let plen = self.patch_len();
        let in_size = self.geo.in_size();
        expect_shape(class, "x", x.shape(), &[n, in_size]);
        expect_shape(class, "y", y.shape(), &[n, p * f]);
        let x = values(x);
        let ys = values_mut(y.view_mut());
        let identity = self.identity_patches();
        let z_len = if self.needs_z() { p * f } else { 0 };
        if identity {
            if ctx.training {
                expect_shape(class, "aux", aux.shape(), &[n, z_len]);
                let z = values_mut(aux.view_mut());
                self.product(x, ys, (z_len > 0).then_some(z));
            } else {
                self.product(x, ys, None);
            }
            if let Some(next) = next {
                // One product over the whole batch: the next layer follows it.
                FusedNext::new(next, n, p * f).run(0, n, ys);
            }
            return;
        }
        let tile = self.tile_samples();
        let keep = ctx.training && self.keeps_patches();
        let (packed, rest) = self.pack_kernel(ctx.scratch, false);
        let packed = packed.as_ref();
        let parallel = n * p * plen >= PAR_MIN_VALUES;
        // One tile: unroll its samples' patches into `cols`, then multiply
        // while they are in cache.
        let next = next.map(|nl| FusedNext::new(nl, n, p * f));
        let in_place = self.patches_in_place();
        let run =
            |first: usize, xs: &[f32], cols: &mut [f32], yt: &mut [f32], zt: Option<&mut [f32]>| {
                let rows = xs.len() / in_size;
                // A packed kernel exists only where the AVX2 kernels run.
                if let (true, Some(pk)) = (in_place, packed) {
                    self.product_in_place(xs, rows, pk, yt);
                    bias_activate_block(yt, zt, &self.bias, self.activation, f);
                } else {
                    let cols = &mut cols[..rows * p * plen];
                    for (x1, c1) in xs
                        .chunks_exact(in_size)
                        .zip(cols.chunks_exact_mut(p * plen))
                    {
                        self.im2col(x1, c1);
                    }
                    self.tile_product(cols, packed, yt, zt);
                }
                if let Some(next) = &next {
                    next.run(first, rows, yt);
                }
            };
        let (xc, cc, yc) = (tile * in_size, tile * p * plen, tile * p * f);
        // aux rows in training: the patches of all samples when kept (short
        // patches: the weight gradient reads them), then the z values.
        let kept = if keep { p * plen } else { 0 };
        if ctx.training {
            expect_shape(class, "aux", aux.shape(), &[n, kept + z_len]);
        }
        let a = values_mut(aux.view_mut());
        let (cols, z) = a.split_at_mut(n * kept);
        let z = if ctx.training && z_len > 0 {
            Some(z)
        } else {
            None
        };
        if keep {
            match (z, parallel) {
                (Some(z), true) => x
                    .par_chunks(xc)
                    .zip(cols.par_chunks_mut(cc))
                    .zip(ys.par_chunks_mut(yc).zip(z.par_chunks_mut(tile * z_len)))
                    .enumerate()
                    .for_each(|(t, ((xs, c), (yt, zt)))| run(t * tile, xs, c, yt, Some(zt))),
                (Some(z), false) => x
                    .chunks(xc)
                    .zip(cols.chunks_mut(cc))
                    .zip(ys.chunks_mut(yc).zip(z.chunks_mut(tile * z_len)))
                    .enumerate()
                    .for_each(|(t, ((xs, c), (yt, zt)))| run(t * tile, xs, c, yt, Some(zt))),
                (None, true) => x
                    .par_chunks(xc)
                    .zip(cols.par_chunks_mut(cc))
                    .zip(ys.par_chunks_mut(yc))
                    .enumerate()
                    .for_each(|(t, ((xs, c), yt))| run(t * tile, xs, c, yt, None)),
                (None, false) => x
                    .chunks(xc)
                    .zip(cols.chunks_mut(cc))
                    .zip(ys.chunks_mut(yc))
                    .enumerate()
                    .for_each(|(t, ((xs, c), yt))| run(t * tile, xs, c, yt, None)),
            }
            return;
        }
        // Each lane unrolls its tiles into its own patch buffer.
        let tiles = n.div_ceil(tile);
        let lanes = LANES.min(tiles).max(1);
        assert!(
            rest.len() >= lanes * cc,
            "{class}: scratch of {} values is smaller than the {} that `buffers` asked for",
            rest.len(),
            lanes * cc
        );
        let per_lane = tiles.div_ceil(lanes);
        let lane =
            |l: usize, slot: &mut [f32], xs: &[f32], yl: &mut [f32], zl: Option<&mut [f32]>| {
                let mut zl = zl;
                for (t, (xt, yt)) in xs.chunks(xc).zip(yl.chunks_mut(yc)).enumerate() {
                    let zt = zl
                        .as_deref_mut()
                        .map(|z| &mut z[t * tile * z_len..][..yt.len()]);
                    run((l * per_lane + t) * tile, xt, slot, yt, zt);
                }
            };
        let slots = rest[..lanes * cc].par_chunks_mut(cc);
        let work = x
            .par_chunks(per_lane * xc)
            .zip(ys.par_chunks_mut(per_lane * yc));
        match z {
            Some(z) => slots
                .zip(work.zip(z.par_chunks_mut(per_lane * tile * z_len)))
                .enumerate()
                .for_each(|(l, (slot, ((xs, yl), zl)))| lane(l, slot, xs, yl, Some(zl))),
            None => slots
                .zip(work)
                .enumerate()
                .for_each(|(l, (slot, (xs, yl)))| lane(l, slot, xs, yl, None)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        x: ArrayView2<f32>,
        y: ArrayView2<f32>,
        aux: ArrayView2<f32>,
        dy: ArrayViewMut2<f32>,
        dx: Option<ArrayViewMut2<f32>>,
        grads: &mut [Vec<f32>],
        ctx: &mut BackwardContext<'_>,
    ) {
        let n = x.nrows();
        expect_shape(self.class(), "dy", dy.shape(), &[n, self.out_width()]);
        if self.identity_patches() {
            self.backward_identity(x, y, aux, dy, dx, grads, ctx);
            return;
        }
        let up = Upstream::Rows(DisjointRows::new(dy, n));
        self.backward_from(x, y, aux, up, dx, grads, ctx);
    }

    /// Whether [`Conv::backward_after`] fuses `next` into the pass: with
    /// long patches, or short ones and no input gradient (a first
    /// convolution). The other cases run the two layers in turn.
    fn fuses_backward(&self, has_dx: bool) -> bool {
        !(self.identity_patches() || (self.keeps_patches() && has_dx))
    }

    /// `next`'s backward, then this layer's, each tile's output gradient
    /// made from `next` in the lane's buffer when the tile needs it (`dy`
    /// is not used). Only where [`Conv::fuses_backward`].
    #[allow(clippy::too_many_arguments)]
    fn backward_after(
        &self,
        x: ArrayView2<f32>,
        y: ArrayView2<f32>,
        aux: ArrayView2<f32>,
        dx: Option<ArrayViewMut2<f32>>,
        grads: &mut [Vec<f32>],
        ctx: &mut BackwardContext<'_>,
        next: NextLayerGrad<'_>,
    ) {
        let n = x.nrows();
        expect_shape(self.class(), "y", y.shape(), &[n, self.out_width()]);
        // A ReLU before max pooling: its gradient is applied to the
        // pooling's output gradient, and this layer's output is not read.
        let relu_first = self.activation == Activation::Relu
            && next.layer.selects_max()
            && !ctx.dy_is_preactivation;
        let up = Upstream::Next(FusedGrad::new(next, n, values(y), relu_first));
        self.backward_from(x, y, aux, up, dx, grads, ctx);
    }

    /// Values per sample of the output.
    fn out_width(&self) -> usize {
        self.geo.positions() * self.filters
    }

    /// Backward of a `1 x 1` convolution with stride 1, whose patches are
    /// its input: whole-batch products.
    #[allow(clippy::too_many_arguments)]
    fn backward_identity(
        &self,
        x: ArrayView2<f32>,
        y: ArrayView2<f32>,
        aux: ArrayView2<f32>,
        mut dy: ArrayViewMut2<f32>,
        dx: Option<ArrayViewMut2<f32>>,
        grads: &mut [Vec<f32>],
        ctx: &mut BackwardContext<'_>,
    ) {
        let class = self.class();
        let n = x.nrows();
        let (p, f, plen) = (self.geo.positions(), self.filters, self.patch_len());
        let z_len = if self.needs_z() { p * f } else { 0 };
        expect_shape(class, "x", x.shape(), &[n, self.geo.in_size()]);
        expect_shape(class, "y", y.shape(), &[n, p * f]);
        expect_shape(class, "aux", aux.shape(), &[n, z_len]);
        if let Some(dx) = &dx {
            expect_shape(class, "dx", dx.shape(), x.shape());
        }
        let n_params = if self.use_bias { 2 } else { 1 };
        expect_grads(class, grads, &[self.kernel.len(), f][..n_params]);
        if !ctx.dy_is_preactivation {
            self.activation
                .backward(values(aux), values(y), values_mut(dy.view_mut()), f);
        }
        let m = n * p;
        let dz = matrix(values(dy.view()), m, f);
        // A sum over every position of the batch into a small kernel, split
        // over the positions in a fixed order. With long patches (many
        // channels) the product is formed transposed, `dK^T = dz^T x`, so
        // that the large operand is read row by row.
        let pm = matrix(values(x), m, plen);
        let mut gk = matrix_mut(&mut grads[0], plen, f);
        let kernel_len = plen * f;
        let partial_len = K_SPLITS * kernel_len;
        if plen > 64 && ctx.scratch.len() >= partial_len + kernel_len {
            let (partials, rest) = ctx.scratch.split_at_mut(partial_len);
            let mut gt = matrix_mut(rest, f, plen);
            gemm_tall_k(dz.t(), pm, gt.view_mut(), partials);
            gk.assign(&gt.t());
        } else {
            gemm_tall_k(pm.t(), dz, gk, ctx.scratch);
        }
        if self.use_bias {
            column_sums(values(dz), f, &mut grads[1], ctx.scratch);
        }
        if let Some(dx) = dx {
            let kt = matrix(&self.kernel, plen, f);
            gemm(dz, kt.t(), matrix_mut(values_mut(dx), m, plen));
        }
    }

    /// Backward of a convolution with real patches, its output gradient
    /// coming from `up` a block of samples at a time (see the module docs).
    #[allow(clippy::too_many_arguments)]
    fn backward_from(
        &self,
        x: ArrayView2<f32>,
        y: ArrayView2<f32>,
        aux: ArrayView2<f32>,
        up: Upstream<'_>,
        dx: Option<ArrayViewMut2<f32>>,
        grads: &mut [Vec<f32>],
        ctx: &mut BackwardContext<'_>,
    ) {
        let class = self.class();
        let n = x.nrows();
        let (p, f, plen) = (self.geo.positions(), self.filters, self.patch_len());
        let in_size = self.geo.in_size();
        let kept = if self.keeps_patches() { p * plen } else { 0 };
        let z_len = if self.needs_z() { p * f } else { 0 };
        expect_shape(class, "x", x.shape(), &[n, in_size]);
        expect_shape(class, "y", y.shape(), &[n, p * f]);
        expect_shape(class, "aux", aux.shape(), &[n, kept + z_len]);
        if let Some(dx) = &dx {
            expect_shape(class, "dx", dx.shape(), x.shape());
        }
        let n_params = if self.use_bias { 2 } else { 1 };
        expect_grads(class, grads, &[self.kernel.len(), f][..n_params]);
        let a = values(aux);
        let (cols, z) = a.split_at(n * kept);
        let ys = values(y);
        let out = p * f;
        // Whether `dz` arrives with the activation's gradient applied.
        let pre = ctx.dy_is_preactivation || up.relu_applied();
        // The activation's gradient, in place, on the output gradient of
        // the samples from `first` on.
        let activate = |first: usize, dz: &mut [f32]| {
            if !pre {
                let zt = if z_len > 0 {
                    &z[first * z_len..][..dz.len()]
                } else {
                    &[]
                };
                self.activation
                    .backward(zt, &ys[first * out..][..dz.len()], dz, f);
            }
        };
        if kept > 0 {
            // Short patches (a first convolution): the kernel and bias
            // gradients in one direct pass over the kept patches, in
            // [`K_SPLITS`] fixed blocks of samples added in block order. A
            // ReLU without an input gradient to make is applied as the pass
            // reads the output gradient, which is then never written.
            let gate = (self.activation == Activation::Relu && !pre && dx.is_none()).then_some(ys);
            let taps = plen + usize::from(self.use_bias);
            let part_len = taps * f;
            // Each block's partial sums, then its slot for `next`'s output
            // gradient of one sample.
            let need = K_SPLITS * (part_len + out);
            assert!(
                ctx.scratch.len() >= need,
                "{class}: scratch of {} values is smaller than the {need} that `buffers` asked for",
                ctx.scratch.len()
            );
            let (partials, rest) = ctx.scratch.split_at_mut(K_SPLITS * part_len);
            let slots = &mut rest[..K_SPLITS * out];
            let per_block = n.div_ceil(K_SPLITS).max(1);
            let block = |i: usize, part: &mut [f32], slot: &mut [f32]| {
                part.fill(0.0);
                let (s0, s1) = ((i * per_block).min(n), ((i + 1) * per_block).min(n));
                // The buffer's own rows all at once; `next`'s a sample at
                // a time, into the slot.
                let step = if up.is_rows() { (s1 - s0).max(1) } else { 1 };
                for s in (s0..s1).step_by(step) {
                    let count = step.min(s1 - s);
                    // SAFETY: the blocks cover disjoint samples, and each
                    // takes each of its samples' rows once.
                    let dz = unsafe { up.rows(s, count, slot) };
                    let gate = gate.map(|g| &g[s * out..(s + count) * out]);
                    if gate.is_none() {
                        activate(s, dz);
                    }
                    block_grad(
                        &cols[s * kept..(s + count) * kept],
                        dz,
                        gate,
                        plen,
                        f,
                        taps,
                        part,
                    );
                }
            };
            if n * out * taps >= 1 << 16 {
                partials
                    .par_chunks_mut(part_len)
                    .zip(slots.par_chunks_mut(out))
                    .enumerate()
                    .for_each(|(i, (part, slot))| block(i, part, slot));
            } else {
                partials
                    .chunks_mut(part_len)
                    .zip(slots.chunks_mut(out))
                    .enumerate()
                    .for_each(|(i, (part, slot))| block(i, part, slot));
            }
            let (gk, gb) = grads.split_at_mut(1);
            sum_partials(
                partials,
                plen,
                f,
                &mut gk[0],
                gb.first_mut().map(|g| &mut g[..]),
            );
            if dx.is_none() {
                return;
            }
        }
        // Tile by tile in a fixed number of lanes, each lane working through
        // a contiguous run of tiles: with long patches (not kept), the
        // activation's gradient, the lane's partial bias and kernel
        // gradients (`dz^T patches`, the tile's patches unrolled again in
        // the lane's buffer), then, when asked, the input gradient: `dz K^T`
        // into the lane's buffer, added back into `dx` (col2im) while it is
        // in cache. Lane partials are added in lane order.
        let recompute = kept == 0;
        let tile = self.tile_samples();
        let (packed, rest) = if dx.is_some() {
            self.pack_kernel(ctx.scratch, true)
        } else {
            (None, &mut ctx.scratch[..])
        };
        let packed = packed.as_ref();
        let tiles = n.div_ceil(tile);
        let lanes = LANES.min(tiles).max(1);
        let per_lane = tiles.div_ceil(lanes);
        let used = tiles.div_ceil(per_lane);
        let (cc, xc, kl) = (tile * p * plen, tile * in_size, plen * f);
        let lane_len = self.lane_len();
        assert!(
            rest.len() >= lanes * lane_len,
            "{class}: scratch of {} values is smaller than the {} that `buffers` asked for",
            rest.len(),
            lanes * lane_len
        );
        let xs = values(x);
        let kt = matrix(&self.kernel, plen, f);
        let lane = |l: usize, buf: &mut [f32], dxl: Option<&mut [f32]>| {
            let (pslot, r) = buf.split_at_mut(cc);
            let (dslot, r) = r.split_at_mut(cc);
            let (tmp, r) = r.split_at_mut(kl);
            let (partial, r) = r.split_at_mut(kl);
            let (bias_part, zslot) = r.split_at_mut(f);
            partial.fill(0.0);
            bias_part.fill(0.0);
            let mut dxl = dxl;
            let (t0, t1) = (l * per_lane, ((l + 1) * per_lane).min(tiles));
            for t in t0..t1 {
                let first = t * tile;
                let rows = tile.min(n - first);
                // SAFETY: the lanes cover disjoint tiles, and each takes each
                // of its tiles' rows once.
                let dz = unsafe { up.rows(first, rows, zslot) };
                let xt = &xs[first * in_size..(first + rows) * in_size];
                if recompute {
                    activate(first, dz);
                    for row in dz.chunks_exact(f) {
                        bias_part.iter_mut().zip(row).for_each(|(b, &v)| *b += v);
                    }
                    let pc = &mut pslot[..rows * p * plen];
                    for (x1, c1) in xt.chunks_exact(in_size).zip(pc.chunks_exact_mut(p * plen)) {
                        self.im2col(x1, c1);
                    }
                    let dzm = matrix(dz, rows * p, f);
                    gemm_serial(
                        dzm.t(),
                        matrix(pc, rows * p, plen),
                        matrix_mut(tmp, f, plen),
                    );
                    partial.iter_mut().zip(&*tmp).for_each(|(o, &v)| *o += v);
                }
                if let Some(dxl) = dxl.as_deref_mut() {
                    let dxt = &mut dxl[(t - t0) * xc..][..xt.len()];
                    let dcols = &mut dslot[..rows * p * plen];
                    let dzm = matrix(dz, rows * p, f);
                    gemm_packed(dzm, kt.t(), packed, matrix_mut(dcols, rows * p, plen));
                    for (d1, c1) in dxt
                        .chunks_exact_mut(in_size)
                        .zip(dcols.chunks_exact(p * plen))
                    {
                        self.col2im(c1, d1);
                    }
                }
            }
        };
        let bufs = &mut rest[..used * lane_len];
        match dx {
            Some(dx) => bufs
                .par_chunks_mut(lane_len)
                .zip(values_mut(dx).par_chunks_mut(per_lane * xc))
                .enumerate()
                .for_each(|(l, (b, dxl))| lane(l, b, Some(dxl))),
            None => bufs
                .par_chunks_mut(lane_len)
                .enumerate()
                .for_each(|(l, b)| lane(l, b, None)),
        }
        if recompute {
            // Lane partials are `filters x plen`; the gradient is `plen x filters`.
            let g = &mut grads[0];
            g.fill(0.0);
            for buf in bufs.chunks_exact(lane_len) {
                let partial = &buf[2 * cc + kl..][..kl];
                for (j, row) in partial.chunks_exact(plen).enumerate() {
                    for (c, &v) in row.iter().enumerate() {
                        g[c * f + j] += v;
                    }
                }
            }
            if self.use_bias {
                let gb = &mut grads[1];
                gb.fill(0.0);
                for buf in bufs.chunks_exact(lane_len) {
                    let bias_part = &buf[2 * cc + 2 * kl..][..f];
                    gb.iter_mut().zip(bias_part).for_each(|(o, &v)| *o += v);
                }
            }
        }
    }

    fn buffers(&self, input: &Shape, training: bool) -> Buffers {
        let Ok(geo) = self.geometry(input) else {
            return Buffers::default();
        };
        let (f, plen, p) = (self.filters, self.patch_len_at(&geo), geo.positions());
        let identity = self.identity_patches();
        // The packed kernel (either way round) and the lanes' buffers.
        let products =
            packed_b_len(plen, f).max(packed_b_len(f, plen)) + LANES * self.lane_len_at(&geo);
        if training {
            let z = if self.needs_z() { p * f } else { 0 };
            let kept = if self.keeps_patches_at(&geo) {
                p * plen
            } else {
                0
            };
            // The weight gradient's partial sums and one sample's output
            // gradient per block (see `backward_from`).
            let grads = (weight_grad_partials(plen, f) + K_SPLITS * p * f)
                .max((K_SPLITS + 1) * plen * f)
                .max(SUM_BLOCKS * f);
            Buffers {
                aux: kept + z,
                scratch: grads.max(if identity { 0 } else { products }),
                ..Buffers::default()
            }
        } else {
            Buffers {
                scratch: if identity { 0 } else { products },
                ..Buffers::default()
            }
        }
    }

    fn params(&self) -> Vec<ParamView<'_>> {
        let mut v = vec![ParamView::trainable(
            "kernel",
            self.kernel_shape(self.geo.channels),
            &self.kernel,
        )];
        if self.use_bias {
            v.push(ParamView::trainable(
                "bias",
                vec![self.bias.len()],
                &self.bias,
            ));
        }
        v
    }

    fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut [f32])) {
        f(&mut self.kernel);
        if self.use_bias {
            f(&mut self.bias);
        }
    }

    fn regularization_penalty(&self) -> f32 {
        let mut p = 0.0;
        if let Some(r) = self.kernel_regularizer {
            p += r.penalty(&self.kernel);
        }
        if let (Some(r), true) = (self.bias_regularizer, self.use_bias) {
            p += r.penalty(&self.bias);
        }
        p
    }

    fn add_regularization_gradient(&self, grads: &mut [Vec<f32>]) {
        if let Some(r) = self.kernel_regularizer {
            r.add_gradient(&self.kernel, &mut grads[0]);
        }
        if let (Some(r), true) = (self.bias_regularizer, self.use_bias) {
            r.add_gradient(&self.bias, &mut grads[1]);
        }
    }

    fn config(&self) -> ConvConfig {
        ConvConfig {
            filters: self.filters,
            kernel_size: self.window_dims(),
            strides: if self.rank == 1 {
                vec![self.strides[1]]
            } else {
                self.strides.to_vec()
            },
            padding: self.padding,
            dilation_rate: if self.rank == 1 {
                vec![self.dilation_rate[1]]
            } else {
                self.dilation_rate.to_vec()
            },
            activation: self.activation,
            use_bias: self.use_bias,
            kernel_initializer: self.kernel_initializer,
            bias_initializer: self.bias_initializer,
            kernel_regularizer: self.kernel_regularizer,
            bias_regularizer: self.bias_regularizer,
        }
    }
}

/// A convolution's configuration as stored in model files (Keras' keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvConfig {
    /// Output channels.
    pub filters: usize,
    /// Window size per spatial axis.
    pub kernel_size: Vec<usize>,
    /// Step per spatial axis.
    pub strides: Vec<usize>,
    /// Border handling.
    pub padding: Padding,
    /// Spacing of the window's cells per spatial axis.
    pub dilation_rate: Vec<usize>,
    /// Activation.
    pub activation: Activation,
    /// Whether there is a bias.
    pub use_bias: bool,
    /// Kernel initializer.
    pub kernel_initializer: Initializer,
    /// Bias initializer.
    pub bias_initializer: Initializer,
    /// Kernel penalty.
    pub kernel_regularizer: Option<Regularizer>,
    /// Bias penalty.
    pub bias_regularizer: Option<Regularizer>,
}

impl ConvConfig {
    /// The layer this configuration describes (unbuilt), or an error for
    /// window settings of the wrong length.
    pub(crate) fn layer(&self, rank: usize) -> Result<Conv> {
        let pair = |name: &str, v: &[usize]| -> Result<[usize; 2]> {
            match (rank, v) {
                (1, [a]) => Ok([1, *a]),
                (2, [a, b]) => Ok([*a, *b]),
                _ => Err(Error::arg(name, format!("{rank} values"), format!("{v:?}"))),
            }
        };
        let mut c = Conv::new(
            rank,
            self.filters,
            pair("kernel_size", &self.kernel_size)?,
            self.activation,
        );
        c.strides = pair("strides", &self.strides)?;
        c.dilation_rate = pair("dilation_rate", &self.dilation_rate)?;
        c.padding = self.padding;
        c.use_bias = self.use_bias;
        c.kernel_initializer = self.kernel_initializer;
        c.bias_initializer = self.bias_initializer;
        c.kernel_regularizer = self.kernel_regularizer;
        c.bias_regularizer = self.bias_regularizer;
        Ok(c)
    }
}

/// A size per spatial axis: one number for all axes (`3`) or one per axis
/// (`[3, 5]`), as Keras accepts for `kernel_size`, `strides` and `pool_size`.
pub trait IntoWindow<const N: usize> {
    /// The size per axis.
    fn into_window(self) -> [usize; N];
}

impl<const N: usize> IntoWindow<N> for usize {
    fn into_window(self) -> [usize; N] {
        [self; N]
    }
}

impl<const N: usize> IntoWindow<N> for [usize; N] {
    fn into_window(self) -> [usize; N] {
        self
    }
}

/// Implements [`Layer`] for a public wrapper by forwarding to its core.
macro_rules! forward_layer {
    ($outer:ty, $config:expr) => {
        impl Layer for $outer {
            fn class_name(&self) -> &str {
                self.0.class()
            }
            fn build(&mut self, input: &Shape, rng: &mut StdRng) -> Result<Shape> {
                self.0.build(input, rng)
            }
            fn buffers(&self, input: &Shape, training: bool) -> Buffers {
                self.0.buffers(input, training)
            }
            fn keep_preactivation(&mut self, keep: bool) {
                self.0.keep_z = keep;
            }
            fn preactivation<'a>(
                &self,
                _x: ArrayView2<'a, f32>,
                aux: ArrayView2<'a, f32>,
            ) -> Option<ArrayView2<'a, f32>> {
                let z = self.0.geo.positions() * self.0.filters;
                if !self.0.keep_z || aux.ncols() < z {
                    return None;
                }
                Some(aux.slice_move(ndarray::s![.., aux.ncols() - z..]))
            }
            fn forward(
                &self,
                x: ArrayView2<f32>,
                y: ArrayViewMut2<f32>,
                aux: ArrayViewMut2<f32>,
                ctx: &mut ForwardContext<'_>,
            ) {
                self.0.forward(x, y, aux, ctx)
            }
            fn forward_then(
                &self,
                x: ArrayView2<f32>,
                y: ArrayViewMut2<f32>,
                aux: ArrayViewMut2<f32>,
                ctx: &mut ForwardContext<'_>,
                next: NextLayer<'_>,
            ) {
                self.0.forward_then(x, y, aux, ctx, next)
            }
            fn backward(
                &self,
                x: ArrayView2<f32>,
                y: ArrayView2<f32>,
                aux: ArrayView2<f32>,
                dy: ArrayViewMut2<f32>,
                dx: Option<ArrayViewMut2<f32>>,
                grads: &mut [Vec<f32>],
                ctx: &mut BackwardContext<'_>,
            ) {
                self.0.backward(x, y, aux, dy, dx, grads, ctx)
            }
            fn backward_after(
                &self,
                x: ArrayView2<f32>,
                y: ArrayView2<f32>,
                aux: ArrayView2<f32>,
                dy: ArrayViewMut2<f32>,
                dx: Option<ArrayViewMut2<f32>>,
                grads: &mut [Vec<f32>],
                ctx: &mut BackwardContext<'_>,
                next: NextLayerGrad<'_>,
            ) {
                if self.0.fuses_backward(dx.is_some()) {
                    self.0.backward_after(x, y, aux, dx, grads, ctx, next)
                } else {
                    backward_in_turn(self, x, y, aux, dy, dx, grads, ctx, next)
                }
            }
            fn params(&self) -> Vec<ParamView<'_>> {
                self.0.params()
            }
            fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut [f32])) {
                self.0.visit_params_mut(f)
            }
            fn output_activation(&self) -> Option<Activation> {
                Some(self.0.activation)
            }
            fn regularization_penalty(&self) -> f32 {
                self.0.regularization_penalty()
            }
            fn add_regularization_gradient(&self, grads: &mut [Vec<f32>]) {
                self.0.add_regularization_gradient(grads)
            }
            fn config(&self) -> Option<LayerConfig> {
                Some($config(self.0.config()))
            }
        }
    };
}

/// Builder methods shared by `Conv1D` and `Conv2D`.
macro_rules! conv_options {
    ($t:ty, $n:literal) => {
        impl $t {
            /// Step of the window per spatial axis (Keras default 1).
            pub fn strides(mut self, strides: impl IntoWindow<$n>) -> Self {
                let s = strides.into_window();
                self.0.strides = if $n == 1 {
                    [1, s[0]]
                } else {
                    [s[0], s[$n - 1]]
                };
                self
            }
            /// Border handling (Keras default `valid`).
            pub fn padding(mut self, padding: Padding) -> Self {
                self.0.padding = padding;
                self
            }
            /// Spacing between the window's cells (Keras default 1).
            pub fn dilation_rate(mut self, rate: impl IntoWindow<$n>) -> Self {
                let d = rate.into_window();
                self.0.dilation_rate = if $n == 1 {
                    [1, d[0]]
                } else {
                    [d[0], d[$n - 1]]
                };
                self
            }
            /// Whether to add a bias (Keras default true).
            pub fn use_bias(mut self, use_bias: bool) -> Self {
                self.0.use_bias = use_bias;
                self
            }
            /// Kernel initializer (Keras default `glorot_uniform`, with fans
            /// that count the window: `kh * kw * in` and `kh * kw * filters`).
            pub fn kernel_initializer(mut self, init: Initializer) -> Self {
                self.0.kernel_initializer = init;
                self
            }
            /// Bias initializer (Keras default `zeros`).
            pub fn bias_initializer(mut self, init: Initializer) -> Self {
                self.0.bias_initializer = init;
                self
            }
            /// Penalty on the kernel.
            pub fn kernel_regularizer(mut self, r: Regularizer) -> Self {
                self.0.kernel_regularizer = Some(r);
                self
            }
            /// Penalty on the bias.
            pub fn bias_regularizer(mut self, r: Regularizer) -> Self {
                self.0.bias_regularizer = Some(r);
                self
            }
            /// The kernel in Keras' layout, row-major.
            pub fn kernel(&self) -> &[f32] {
                &self.0.kernel
            }
            /// The bias (empty without `use_bias`).
            pub fn bias(&self) -> &[f32] {
                &self.0.bias
            }
        }
    };
}

/// A 2-D convolution over `(height, width, channels)` samples (Keras
/// `Conv2D`): `filters` output channels, kernel `(kh, kw, in, filters)`.
///
/// Keras defaults: strides 1, padding `valid`, dilation 1, bias on, kernel
/// `glorot_uniform`, bias `zeros`, activation linear. `data_format` is
/// always `channels_last`, Keras' default.
///
/// ```
/// use horn::prelude::*;
/// let model = Sequential::new()
///     .input_shape(&[28, 28, 1])
///     .add(Conv2D::new(32, 3, Relu).padding(Padding::Same).strides(2));
/// assert_eq!(model.output_shape().unwrap().dims(), &[14, 14, 32]);
/// ```
#[derive(Debug, Clone)]
pub struct Conv2D(pub(crate) Conv);

impl Conv2D {
    /// `filters` output channels, a `kernel_size` window (`3` or `[3, 5]`).
    pub fn new(
        filters: usize,
        kernel_size: impl IntoWindow<2>,
        activation: impl IntoActivation,
    ) -> Self {
        let (act, err) = split_activation(activation);
        let mut c = Conv::new(2, filters, kernel_size.into_window(), act);
        c.bad_activation = err;
        Conv2D(c)
    }
}

/// A 1-D convolution over `(steps, channels)` samples (Keras `Conv1D`),
/// kernel `(k, in, filters)`; padding `causal` makes step `t` see only steps
/// up to `t`. Defaults as [`Conv2D`].
///
/// ```
/// use horn::prelude::*;
/// let model = Sequential::new()
///     .input_shape(&[50, 8])
///     .add(Conv1D::new(16, 5, Relu).padding(Padding::Causal));
/// assert_eq!(model.output_shape().unwrap().dims(), &[50, 16]);
/// ```
#[derive(Debug, Clone)]
pub struct Conv1D(pub(crate) Conv);

impl Conv1D {
    /// `filters` output channels, a window of `kernel_size` steps.
    pub fn new(filters: usize, kernel_size: usize, activation: impl IntoActivation) -> Self {
        let (act, err) = split_activation(activation);
        let mut c = Conv::new(1, filters, [1, kernel_size], act);
        c.bad_activation = err;
        Conv1D(c)
    }
}

/// An activation, or (for an unknown name) linear and the error's text,
/// which `build` reports (builders do not return `Result`).
fn split_activation(a: impl IntoActivation) -> (Activation, Option<String>) {
    match a.into_activation() {
        Ok(a) => (a, None),
        Err(e) => (Activation::Linear, Some(e.to_string())),
    }
}

conv_options!(Conv2D, 2);
conv_options!(Conv1D, 1);
forward_layer!(Conv2D, LayerConfig::Conv2D);
forward_layer!(Conv1D, LayerConfig::Conv1D);

/// The sample-local layer that [`Conv::forward_tiles`] runs on each finished
/// tile, with its output and `aux` rows shared by the parallel tiles.
struct FusedNext<'a> {
    layer: &'a dyn Layer,
    y: DisjointRows<'a>,
    aux: DisjointRows<'a>,
    training: bool,
    /// Values per sample of its input (the convolution's output).
    in_width: usize,
}

impl<'a> FusedNext<'a> {
    /// `next`'s views, for a batch of `n` samples of `in_width` values in.
    fn new(next: NextLayer<'a>, n: usize, in_width: usize) -> Self {
        FusedNext {
            layer: next.layer,
            y: DisjointRows::new(next.y, n),
            aux: DisjointRows::new(next.aux, n),
            training: next.training,
            in_width,
        }
    }

    /// The layer on samples `first..first + rows`, whose input (this
    /// convolution's output for them) is `x`. Each tile calls this once, for
    /// its own samples.
    fn run(&self, first: usize, rows: usize, x: &[f32]) {
        // SAFETY: the tiles of one forward pass cover disjoint samples, and
        // each calls `run` once for its own, so no two live slices overlap.
        let (y, aux) = unsafe { (self.y.rows(first, rows), self.aux.rows(first, rows)) };
        let x = matrix(x, rows, self.in_width);
        let mut rng = StdRng::seed_from_u64(0);
        let mut ctx = ForwardContext::new(self.training, &mut rng);
        self.layer.forward(
            x,
            matrix_mut(y, rows, self.y.width),
            matrix_mut(aux, rows, self.aux.width),
            &mut ctx,
        );
    }
}

/// Where a convolution's backward pass gets its output gradient `dz` from.
enum Upstream<'a> {
    /// Its own `dy` buffer, whose rows it overwrites in place.
    Rows(DisjointRows<'a>),
    /// The sample-local layer after it, back-propagated a tile at a time.
    Next(FusedGrad<'a>),
}

impl Upstream<'_> {
    fn is_rows(&self) -> bool {
        matches!(self, Upstream::Rows(_))
    }

    /// Whether the rows come with the convolution's ReLU gradient applied
    /// (see [`Layer::selects_max`]).
    fn relu_applied(&self) -> bool {
        matches!(self, Upstream::Next(next) if next.relu_first)
    }

    /// The output gradient of samples `first..first + count`: the `dy`
    /// buffer's own rows, or `next`'s backward for them written into the
    /// start of `slot`.
    ///
    /// # Safety
    /// No other slice from this `Upstream` for overlapping samples may be
    /// alive while the returned one is.
    unsafe fn rows<'s>(&'s self, first: usize, count: usize, slot: &'s mut [f32]) -> &'s mut [f32] {
        match self {
            // SAFETY: the caller's guarantee is `DisjointRows::rows`'.
            Upstream::Rows(rows) => unsafe { rows.rows(first, count) },
            Upstream::Next(next) => {
                let out = &mut slot[..count * next.in_width];
                // SAFETY: as above, for `next`'s rows of the same samples.
                unsafe { next.run(first, count, out) };
                out
            }
        }
    }
}

/// The sample-local layer after a convolution, back-propagated on the
/// samples of one tile at a time ([`Layer::backward_after`]).
struct FusedGrad<'a> {
    layer: &'a dyn Layer,
    /// Its input: the convolution's output, `in_width` values per sample.
    x: &'a [f32],
    y: ArrayView2<'a, f32>,
    aux: ArrayView2<'a, f32>,
    dy: DisjointRows<'a>,
    in_width: usize,
    /// Apply the convolution's ReLU gradient to `dy` (where `y > 0`) before
    /// the layer's backward ([`Layer::selects_max`]).
    relu_first: bool,
}

impl<'a> FusedGrad<'a> {
    /// `next`'s views for a batch of `n` samples whose input is `x`.
    fn new<'n: 'a>(next: NextLayerGrad<'n>, n: usize, x: &'a [f32], relu_first: bool) -> Self {
        assert!(
            next.y.nrows() >= n && next.aux.nrows() >= n && n > 0,
            "fused layer: {} output rows and {} aux rows for a batch of {n}",
            next.y.nrows(),
            next.aux.nrows()
        );
        FusedGrad {
            layer: next.layer,
            in_width: x.len() / n,
            x,
            y: next.y,
            aux: next.aux,
            dy: DisjointRows::new(next.dy, n),
            relu_first,
        }
    }

    /// The layer's input gradient for samples `first..first + count`
    /// into `dx`.
    ///
    /// # Safety
    /// No other call for overlapping samples may be running.
    unsafe fn run(&self, first: usize, count: usize, dx: &mut [f32]) {
        let w = self.in_width;
        let rows = first..first + count;
        let x = matrix(&self.x[first * w..(first + count) * w], count, w);
        // SAFETY: the caller's guarantee.
        let dy = unsafe { self.dy.rows(first, count) };
        let y = self.y.slice(ndarray::s![rows.clone(), ..]);
        if self.relu_first {
            // `d` where the output is positive, else +0: the select of the
            // ReLU's own backward pass, as a bit mask.
            for (d, &v) in dy.iter_mut().zip(values(y.view())) {
                *d = f32::from_bits(d.to_bits() & 0u32.wrapping_sub(u32::from(v > 0.0)));
            }
        }
        self.layer.backward(
            x,
            y,
            self.aux.slice(ndarray::s![rows, ..]),
            matrix_mut(dy, count, self.dy.width),
            Some(matrix_mut(dx, count, w)),
            &mut [],
            &mut BackwardContext::new(false),
        );
    }
}

/// Rows of a standard-layout buffer that parallel tasks write, each task its
/// own rows.
struct DisjointRows<'a> {
    ptr: *mut f32,
    len: usize,
    width: usize,
    _rows: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: `DisjointRows` hands out mutable rows only through the unsafe
// `rows`, whose callers guarantee that no two live slices overlap.
unsafe impl Send for DisjointRows<'_> {}
// SAFETY: as for `Send`.
unsafe impl Sync for DisjointRows<'_> {}

impl<'a> DisjointRows<'a> {
    /// The first `n` rows of `view`.
    fn new(mut view: ArrayViewMut2<'a, f32>, n: usize) -> Self {
        let width = view.ncols();
        assert!(
            view.nrows() >= n,
            "fused layer: {} rows for a batch of {n}",
            view.nrows()
        );
        let values = values_mut(view.view_mut());
        let (ptr, len) = (values.as_mut_ptr(), n * width);
        DisjointRows {
            ptr,
            len,
            width,
            _rows: std::marker::PhantomData,
        }
    }

    /// Rows `first..first + count`.
    ///
    /// # Safety
    /// No other slice from this `DisjointRows` that overlaps these rows may be
    /// alive while the returned one is.
    unsafe fn rows(&self, first: usize, count: usize) -> &'a mut [f32] {
        let (start, len) = (first * self.width, count * self.width);
        assert!(start + len <= self.len, "fused layer: rows past the batch");
        // SAFETY: inside the buffer (checked above, in all builds), which
        // outlives 'a; the caller guarantees that the rows are not aliased.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}

/// Copies one run of a patch (`dst.len()` values, as many as `src`).
/// `copy_from_slice` with a length known only at run time calls `memmove`,
/// whose call costs more than the copy itself for the runs of a first
/// convolution (3 values for a 3x3 kernel on one channel: 2,028 runs per
/// MNIST image); runs of up to 16 values are copied with a length fixed at
/// compile time instead.
#[inline(always)]
fn copy_run(dst: &mut [f32], src: &[f32]) {
    macro_rules! fixed {
        ($($n:literal)*) => {
            match dst.len() {
                $($n => dst[..$n].copy_from_slice(&src[..$n]),)*
                _ => dst.copy_from_slice(src),
            }
        };
    }
    fixed!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_geometry_matches_keras() {
        // valid: floor((in - span) / stride) + 1
        assert_eq!(Axis1::new(28, 3, 1, 1, Padding::Valid).unwrap().output, 26);
        assert!(Axis1::new(2, 3, 1, 1, Padding::Valid).is_none());
        // same: ceil(in / stride), TF puts the odd pad at the end
        let a = Axis1::new(7, 3, 2, 1, Padding::Same).unwrap();
        assert_eq!((a.output, a.pad_before), (4, 1));
        let a = Axis1::new(6, 3, 2, 1, Padding::Same).unwrap();
        assert_eq!((a.output, a.pad_before), (3, 0));
        // causal: left pad (k - 1) * d
        let a = Axis1::new(9, 3, 2, 1, Padding::Causal).unwrap();
        assert_eq!((a.output, a.pad_before), (5, 2));
    }
}
