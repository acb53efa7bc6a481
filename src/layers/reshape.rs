//! `Flatten` and `Reshape`: a new shape for the same row of values.
//!
//! A batch is rows of samples in row-major order, so both layers only
//! reinterpret a row: they copy it (one memory-speed pass) and change the
//! shape the next layer sees.

use ndarray::{ArrayView2, ArrayViewMut2};
use rand::rngs::StdRng;

use super::{expect_shape, BackwardContext, ForwardContext, Layer};
use crate::error::{Error, Result};
use crate::saving::LayerConfig;
use crate::shape::Shape;

fn copy_forward(class: &str, x: ArrayView2<f32>, mut y: ArrayViewMut2<f32>) {
    expect_shape(class, "y", y.shape(), x.shape());
    y.assign(&x);
}

fn copy_backward(class: &str, dy: ArrayViewMut2<f32>, dx: Option<ArrayViewMut2<f32>>) {
    if let Some(mut dx) = dx {
        expect_shape(class, "dx", dx.shape(), dy.shape());
        dx.assign(&dy);
    }
}

/// Flattens each sample to one axis (Keras `Flatten`): `(h, w, c)` becomes
/// `(h * w * c)` in channels-last order, as Keras does.
///
/// ```
/// use horn::prelude::*;
/// let m = Sequential::new().input_shape(&[5, 5, 64]).flatten();
/// assert_eq!(m.output_shape().unwrap().dims(), &[1600]);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Flatten;

impl Flatten {
    /// The layer.
    pub fn new() -> Self {
        Flatten
    }
}

impl Layer for Flatten {
    fn class_name(&self) -> &str {
        "Flatten"
    }
    fn build(&mut self, input: &Shape, _rng: &mut StdRng) -> Result<Shape> {
        Ok(Shape::new(&[input.size()]))
    }
    fn forward(
        &self,
        x: ArrayView2<f32>,
        y: ArrayViewMut2<f32>,
        _aux: ArrayViewMut2<f32>,
        _ctx: &mut ForwardContext<'_>,
    ) {
        copy_forward("Flatten", x, y);
    }
    fn backward(
        &self,
        _x: ArrayView2<f32>,
        _y: ArrayView2<f32>,
        _aux: ArrayView2<f32>,
        dy: ArrayViewMut2<f32>,
        dx: Option<ArrayViewMut2<f32>>,
        _grads: &mut [Vec<f32>],
        _ctx: &mut BackwardContext<'_>,
    ) {
        copy_backward("Flatten", dy, dx);
    }
    fn config(&self) -> Option<LayerConfig> {
        Some(LayerConfig::Flatten)
    }
}

/// Gives each sample a new shape with the same number of values (Keras
/// `Reshape(target_shape)`); one dimension may be `-1`, inferred from the
/// others.
///
/// ```
/// use horn::prelude::*;
/// let m = Sequential::new().input_shape(&[7, 6, 3]).add(Reshape::new(&[6, -1]));
/// assert_eq!(m.output_shape().unwrap().dims(), &[6, 21]);
/// ```
#[derive(Debug, Clone)]
pub struct Reshape {
    pub(crate) target_shape: Vec<i64>,
}

impl Reshape {
    /// A reshape to `target_shape` (batch excluded; at most one `-1`).
    pub fn new(target_shape: &[i64]) -> Self {
        Reshape {
            target_shape: target_shape.to_vec(),
        }
    }

    /// The output shape for `input`, or an error naming both.
    pub(crate) fn resolve(&self, input: &Shape) -> Result<Shape> {
        let t = &self.target_shape;
        let bad = || {
            Error::shape(
                "Reshape",
                format!(
                    "a target shape {t:?} with the input's {} values (positive dimensions, at most one -1)",
                    input.size()
                ),
                input.to_string(),
            )
        };
        let unknown = t.iter().filter(|&&d| d == -1).count();
        if t.is_empty() || unknown > 1 || t.iter().any(|&d| d == 0 || d < -1) {
            return Err(bad());
        }
        let known = t
            .iter()
            .filter(|&&d| d > 0)
            .try_fold(1usize, |a, &d| a.checked_mul(usize::try_from(d).ok()?))
            .ok_or_else(bad)?;
        let size = input.size();
        let dims: Vec<usize> = if unknown == 1 {
            if known == 0 || size % known != 0 {
                return Err(bad());
            }
            t.iter()
                .map(|&d| if d == -1 { size / known } else { d as usize })
                .collect()
        } else {
            if known != size {
                return Err(bad());
            }
            t.iter().map(|&d| d as usize).collect()
        };
        Ok(Shape::from(dims))
    }
}

impl Layer for Reshape {
    fn class_name(&self) -> &str {
        "Reshape"
    }
    fn build(&mut self, input: &Shape, _rng: &mut StdRng) -> Result<Shape> {
        self.resolve(input)
    }
    fn forward(
        &self,
        x: ArrayView2<f32>,
        y: ArrayViewMut2<f32>,
        _aux: ArrayViewMut2<f32>,
        _ctx: &mut ForwardContext<'_>,
    ) {
        copy_forward("Reshape", x, y);
    }
    fn backward(
        &self,
        _x: ArrayView2<f32>,
        _y: ArrayView2<f32>,
        _aux: ArrayView2<f32>,
        dy: ArrayViewMut2<f32>,
        dx: Option<ArrayViewMut2<f32>>,
        _grads: &mut [Vec<f32>],
        _ctx: &mut BackwardContext<'_>,
    ) {
        copy_backward("Reshape", dy, dx);
    }
    fn config(&self) -> Option<LayerConfig> {
        Some(LayerConfig::Reshape {
            target_shape: self.target_shape.clone(),
        })
    }
}
