//! Pooling: `MaxPooling1D/2D`, `AveragePooling1D/2D` and the global poolings.
//!
//! Each sample is pooled on its own (in parallel over samples for large
//! batches). Max pooling keeps no indices: backward finds each window's
//! first maximal cell again by comparing the input with the output, which
//! costs one more pass over the window but no memory and gives the cell
//! TensorFlow picks (the first in row-major window order). Overlapping
//! windows add their gradients in a fixed order. A NaN in a window makes
//! the window's output NaN (it is never silently dropped).

use ndarray::{ArrayView2, ArrayViewMut2};
use rand::rngs::StdRng;
use rayon::prelude::*;

use super::conv::{check_window, spatial_dims, window_error, Axis1, Geometry, IntoWindow, Padding};
use super::{expect_shape, BackwardContext, Buffers, ForwardContext, Layer};
use crate::error::{Error, Result};
use crate::kernels::{values, values_mut};
use crate::saving::LayerConfig;
use crate::shape::Shape;

/// Values per batch above which pooling runs in parallel over samples.
const PAR_MIN_VALUES: usize = 1 << 14;
/// Samples up to this many values keep max pooling's argmax as exact f32
/// indices in training; larger ones find it again in backward.
const ARG_LIMIT: usize = 1 << 24;

/// Max or average.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PoolKind {
    Max,
    Average,
}

/// The shared core of the four windowed poolings.
#[derive(Debug, Clone)]
pub(crate) struct Pool {
    pub(crate) kind: PoolKind,
    pub(crate) rank: usize,
    pub(crate) pool_size: [usize; 2],
    /// Keras: `strides=None` means the pool size.
    pub(crate) strides: Option<[usize; 2]>,
    pub(crate) padding: Padding,
    pub(crate) geo: Geometry,
}

impl Pool {
    fn new(kind: PoolKind, rank: usize, pool_size: [usize; 2]) -> Self {
        Pool {
            kind,
            rank,
            pool_size,
            strides: None,
            padding: Padding::Valid,
            geo: Geometry::default(),
        }
    }

    fn class(&self) -> &'static str {
        match (self.kind, self.rank) {
            (PoolKind::Max, 1) => "MaxPooling1D",
            (PoolKind::Max, _) => "MaxPooling2D",
            (PoolKind::Average, 1) => "AveragePooling1D",
            (PoolKind::Average, _) => "AveragePooling2D",
        }
    }

    fn strides(&self) -> [usize; 2] {
        self.strides.unwrap_or(self.pool_size)
    }

    fn build(&mut self, input: &Shape) -> Result<Shape> {
        let class = self.class();
        check_window("pool_size", &self.pool_size)?;
        check_window("strides", &self.strides())?;
        if self.padding == Padding::Causal {
            return Err(Error::arg("padding", "\"valid\" or \"same\"", "causal"));
        }
        let [h, w, c] = spatial_dims(class, input, self.rank)?;
        let [sh, sw] = self.strides();
        let rows = Axis1::new(h, self.pool_size[0], sh, 1, self.padding);
        let cols = Axis1::new(w, self.pool_size[1], sw, 1, self.padding);
        let (Some(rows), Some(cols)) = (rows, cols) else {
            return Err(window_error(
                class,
                "pool_size",
                &self.window_dims(),
                self.padding,
                "the pool size",
                input,
            ));
        };
        self.geo = Geometry {
            rows,
            cols,
            channels: c,
        };
        Ok(if self.rank == 1 {
            Shape::new(&[cols.output, c])
        } else {
            Shape::new(&[rows.output, cols.output, c])
        })
    }

    fn window_dims(&self) -> Vec<usize> {
        if self.rank == 1 {
            vec![self.pool_size[1]]
        } else {
            self.pool_size.to_vec()
        }
    }

    /// Pools one sample. For max pooling in training, `arg` receives, for
    /// each output, the index of the first value of the input cell that won
    /// (within the sample, as an exact f32: indices stay below 2^24, see
    /// [`ARG_LIMIT`]), so that backward is a plain scatter.
    fn pool(&self, x: &[f32], y: &mut [f32], arg: Option<&mut [f32]>) {
        #[cfg(target_arch = "x86_64")]
        {
            if self.kind == PoolKind::Max
                && self.geo.channels % 8 == 0
                && crate::kernels::avx2_available()
            {
                // SAFETY: `avx2_available` checked AVX2; `max_pool` checks the
                // lengths against the geometry itself.
                unsafe { avx2::max_pool(&self.geo, x, y, arg) };
                return;
            }
        }
        self.pool_body(x, y, arg);
    }

    /// [`Pool::pool`] in portable code (and for average pooling).
    fn pool_body(&self, x: &[f32], y: &mut [f32], mut arg: Option<&mut [f32]>) {
        let g = &self.geo;
        let c = g.channels;
        for oy in 0..g.rows.output {
            let (y0, y1) = g.rows.window_range(oy);
            for ox in 0..g.cols.output {
                let (x0, x1) = g.cols.window_range(ox);
                let at = (oy * g.cols.output + ox) * c;
                let out = &mut y[at..at + c];
                match (self.kind, arg.as_deref_mut()) {
                    (PoolKind::Max, None) => {
                        out.fill(f32::NEG_INFINITY);
                        for iy in y0..y1 {
                            let row =
                                &x[(iy * g.cols.input + x0) * c..(iy * g.cols.input + x1) * c];
                            for src in row.chunks_exact(c) {
                                for (o, &v) in out.iter_mut().zip(src) {
                                    // A NaN wins and stays: the window reports it.
                                    *o = if (v > *o) | v.is_nan() { v } else { *o };
                                }
                            }
                        }
                    }
                    (PoolKind::Max, Some(arg)) => {
                        let arg = &mut arg[at..at + c];
                        out.fill(f32::NEG_INFINITY);
                        // Windows without padding always hold a cell: start at the first.
                        arg.fill(((y0 * g.cols.input + x0) * c) as f32);
                        for iy in y0..y1 {
                            for ix in x0..x1 {
                                let base = (iy * g.cols.input + ix) * c;
                                let src = &x[base..base + c];
                                // The cell's first value: backward adds the channel.
                                let cell = base as f32;
                                for ((o, a), &v) in out.iter_mut().zip(arg.iter_mut()).zip(src) {
                                    // The first maximum (or first NaN) wins;
                                    // selects, not branches, so it vectorizes.
                                    let take = (v > *o) | (v.is_nan() & !o.is_nan());
                                    // A blend by bit masks: the compiler turns
                                    // `if take` into branches here.
                                    let keep = (take as u32).wrapping_neg();
                                    *o = f32::from_bits(
                                        (v.to_bits() & keep) | (o.to_bits() & !keep),
                                    );
                                    *a = f32::from_bits(
                                        (cell.to_bits() & keep) | (a.to_bits() & !keep),
                                    );
                                }
                            }
                        }
                    }
                    (PoolKind::Average, _) => {
                        out.fill(0.0);
                        for iy in y0..y1 {
                            let row =
                                &x[(iy * g.cols.input + x0) * c..(iy * g.cols.input + x1) * c];
                            for src in row.chunks_exact(c) {
                                for (o, &v) in out.iter_mut().zip(src) {
                                    *o += v;
                                }
                            }
                        }
                        // `same` averaging counts only the real cells, as Keras.
                        let inv = 1.0 / ((y1 - y0) * (x1 - x0)).max(1) as f32;
                        out.iter_mut().for_each(|o| *o *= inv);
                    }
                }
            }
        }
    }

    /// Routes one sample's output gradient to its input (overwrites `dx`).
    /// Max pooling sends each gradient to the window's first maximal cell in
    /// row-major order.
    fn unpool(&self, x: &[f32], y: &[f32], dy: &[f32], dx: &mut [f32]) {
        let g = &self.geo;
        let c = g.channels;
        dx.fill(0.0);
        for oy in 0..g.rows.output {
            let (y0, y1) = g.rows.window_range(oy);
            for ox in 0..g.cols.output {
                let (x0, x1) = g.cols.window_range(ox);
                let o = (oy * g.cols.output + ox) * c;
                match self.kind {
                    PoolKind::Max => {
                        for ch in 0..c {
                            let m = y[o + ch];
                            'window: for iy in y0..y1 {
                                for ix in x0..x1 {
                                    let i = (iy * g.cols.input + ix) * c + ch;
                                    let v = x[i];
                                    if v == m || (v.is_nan() && m.is_nan()) {
                                        dx[i] += dy[o + ch];
                                        break 'window;
                                    }
                                }
                            }
                        }
                    }
                    PoolKind::Average => {
                        let inv = 1.0 / ((y1 - y0) * (x1 - x0)).max(1) as f32;
                        for iy in y0..y1 {
                            for ix in x0..x1 {
                                let i = (iy * g.cols.input + ix) * c;
                                for (d, &v) in dx[i..i + c].iter_mut().zip(&dy[o..o + c]) {
                                    *d += v * inv;
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Whether no input cell is in two windows (strides equal to the pool
    /// size, `valid` padding: Keras' defaults).
    fn disjoint_windows(&self) -> bool {
        self.padding == Padding::Valid && self.strides() == self.pool_size
    }

    /// Max pooling's backward for one sample when the windows are disjoint:
    /// each window cell gets its output's gradient if it is the cell that won
    /// (`arg`, from the forward pass) and 0 otherwise, written once, in
    /// order, with no scatter and no zeroing pass (only the cells that no
    /// window covers are zeroed).
    fn route_disjoint(&self, arg: &[f32], dy: &[f32], dx: &mut [f32]) {
        let g = &self.geo;
        let c = g.channels;
        if g.rows.output * g.rows.stride < g.rows.input
            || g.cols.output * g.cols.stride < g.cols.input
        {
            dx.fill(0.0);
        }
        for oy in 0..g.rows.output {
            let (y0, y1) = g.rows.window_range(oy);
            for ox in 0..g.cols.output {
                let (x0, x1) = g.cols.window_range(ox);
                let at = (oy * g.cols.output + ox) * c;
                let (won, grad) = (&arg[at..at + c], &dy[at..at + c]);
                for iy in y0..y1 {
                    for ix in x0..x1 {
                        let base = (iy * g.cols.input + ix) * c;
                        let cell = base as f32;
                        for ((t, &w), &d) in dx[base..base + c].iter_mut().zip(won).zip(grad) {
                            *t = if w == cell { d } else { 0.0 };
                        }
                    }
                }
            }
        }
    }

    fn out_size(&self) -> usize {
        self.geo.positions() * self.geo.channels
    }

    /// Whether training keeps max pooling's argmax in `aux`.
    fn keeps_argmax(&self, training: bool) -> bool {
        training && self.kind == PoolKind::Max && self.geo.in_size() < ARG_LIMIT
    }

    fn buffers(&self, training: bool) -> Buffers {
        Buffers {
            aux: if self.keeps_argmax(training) {
                self.out_size()
            } else {
                0
            },
            ..Buffers::default()
        }
    }

    fn forward(
        &self,
        x: ArrayView2<f32>,
        mut y: ArrayViewMut2<f32>,
        mut aux: ArrayViewMut2<f32>,
        training: bool,
    ) {
        let (class, n) = (self.class(), x.nrows());
        let (is, os) = (self.geo.in_size(), self.out_size());
        expect_shape(class, "x", x.shape(), &[n, is]);
        expect_shape(class, "y", y.shape(), &[n, os]);
        let (x, y) = (values(x), values_mut(y.view_mut()));
        if self.keeps_argmax(training) {
            expect_shape(class, "aux", aux.shape(), &[n, os]);
            let arg = values_mut(aux.view_mut());
            if x.len() >= PAR_MIN_VALUES {
                y.par_chunks_mut(os)
                    .zip(arg.par_chunks_mut(os))
                    .zip(x.par_chunks(is))
                    .for_each(|((y, a), x)| self.pool(x, y, Some(a)));
            } else {
                y.chunks_mut(os)
                    .zip(arg.chunks_mut(os))
                    .zip(x.chunks(is))
                    .for_each(|((y, a), x)| self.pool(x, y, Some(a)));
            }
        } else if x.len() >= PAR_MIN_VALUES {
            y.par_chunks_mut(os)
                .zip(x.par_chunks(is))
                .for_each(|(y, x)| self.pool(x, y, None));
        } else {
            y.chunks_mut(os)
                .zip(x.chunks(is))
                .for_each(|(y, x)| self.pool(x, y, None));
        }
    }

    fn backward(
        &self,
        x: ArrayView2<f32>,
        y: ArrayView2<f32>,
        aux: ArrayView2<f32>,
        dy: ArrayViewMut2<f32>,
        dx: Option<ArrayViewMut2<f32>>,
    ) {
        let Some(dx) = dx else { return };
        let (class, n) = (self.class(), x.nrows());
        let (is, os) = (self.geo.in_size(), self.out_size());
        expect_shape(class, "x", x.shape(), &[n, is]);
        expect_shape(class, "y", y.shape(), &[n, os]);
        expect_shape(class, "dy", dy.shape(), &[n, os]);
        expect_shape(class, "dx", dx.shape(), &[n, is]);
        let (x, y, dy, dx) = (values(x), values(y), values(dy.view()), values_mut(dx));
        if self.kind == PoolKind::Max && aux.shape() == [n, os] {
            // The forward pass kept each output's source: scatter.
            let arg = values(aux);
            let c = self.geo.channels;
            let disjoint = self.disjoint_windows();
            let scatter = |(dx, (a, g)): (&mut [f32], (&[f32], &[f32]))| {
                if disjoint {
                    self.route_disjoint(a, g, dx);
                    return;
                }
                dx.fill(0.0);
                for (cells, grads) in a.chunks_exact(c).zip(g.chunks_exact(c)) {
                    for (ch, (&cell, &d)) in cells.iter().zip(grads).enumerate() {
                        // `pool` wrote the first index of the winning cell;
                        // the channel is the output's. `get_mut` keeps a
                        // hand-made aux from writing elsewhere.
                        if let Some(t) = dx.get_mut(cell as usize + ch) {
                            *t += d;
                        }
                    }
                }
            };
            if dx.len() >= PAR_MIN_VALUES {
                dx.par_chunks_mut(is)
                    .zip(arg.par_chunks(os).zip(dy.par_chunks(os)))
                    .for_each(scatter);
            } else {
                dx.chunks_mut(is)
                    .zip(arg.chunks(os).zip(dy.chunks(os)))
                    .for_each(scatter);
            }
            return;
        }
        if dx.len() >= PAR_MIN_VALUES {
            dx.par_chunks_mut(is)
                .zip(x.par_chunks(is))
                .zip(y.par_chunks(os).zip(dy.par_chunks(os)))
                .for_each(|((dx, x), (y, dy))| self.unpool(x, y, dy, dx));
        } else {
            dx.chunks_mut(is)
                .zip(x.chunks(is))
                .zip(y.chunks(os).zip(dy.chunks(os)))
                .for_each(|((dx, x), (y, dy))| self.unpool(x, y, dy, dx));
        }
    }

    pub(crate) fn config(&self) -> PoolConfig {
        let one = |v: [usize; 2]| {
            if self.rank == 1 {
                vec![v[1]]
            } else {
                v.to_vec()
            }
        };
        PoolConfig {
            pool_size: one(self.pool_size),
            strides: one(self.strides()),
            padding: self.padding,
        }
    }
}

/// A pooling layer's configuration as stored in model files.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PoolConfig {
    /// Window per spatial axis.
    pub pool_size: Vec<usize>,
    /// Step per spatial axis.
    pub strides: Vec<usize>,
    /// Border handling.
    pub padding: Padding,
}

impl PoolConfig {
    pub(crate) fn layer(&self, kind: PoolKind, rank: usize) -> Result<Pool> {
        let pair = |name: &str, v: &[usize]| -> Result<[usize; 2]> {
            match (rank, v) {
                (1, [a]) => Ok([1, *a]),
                (2, [a, b]) => Ok([*a, *b]),
                _ => Err(Error::arg(name, format!("{rank} values"), format!("{v:?}"))),
            }
        };
        let mut p = Pool::new(kind, rank, pair("pool_size", &self.pool_size)?);
        p.strides = Some(pair("strides", &self.strides)?);
        p.padding = self.padding;
        Ok(p)
    }
}

macro_rules! pool_layer {
    ($name:ident, $kind:expr, $rank:literal, $config:path, $doc:literal, $example:literal) => {
        #[doc = $doc]
        ///
        /// Keras defaults: `strides` equal to `pool_size`, padding `valid`,
        /// `channels_last`.
        ///
        /// ```
        /// use horn::prelude::*;
        #[doc = $example]
        /// ```
        #[derive(Debug, Clone)]
        pub struct $name(pub(crate) Pool);

        impl $name {
            /// A pooling window of `pool_size` per spatial axis.
            pub fn new(pool_size: impl IntoWindow<$rank>) -> Self {
                let p = pool_size.into_window();
                $name(Pool::new(
                    $kind,
                    $rank,
                    if $rank == 1 {
                        [1, p[0]]
                    } else {
                        [p[0], p[$rank - 1]]
                    },
                ))
            }
            /// Step of the window (Keras default: the pool size).
            pub fn strides(mut self, strides: impl IntoWindow<$rank>) -> Self {
                let s = strides.into_window();
                self.0.strides = Some(if $rank == 1 {
                    [1, s[0]]
                } else {
                    [s[0], s[$rank - 1]]
                });
                self
            }
            /// Border handling (Keras default `valid`).
            pub fn padding(mut self, padding: Padding) -> Self {
                self.0.padding = padding;
                self
            }
        }

        impl Layer for $name {
            fn class_name(&self) -> &str {
                self.0.class()
            }
            fn build(&mut self, input: &Shape, _rng: &mut StdRng) -> Result<Shape> {
                self.0.build(input)
            }
            fn buffers(&self, _input: &Shape, training: bool) -> Buffers {
                self.0.buffers(training)
            }
            fn forward(
                &self,
                x: ArrayView2<f32>,
                y: ArrayViewMut2<f32>,
                aux: ArrayViewMut2<f32>,
                ctx: &mut ForwardContext<'_>,
            ) {
                self.0.forward(x, y, aux, ctx.training)
            }
            fn is_sample_local(&self) -> bool {
                true
            }
            fn selects_max(&self) -> bool {
                self.0.kind == PoolKind::Max
            }
            fn backward(
                &self,
                x: ArrayView2<f32>,
                y: ArrayView2<f32>,
                aux: ArrayView2<f32>,
                dy: ArrayViewMut2<f32>,
                dx: Option<ArrayViewMut2<f32>>,
                _grads: &mut [Vec<f32>],
                _ctx: &mut BackwardContext<'_>,
            ) {
                self.0.backward(x, y, aux, dy, dx)
            }
            fn config(&self) -> Option<LayerConfig> {
                Some($config(self.0.config()))
            }
        }
    };
}

pool_layer!(
    MaxPooling2D,
    PoolKind::Max,
    2,
    LayerConfig::MaxPooling2D,
    "The maximum of each window of `(height, width, channels)` samples, per channel (Keras `MaxPooling2D`).",
    "let m = Sequential::new().input_shape(&[26, 26, 32]).add(MaxPooling2D::new(2));\nassert_eq!(m.output_shape().unwrap().dims(), &[13, 13, 32]);"
);
pool_layer!(
    MaxPooling1D,
    PoolKind::Max,
    1,
    LayerConfig::MaxPooling1D,
    "The maximum of each window of `(steps, channels)` samples (Keras `MaxPooling1D`).",
    "let m = Sequential::new().input_shape(&[10, 4]).add(MaxPooling1D::new(2));\nassert_eq!(m.output_shape().unwrap().dims(), &[5, 4]);"
);
pool_layer!(
    AveragePooling2D,
    PoolKind::Average,
    2,
    LayerConfig::AveragePooling2D,
    "The mean of each window (Keras `AveragePooling2D`); with `same` padding only the cells inside the input are counted, as in Keras.",
    "let m = Sequential::new().input_shape(&[7, 7, 3]).add(AveragePooling2D::new(2).padding(Padding::Same));\nassert_eq!(m.output_shape().unwrap().dims(), &[4, 4, 3]);"
);
pool_layer!(
    AveragePooling1D,
    PoolKind::Average,
    1,
    LayerConfig::AveragePooling1D,
    "The mean of each window of steps (Keras `AveragePooling1D`).",
    "let m = Sequential::new().input_shape(&[9, 2]).add(AveragePooling1D::new(3));\nassert_eq!(m.output_shape().unwrap().dims(), &[3, 2]);"
);

/// The shared core of the global poolings: one value per channel.
#[derive(Debug, Clone)]
pub(crate) struct GlobalPool {
    kind: PoolKind,
    rank: usize,
    positions: usize,
    channels: usize,
}

impl GlobalPool {
    fn class(&self) -> &'static str {
        match (self.kind, self.rank) {
            (PoolKind::Max, 1) => "GlobalMaxPooling1D",
            (PoolKind::Max, _) => "GlobalMaxPooling2D",
            (PoolKind::Average, 1) => "GlobalAveragePooling1D",
            (PoolKind::Average, _) => "GlobalAveragePooling2D",
        }
    }

    fn build(&mut self, input: &Shape) -> Result<Shape> {
        let [h, w, c] = spatial_dims(self.class(), input, self.rank)?;
        self.positions = h * w;
        self.channels = c;
        Ok(Shape::new(&[c]))
    }

    /// The step mask of a masked average (Keras: `GlobalAveragePooling1D`
    /// averages the unmasked steps only), `rows x positions`.
    fn step_mask<'a>(&self, mask: Option<&'a [f32]>, n: usize) -> Option<&'a [f32]> {
        mask.filter(|m| {
            self.kind == PoolKind::Average && self.rank == 1 && m.len() >= n * self.positions
        })
    }

    fn forward(&self, x: ArrayView2<f32>, mut y: ArrayViewMut2<f32>, mask: Option<&[f32]>) {
        let (class, n, c) = (self.class(), x.nrows(), self.channels);
        expect_shape(class, "x", x.shape(), &[n, self.positions * c]);
        expect_shape(class, "y", y.shape(), &[n, c]);
        let inv = 1.0 / self.positions as f32;
        if let Some(mask) = self.step_mask(mask, n) {
            // The mean of the unmasked steps (NaN when all are masked, as in Keras).
            for ((xs, ys), m) in values(x)
                .chunks(self.positions * c)
                .zip(values_mut(y.view_mut()).chunks_mut(c))
                .zip(mask.chunks(self.positions))
            {
                ys.fill(0.0);
                for (cell, &mv) in xs.chunks(c).zip(m) {
                    for (o, &v) in ys.iter_mut().zip(cell) {
                        *o += v * mv;
                    }
                }
                let count: f32 = m.iter().sum();
                ys.iter_mut().for_each(|o| *o /= count);
            }
            return;
        }
        for (xs, ys) in values(x)
            .chunks(self.positions * c)
            .zip(values_mut(y.view_mut()).chunks_mut(c))
        {
            match self.kind {
                PoolKind::Max => {
                    ys.fill(f32::NEG_INFINITY);
                    for cell in xs.chunks(c) {
                        for (o, &v) in ys.iter_mut().zip(cell) {
                            if v > *o || v.is_nan() {
                                *o = v;
                            }
                        }
                    }
                }
                PoolKind::Average => {
                    ys.fill(0.0);
                    for cell in xs.chunks(c) {
                        for (o, &v) in ys.iter_mut().zip(cell) {
                            *o += v;
                        }
                    }
                    ys.iter_mut().for_each(|o| *o *= inv);
                }
            }
        }
    }

    fn backward(
        &self,
        x: ArrayView2<f32>,
        y: ArrayView2<f32>,
        dy: ArrayViewMut2<f32>,
        dx: Option<ArrayViewMut2<f32>>,
        mask: Option<&[f32]>,
    ) {
        let Some(dx) = dx else { return };
        let (class, n, c) = (self.class(), x.nrows(), self.channels);
        expect_shape(class, "x", x.shape(), &[n, self.positions * c]);
        expect_shape(class, "y", y.shape(), &[n, c]);
        expect_shape(class, "dy", dy.shape(), &[n, c]);
        expect_shape(class, "dx", dx.shape(), x.shape());
        let inv = 1.0 / self.positions as f32;
        let size = self.positions * c;
        if let Some(mask) = self.step_mask(mask, n) {
            for ((dxs, dys), m) in values_mut(dx)
                .chunks_mut(size)
                .zip(values(dy.view()).chunks(c))
                .zip(mask.chunks(self.positions))
            {
                let count: f32 = m.iter().sum();
                for (cell, &mv) in dxs.chunks_mut(c).zip(m) {
                    for (d, &g) in cell.iter_mut().zip(dys) {
                        *d = g * mv / count;
                    }
                }
            }
            return;
        }
        for (((dxs, xs), ys), dys) in values_mut(dx)
            .chunks_mut(size)
            .zip(values(x).chunks(size))
            .zip(values(y).chunks(c))
            .zip(values(dy.view()).chunks(c))
        {
            match self.kind {
                PoolKind::Average => {
                    for cell in dxs.chunks_mut(c) {
                        for (d, &g) in cell.iter_mut().zip(dys) {
                            *d = g * inv;
                        }
                    }
                }
                PoolKind::Max => {
                    dxs.fill(0.0);
                    for ch in 0..c {
                        let m = ys[ch];
                        if let Some(p) = (0..self.positions).find(|&p| {
                            let v = xs[p * c + ch];
                            v == m || (v.is_nan() && m.is_nan())
                        }) {
                            dxs[p * c + ch] = dys[ch];
                        }
                    }
                }
            }
        }
    }
}

macro_rules! global_pool_layer {
    ($name:ident, $kind:expr, $rank:literal, $config:path, $doc:literal, $example:literal) => {
        #[doc = $doc]
        ///
        /// ```
        /// use horn::prelude::*;
        #[doc = $example]
        /// ```
        #[derive(Debug, Clone)]
        pub struct $name(pub(crate) GlobalPool);

        impl $name {
            /// The layer (no options: `channels_last`, `keepdims` false).
            pub fn new() -> Self {
                $name(GlobalPool {
                    kind: $kind,
                    rank: $rank,
                    positions: 0,
                    channels: 0,
                })
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl Layer for $name {
            fn class_name(&self) -> &str {
                self.0.class()
            }
            fn build(&mut self, input: &Shape, _rng: &mut StdRng) -> Result<Shape> {
                self.0.build(input)
            }
            fn forward(
                &self,
                x: ArrayView2<f32>,
                y: ArrayViewMut2<f32>,
                _aux: ArrayViewMut2<f32>,
                ctx: &mut ForwardContext<'_>,
            ) {
                self.0.forward(x, y, ctx.mask)
            }
            fn backward(
                &self,
                x: ArrayView2<f32>,
                y: ArrayView2<f32>,
                _aux: ArrayView2<f32>,
                dy: ArrayViewMut2<f32>,
                dx: Option<ArrayViewMut2<f32>>,
                _grads: &mut [Vec<f32>],
                ctx: &mut BackwardContext<'_>,
            ) {
                self.0.backward(x, y, dy, dx, ctx.mask)
            }
            fn config(&self) -> Option<LayerConfig> {
                Some($config)
            }
        }
    };
}

global_pool_layer!(
    GlobalAveragePooling2D,
    PoolKind::Average,
    2,
    LayerConfig::GlobalAveragePooling2D,
    "The mean over all positions of `(height, width, channels)` samples, per channel (Keras `GlobalAveragePooling2D`).",
    "let m = Sequential::new().input_shape(&[5, 5, 8]).add(GlobalAveragePooling2D::new());\nassert_eq!(m.output_shape().unwrap().dims(), &[8]);"
);
global_pool_layer!(
    GlobalMaxPooling2D,
    PoolKind::Max,
    2,
    LayerConfig::GlobalMaxPooling2D,
    "The maximum over all positions, per channel (Keras `GlobalMaxPooling2D`).",
    "let m = Sequential::new().input_shape(&[5, 5, 8]).add(GlobalMaxPooling2D::new());\nassert_eq!(m.output_shape().unwrap().dims(), &[8]);"
);
global_pool_layer!(
    GlobalAveragePooling1D,
    PoolKind::Average,
    1,
    LayerConfig::GlobalAveragePooling1D,
    "The mean over all steps of `(steps, channels)` samples (Keras `GlobalAveragePooling1D`).",
    "let m = Sequential::new().input_shape(&[20, 4]).add(GlobalAveragePooling1D::new());\nassert_eq!(m.output_shape().unwrap().dims(), &[4]);"
);
global_pool_layer!(
    GlobalMaxPooling1D,
    PoolKind::Max,
    1,
    LayerConfig::GlobalMaxPooling1D,
    "The maximum over all steps (Keras `GlobalMaxPooling1D`).",
    "let m = Sequential::new().input_shape(&[20, 4]).add(GlobalMaxPooling1D::new());\nassert_eq!(m.output_shape().unwrap().dims(), &[4]);"
);

/// Max pooling eight channels at a time. The crate is built for baseline
/// x86-64, where the portable loop's selects run four lanes wide (and, built
/// for AVX2 by the compiler alone, it came out three times slower: the
/// bit-mask blend was not vectorized). Same selects, same bits.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::Geometry;

    /// One sample of max pooling (see `Pool::pool`), for channels in
    /// multiples of 8.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    ///
    /// # Panics
    /// When `x`, `y` or `arg` is shorter than the geometry says, or the
    /// channels are not a multiple of 8.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn max_pool(g: &Geometry, x: &[f32], y: &mut [f32], arg: Option<&mut [f32]>) {
        let c = g.channels;
        let out = g.positions() * c;
        assert!(
            c % 8 == 0
                && x.len() >= g.in_size()
                && y.len() >= out
                && arg.as_ref().is_none_or(|a| a.len() >= out),
            "max pooling: buffers shorter than the geometry"
        );
        let (xp, yp) = (x.as_ptr(), y.as_mut_ptr());
        let ap = arg.map(|a| a.as_mut_ptr());
        for oy in 0..g.rows.output {
            let (y0, y1) = g.rows.window_range(oy);
            for ox in 0..g.cols.output {
                let (x0, x1) = g.cols.window_range(ox);
                let at = (oy * g.cols.output + ox) * c;
                // Windows without padding always hold a cell: start at the first.
                let first = _mm256_set1_ps(((y0 * g.cols.input + x0) * c) as f32);
                for ch in (0..c).step_by(8) {
                    // SAFETY: window cells lie inside the input (`window_range`),
                    // `ch + 8 <= c`, and `at + ch + 8 <= out`: all inside the
                    // lengths asserted above.
                    unsafe {
                        let mut o = _mm256_set1_ps(f32::NEG_INFINITY);
                        let mut a = first;
                        for iy in y0..y1 {
                            for ix in x0..x1 {
                                let base = (iy * g.cols.input + ix) * c;
                                let v = _mm256_loadu_ps(xp.add(base + ch));
                                let nan_v = _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v);
                                let gt = _mm256_cmp_ps::<_CMP_GT_OQ>(v, o);
                                let take = if ap.is_some() {
                                    // The first maximum, or the first NaN.
                                    let nan_o = _mm256_cmp_ps::<_CMP_UNORD_Q>(o, o);
                                    _mm256_or_ps(gt, _mm256_andnot_ps(nan_o, nan_v))
                                } else {
                                    // A NaN wins and stays: the window reports it.
                                    _mm256_or_ps(gt, nan_v)
                                };
                                o = _mm256_blendv_ps(o, v, take);
                                a = _mm256_blendv_ps(a, _mm256_set1_ps(base as f32), take);
                            }
                        }
                        _mm256_storeu_ps(yp.add(at + ch), o);
                        if let Some(ap) = ap {
                            _mm256_storeu_ps(ap.add(at + ch), a);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 path and the portable one give the same bits, NaNs and ties
    /// included, with and without the argmax, for valid and same padding.
    #[test]
    fn max_pooling_has_the_same_bits_on_both_paths() {
        for (padding, stride) in [(Padding::Valid, 2), (Padding::Same, 2), (Padding::Valid, 1)] {
            let mut pool = Pool::new(PoolKind::Max, 2, [3, 3]);
            pool.strides = Some([stride, stride]);
            pool.padding = padding;
            pool.build(&Shape::new(&[7, 9, 16])).unwrap();
            let mut x: Vec<f32> = (0..7 * 9 * 16)
                .map(|i| ((i * 37) % 11) as f32 - 5.0)
                .collect();
            x[20] = f32::NAN;
            x[300] = f32::NAN;
            let out = pool.out_size();
            for with_arg in [false, true] {
                let (mut y1, mut a1) = (vec![0.0; out], vec![0.0; out]);
                let (mut y2, mut a2) = (vec![0.0; out], vec![0.0; out]);
                pool.pool(&x, &mut y1, with_arg.then_some(&mut a1[..]));
                pool.pool_body(&x, &mut y2, with_arg.then_some(&mut a2[..]));
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&y1),
                    bits(&y2),
                    "{padding:?} stride {stride} arg {with_arg}"
                );
                assert_eq!(
                    bits(&a1),
                    bits(&a2),
                    "{padding:?} stride {stride} arg {with_arg}"
                );
                assert!(y1.iter().any(|v| v.is_nan()));
            }
        }
    }
}
