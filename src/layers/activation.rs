//! `Activation`: an activation function as a layer of its own (0 parameters).

use ndarray::{ArrayView2, ArrayViewMut2};
use rand::rngs::StdRng;

use super::{ForwardContext, Layer};
use crate::activations::Activation;
use crate::error::Result;
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
        let cols = x.ncols();
        let xs = x.to_slice().expect("workspace buffers are contiguous");
        let ys = y.as_slice_mut().expect("workspace buffers are contiguous");
        self.activation.forward(xs, ys, cols);
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
        let cols = x.ncols();
        if !dy_is_preactivation {
            let xs = x.to_slice().expect("workspace buffers are contiguous");
            let ys = y.to_slice().expect("workspace buffers are contiguous");
            let ds = dy.as_slice_mut().expect("workspace buffers are contiguous");
            self.activation.backward(xs, ys, ds, cols);
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
