//! `Dropout`: inverted dropout, active only in training.

use ndarray::{ArrayView2, ArrayViewMut2};
use rand::rngs::StdRng;
use rand::Rng;

use super::{expect_shape, BackwardContext, Buffers, ForwardContext, Layer};
use crate::error::{Error, Result};
use crate::kernels::{values, values_mut};
use crate::saving::LayerConfig;
use crate::shape::Shape;

/// Inverted dropout (Keras `Dropout`): in training each value is kept with
/// probability `1 - rate` and scaled by `1 / (1 - rate)`, else set to 0; at
/// inference the layer is the identity. The mask is `U[0, 1) < 1 - rate`, drawn
/// from the step's seeded stream.
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
        let mask = values_mut(aux.view_mut());
        for m in mask.iter_mut() {
            *m = if ctx.rng.random::<f32>() < keep {
                scale
            } else {
                0.0
            };
        }
        for ((o, &i), &m) in values_mut(y.view_mut())
            .iter_mut()
            .zip(values(x))
            .zip(mask.iter())
        {
            *o = i * m;
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
