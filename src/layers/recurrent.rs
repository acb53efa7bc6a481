//! Recurrent layers: `SimpleRNN`, `LSTM`, `GRU` and the `Bidirectional`
//! wrapper, with Keras 3's formulas, defaults and weight layouts.
//!
//! # One training step, as data flows
//! A batch of `n` sequences arrives as rows of `steps * features` values. The
//! batch is cut into fixed blocks of [`BLOCK_ROWS`] sequences; the sequences
//! of a block are independent of every other block's, so each block runs its
//! whole recurrence on one thread, in parallel with the others (one parallel
//! region per layer and pass, not one per time step). Within a block:
//!
//! 1. the input projection of all time steps is one matrix product,
//!    `x (rows*steps x features) @ kernel`, into the block's gate buffer;
//! 2. each step multiplies the previous state by the recurrent kernel
//!    (`h (rows x units) @ recurrent_kernel`) and runs one fused pass over the
//!    gates: bias, activations, the new carry and state;
//! 3. backward walks the steps in reverse with one fused pass per step that
//!    writes the gradient of every gate's pre-activation (`dz`), then one
//!    product `dz @ recurrent_kernel^T` for the previous state's gradient;
//! 4. the weight gradients of the whole block are three products over all its
//!    steps at once (`x^T dz`, `h_prev^T dz`, and the column sums of `dz`),
//!    and the input gradient is one product `dz @ kernel^T`.
//!
//! The per-block weight gradients are added in block order, and the blocks
//! depend only on the batch size, so a seeded `fit` gives the same bits for
//! any number of threads. Everything a step keeps for the backward pass (gate
//! activations, previous states, carries) lives in the layer's `aux` buffer of
//! the model's workspace, and the backward pass's `dz` in scratch: no step
//! allocates.

use ndarray::{s, ArrayView2, ArrayViewMut2};
use rand::rngs::StdRng;
use rand::Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{
    expect_grads, expect_shape, BackwardContext, Buffers, ForwardContext, Layer, ParamView,
};
use crate::activations::Activation;
use crate::error::{Error, Result};
use crate::initializers::Initializer;
use crate::kernels::{
    gemm_packed, gemm_serial, matrix, matrix_mut, pack_b, packed_b_len, values, values_mut, PackedB,
};
use crate::regularizers::Regularizer;
use crate::saving::LayerConfig;
use crate::shape::Shape;
use crate::vmath;

/// Sequences per block of the parallel split (fixed, so results do not
/// depend on the number of threads).
const BLOCK_ROWS: usize = 16;

/// The cell a recurrent layer runs at each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CellKind {
    /// `h = act(x W + h R + b)`.
    SimpleRnn,
    /// Gates i, f, c, o.
    Lstm,
    /// Gates z, r, h, `reset_after=True`.
    Gru,
}

impl CellKind {
    fn gates(self) -> usize {
        match self {
            CellKind::SimpleRnn => 1,
            CellKind::Lstm => 4,
            CellKind::Gru => 3,
        }
    }

    fn class_name(self) -> &'static str {
        match self {
            CellKind::SimpleRnn => "SimpleRNN",
            CellKind::Lstm => "LSTM",
            CellKind::Gru => "GRU",
        }
    }
}

/// Where a recurrent layer sits: alone, or as one direction of a
/// [`Bidirectional`] (which changes its Keras weight names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Alone,
    Forward,
    Backward,
}

/// Keras' weight names, `<cell>/kernel` and so on, as seen from the layer
/// that holds them (`lstm/lstm_cell/kernel` in a file).
fn param_names(kind: CellKind, dir: Direction) -> [&'static str; 3] {
    /// `<prefix><cell>/kernel`, `.../recurrent_kernel`, `.../bias`.
    macro_rules! names {
        ($prefix:literal, $cell:literal) => {
            [
                concat!($prefix, $cell, "/kernel"),
                concat!($prefix, $cell, "/recurrent_kernel"),
                concat!($prefix, $cell, "/bias"),
            ]
        };
    }
    use CellKind::*;
    use Direction::*;
    match (kind, dir) {
        (SimpleRnn, Alone) => names!("", "simple_rnn_cell"),
        (Lstm, Alone) => names!("", "lstm_cell"),
        (Gru, Alone) => names!("", "gru_cell"),
        (SimpleRnn, Forward) => names!("forward_simple_rnn/", "simple_rnn_cell"),
        (Lstm, Forward) => names!("forward_lstm/", "lstm_cell"),
        (Gru, Forward) => names!("forward_gru/", "gru_cell"),
        (SimpleRnn, Backward) => names!("backward_simple_rnn/", "simple_rnn_cell"),
        (Lstm, Backward) => names!("backward_lstm/", "lstm_cell"),
        (Gru, Backward) => names!("backward_gru/", "gru_cell"),
    }
}

/// The weight names and shapes of a recurrent layer of class `class` on
/// `input`, from its configuration alone (model files check the file's
/// tensors against them before anything is built). `bidirectional` gives
/// both directions' weights, as [`Bidirectional`] holds them.
pub(crate) fn recurrent_weight_shapes(
    class: &str,
    cfg: &RecurrentConfig,
    input: &Shape,
    bidirectional: bool,
) -> Result<Vec<(&'static str, Vec<usize>)>> {
    let kind = match class {
        "SimpleRNN" => CellKind::SimpleRnn,
        "LSTM" => CellKind::Lstm,
        "GRU" => CellKind::Gru,
        other => {
            return Err(Error::UnknownName {
                kind: "recurrent layer",
                name: other.into(),
                known: "SimpleRNN, LSTM, GRU".into(),
            })
        }
    };
    cfg.validate(class)?;
    let shapes = Rnn::weight_shapes(kind, cfg, input)?;
    let dirs: &[Direction] = if bidirectional {
        &[Direction::Forward, Direction::Backward]
    } else {
        &[Direction::Alone]
    };
    let mut out = Vec::new();
    for &d in dirs {
        let names = param_names(kind, d);
        for (k, (name, shape)) in names.iter().zip(&shapes).enumerate() {
            if k < 2 || cfg.use_bias {
                out.push((*name, shape.clone()));
            }
        }
    }
    Ok(out)
}

/// The options of a recurrent layer, as saved in model files (Keras'
/// `get_config()` keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecurrentConfig {
    /// Width of the state and the output.
    pub units: usize,
    /// Output activation (Keras default `tanh`).
    pub activation: Activation,
    /// Gate activation of LSTM and GRU (Keras default `sigmoid`; unused by
    /// SimpleRNN).
    pub recurrent_activation: Activation,
    /// Whether the cell has a bias.
    pub use_bias: bool,
    /// Return the state of every step `(steps, units)`, not only the last.
    pub return_sequences: bool,
    /// Process the sequence from its last step to its first (and return the
    /// steps in that order, as Keras does).
    pub go_backwards: bool,
    /// Fraction of the input features dropped in training, one mask per
    /// sequence for all its steps (Keras' `dropout`).
    pub dropout: f32,
    /// LSTM: start the forget gate's bias at 1 (Keras default true).
    pub unit_forget_bias: bool,
    /// Initializer of `kernel` (Keras default Glorot uniform).
    pub kernel_initializer: Initializer,
    /// Initializer of `recurrent_kernel` (Keras default orthogonal).
    pub recurrent_initializer: Initializer,
    /// Initializer of `bias` (Keras default zeros).
    pub bias_initializer: Initializer,
    /// Penalty on `kernel`.
    pub kernel_regularizer: Option<Regularizer>,
    /// Penalty on `recurrent_kernel`.
    pub recurrent_regularizer: Option<Regularizer>,
    /// Penalty on `bias`.
    pub bias_regularizer: Option<Regularizer>,
}

impl RecurrentConfig {
    fn new(units: usize) -> Self {
        RecurrentConfig {
            units,
            activation: Activation::Tanh,
            recurrent_activation: Activation::Sigmoid,
            use_bias: true,
            return_sequences: false,
            go_backwards: false,
            dropout: 0.0,
            unit_forget_bias: true,
            kernel_initializer: Initializer::GlorotUniform,
            recurrent_initializer: Initializer::Orthogonal { gain: 1.0 },
            bias_initializer: Initializer::Zeros,
            kernel_regularizer: None,
            recurrent_regularizer: None,
            bias_regularizer: None,
        }
    }

    /// Checks every option, naming the one that is wrong.
    pub(crate) fn validate(&self, class: &str) -> Result<()> {
        if self.units == 0 {
            return Err(Error::arg("units", "a positive integer", self.units));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::arg("dropout", "a number in [0, 1)", self.dropout));
        }
        for (what, act) in [
            ("activation", self.activation),
            ("recurrent_activation", self.recurrent_activation),
        ] {
            act.validate()?;
            if !act.has_output_derivative() {
                return Err(Error::arg(
                    what,
                    format!(
                        "an activation {class} can differentiate from its output (tanh, sigmoid, relu, linear, \
                         hard_sigmoid, softsign, elu, relu6, exponential)"
                    ),
                    act.name(),
                ));
            }
        }
        self.kernel_initializer.validate()?;
        self.recurrent_initializer.validate()?;
        self.bias_initializer.validate()?;
        for r in [
            &self.kernel_regularizer,
            &self.recurrent_regularizer,
            &self.bias_regularizer,
        ]
        .into_iter()
        .flatten()
        {
            r.validate()?;
        }
        Ok(())
    }
}

/// Sizes of one batch block's pieces of `aux`, per sequence.
#[derive(Debug, Clone, Copy)]
struct Layout {
    steps: usize,
    features: usize,
    units: usize,
    /// Gates times units.
    gu: usize,
    /// Dropout mask (`features`) and masked inputs (`steps * features`).
    dropout: bool,
    kind: CellKind,
    /// Whether `aux` keeps every step for the backward pass (training), or
    /// only what the next step needs (inference: one slot of gates and
    /// state, two of carry).
    full: bool,
}

impl Layout {
    /// Values per sequence of each `aux` region: mask, masked inputs, gate
    /// activations, GRU's recurrent candidate, previous states, LSTM carries.
    fn aux_parts(&self) -> [usize; 6] {
        let (f, u) = (self.features, self.units);
        let (t, c) = (self.kept_steps(), self.kept_carries());
        let d = usize::from(self.dropout && self.full);
        [
            d * f,
            d * self.steps * f,
            t * self.gu,
            usize::from(self.kind == CellKind::Gru) * t * u,
            t * u,
            usize::from(self.kind == CellKind::Lstm) * c * u,
        ]
    }

    /// Steps of gates and states kept per sequence.
    fn kept_steps(&self) -> usize {
        if self.full {
            self.steps
        } else {
            1
        }
    }

    /// Carries kept per sequence (the initial one included).
    fn kept_carries(&self) -> usize {
        if self.full {
            self.steps + 1
        } else {
            2
        }
    }

    /// The slot of input time `tau` in the gate and state regions.
    fn slot(&self, tau: usize) -> usize {
        if self.full {
            tau
        } else {
            0
        }
    }

    /// The slot of the carry before processing step `s`.
    fn carry_slot(&self, s: usize) -> usize {
        if self.full {
            s
        } else {
            s % 2
        }
    }

    fn aux_width(&self) -> usize {
        self.aux_parts().iter().sum()
    }

    /// Scratch values per sequence: `dz`, GRU's recurrent `dz`, the state
    /// and carry gradients and spare values (the LSTM's `act(c)` and its
    /// derivative, GRU's direct state gradient). The forward pass keeps the
    /// step's recurrent product in the first, its new state in the third
    /// and its input projection in the last.
    fn scratch_parts(&self) -> [usize; 5] {
        let (t, u) = (self.steps, self.units);
        let gru = usize::from(self.kind == CellKind::Gru);
        [t * self.gu, gru * t * self.gu, u, u, self.gu + 3 * u]
    }

    fn scratch_width(&self) -> usize {
        self.scratch_parts().iter().sum()
    }

    fn bias_len(&self) -> usize {
        if self.kind == CellKind::Gru {
            2 * self.gu
        } else {
            self.gu
        }
    }

    /// Values of the recurrent kernel (or its transpose) packed once per
    /// pass for the per-step products.
    fn packed_len(&self) -> usize {
        (packed_b_len(self.units, self.gu) + packed_b_len(self.features, self.gu))
            .max(packed_b_len(self.gu, self.units))
    }

    /// Scratch of a pass over `n` sequences: per-sequence values, then each
    /// block's weight-gradient partials, then the packed recurrent kernel.
    fn scratch_len(&self, n: usize, use_bias: bool) -> usize {
        n * self.scratch_width()
            + n.div_ceil(BLOCK_ROWS) * self.partial_len(use_bias)
            + self.packed_len()
    }

    /// Values of one block's weight-gradient partials.
    fn partial_len(&self, use_bias: bool) -> usize {
        self.features * self.gu + self.units * self.gu + if use_bias { self.bias_len() } else { 0 }
    }
}

/// Splits `buf` into consecutive pieces of `rows * part` values.
fn carve<const N: usize>(mut buf: &mut [f32], rows: usize, parts: [usize; N]) -> [&mut [f32]; N] {
    let mut out: [&mut [f32]; N] = std::array::from_fn(|_| &mut [][..]);
    for (o, p) in out.iter_mut().zip(parts) {
        let (head, tail) = std::mem::take(&mut buf).split_at_mut(rows * p);
        *o = head;
        buf = tail;
    }
    out
}

/// Read-only [`carve`].
fn carve_ref<const N: usize>(mut buf: &[f32], rows: usize, parts: [usize; N]) -> [&[f32]; N] {
    let mut out: [&[f32]; N] = [&[]; N];
    for (o, p) in out.iter_mut().zip(parts) {
        let (head, tail) = buf.split_at(rows * p);
        *o = head;
        buf = tail;
    }
    out
}

/// The engine behind [`SimpleRNN`], [`LSTM`] and [`GRU`] and both
/// directions of [`Bidirectional`] (which takes any of the three through
/// `Into<Rnn>`).
#[derive(Debug, Clone)]
pub struct Rnn {
    kind: CellKind,
    dir: Direction,
    pub(crate) cfg: RecurrentConfig,
    steps: usize,
    features: usize,
    /// `(features, gates * units)`, row-major.
    kernel: Vec<f32>,
    /// `(units, gates * units)`.
    recurrent: Vec<f32>,
    /// `gates * units` (GRU: `(2, 3 * units)`, input bias then recurrent bias).
    bias: Vec<f32>,
}

impl Rnn {
    fn new(kind: CellKind, units: usize) -> Self {
        Rnn {
            kind,
            dir: Direction::Alone,
            cfg: RecurrentConfig::new(units),
            steps: 0,
            features: 0,
            kernel: Vec::new(),
            recurrent: Vec::new(),
            bias: Vec::new(),
        }
    }

    /// The training layout (every step kept).
    fn layout(&self) -> Layout {
        self.layout_for(true)
    }

    fn layout_for(&self, full: bool) -> Layout {
        Layout {
            steps: self.steps,
            features: self.features,
            units: self.cfg.units,
            gu: self.kind.gates() * self.cfg.units,
            dropout: self.cfg.dropout > 0.0,
            kind: self.kind,
            full,
        }
    }

    /// Whether an `aux` of `cols` values per sequence is the training
    /// layout (`Some(true)`), the inference one (`Some(false)`) or neither.
    fn aux_mode(&self, cols: usize) -> Option<bool> {
        if cols == self.layout_for(true).aux_width() {
            Some(true)
        } else if cols == self.layout_for(false).aux_width() {
            Some(false)
        } else {
            None
        }
    }

    /// Output values per sequence.
    fn out_width(&self) -> usize {
        if self.cfg.return_sequences {
            self.steps * self.cfg.units
        } else {
            self.cfg.units
        }
    }

    fn output_shape(&self) -> Shape {
        if self.cfg.return_sequences {
            Shape::new(&[self.steps, self.cfg.units])
        } else {
            Shape::new(&[self.cfg.units])
        }
    }

    /// Input time index of processing step `s`.
    fn time(&self, s: usize) -> usize {
        if self.cfg.go_backwards {
            self.steps - 1 - s
        } else {
            s
        }
    }

    fn weight_shapes(
        kind: CellKind,
        cfg: &RecurrentConfig,
        input: &Shape,
    ) -> Result<[Vec<usize>; 3]> {
        input.expect_rank(kind.class_name(), 2, "(timesteps, features)")?;
        let (t, f) = (input.dims()[0], input.dims()[1]);
        if t == 0 || f == 0 {
            return Err(Error::shape(
                format!("{} input", kind.class_name()),
                "at least one time step of at least one feature",
                input.to_string(),
            ));
        }
        let u = cfg.units;
        u.checked_mul(kind.gates())
            .ok_or_else(|| Error::arg("units", "a number of units that fits in memory", u))?;
        Ok(Self::shapes(kind, u, f))
    }

    /// Keras' shapes of `kernel`, `recurrent_kernel` and `bias` (GRU: `(2,
    /// 3 units)`, the input then the recurrent bias).
    fn shapes(kind: CellKind, units: usize, features: usize) -> [Vec<usize>; 3] {
        let gu = kind.gates() * units;
        let bias = if kind == CellKind::Gru {
            vec![2, gu]
        } else {
            vec![gu]
        };
        [vec![features, gu], vec![units, gu], bias]
    }

    fn build(&mut self, input: &Shape, rng: &mut StdRng) -> Result<Shape> {
        let class = self.kind.class_name();
        self.cfg.validate(class)?;
        let [ks, rs, bs] = Self::weight_shapes(self.kind, &self.cfg, input)?;
        let (t, f) = (input.dims()[0], input.dims()[1]);
        // The step buffers must be addressable: refuse sizes whose per-sequence
        // buffers overflow before anything is allocated.
        let per_seq = t
            .checked_mul(f.max(ks[1]).max(1))
            .and_then(|v| v.checked_mul(4));
        if per_seq.is_none() {
            return Err(Error::shape(
                format!("{class} input"),
                "a sequence whose step buffers fit in memory",
                input.to_string(),
            ));
        }
        let kernel = self.cfg.kernel_initializer.sample(&ks, rng)?;
        let recurrent = self.cfg.recurrent_initializer.sample(&rs, rng)?;
        let u = self.cfg.units;
        // Without a bias the cell adds zeros (kept, so the gate pass has one form).
        let bias_len = bs.iter().product::<usize>();
        let bias = if !self.cfg.use_bias {
            vec![0.0; bias_len]
        } else if self.kind == CellKind::Lstm && self.cfg.unit_forget_bias {
            // Keras: the bias initializer for i, ones for f, the initializer for c and o.
            let i = self.cfg.bias_initializer.sample(&[u], rng)?;
            let co = self.cfg.bias_initializer.sample(&[2 * u], rng)?;
            i.iter()
                .copied()
                .chain(std::iter::repeat_n(1.0, u))
                .chain(co.iter().copied())
                .collect()
        } else {
            self.cfg
                .bias_initializer
                .sample(&bs, rng)?
                .into_iter()
                .collect()
        };
        self.steps = t;
        self.features = f;
        self.kernel = kernel.into_iter().collect();
        self.recurrent = recurrent.into_iter().collect();
        self.bias = bias;
        Ok(self.output_shape())
    }

    fn buffers(&self, input: &Shape, training: bool) -> Buffers {
        if input.rank() != 2 {
            return Buffers::default();
        }
        let l = Layout {
            steps: input.dims()[0],
            features: input.dims()[1],
            ..self.layout_for(training)
        };
        let partial = l.partial_len(self.cfg.use_bias);
        Buffers {
            aux: l.aux_width(),
            scratch_per_row: l.scratch_width() + partial.div_ceil(BLOCK_ROWS),
            scratch: partial + l.packed_len(),
            state: 0,
        }
    }

    fn params(&self) -> Vec<ParamView<'_>> {
        let names = param_names(self.kind, self.dir);
        let [ks, rs, bs] = Self::shapes(self.kind, self.cfg.units, self.features);
        let mut v = vec![
            ParamView::trainable(names[0], ks, &self.kernel),
            ParamView::trainable(names[1], rs, &self.recurrent),
        ];
        if self.cfg.use_bias {
            v.push(ParamView::trainable(names[2], bs, &self.bias));
        }
        v
    }

    /// Gradient lengths of the three tensors (the bias's even without one).
    fn grad_lens(&self) -> [usize; 3] {
        [self.kernel.len(), self.recurrent.len(), self.bias.len()]
    }

    fn param_count(&self) -> usize {
        2 + usize::from(self.cfg.use_bias)
    }

    fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut [f32])) {
        f(&mut self.kernel);
        f(&mut self.recurrent);
        if self.cfg.use_bias {
            f(&mut self.bias);
        }
    }

    fn regularization_penalty(&self) -> f32 {
        let mut p = 0.0;
        for (r, w) in [
            (self.cfg.kernel_regularizer, &self.kernel),
            (self.cfg.recurrent_regularizer, &self.recurrent),
            (self.cfg.bias_regularizer, &self.bias),
        ] {
            if let Some(r) = r {
                p += r.penalty(w);
            }
        }
        p
    }

    fn add_regularization_gradient(&self, grads: &mut [Vec<f32>]) {
        for (i, (r, w)) in [
            (self.cfg.kernel_regularizer, &self.kernel),
            (self.cfg.recurrent_regularizer, &self.recurrent),
            (self.cfg.bias_regularizer, &self.bias),
        ]
        .into_iter()
        .enumerate()
        .take(self.param_count())
        {
            if let Some(r) = r {
                r.add_gradient(w, &mut grads[i]);
            }
        }
    }

    /// Checks a hand-made call's views (the model's are always right).
    fn check_views(&self, x: &ArrayView2<f32>, y_cols: usize, y_rows: usize, aux: (usize, usize)) {
        let class = self.kind.class_name();
        let n = x.nrows();
        let l = self.layout();
        expect_shape(class, "x", x.shape(), &[n, l.steps * l.features]);
        expect_shape(class, "y", &[y_rows, y_cols], &[n, self.out_width()]);
        if self.aux_mode(aux.1).is_none() {
            expect_shape(class, "aux", &[aux.0, aux.1], &[n, l.aux_width()]);
        }
        expect_shape(class, "aux", &[aux.0], &[n]);
    }

    /// The forward pass over flat row-major buffers of `n` sequences.
    #[allow(clippy::too_many_arguments)]
    fn forward_flat(
        &self,
        x: &[f32],
        n: usize,
        y: &mut [f32],
        aux: &mut [f32],
        scratch: &mut [f32],
        training: bool,
        full: bool,
        mask: Option<&[f32]>,
        rng: &mut StdRng,
    ) {
        let l = self.layout_for(full);
        let t = l.steps;
        let mask = mask.filter(|m| m.len() >= n * t);
        let (aw, yw, xw) = (l.aux_width(), self.out_width(), l.steps * l.features);
        let sw = l.scratch_width();
        let need = l.scratch_len(n, self.cfg.use_bias);
        assert!(
            scratch.len() >= need,
            "{}: scratch of {} values, expected at least {need}",
            self.kind.class_name(),
            scratch.len(),
        );
        let masked = training && l.dropout && full;
        if masked {
            self.draw_masks(x, n, aux, rng);
        }
        let (rows_scratch, rest) = scratch.split_at_mut(n * sw);
        let pl = l.partial_len(self.cfg.use_bias);
        let packed_buf = &mut rest[n.div_ceil(BLOCK_ROWS) * pl..];
        let (rbuf, wbuf) = packed_buf.split_at_mut(packed_b_len(l.units, l.gu));
        let packed_r = pack_b(matrix(&self.recurrent, l.units, l.gu), rbuf);
        let packed_w = pack_b(matrix(&self.kernel, l.features, l.gu), wbuf);
        let packed = [packed_r.as_ref(), packed_w.as_ref()];
        aux[..n * aw]
            .par_chunks_mut(BLOCK_ROWS * aw)
            .zip(y[..n * yw].par_chunks_mut(BLOCK_ROWS * yw))
            .zip(rows_scratch.par_chunks_mut(BLOCK_ROWS * sw))
            .enumerate()
            .for_each(|(b, ((auxb, yb), sb))| {
                let r0 = b * BLOCK_ROWS;
                let rows = yb.len() / yw;
                let xb = &x[r0 * xw..(r0 + rows) * xw];
                let mb = mask.map(|m| &m[r0 * t..(r0 + rows) * t]);
                self.forward_block(xb, rows, yb, auxb, sb, masked, full, packed, mb);
            });
    }

    /// Draws each sequence's input mask (one per sequence, shared by all its
    /// steps, as Keras does) and stores the masked inputs, in row order from
    /// the step's random stream.
    fn draw_masks(&self, x: &[f32], n: usize, aux: &mut [f32], rng: &mut StdRng) {
        let l = self.layout();
        let (aw, xw, f) = (l.aux_width(), l.steps * l.features, l.features);
        let rate = self.cfg.dropout;
        let scale = 1.0 / (1.0 - rate);
        for (b, auxb) in aux[..n * aw].chunks_mut(BLOCK_ROWS * aw).enumerate() {
            let rows = auxb.len() / aw;
            let [mask, xd, ..] = carve(auxb, rows, l.aux_parts());
            for m in mask.iter_mut() {
                *m = if rng.random::<f32>() < 1.0 - rate {
                    scale
                } else {
                    0.0
                };
            }
            let xb = &x[b * BLOCK_ROWS * xw..(b * BLOCK_ROWS + rows) * xw];
            for ((xs, xds), m) in xb
                .chunks_exact(xw)
                .zip(xd.chunks_exact_mut(xw))
                .zip(mask.chunks_exact(f))
            {
                for (xi, xo) in xs.chunks_exact(f).zip(xds.chunks_exact_mut(f)) {
                    for ((o, &v), &k) in xo.iter_mut().zip(xi).zip(m) {
                        *o = v * k;
                    }
                }
            }
        }
    }

    /// One block of `rows` sequences, forward: [`Rnn::forward_body`]
    /// compiled for AVX2 where the CPU has it (8 lanes instead of 4 for the
    /// gate passes; the same bits, as no multiply-add is fused).
    #[allow(clippy::too_many_arguments)]
    fn forward_block(
        &self,
        x: &[f32],
        rows: usize,
        y: &mut [f32],
        aux: &mut [f32],
        scratch: &mut [f32],
        masked: bool,
        full: bool,
        packed: [Option<&PackedB<'_>>; 2],
        mask: Option<&[f32]>,
    ) {
        #[cfg(target_arch = "x86_64")]
        {
            if simd::available() {
                // SAFETY: `available` checked that this CPU has AVX2 and FMA.
                unsafe {
                    simd::forward(self, x, rows, y, aux, scratch, masked, full, packed, mask)
                };
                return;
            }
        }
        self.forward_body(x, rows, y, aux, scratch, masked, full, packed, mask)
    }

    /// The forward pass of one block (see [`Rnn::forward_block`]).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn forward_body(
        &self,
        x: &[f32],
        rows: usize,
        y: &mut [f32],
        aux: &mut [f32],
        scratch: &mut [f32],
        masked: bool,
        full: bool,
        packed: [Option<&PackedB<'_>>; 2],
        mask: Option<&[f32]>,
    ) {
        let l = self.layout_for(full);
        let (t, f, u, gu) = (l.steps, l.features, l.units, l.gu);
        // Steps and carries kept per sequence (all of them in training).
        let (kt, kc) = (l.kept_steps(), l.kept_carries());
        let [_, xd, gates, cand, hprev, carry] = carve(aux, rows, l.aux_parts());
        let xin: &[f32] = if masked { xd } else { x };
        let [rh, _, hnew, _, zx] = carve(scratch, rows, l.scratch_parts());
        let rh = &mut rh[..rows * gu];
        let zx = &mut zx[..rows * gu];
        let recurrent = matrix(&self.recurrent, u, gu);
        let kernel = matrix(&self.kernel, f, gu);
        let [packed_r, packed_w] = packed;
        let (bias_in, bias_rec) = if l.kind == CellKind::Gru {
            self.bias.split_at(gu)
        } else {
            (&self.bias[..], &[][..])
        };
        let (act, ra) = (self.cfg.activation, self.cfg.recurrent_activation);
        let ow = self.out_width();
        for s in 0..t {
            let tau = self.time(s);
            // 1. The input projection of this step (computed step by step,
            // so that it is read back from L1, not from memory).
            gemm_packed(
                matrix(xin, rows, t * f).slice(s![.., tau * f..(tau + 1) * f]),
                kernel,
                packed_w,
                matrix_mut(zx, rows, gu),
            );
            // 2. The recurrent product (zero at the first step: h starts at 0).
            if s == 0 {
                rh.fill(0.0);
                let k = l.slot(tau);
                for row in hprev.chunks_exact_mut(kt * u) {
                    row[k * u..(k + 1) * u].fill(0.0);
                }
                for row in carry.chunks_exact_mut(kc * u) {
                    row[..u].fill(0.0);
                }
            } else {
                let h = matrix(hprev, rows, kt * u);
                let k = l.slot(tau);
                gemm_packed(
                    h.slice(s![.., k * u..(k + 1) * u]),
                    recurrent,
                    packed_r,
                    matrix_mut(rh, rows, gu),
                );
            }
            // 3. The fused gate pass, one sequence at a time: the new state
            // goes to `hnew`.
            let k = l.slot(tau);
            for i in 0..rows {
                let g = &mut gates[(i * kt + k) * gu..(i * kt + k + 1) * gu];
                let r = &rh[i * gu..(i + 1) * gu];
                let xz = &zx[i * gu..(i + 1) * gu];
                let hn = &mut hnew[i * u..(i + 1) * u];
                match l.kind {
                    CellKind::SimpleRnn => {
                        for j in 0..u {
                            g[j] = xz[j] + r[j] + bias_in[j];
                        }
                        activate(act, g);
                        hn.copy_from_slice(g);
                    }
                    CellKind::Lstm => {
                        let c_row = &mut carry[i * kc * u..(i + 1) * kc * u];
                        let (cp, cn) = if l.carry_slot(s) < l.carry_slot(s + 1) {
                            let (a, b) = c_row.split_at_mut(l.carry_slot(s + 1) * u);
                            (&a[l.carry_slot(s) * u..], &mut b[..u])
                        } else {
                            // Inference at an odd step: slot 1 holds the
                            // previous carry, slot 0 takes the new one.
                            let (a, b) = c_row.split_at_mut(u);
                            (&b[..u], a)
                        };
                        for j in 0..gu {
                            g[j] = xz[j] + r[j] + bias_in[j];
                        }
                        activate(ra, &mut g[..2 * u]);
                        activate(act, &mut g[2 * u..3 * u]);
                        activate(ra, &mut g[3 * u..]);
                        let (gi, rest) = g.split_at(u);
                        let (gf, rest) = rest.split_at(u);
                        let (gc, go) = rest.split_at(u);
                        for j in 0..u {
                            let c = gf[j] * cp[j] + gi[j] * gc[j];
                            cn[j] = c;
                            hn[j] = c;
                        }
                        activate(act, hn);
                        for j in 0..u {
                            hn[j] *= go[j];
                        }
                    }
                    CellKind::Gru => {
                        let hp = &hprev[(i * kt + k) * u..(i * kt + k + 1) * u];
                        let rc = &mut cand[(i * kt + k) * u..(i * kt + k + 1) * u];
                        for j in 0..2 * u {
                            g[j] = xz[j] + bias_in[j] + r[j] + bias_rec[j];
                        }
                        activate(ra, &mut g[..2 * u]);
                        let (zr, gh) = g.split_at_mut(2 * u);
                        for j in 0..u {
                            let rhh = r[2 * u + j] + bias_rec[2 * u + j];
                            rc[j] = rhh;
                            gh[j] = xz[2 * u + j] + bias_in[2 * u + j] + zr[u + j] * rhh;
                        }
                        activate(act, gh);
                        for j in 0..u {
                            let z = zr[j];
                            hn[j] = z * hp[j] + (1.0 - z) * gh[j];
                        }
                    }
                }
                // A masked step keeps the state (and the carry) of the step
                // before, as Keras does.
                if mask.is_some_and(|m| m[i * t + tau] == 0.0) {
                    let hp = &hprev[(i * kt + k) * u..(i * kt + k + 1) * u];
                    hn.copy_from_slice(hp);
                    if l.kind == CellKind::Lstm {
                        let c_row = &mut carry[i * kc * u..(i + 1) * kc * u];
                        let (from, to) = (l.carry_slot(s) * u, l.carry_slot(s + 1) * u);
                        c_row.copy_within(from..from + u, to);
                    }
                }
            }
            // 4. The new state: input of the next step, and output.
            if s + 1 < t {
                let nt = l.slot(self.time(s + 1));
                for (row, h) in hprev.chunks_exact_mut(kt * u).zip(hnew.chunks_exact(u)) {
                    row[nt * u..(nt + 1) * u].copy_from_slice(h);
                }
            }
            if self.cfg.return_sequences {
                for (row, h) in y.chunks_exact_mut(ow).zip(hnew.chunks_exact(u)) {
                    row[s * u..(s + 1) * u].copy_from_slice(h);
                }
            } else if s + 1 == t {
                y[..rows * u].copy_from_slice(&hnew[..rows * u]);
            }
        }
    }

    /// The backward pass over flat buffers: `dy` of `n` sequences, the
    /// weight gradients into `grads` (one buffer per trainable tensor) and,
    /// when given, the input gradient into `dx`.
    #[allow(clippy::too_many_arguments)]
    fn backward_flat(
        &self,
        x: &[f32],
        n: usize,
        aux: &[f32],
        dy: &[f32],
        dx: Option<&mut [f32]>,
        grads: &mut [Vec<f32>],
        scratch: &mut [f32],
        mask: Option<&[f32]>,
    ) {
        let l = self.layout();
        let mask = mask.filter(|m| m.len() >= n * l.steps);
        let (aw, yw, xw, sw) = (
            l.aux_width(),
            self.out_width(),
            l.steps * l.features,
            l.scratch_width(),
        );
        let pl = l.partial_len(self.cfg.use_bias);
        let blocks = n.div_ceil(BLOCK_ROWS);
        let class = self.kind.class_name();
        let need = l.scratch_len(n, self.cfg.use_bias);
        assert!(
            scratch.len() >= need,
            "{class}: scratch of {} values, expected at least {need}",
            scratch.len(),
        );
        let (rows_scratch, rest) = scratch.split_at_mut(n * sw);
        let (partials, packed_buf) = rest.split_at_mut(blocks * pl);
        let recurrent_t = matrix(&self.recurrent, l.units, l.gu).reversed_axes();
        let packed = pack_b(recurrent_t, packed_buf);
        let dx_blocks = match dx {
            Some(d) => {
                rayon::iter::Either::Left(d[..n * xw].par_chunks_mut(BLOCK_ROWS * xw).map(Some))
            }
            None => rayon::iter::Either::Right((0..blocks).into_par_iter().map(|_| None)),
        };
        rows_scratch
            .par_chunks_mut(BLOCK_ROWS * sw)
            .zip(partials.par_chunks_mut(pl))
            .zip(dx_blocks)
            .enumerate()
            .for_each(|(b, ((sb, part), dxb))| {
                let r0 = b * BLOCK_ROWS;
                let rows = sb.len() / sw;
                self.backward_block(
                    &x[r0 * xw..(r0 + rows) * xw],
                    rows,
                    &aux[r0 * aw..(r0 + rows) * aw],
                    &dy[r0 * yw..(r0 + rows) * yw],
                    dxb,
                    sb,
                    part,
                    packed.as_ref(),
                    mask.map(|m| &m[r0 * l.steps..(r0 + rows) * l.steps]),
                );
            });
        // The blocks' weight gradients, added in block order.
        let (fg, ug) = (l.features * l.gu, l.units * l.gu);
        let offsets = [0, fg, fg + ug, pl];
        for (k, g) in grads.iter_mut().enumerate().take(self.param_count()) {
            g.fill(0.0);
            for part in partials.chunks_exact(pl) {
                for (o, &v) in g.iter_mut().zip(&part[offsets[k]..offsets[k + 1]]) {
                    *o += v;
                }
            }
        }
    }

    /// One block of `rows` sequences, backward, compiled for AVX2 where the
    /// CPU has it (as [`Rnn::forward_block`]).
    #[allow(clippy::too_many_arguments)]
    fn backward_block(
        &self,
        x: &[f32],
        rows: usize,
        aux: &[f32],
        dy: &[f32],
        dx: Option<&mut [f32]>,
        scratch: &mut [f32],
        part: &mut [f32],
        packed: Option<&PackedB<'_>>,
        mask: Option<&[f32]>,
    ) {
        #[cfg(target_arch = "x86_64")]
        {
            if simd::available() {
                // SAFETY: `available` checked that this CPU has AVX2 and FMA.
                unsafe { simd::backward(self, x, rows, aux, dy, dx, scratch, part, packed, mask) };
                return;
            }
        }
        self.backward_body(x, rows, aux, dy, dx, scratch, part, packed, mask)
    }

    /// One block of `rows` sequences, backward: back-propagation through
    /// time, then the block's weight gradients into `part` and its input
    /// gradient into `dx`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn backward_body(
        &self,
        x: &[f32],
        rows: usize,
        aux: &[f32],
        dy: &[f32],
        dx: Option<&mut [f32]>,
        scratch: &mut [f32],
        part: &mut [f32],
        packed: Option<&PackedB<'_>>,
        mask: Option<&[f32]>,
    ) {
        let l = self.layout();
        let (t, f, u, gu) = (l.steps, l.features, l.units, l.gu);
        let [drop_mask, xd, gates, cand, hprev, carry] = carve_ref(aux, rows, l.aux_parts());
        let [dz, dzr, dh, dc, spare] = carve(scratch, rows, l.scratch_parts());
        let (spare, keep) = spare.split_at_mut(rows * (gu + 2 * u));
        let (act, ra) = (self.cfg.activation, self.cfg.recurrent_activation);
        let recurrent_t = matrix(&self.recurrent, u, gu).reversed_axes();
        let ow = self.out_width();
        let gru = l.kind == CellKind::Gru;
        dh.fill(0.0);
        dc.fill(0.0);
        for s in (0..t).rev() {
            let tau = self.time(s);
            // The state's gradient: from the output, plus (already in `dh`)
            // from the next step.
            if self.cfg.return_sequences {
                for (d, row) in dh.chunks_exact_mut(u).zip(dy.chunks_exact(ow)) {
                    for (o, &v) in d.iter_mut().zip(&row[s * u..(s + 1) * u]) {
                        *o += v;
                    }
                }
            } else if s + 1 == t {
                dh.copy_from_slice(&dy[..rows * u]);
            }
            // The fused gate pass backward: dz of every gate's pre-activation.
            for i in 0..rows {
                let g = &gates[(i * t + tau) * gu..(i * t + tau + 1) * gu];
                let d = &mut dz[(i * t + tau) * gu..(i * t + tau + 1) * gu];
                let dhi = &mut dh[i * u..(i + 1) * u];
                if mask.is_some_and(|m| m[i * t + tau] == 0.0) {
                    // The step only passed the state on: no gate gradient,
                    // and the state's gradient goes to the step before as
                    // it is (the carry's too, left in `dc`).
                    d.fill(0.0);
                    if gru {
                        dzr[(i * t + tau) * gu..(i * t + tau + 1) * gu].fill(0.0);
                    }
                    keep[i * u..(i + 1) * u].copy_from_slice(dhi);
                    continue;
                }
                match l.kind {
                    CellKind::SimpleRnn => {
                        derivative(act, g, d);
                        for j in 0..u {
                            d[j] *= dhi[j];
                        }
                    }
                    CellKind::Lstm => {
                        let c_row = &carry[i * (t + 1) * u..(i + 1) * (t + 1) * u];
                        let (cp, cn) = c_row[s * u..(s + 2) * u].split_at(u);
                        let dci = &mut dc[i * u..(i + 1) * u];
                        let (ac, rest) = spare.split_at_mut(u);
                        let dac = &mut rest[..u];
                        ac.copy_from_slice(cn);
                        activate(act, ac);
                        derivative(act, ac, dac);
                        derivative(ra, &g[..2 * u], &mut d[..2 * u]);
                        derivative(act, &g[2 * u..3 * u], &mut d[2 * u..3 * u]);
                        derivative(ra, &g[3 * u..], &mut d[3 * u..]);
                        let (gi, rest) = g.split_at(u);
                        let (gf, rest) = rest.split_at(u);
                        let (gc, go) = rest.split_at(u);
                        let (di, rest) = d.split_at_mut(u);
                        let (df, rest) = rest.split_at_mut(u);
                        let (dg, do_) = rest.split_at_mut(u);
                        for j in 0..u {
                            let dcj = dci[j] + dhi[j] * go[j] * dac[j];
                            di[j] *= dcj * gc[j];
                            df[j] *= dcj * cp[j];
                            dg[j] *= dcj * gi[j];
                            do_[j] *= dhi[j] * ac[j];
                            dci[j] = dcj * gf[j];
                        }
                    }
                    CellKind::Gru => {
                        let hp = &hprev[(i * t + tau) * u..(i * t + tau + 1) * u];
                        let rc = &cand[(i * t + tau) * u..(i * t + tau + 1) * u];
                        let dr = &mut dzr[(i * t + tau) * gu..(i * t + tau + 1) * gu];
                        let direct = &mut spare[i * u..(i + 1) * u];
                        derivative(ra, &g[..2 * u], &mut d[..2 * u]);
                        derivative(act, &g[2 * u..], &mut d[2 * u..]);
                        let (gz, rest) = g.split_at(u);
                        let (gr, gh) = rest.split_at(u);
                        let (dz_, rest) = d.split_at_mut(u);
                        let (dr_, dh_) = rest.split_at_mut(u);
                        let (rz, rest) = dr.split_at_mut(u);
                        let (rr, rh_) = rest.split_at_mut(u);
                        for j in 0..u {
                            let (z, r, hh, dhj) = (gz[j], gr[j], gh[j], dhi[j]);
                            let dpre_h = dhj * (1.0 - z) * dh_[j];
                            let dpre_z = dhj * (hp[j] - hh) * dz_[j];
                            let dpre_r = dpre_h * rc[j] * dr_[j];
                            dz_[j] = dpre_z;
                            dr_[j] = dpre_r;
                            dh_[j] = dpre_h;
                            rz[j] = dpre_z;
                            rr[j] = dpre_r;
                            rh_[j] = dpre_h * r;
                            direct[j] = dhj * z;
                        }
                    }
                }
            }
            // The previous state's gradient through the recurrent kernel.
            if s > 0 {
                let src = if gru { &*dzr } else { &*dz };
                gemm_packed(
                    matrix(src, rows, t * gu).slice(s![.., tau * gu..(tau + 1) * gu]),
                    recurrent_t,
                    packed,
                    matrix_mut(dh, rows, u),
                );
                if gru {
                    for (o, &v) in dh.iter_mut().zip(&spare[..rows * u]) {
                        *o += v;
                    }
                }
                if let Some(m) = mask {
                    for i in (0..rows).filter(|&i| m[i * t + tau] == 0.0) {
                        dh[i * u..(i + 1) * u].copy_from_slice(&keep[i * u..(i + 1) * u]);
                    }
                }
            }
        }
        // The block's weight gradients over all its steps at once.
        // Backward follows a training forward, which drew the masks.
        let masked = l.dropout;
        let xin: &[f32] = if masked { xd } else { x };
        let (pk, rest) = part.split_at_mut(f * gu);
        let (pr, pb) = rest.split_at_mut(u * gu);
        gemm_serial(
            matrix(xin, rows * t, f).reversed_axes(),
            matrix(dz, rows * t, gu),
            matrix_mut(pk, f, gu),
        );
        let drec: &[f32] = if gru { dzr } else { dz };
        gemm_serial(
            matrix(hprev, rows * t, u).reversed_axes(),
            matrix(drec, rows * t, gu),
            matrix_mut(pr, u, gu),
        );
        if self.cfg.use_bias {
            let (b_in, b_rec) = pb.split_at_mut(gu);
            column_sums(dz, gu, b_in);
            if gru {
                column_sums(dzr, gu, b_rec);
            }
        }
        // The input gradient (through the dropout mask when there was one).
        if let Some(dx) = dx {
            gemm_serial(
                matrix(dz, rows * t, gu),
                matrix(&self.kernel, f, gu).reversed_axes(),
                matrix_mut(dx, rows * t, f),
            );
            if masked {
                for (drow, m) in dx.chunks_exact_mut(t * f).zip(drop_mask.chunks_exact(f)) {
                    for step in drow.chunks_exact_mut(f) {
                        for (o, &k) in step.iter_mut().zip(m) {
                            *o *= k;
                        }
                    }
                }
            }
        }
    }
}

/// The block passes compiled with AVX2 and FMA enabled.
#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{PackedB, Rnn};

    /// Whether this CPU has AVX2 and FMA (`HORN_PORTABLE_GEMM=1` turns the
    /// wide code off too, so that CI tests the portable build of it).
    pub(super) fn available() -> bool {
        !crate::kernels::portable_forced()
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
    }

    /// [`Rnn::forward_body`] with AVX2.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn forward(
        rnn: &Rnn,
        x: &[f32],
        rows: usize,
        y: &mut [f32],
        aux: &mut [f32],
        scratch: &mut [f32],
        masked: bool,
        full: bool,
        packed: [Option<&PackedB<'_>>; 2],
        mask: Option<&[f32]>,
    ) {
        rnn.forward_body(x, rows, y, aux, scratch, masked, full, packed, mask)
    }

    /// [`Rnn::backward_body`] with AVX2.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn backward(
        rnn: &Rnn,
        x: &[f32],
        rows: usize,
        aux: &[f32],
        dy: &[f32],
        dx: Option<&mut [f32]>,
        scratch: &mut [f32],
        part: &mut [f32],
        packed: Option<&PackedB<'_>>,
        mask: Option<&[f32]>,
    ) {
        rnn.backward_body(x, rows, aux, dy, dx, scratch, part, packed, mask)
    }
}

/// Applies `act` to every value: the vectorized forms for tanh and sigmoid
/// (see [`crate::vmath`]), the scalar ones otherwise.
#[inline(always)]
fn activate(act: Activation, v: &mut [f32]) {
    match act {
        Activation::Sigmoid => vmath::sigmoid_slice(v),
        Activation::Tanh => vmath::tanh_slice(v),
        _ => {
            for x in v.iter_mut() {
                *x = act.scalar(*x);
            }
        }
    }
}

/// `out = act'(z)` from the outputs `y = act(z)`, one loop per activation.
#[inline(always)]
fn derivative(act: Activation, y: &[f32], out: &mut [f32]) {
    match act {
        Activation::Sigmoid => {
            for (o, &v) in out.iter_mut().zip(y) {
                *o = v * (1.0 - v);
            }
        }
        Activation::Tanh => {
            for (o, &v) in out.iter_mut().zip(y) {
                *o = 1.0 - v * v;
            }
        }
        _ => {
            for (o, &v) in out.iter_mut().zip(y) {
                *o = act.derivative_from_output(v);
            }
        }
    }
}

/// `out[j] = sum_i a[i, j]`, in row order.
fn column_sums(a: &[f32], cols: usize, out: &mut [f32]) {
    out.fill(0.0);
    for row in a.chunks_exact(cols) {
        for (o, &v) in out.iter_mut().zip(row) {
            *o += v;
        }
    }
}

impl Rnn {
    fn forward_views(
        &self,
        x: ArrayView2<f32>,
        y: ArrayViewMut2<f32>,
        aux: ArrayViewMut2<f32>,
        ctx: &mut ForwardContext<'_>,
    ) {
        self.check_views(&x, y.ncols(), y.nrows(), aux.dim());
        let n = x.nrows();
        // `check_views` accepted one of the two layouts.
        let full = self.aux_mode(aux.ncols()) == Some(true);
        self.forward_flat(
            values(x),
            n,
            values_mut(y),
            values_mut(aux),
            ctx.scratch,
            ctx.training,
            full,
            ctx.mask,
            ctx.rng,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn backward_views(
        &self,
        x: ArrayView2<f32>,
        y: ArrayView2<f32>,
        aux: ArrayView2<f32>,
        dy: ArrayViewMut2<f32>,
        dx: Option<ArrayViewMut2<f32>>,
        grads: &mut [Vec<f32>],
        ctx: &mut BackwardContext<'_>,
    ) {
        self.check_views(&x, y.ncols(), y.nrows(), aux.dim());
        let class = self.kind.class_name();
        // Backward needs every step: the training layout.
        expect_shape(
            class,
            "aux",
            aux.shape(),
            &[x.nrows(), self.layout().aux_width()],
        );
        expect_shape(class, "dy", dy.shape(), y.shape());
        if let Some(d) = &dx {
            expect_shape(class, "dx", d.shape(), x.shape());
        }
        expect_grads(class, grads, &self.grad_lens()[..self.param_count()]);
        let n = x.nrows();
        self.backward_flat(
            values(x),
            n,
            values(aux),
            values(dy.view()),
            dx.map(values_mut),
            grads,
            ctx.scratch,
            ctx.mask,
        );
    }
}

/// The builder methods and the [`Layer`] implementation shared by the three
/// recurrent layers.
macro_rules! recurrent_layer {
    ($name:ident, $kind:expr, $variant:ident) => {
        impl $name {
            /// The options with Keras' defaults.
            pub fn new(units: usize) -> Self {
                $name(Rnn::new($kind, units))
            }
            /// Return the state after every step, `(steps, units)` (Keras
            /// default false: only the last).
            pub fn return_sequences(mut self, yes: bool) -> Self {
                self.0.cfg.return_sequences = yes;
                self
            }
            /// Read the sequence from its last step to its first; with
            /// `return_sequences` the steps come out in that reversed order,
            /// as in Keras.
            pub fn go_backwards(mut self, yes: bool) -> Self {
                self.0.cfg.go_backwards = yes;
                self
            }
            /// Drop this fraction of the input features in training, with
            /// one mask per sequence shared by all its steps (Keras `dropout`,
            /// default 0).
            pub fn dropout(mut self, rate: f32) -> Self {
                self.0.cfg.dropout = rate;
                self
            }
            /// The output activation (default `tanh`).
            pub fn activation(mut self, activation: Activation) -> Self {
                self.0.cfg.activation = activation;
                self
            }
            /// Whether the cell has a bias (default true).
            pub fn use_bias(mut self, yes: bool) -> Self {
                self.0.cfg.use_bias = yes;
                self
            }
            /// Initializer of `kernel` (default Glorot uniform).
            pub fn kernel_initializer(mut self, init: Initializer) -> Self {
                self.0.cfg.kernel_initializer = init;
                self
            }
            /// Initializer of `recurrent_kernel` (default orthogonal).
            pub fn recurrent_initializer(mut self, init: Initializer) -> Self {
                self.0.cfg.recurrent_initializer = init;
                self
            }
            /// Initializer of `bias` (default zeros).
            pub fn bias_initializer(mut self, init: Initializer) -> Self {
                self.0.cfg.bias_initializer = init;
                self
            }
            /// Penalty on `kernel`.
            pub fn kernel_regularizer(mut self, r: Regularizer) -> Self {
                self.0.cfg.kernel_regularizer = Some(r);
                self
            }
            /// Penalty on `recurrent_kernel`.
            pub fn recurrent_regularizer(mut self, r: Regularizer) -> Self {
                self.0.cfg.recurrent_regularizer = Some(r);
                self
            }
            /// Penalty on `bias`.
            pub fn bias_regularizer(mut self, r: Regularizer) -> Self {
                self.0.cfg.bias_regularizer = Some(r);
                self
            }
            /// The layer of a saved configuration.
            pub(crate) fn from_config(cfg: RecurrentConfig) -> Self {
                let mut l = $name::new(cfg.units);
                l.0.cfg = cfg;
                l
            }
        }

        impl Layer for $name {
            fn class_name(&self) -> &str {
                self.0.kind.class_name()
            }
            fn build(&mut self, input: &Shape, rng: &mut StdRng) -> Result<Shape> {
                self.0.build(input, rng)
            }
            fn buffers(&self, input: &Shape, training: bool) -> Buffers {
                self.0.buffers(input, training)
            }
            fn propagates_mask(&self) -> bool {
                self.0.cfg.return_sequences
            }
            fn forward(
                &self,
                x: ArrayView2<f32>,
                y: ArrayViewMut2<f32>,
                aux: ArrayViewMut2<f32>,
                ctx: &mut ForwardContext<'_>,
            ) {
                self.0.forward_views(x, y, aux, ctx)
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
                self.0.backward_views(x, y, aux, dy, dx, grads, ctx)
            }
            fn params(&self) -> Vec<ParamView<'_>> {
                self.0.params()
            }
            fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut [f32])) {
                self.0.visit_params_mut(f)
            }
            fn regularization_penalty(&self) -> f32 {
                self.0.regularization_penalty()
            }
            fn add_regularization_gradient(&self, grads: &mut [Vec<f32>]) {
                self.0.add_regularization_gradient(grads)
            }
            fn config(&self) -> Option<LayerConfig> {
                Some(LayerConfig::$variant(self.0.cfg.clone()))
            }
        }

        impl From<$name> for Rnn {
            fn from(l: $name) -> Rnn {
                l.0
            }
        }
    };
}

/// A fully connected recurrent layer (Keras `SimpleRNN`):
/// `h_t = activation(x_t kernel + h_{t-1} recurrent_kernel + bias)`.
///
/// Keras defaults: `activation` tanh, Glorot-uniform `kernel`, orthogonal
/// `recurrent_kernel`, zero `bias`, `return_sequences` false. Input
/// `(batch, steps, features)`; weights `simple_rnn_cell/kernel`
/// `(features, units)`, `recurrent_kernel` `(units, units)`, `bias` `(units,)`.
///
/// ```
/// use horn::prelude::*;
/// let model = Sequential::new().input_shape(&[10, 3]).add(SimpleRNN::new(8)).dense(1, Linear);
/// assert_eq!(model.count_params(), 3 * 8 + 8 * 8 + 8 + 9);
/// ```
#[derive(Debug, Clone)]
pub struct SimpleRNN(Rnn);
recurrent_layer!(SimpleRNN, CellKind::SimpleRnn, SimpleRNN);

/// Long short-term memory (Keras `LSTM`, Hochreiter 1997).
///
/// Gates in Keras' order i, f, c, o: with `z = x_t kernel + h_{t-1}
/// recurrent_kernel + bias` split in four, `i = sigma(z_i)`, `f = sigma(z_f)`,
/// `c_t = f c_{t-1} + i tanh(z_c)`, `o = sigma(z_o)`, `h_t = o tanh(c_t)`.
/// Keras defaults: `activation` tanh, `recurrent_activation` sigmoid,
/// `unit_forget_bias` true (the forget gate's bias starts at 1),
/// Glorot-uniform `kernel` `(features, 4 units)`, orthogonal
/// `recurrent_kernel` `(units, 4 units)`, `bias` `(4 units,)`; weights named
/// `lstm_cell/kernel` and so on, as in Keras files.
///
/// ```
/// use horn::prelude::*;
/// let model = Sequential::new().input_shape(&[50, 10]).add(LSTM::new(32)).dense(1, Linear);
/// assert_eq!(model.count_params(), 4 * (32 * (10 + 32) + 32) + 33);
/// ```
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone)]
pub struct LSTM(Rnn);
recurrent_layer!(LSTM, CellKind::Lstm, LSTM);

impl LSTM {
    /// The gate activation (default sigmoid).
    pub fn recurrent_activation(mut self, activation: Activation) -> Self {
        self.0.cfg.recurrent_activation = activation;
        self
    }
    /// Start the forget gate's bias at 1 (default true).
    pub fn unit_forget_bias(mut self, yes: bool) -> Self {
        self.0.cfg.unit_forget_bias = yes;
        self
    }
}

/// Gated recurrent unit (Keras `GRU`, Cho 2014), in Keras 3's default
/// `reset_after=True` form.
///
/// Gates in Keras' order z, r, h: `z = sigma(x_z + h_{t-1} R_z + b)`,
/// `r = sigma(x_r + h_{t-1} R_r + b)`,
/// `hh = tanh(x_h + r (h_{t-1} R_h + b_rec_h))`, `h_t = z h_{t-1} + (1 - z) hh`.
/// The bias has shape `(2, 3 units)`: the input bias, then the recurrent
/// bias. Keras defaults as for [`LSTM`].
///
/// ```
/// use horn::prelude::*;
/// let model = Sequential::new().input_shape(&[50, 10]).add(GRU::new(32)).dense(1, Linear);
/// assert_eq!(model.count_params(), 3 * (32 * (10 + 32) + 2 * 32) + 33);
/// ```
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone)]
pub struct GRU(Rnn);
recurrent_layer!(GRU, CellKind::Gru, GRU);

impl GRU {
    /// The gate activation (default sigmoid).
    pub fn recurrent_activation(mut self, activation: Activation) -> Self {
        self.0.cfg.recurrent_activation = activation;
        self
    }
}

/// How [`Bidirectional`] combines the two directions' outputs (Keras
/// `merge_mode`, default `concat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergeMode {
    /// Forward then backward on the last axis (twice the units).
    #[default]
    Concat,
    /// Their sum.
    Sum,
    /// Their elementwise product.
    Mul,
    /// Their mean.
    Ave,
}

impl std::str::FromStr for MergeMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "concat" => MergeMode::Concat,
            "sum" => MergeMode::Sum,
            "mul" => MergeMode::Mul,
            "ave" => MergeMode::Ave,
            other => {
                return Err(Error::UnknownName {
                    kind: "merge_mode",
                    name: other.into(),
                    known: "concat, sum, mul, ave".into(),
                })
            }
        })
    }
}

/// Runs a recurrent layer over the sequence in both directions and merges
/// the two outputs (Keras `Bidirectional`).
///
/// The backward copy reads the sequence from its end (`go_backwards`); with
/// `return_sequences` its outputs are put back in time order before the
/// merge, as Keras does. The weights are the forward layer's then the
/// backward layer's, named `forward_lstm/lstm_cell/kernel`,
/// `backward_lstm/...` as in Keras files.
///
/// ```
/// use horn::prelude::*;
/// let model = Sequential::new()
///     .input_shape(&[20, 4])
///     .add(Bidirectional::new(LSTM::new(8)))
///     .dense(1, Sigmoid);
/// assert_eq!(model.output_shape().unwrap().dims(), &[1]);
/// assert_eq!(model.count_params(), 2 * 4 * (8 * (4 + 8) + 8) + 17);
/// ```
#[derive(Debug, Clone)]
pub struct Bidirectional {
    forward: Rnn,
    backward: Rnn,
    merge_mode: MergeMode,
}

/// The saved form of [`Bidirectional`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BidirectionalConfig {
    /// The wrapped layer's class: `SimpleRNN`, `LSTM` or `GRU`.
    pub layer_class: String,
    /// The wrapped layer's options (the forward direction's).
    pub layer: RecurrentConfig,
    /// How the outputs merge.
    pub merge_mode: MergeMode,
}

impl Bidirectional {
    /// Wraps `layer` (a [`SimpleRNN`], [`LSTM`] or [`GRU`]); merge mode concat.
    pub fn new(layer: impl Into<Rnn>) -> Self {
        let mut forward: Rnn = layer.into();
        forward.dir = Direction::Forward;
        let mut backward = forward.clone();
        backward.dir = Direction::Backward;
        backward.cfg.go_backwards = !forward.cfg.go_backwards;
        Bidirectional {
            forward,
            backward,
            merge_mode: MergeMode::Concat,
        }
    }

    /// How the two outputs combine (default concat).
    pub fn merge_mode(mut self, mode: MergeMode) -> Self {
        self.merge_mode = mode;
        self
    }

    pub(crate) fn from_config(c: BidirectionalConfig) -> Result<Self> {
        let kind = match c.layer_class.as_str() {
            "SimpleRNN" => CellKind::SimpleRnn,
            "LSTM" => CellKind::Lstm,
            "GRU" => CellKind::Gru,
            other => {
                return Err(Error::UnknownName {
                    kind: "Bidirectional layer",
                    name: other.into(),
                    known: "SimpleRNN, LSTM, GRU".into(),
                })
            }
        };
        let mut rnn = Rnn::new(kind, c.layer.units);
        rnn.cfg = c.layer;
        Ok(Bidirectional::new(rnn).merge_mode(c.merge_mode))
    }

    fn unit_width(&self) -> usize {
        self.forward.out_width()
    }

    fn out_width(&self) -> usize {
        match self.merge_mode {
            MergeMode::Concat => 2 * self.unit_width(),
            _ => self.unit_width(),
        }
    }

    /// The two directions' buffers for `input`.
    fn core_buffers(&self, input: &Shape, training: bool) -> (Buffers, Buffers) {
        (
            self.forward.buffers(input, training),
            self.backward.buffers(input, training),
        )
    }

    /// The merged output of sequence row pair `(f, b)` into `out`, step by
    /// step (the backward direction's steps reversed).
    fn merge(&self, yf: &[f32], yb: &[f32], out: &mut [f32]) {
        let u = self.forward.cfg.units;
        let steps = self.unit_width() / u;
        let ow = self.out_width() / steps;
        for t in 0..steps {
            let f = &yf[t * u..(t + 1) * u];
            let b = &yb[(steps - 1 - t) * u..(steps - t) * u];
            let o = &mut out[t * ow..(t + 1) * ow];
            match self.merge_mode {
                MergeMode::Concat => {
                    o[..u].copy_from_slice(f);
                    o[u..].copy_from_slice(b);
                }
                MergeMode::Sum => o
                    .iter_mut()
                    .zip(f.iter().zip(b))
                    .for_each(|(o, (a, b))| *o = a + b),
                MergeMode::Mul => o
                    .iter_mut()
                    .zip(f.iter().zip(b))
                    .for_each(|(o, (a, b))| *o = a * b),
                MergeMode::Ave => o
                    .iter_mut()
                    .zip(f.iter().zip(b))
                    .for_each(|(o, (a, b))| *o = (a + b) * 0.5),
            }
        }
    }

    /// Splits one sequence's output gradient `dy` into the two directions'.
    fn split(&self, dy: &[f32], yf: &[f32], yb: &[f32], df: &mut [f32], db: &mut [f32]) {
        let u = self.forward.cfg.units;
        let steps = self.unit_width() / u;
        let ow = self.out_width() / steps;
        for t in 0..steps {
            let d = &dy[t * ow..(t + 1) * ow];
            let tb = steps - 1 - t;
            let (f, b) = (&yf[t * u..(t + 1) * u], &yb[tb * u..(tb + 1) * u]);
            let (dfo, dbo) = (&mut df[t * u..(t + 1) * u], &mut db[tb * u..(tb + 1) * u]);
            for j in 0..u {
                let (a, c) = match self.merge_mode {
                    MergeMode::Concat => (d[j], d[u + j]),
                    MergeMode::Sum => (d[j], d[j]),
                    MergeMode::Mul => (d[j] * b[j], d[j] * f[j]),
                    MergeMode::Ave => (d[j] * 0.5, d[j] * 0.5),
                };
                dfo[j] = a;
                dbo[j] = c;
            }
        }
    }
}

impl Layer for Bidirectional {
    fn class_name(&self) -> &str {
        "Bidirectional"
    }

    fn propagates_mask(&self) -> bool {
        self.forward.cfg.return_sequences
    }

    fn build(&mut self, input: &Shape, rng: &mut StdRng) -> Result<Shape> {
        let out = self.forward.build(input, rng)?;
        self.backward.build(input, rng)?;
        Ok(match self.merge_mode {
            MergeMode::Concat => out.with_last(2 * self.forward.cfg.units),
            _ => out,
        })
    }

    fn buffers(&self, input: &Shape, training: bool) -> Buffers {
        if input.rank() != 2 {
            return Buffers::default();
        }
        let (f, b) = self.core_buffers(input, training);
        let uw = if self.forward.cfg.return_sequences {
            input.dims()[0] * self.forward.cfg.units
        } else {
            self.forward.cfg.units
        };
        Buffers {
            aux: f.aux + b.aux + 2 * uw,
            scratch_per_row: f.scratch_per_row.max(b.scratch_per_row) + 2 * uw + input.size(),
            scratch: f.scratch.max(b.scratch),
            state: 0,
        }
    }

    fn forward(
        &self,
        x: ArrayView2<f32>,
        mut y: ArrayViewMut2<f32>,
        mut aux: ArrayViewMut2<f32>,
        ctx: &mut ForwardContext<'_>,
    ) {
        let n = x.nrows();
        let input = Shape::new(&[self.forward.steps, self.forward.features]);
        expect_shape("Bidirectional", "x", x.shape(), &[n, input.size()]);
        expect_shape("Bidirectional", "y", y.shape(), &[n, self.out_width()]);
        // The training layout, or the smaller inference one.
        let full = aux.ncols() == self.buffers(&input, true).aux;
        let want = self.buffers(&input, full);
        expect_shape("Bidirectional", "aux", aux.shape(), &[n, want.aux]);
        let (fb, bb) = self.core_buffers(&input, full);
        let uw = self.unit_width();
        let aux = values_mut(aux.view_mut());
        let (af, rest) = aux.split_at_mut(n * fb.aux);
        let (ab, rest) = rest.split_at_mut(n * bb.aux);
        let (yf, yb) = rest.split_at_mut(n * uw);
        let x = values(x);
        self.forward.forward_flat(
            x,
            n,
            yf,
            af,
            ctx.scratch,
            ctx.training,
            full,
            ctx.mask,
            ctx.rng,
        );
        self.backward.forward_flat(
            x,
            n,
            yb,
            ab,
            ctx.scratch,
            ctx.training,
            full,
            ctx.mask,
            ctx.rng,
        );
        let ow = self.out_width();
        let y = values_mut(y.view_mut());
        for ((f, b), o) in yf
            .chunks_exact(uw)
            .zip(yb.chunks_exact(uw))
            .zip(y.chunks_exact_mut(ow))
        {
            self.merge(f, b, o);
        }
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
        let n = x.nrows();
        let input = Shape::new(&[self.forward.steps, self.forward.features]);
        let want = self.buffers(&input, true);
        expect_shape("Bidirectional", "x", x.shape(), &[n, input.size()]);
        expect_shape("Bidirectional", "dy", dy.shape(), y.shape());
        expect_shape("Bidirectional", "dy", dy.shape(), &[n, self.out_width()]);
        expect_shape("Bidirectional", "aux", aux.shape(), &[n, want.aux]);
        // Checked without allocating: this runs every step.
        let (f, b) = (self.forward.grad_lens(), self.backward.grad_lens());
        let k = self.forward.param_count();
        let lens = [f[0], f[1], f[2], b[0], b[1], b[2]];
        let lens: [usize; 6] = if k == 3 {
            lens
        } else {
            [f[0], f[1], b[0], b[1], 0, 0]
        };
        expect_grads("Bidirectional", grads, &lens[..2 * k]);
        let (fb, bb) = self.core_buffers(&input, true);
        let core = (fb.scratch_per_row.max(bb.scratch_per_row)) * n + fb.scratch.max(bb.scratch);
        let uw = self.unit_width();
        let xw = input.size();
        assert!(
            ctx.scratch.len() >= core + n * (2 * uw + xw),
            "Bidirectional: scratch too small"
        );
        let aux = values(aux);
        let (af, rest) = aux.split_at(n * fb.aux);
        let (ab, rest) = rest.split_at(n * bb.aux);
        let (yf, yb) = rest.split_at(n * uw);
        let (core_scratch, rest) = ctx.scratch.split_at_mut(core);
        let (dyf, rest) = rest.split_at_mut(n * uw);
        let (dyb, rest) = rest.split_at_mut(n * uw);
        let dxb = &mut rest[..n * xw];
        let ow = self.out_width();
        let dy = values(dy.view());
        for (i, d) in dy.chunks_exact(ow).enumerate() {
            let r = i * uw..(i + 1) * uw;
            let (df, db) = (&mut dyf[r.clone()], &mut dyb[r.clone()]);
            self.split(d, &yf[r.clone()], &yb[r], df, db);
        }
        let k = self.forward.param_count();
        let (gf, gb) = grads.split_at_mut(k);
        let x = values(x);
        let has_dx = dx.is_some();
        let mut dx = dx;
        let dxf = dx.as_mut().map(|d| values_mut(d.view_mut()));
        self.forward
            .backward_flat(x, n, af, dyf, dxf, gf, core_scratch, ctx.mask);
        self.backward.backward_flat(
            x,
            n,
            ab,
            dyb,
            has_dx.then_some(&mut *dxb),
            gb,
            core_scratch,
            ctx.mask,
        );
        if let Some(mut d) = dx {
            for (o, &v) in values_mut(d.view_mut()).iter_mut().zip(dxb.iter()) {
                *o += v;
            }
        }
    }

    fn params(&self) -> Vec<ParamView<'_>> {
        let mut v = self.forward.params();
        v.extend(self.backward.params());
        v
    }

    fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut [f32])) {
        self.forward.visit_params_mut(f);
        self.backward.visit_params_mut(f);
    }

    fn regularization_penalty(&self) -> f32 {
        self.forward.regularization_penalty() + self.backward.regularization_penalty()
    }

    fn add_regularization_gradient(&self, grads: &mut [Vec<f32>]) {
        let (gf, gb) = grads.split_at_mut(self.forward.param_count());
        self.forward.add_regularization_gradient(gf);
        self.backward.add_regularization_gradient(gb);
    }

    fn config(&self) -> Option<LayerConfig> {
        Some(LayerConfig::Bidirectional(BidirectionalConfig {
            layer_class: self.forward.kind.class_name().into(),
            layer: self.forward.cfg.clone(),
            merge_mode: self.merge_mode,
        }))
    }
}
