//! `Embedding`: token ids to dense vectors.

use ndarray::{ArrayView2, ArrayViewMut2};
use rand::rngs::StdRng;

use super::{expect_grads, expect_shape, BackwardContext, ForwardContext, Layer, ParamView};
use crate::error::{Error, Result};
use crate::initializers::Initializer;
use crate::kernels::{values, values_mut};
use crate::regularizers::Regularizer;
use crate::saving::LayerConfig;
use crate::shape::Shape;

/// The largest vocabulary: ids travel as `f32`, exact up to 2^24.
const MAX_INPUT_DIM: usize = 1 << 24;

/// Turns token ids into vectors: row `id` of an `(input_dim, output_dim)`
/// table (Keras `Embedding`).
///
/// Ids enter `fit`, `evaluate` and `predict` as numbers in an array of any
/// integer or float type (`Array2<i32>`, `Array2<u32>`, `Array2<f32>`, ...),
/// shape `(batch, steps)`; every id must be a whole number in
/// `0..input_dim`, else the call fails with an error naming the sample and
/// position. The output has one more axis, `(batch, steps, output_dim)`.
///
/// The table's gradient is dense: an id that occurs several times in a
/// batch gets the sum of its gradients, which optimizers then treat like any
/// other weight's gradient, as Keras does on its torch and JAX backends. (On
/// TensorFlow, Keras' Adam squares each occurrence's gradient separately for
/// its second moment, which changes training slightly when ids repeat; the
/// parity test documents both.)
///
/// Keras defaults: embeddings initialized uniform in `[-0.05, 0.05]`, no
/// regularizer, `mask_zero` false (see [`Embedding::mask_zero`]).
///
/// ```
/// use horn::prelude::*;
/// let model = Sequential::new()
///     .input_shape(&[6])
///     .embedding(100, 8)
///     .add(GRU::new(4))
///     .dense(2, Softmax);
/// let ids = ndarray::array![[1, 5, 7, 0, 0, 0], [99, 3, 3, 3, 2, 1]];
/// let p = model.predict(&ids).unwrap();
/// assert_eq!(p.dim(), (2, 2));
/// assert!(model.predict(&ndarray::array![[100, 0, 0, 0, 0, 0]]).is_err()); // id out of range
/// ```
#[derive(Debug, Clone)]
pub struct Embedding {
    pub(crate) input_dim: usize,
    pub(crate) output_dim: usize,
    pub(crate) embeddings_initializer: Initializer,
    pub(crate) embeddings_regularizer: Option<Regularizer>,
    pub(crate) mask_zero: bool,
    /// `(input_dim, output_dim)`, row-major; empty until built.
    embeddings: Vec<f32>,
    /// Ids per sample.
    ids: usize,
}

impl Embedding {
    /// A table of `input_dim` vectors of `output_dim` values.
    pub fn new(input_dim: usize, output_dim: usize) -> Self {
        Embedding {
            input_dim,
            output_dim,
            embeddings_initializer: Initializer::RandomUniform {
                minval: -0.05,
                maxval: 0.05,
            },
            embeddings_regularizer: None,
            mask_zero: false,
            embeddings: Vec::new(),
            ids: 0,
        }
    }

    /// Initializer of the table (default uniform in `[-0.05, 0.05]`).
    pub fn embeddings_initializer(mut self, init: Initializer) -> Self {
        self.embeddings_initializer = init;
        self
    }

    /// Treat id 0 as padding (Keras `mask_zero`, default false): the steps
    /// whose id is 0 are masked for the layers after, as in Keras: recurrent
    /// layers carry their state over them and `GlobalAveragePooling1D`
    /// averages the other steps only. The mask follows the layers that keep
    /// the time axis (Dense, Dropout, the normalizations, recurrent layers
    /// with `return_sequences`); losses do not use it.
    pub fn mask_zero(mut self, yes: bool) -> Self {
        self.mask_zero = yes;
        self
    }

    /// Penalty on the table.
    pub fn embeddings_regularizer(mut self, r: Regularizer) -> Self {
        self.embeddings_regularizer = Some(r);
        self
    }

    /// The row of a valid id, `None` for anything else.
    #[inline]
    fn row(&self, id: f32) -> Option<usize> {
        (id >= 0.0 && id.fract() == 0.0 && (id as usize) < self.input_dim).then_some(id as usize)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.input_dim == 0 || self.input_dim > MAX_INPUT_DIM {
            return Err(Error::arg(
                "input_dim",
                format!("a vocabulary size in 1..={MAX_INPUT_DIM} (ids travel as f32, exact up to 2^24)"),
                self.input_dim,
            ));
        }
        if self.output_dim == 0 {
            return Err(Error::arg(
                "output_dim",
                "a positive integer",
                self.output_dim,
            ));
        }
        self.embeddings_initializer.validate()?;
        if let Some(r) = self.embeddings_regularizer {
            r.validate()?;
        }
        Ok(())
    }
}

impl Layer for Embedding {
    fn class_name(&self) -> &str {
        "Embedding"
    }

    fn build(&mut self, input: &Shape, rng: &mut StdRng) -> Result<Shape> {
        self.validate()?;
        let mut dims = input.dims().to_vec();
        dims.push(self.output_dim);
        let out = Shape::new(&dims);
        input.size().checked_mul(self.output_dim).ok_or_else(|| {
            Error::shape(
                "Embedding output",
                "a size that fits in memory",
                format!("{dims:?}"),
            )
        })?;
        let table = self
            .embeddings_initializer
            .sample(&[self.input_dim, self.output_dim], rng)?;
        self.embeddings = table.into_iter().collect();
        self.ids = input.size();
        Ok(out)
    }

    fn mask_steps(&self, input: &Shape) -> usize {
        if self.mask_zero {
            input.size()
        } else {
            0
        }
    }

    fn compute_mask(&self, x: ArrayView2<f32>, mask: &mut [f32]) {
        for (m, &id) in mask.iter_mut().zip(x.iter()) {
            *m = if id == 0.0 { 0.0 } else { 1.0 };
        }
    }

    fn check_input(&self, x: ArrayView2<f32>, name: &str) -> Result<()> {
        for (r, row) in x.outer_iter().enumerate() {
            for (c, &id) in row.iter().enumerate() {
                if self.row(id).is_none() {
                    return Err(Error::arg(
                        format!("{name}[{r}, {c}]"),
                        format!(
                            "a token id for Embedding: a whole number in 0..{} (input_dim)",
                            self.input_dim
                        ),
                        id,
                    ));
                }
            }
        }
        Ok(())
    }

    fn forward(
        &self,
        x: ArrayView2<f32>,
        mut y: ArrayViewMut2<f32>,
        _aux: ArrayViewMut2<f32>,
        _ctx: &mut ForwardContext<'_>,
    ) {
        let n = x.nrows();
        let d = self.output_dim;
        expect_shape("Embedding", "x", x.shape(), &[n, self.ids]);
        expect_shape("Embedding", "y", y.shape(), &[n, self.ids * d]);
        let ys = values_mut(y.view_mut());
        for (o, &id) in ys.chunks_exact_mut(d).zip(values(x)) {
            match self.row(id) {
                Some(r) => o.copy_from_slice(&self.embeddings[r * d..(r + 1) * d]),
                // An id that no check saw (a data-parallel rank's forward,
                // which does not stop while the others wait): NaN, so the
                // error shows instead of a plausible vector.
                None => o.fill(f32::NAN),
            }
        }
    }

    fn backward(
        &self,
        x: ArrayView2<f32>,
        y: ArrayView2<f32>,
        _aux: ArrayView2<f32>,
        dy: ArrayViewMut2<f32>,
        dx: Option<ArrayViewMut2<f32>>,
        grads: &mut [Vec<f32>],
        _ctx: &mut BackwardContext<'_>,
    ) {
        let n = x.nrows();
        let d = self.output_dim;
        expect_shape("Embedding", "x", x.shape(), &[n, self.ids]);
        expect_shape("Embedding", "dy", dy.shape(), y.shape());
        expect_shape("Embedding", "dy", dy.shape(), &[n, self.ids * d]);
        expect_grads("Embedding", grads, &[self.embeddings.len()]);
        // Each id's rows of dy are added to its table row, in sample order.
        let g = &mut grads[0];
        g.fill(0.0);
        for (row, &id) in values(dy.view()).chunks_exact(d).zip(values(x)) {
            if let Some(r) = self.row(id) {
                for (o, &v) in g[r * d..(r + 1) * d].iter_mut().zip(row) {
                    *o += v;
                }
            }
        }
        // Ids are not differentiable: whatever feeds them gets zeros.
        if let Some(mut dx) = dx {
            dx.fill(0.0);
        }
    }

    fn params(&self) -> Vec<ParamView<'_>> {
        vec![ParamView::trainable(
            "embeddings",
            vec![self.input_dim, self.output_dim],
            &self.embeddings,
        )]
    }

    fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut [f32])) {
        f(&mut self.embeddings);
    }

    fn regularization_penalty(&self) -> f32 {
        self.embeddings_regularizer
            .map_or(0.0, |r| r.penalty(&self.embeddings))
    }

    fn add_regularization_gradient(&self, grads: &mut [Vec<f32>]) {
        if let Some(r) = self.embeddings_regularizer {
            r.add_gradient(&self.embeddings, &mut grads[0]);
        }
    }

    fn config(&self) -> Option<LayerConfig> {
        Some(LayerConfig::Embedding {
            input_dim: self.input_dim,
            output_dim: self.output_dim,
            embeddings_initializer: self.embeddings_initializer,
            embeddings_regularizer: self.embeddings_regularizer,
            mask_zero: self.mask_zero,
        })
    }
}
