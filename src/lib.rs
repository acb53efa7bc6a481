//! # horn: Keras-style deep learning in pure Rust
//!
//! Build a [`Sequential`] model, `compile` it with an optimizer, a loss and
//! metrics, then `fit`, `evaluate` and `predict`, exactly as in Keras, on
//! [`ndarray`] arrays. No Python, no C++ runtime, no GPU driver.
//!
//! ```
//! use horn::prelude::*;
//! use ndarray::Array2;
//!
//! # fn main() -> horn::Result<()> {
//! // Two noisy blobs, a two-class problem.
//! let x = Array2::<f32>::from_shape_fn((200, 2), |(i, j)| {
//!     let c = (i % 2) as f32 * 2.0 - 1.0;
//!     c + ((i * 31 + j * 17) % 13) as f32 / 13.0 - 0.5
//! });
//! let y = Array2::<f32>::from_shape_fn((200, 2), |(i, j)| (i % 2 == j) as u8 as f32);
//!
//! let mut model = Sequential::new()
//!     .seed(42)
//!     .input(2)
//!     .dense(16, Relu)
//!     .dense(2, Softmax);
//! model.compile(RmsProp::default(), CategoricalCrossentropy::default(), &[Metric::Accuracy])?;
//! let history = model.fit(&x, &y, FitOptions { epochs: 5, batch_size: 16,
//!     validation_split: 0.25, verbose: 0, ..Default::default() })?;
//! println!("{history}");
//! let scores = model.evaluate(&x, &y)?;
//! assert!(scores["accuracy"] > 0.9);
//! let probs = model.predict(&x)?;
//! assert_eq!(probs.dim(), (200, 2));
//! # Ok(()) }
//! ```
//!
//! ## Where things live
//! - [`model`]: [`Sequential`] (builder, `compile`, weights), the training engine
//!   (`fit`), inference (`predict`, `evaluate`), [`History`], progress output and
//!   `summary()`.
//! - [`model::functional`]: the functional API: [`Graph`] (inputs, layers
//!   called on [`Tensor`]s, shared layers), [`Model`] (several inputs and
//!   outputs, a loss per output), its graph engine, files and `summary()`.
//! - [`layers`]: the [`Layer`](layers::Layer) trait and the built-in layers:
//!   `Dense`, `Dropout`, `Activation`; `Conv1D`/`Conv2D`, the poolings,
//!   `Flatten`, `Reshape` (vision); `BatchNormalization`, `LayerNormalization`;
//!   `Embedding`, `SimpleRNN`, `LSTM`, `GRU`, `Bidirectional`,
//!   `TimeDistributed` (sequences); the merge layers `Concatenate`, `Add`,
//!   `Subtract`, `Multiply`, `Average`, `Maximum`, `Minimum`, `Dot`.
//! - [`Shape`]: the per-sample shape a layer is built for.
//! - [`activations`], [`losses`], [`metrics`], [`optimizers`], [`initializers`],
//!   [`regularizers`], [`callbacks`]: the Keras catalogue, with Keras 3 names,
//!   defaults and formulas (each item's docs give its formula).
//! - [`saving`]: model files (safetensors + JSON architecture) for both model
//!   kinds, and Keras' own `.keras` files (and Keras 2 `.h5` model files),
//!   read and written natively (feature `keras`, on by default: the `zip`,
//!   `hdf5-reader` and `hdf5-writer` crates, all pure Rust); the private
//!   `files` module reads untrusted files within bounds and writes atomically.
//! - [`pictures`]: images from tensors (PNG, terminal), labelled grids, and
//!   the confusion matrix's picture; `Sequential::plot_model` draws the
//!   architecture (SVG, DOT).
//! - `distribute` (feature `distribute`, or `mpi` for MPI processes):
//!   data-parallel `fit`, `evaluate` and `predict` over processes or threads,
//!   with a reduction order fixed by the batch, so results do not depend on
//!   the number of processes.
//! - [`datasets`] and [`preprocessing`]: MNIST IDX files, CSV tables, scaling,
//!   one-hot encoding, stratified splits.
//! - [`kernels`]: the parallel, deterministic matrix products (horn's own AVX2 + FMA
//!   kernel, chosen at run time, with matrixmultiply as the portable fallback).
//!   Their packing skips the all-zero steps of sparse inputs (MNIST's pixels are
//!   81% zeros) without changing a value.
//!
//! ## Tensors of any rank
//! A batch is always a block of rows, one row per sample, holding the
//! sample's tensor in row-major, channels-last order: a batch of `(28, 28, 1)`
//! images is an `n x 784` block, exactly the memory of Keras' NHWC array,
//! and a batch of `(steps, features)` sequences is `n x (steps * features)`.
//! The shape travels beside the data, not in it: `Sequential` knows each
//! layer's output [`Shape`], and each layer learns its input shape in
//! [`Layer::build`](layers::Layer::build) and reads its rows accordingly
//! (`Conv2D` as `h x w x c`, `Dense` on a `(steps, features)` input as
//! `steps` rows of `features`, softmax over the last axis). So the engine
//! (gathering, workspaces, losses, metrics, optimizers) moves plain rows and
//! stays as fast as it was for the MLP, the matrix kernels always see
//! contiguous blocks, and `fit`/`predict` take arrays of any rank by
//! reshaping them to rows without copying. Flat rows of the right size are
//! accepted for any input shape; arrays of rank 3 or more must match the
//! input shape exactly.
//!
//! A layer asks for what it needs through [`Buffers`](layers::Buffers):
//! per-row `aux` values kept from forward to backward (pre-activations,
//! dropout masks, a convolution's patches, max pooling's argmax), scratch
//! shared by all layers (a convolution's per-lane patch buffers),
//! and per-batch `state` (BatchNormalization's batch statistics), which
//! [`Layer::end_train_step`](layers::Layer::end_train_step) folds into the
//! moving averages after the optimizer step. Weights carry a `trainable`
//! flag: the optimizer and its state see only trainable ones; `summary()`
//! counts the others apart. Why not the graph-of-tensors redesign sketched in
//! the project notes: a row-block engine keeps every existing guarantee
//! (allocation-free steps, bit-identical threads, the MLP's speed) with
//! small, checkable changes, and a graph of layers (the functional API) can
//! be built on the same trait by giving each node a row block; the loss
//! fusion hooks stay until that graph exists.
//!
//! Convolutions unroll each sample's receptive fields into a patch matrix
//! ("im2col") and multiply it by the kernel, which in Keras' `(kh, kw, in,
//! out)` layout is already the `(kh * kw * in) x out` matrix, so the output
//! is already NHWC. They work a tile of samples at a time (a tile's patches
//! fit in L2), in parallel over tiles: unroll, multiply while the patches are
//! in cache, add the bias and apply the activation in the same task. Short
//! patches (a first convolution, 3x3 on one channel) take direct FMA kernels
//! and stay in `aux` for the weight gradient; long ones are unrolled again in
//! backward, each of a fixed number of lanes summing its tiles' kernel
//! gradient in order (see `layers::conv`). Where every window lies inside
//! the input (valid padding), the forward product does not unroll long
//! patches at all: a patch row is one contiguous run of `kw * channels`
//! values per kernel row in an NHWC image, so the GEMM's micro-kernel reads
//! its rows in place, run by run, with the same FMA chain and bits. A
//! pooling layer after a convolution runs on each tile as soon as the tile
//! is done (`Layer::forward_then`), while it is still in cache, instead of
//! reading the whole output back from memory; in backward the pooling's
//! gradient is made tile by tile where the convolution needs it
//! (`Layer::backward_after`), so the convolution's output gradient (11 MB
//! per batch for the MNIST convnet's first layer) is never written out.
//!
//! ## Sequences
//! A batch of sequences is `n x (steps * features)` rows like any other;
//! token ids for an `Embedding` travel as whole numbers in those rows (any
//! integer or float array is accepted, and ids are checked to be whole and
//! in range before the first pass). The recurrent layers cut the batch into
//! fixed blocks of 16 sequences; a block's sequences depend on no other
//! block, so each block runs its whole recurrence on one thread, and a
//! layer's pass is one parallel region, not one per time step. Per step and
//! block: one product for the input (`x_t W`), one for the state
//! (`h_{t-1} R`, with `R` packed once per pass), then one fused pass over the
//! gates that adds the biases and applies the vectorized sigmoid and tanh of
//! the private `vmath` module (the block code is compiled for AVX2 where the
//! CPU has it). What the backward pass needs (gate activations, previous
//! states, carries) is kept in the layer's `aux` rows. Backward walks the
//! steps in reverse with one fused pass and one product (`dz R^T`) per step,
//! then computes the block's weight gradients over all its steps at once
//! (`x^T dz`, `h^T dz`, column sums) and the input gradient (`dz W^T`); the
//! blocks' weight gradients are added in block order, so the result does not
//! depend on the number of threads. In inference only the current step is
//! kept (one slot of gates and state), so `predict` needs little memory.
//!
//! Keras' masking rides beside the rows too: an `Embedding` with `mask_zero`
//! writes a `rows x steps` mask (0 where the id is 0) into the workspace, and
//! the layers after it see it in [`ForwardContext::mask`](layers::ForwardContext)
//! for as long as each layer keeps the time axis
//! ([`Layer::propagates_mask`](layers::Layer::propagates_mask)). A recurrent
//! layer keeps its state over a masked step (and passes the state's gradient
//! straight through it); `GlobalAveragePooling1D` averages the other steps.
//! Losses and metrics over `(steps, classes)` outputs are computed per step
//! over the last axis and averaged, as in Keras (they do not use the mask).
//!
//! ## Graphs: the functional API
//! A [`Model`] is a list of nodes (a layer called on tensors) in creation
//! order, which is topological because a call can only read tensors that
//! exist; tensors are numbered inputs first, then one per node. The engine
//! gives every tensor one buffer of rows, as `Sequential` gives every layer,
//! so the same layers run unchanged; merge layers read several tensors.
//! Backward walks the nodes in reverse with one gradient buffer per tensor:
//! the first consumer writes it and the next ones add into it, so a tensor
//! read twice (fan-out) and a layer called twice (shared weights) sum their
//! gradients in an order fixed by the graph, and nothing is allocated per
//! batch. Each output has its loss; its gradient is scaled by its
//! `loss_weight` and written into the output's buffer before backward
//! starts (fused with a softmax or sigmoid when only the loss reads the
//! output). Masks follow tensors: a layer that makes one marks its output,
//! layers that keep the time axis pass it on, and a merge keeps a mask all
//! its inputs share. `Sequential` keeps its own chain engine, the speed
//! reference, with none of this bookkeeping.
//!
//! ## Design of one training step
//! `fit` allocates one workspace sized for the batch: the gathered input rows,
//! each layer's output, each layer's auxiliary values and state, one shared
//! scratch area, two ping-pong gradient buffers and one gradient buffer per
//! trainable weight tensor. A step then
//! 1. gathers the batch's rows (shuffled indices) into the input buffer;
//! 2. runs each layer forward: `Dense` does one matrix product, then a single
//!    fused pass adds the bias and applies the activation (the whole step runs
//!    inside the rayon pool, so its parallel parts pass work between workers);
//! 3. computes per-sample losses and their gradients; softmax (or sigmoid) +
//!    cross-entropy are fused into `p - y` from the logits, as Keras does on its
//!    TensorFlow backend;
//! 4. runs each layer backward (`dK = x^T dz`, `db = sum dz`, `dx = dz K^T`);
//! 5. applies the optimizer: clipping, weight decay, then the update rule in one
//!    pass over each tensor and its interleaved slot variables;
//! 6. lets layers commit per-batch state (BatchNormalization's moving
//!    statistics).
//!
//! A partial last batch uses the first rows of the same buffers: nothing is
//! allocated per batch in steady state.
//!
//! ## Parallelism and determinism
//! Work is split into blocks whose boundaries depend only on the shapes: the
//! matrix products split the rows or, for a wide product with few rows such as
//! the first layer's forward pass, the columns of their *output* (so no output
//! element is ever summed across threads, and each is accumulated over `k` in
//! one fixed order), elementwise passes split rows, and
//! every sum over the batch (bias gradients, losses, metrics) runs in row order
//! or, for the large sums of convolutions (weight and bias gradients over
//! every position), in a fixed number of blocks added in block order. Dropout
//! draws each fixed block of its mask from its own stream seeded by the step.
//! A seeded `fit` therefore gives bit-identical weights and History with any
//! number of rayon threads (`RAYON_NUM_THREADS=1` or `2`, tested).
//! Random streams (weight initialisation, shuffling, dropout) come from
//! `rand::rngs::StdRng`, seeded from the model seed, the epoch and the step; the
//! stream is fixed for a given `rand` version (pinned by `Cargo.lock`).
//!
//! ## Soundness and untrusted input
//! - **No safe call corrupts memory.** The only `unsafe` code is the AVX2 GEMM
//!   in [`kernels`] and the calls of the recurrent layers' AVX2-compiled block
//!   code behind a run-time CPU check; the GEMM's entry points check every shape with `assert!`
//!   (in release builds too) before the raw-pointer kernel runs, and each
//!   unsafe block states its invariant in a `SAFETY:` comment
//!   (`unsafe_op_in_unsafe_fn` is denied). The built-in layers check the shape
//!   of every view handed to `forward`/`backward`, so a hand-made call with a
//!   wrong size panics with a message instead of writing out of bounds.
//!   `HORN_PORTABLE_GEMM=1` forces the portable kernel (CI runs the suite both
//!   ways, in debug and release), and `scripts/miri.sh` runs the safe-API
//!   tests under Miri.
//! - **`fit` keeps its invariants.** It sizes its buffers for the architecture
//!   once; callbacks get a [`CallbackContext`](callbacks::CallbackContext) that
//!   can change weight values (shape-checked) and the learning rate, never the
//!   layers. Every `on_train_begin` is matched by an `on_train_end`, errors
//!   included.
//! - **No file kills the process.** Model, weights, IDX and CSV loaders read only
//!   regular files, no more than their size, check sizes with overflow-checked
//!   arithmetic, and allocate only what the input's own bytes justify: a model
//!   file's layers are built from the tensors it holds, not initialised from
//!   its claimed sizes. `fuzz/` holds a `cargo fuzz` target per loader, and
//!   `tests/fuzz_loaders.rs` runs seeded mutants of each on stable in every CI
//!   run. Saves are atomic, durable and byte-for-byte deterministic.
//! - **No silent garbage.** NaN propagates through every activation, NaN or
//!   infinite weights in a file are refused, initializer and schedule
//!   parameters must be finite, and a non-finite training loss stops `fit`.
//!
//! ## Differences from Keras, on purpose
//! - Layer names are numbered per model (`dense`, `dense_1`), not per session.
//! - A NaN or infinite training loss stops `fit` with [`Error::Diverged`]
//!   (Keras' `TerminateOnNaN` behaviour) instead of training on garbage, and
//!   a weight left NaN or infinite at an epoch's end with
//!   [`Error::DivergedWeights`].
//! - Optimizer arguments Keras accepts but then divides by zero with are
//!   refused: `epsilon = 0`, and `beta_1` or `beta_2 = 1` for Adam, AdamW,
//!   Adamax and Nadam.
//! - Progress lines use the Keras 2 ASCII format, which reads well in logs.
//! - `class_weight` and `sample_weight` together multiply (as in Keras 2);
//!   Keras 3 refuses the combination.
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod activations;
pub mod callbacks;
pub mod datasets;
#[cfg(feature = "distribute")]
pub mod distribute;
mod error;
mod files;
pub mod initializers;
pub mod kernels;
pub mod layers;
pub mod losses;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod optimizers;
pub mod pictures;
pub mod preprocessing;
pub mod regularizers;
pub mod saving;
mod shape;
mod vmath;

pub use error::{Error, Result};
pub use model::{
    CompileOptions, EvaluateOptions, FitOptions, Graph, History, HistoryParams, IntoData,
    IntoInput, LayerRef, Logs, Model, ModelCompile, Sequential, Tensor,
};
pub use shape::Shape;

/// The key names are matched by: trimmed, lower case, without underscores, so
/// Keras' function names and class names both work (`"categorical_crossentropy"`,
/// `"CategoricalCrossentropy"`, `"RMSprop"`, `"rmsprop"`).
pub(crate) fn name_key(s: &str) -> String {
    s.trim()
        .chars()
        .filter(|&c| c != '_')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Everything a model script needs: `use horn::prelude::*;`.
pub mod prelude {
    pub use crate::activations::Activation::{self, *};
    pub use crate::activations::IntoActivation;
    pub use crate::activations::GELU;
    pub use crate::callbacks::{
        Callback, CallbackContext, CsvLogger, EarlyStopping, LambdaCallback, LearningRateScheduler,
        ModelCheckpoint, ReduceLrOnPlateau, TerminateOnNaN,
    };
    pub use crate::initializers::Initializer;
    pub use crate::layers::{
        ActivationLayer, Add, Average, AveragePooling1D, AveragePooling2D, BatchNormalization,
        Bidirectional, Concatenate, Conv1D, Conv2D, Dense, Dot, Dropout, Embedding, Flatten,
        GlobalAveragePooling1D, GlobalAveragePooling2D, GlobalMaxPooling1D, GlobalMaxPooling2D,
        Layer, LayerNormalization, MaxPooling1D, MaxPooling2D, Maximum, MergeMode, Minimum,
        Multiply, Padding, Reshape, SimpleRNN, Subtract, TimeDistributed, GRU, LSTM,
    };
    pub use crate::losses::{
        BinaryCrossentropy, CategoricalCrossentropy, Huber, Loss, MeanAbsoluteError,
        MeanSquaredError, SparseCategoricalCrossentropy,
    };
    pub use crate::metrics::{confusion_matrix, Metric};
    pub use crate::optimizers::{
        Adadelta, Adagrad, Adam, AdamW, Adamax, LearningRateSchedule, Lion, Nadam, Optimizer,
        RmsProp, Sgd,
    };
    pub use crate::regularizers::Regularizer;
    pub use crate::{
        CompileOptions, Error, EvaluateOptions, FitOptions, Graph, History, Logs, Model,
        ModelCompile, Sequential, Shape, Tensor,
    };
}
