//! `Activation`: an activation function as a layer of its own (0 parameters).

use ndarray::{ArrayView2, ArrayViewMut2};
use rand::rngs::StdRng;

use super::{expect_shape, ForwardContext, Layer};
use crate::activations::Activation;
use crate::error::Result;
use crate::kernels::{values, values_mut};
use crate::saving::LayerConfig;

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
}

impl ActivationLayer {
    /// A layer applying `activation`.
    pub fn new(activation: Activation) -> Self {
        ActivationLayer { activation }
    }
}

impl Layer for ActivationLayer {
    fn class_name(&self) -> &str {
        "Activation"
    }

    fn build(&mut self, input_dim: usize, _rng: &mut StdRng) -> Result<usize> {
        self.activation.validate()?;
        Ok(input_dim)
    }

    fn forward(
        &self,
        x: ArrayView2<f32>,
        mut y: ArrayViewMut2<f32>,
        _aux: ArrayViewMut2<f32>,
        _ctx: &mut ForwardContext<'_>,
    ) {
        expect_shape("Activation", "y", y.shape(), x.shape());
        let cols = x.ncols();
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
        dy_is_preactivation: bool,
    ) {
        expect_shape("Activation", "y", y.shape(), x.shape());
        expect_shape("Activation", "dy", dy.shape(), x.shape());
        if let Some(dx) = &dx {
            expect_shape("Activation", "dx", dx.shape(), x.shape());
        }
        let cols = x.ncols();
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
