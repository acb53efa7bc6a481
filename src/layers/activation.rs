//! `Activation`: an activation function as a layer of its own (0 parameters).

use ndarray::{ArrayView2, ArrayViewMut2};
use rand::rngs::StdRng;

use super::{expect_shape, BackwardContext, ForwardContext, Layer};
use crate::activations::Activation;
use crate::error::Result;
use crate::kernels::{values, values_mut};
use crate::saving::LayerConfig;
use crate::shape::Shape;

/// An activation applied as a separate layer (Keras `Activation`).
///
/// ```
/// use horn::prelude::*;
/// let model = Sequential::new().input(4).dense(3, Linear).activation(Softmax);
/// # let _ = model;
/// ```
#[derive(Debug, Clone)]
pub struct ActivationLayer {
    pub(crate) activation: Activation,
    /// The input's last axis, the one softmax normalizes (set by `build`).
    last: usize,
}

impl ActivationLayer {
    /// A layer applying `activation`.
    pub fn new(activation: Activation) -> Self {
        ActivationLayer {
            activation,
            last: 0,
        }
    }
}

impl ActivationLayer {
    /// The width softmax normalizes over: the input's last axis once built,
    /// else (a layer called by hand) the whole row.
    fn axis(&self, cols: usize) -> usize {
        if self.last > 0 && cols % self.last == 0 {
            self.last
        } else {
            cols
        }
    }
}

impl Layer for ActivationLayer {
    fn propagates_mask(&self) -> bool {
        true
    }

    fn class_name(&self) -> &str {
        "Activation"
    }

    fn build(&mut self, input: &Shape, _rng: &mut StdRng) -> Result<Shape> {
        self.activation.validate()?;
        self.last = input.last();
        Ok(input.clone())
    }

    fn forward(
        &self,
        x: ArrayView2<f32>,
        mut y: ArrayViewMut2<f32>,
        _aux: ArrayViewMut2<f32>,
        _ctx: &mut ForwardContext<'_>,
    ) {
        expect_shape("Activation", "y", y.shape(), x.shape());
        let cols = self.axis(x.ncols());
        self.activation
            .forward(values(x), values_mut(y.view_mut()), cols);
    }

    fn backward(
        &self,
        x: ArrayView2<f32>,
        y: ArrayView2<f32>,
        _aux: ArrayView2<f32>,
        mut dy: ArrayViewMut2<f32>,
        dx: Option<ArrayViewMut2<f32>>,
        _grads: &mut [Vec<f32>],
        ctx: &mut BackwardContext<'_>,
    ) {
        let dy_is_preactivation = ctx.dy_is_preactivation;
        expect_shape("Activation", "y", y.shape(), x.shape());
        expect_shape("Activation", "dy", dy.shape(), x.shape());
        if let Some(dx) = &dx {
            expect_shape("Activation", "dx", dx.shape(), x.shape());
        }
        let cols = self.axis(x.ncols());
        if !dy_is_preactivation {
            self.activation
                .backward(values(x), values(y), values_mut(dy.view_mut()), cols);
        }
        if let Some(mut dx) = dx {
            dx.assign(&dy);
        }
    }

    fn output_activation(&self) -> Option<Activation> {
        Some(self.activation)
    }

    fn preactivation<'a>(
        &self,
        x: ArrayView2<'a, f32>,
        _aux: ArrayView2<'a, f32>,
    ) -> Option<ArrayView2<'a, f32>> {
        Some(x)
    }

    fn config(&self) -> Option<LayerConfig> {
        Some(LayerConfig::Activation {
            activation: self.activation,
        })
    }
}
