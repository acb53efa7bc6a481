//! Weight penalties added to the loss (Keras `keras/src/regularizers/regularizers.py`).
//!
//! The penalty is added *after* the batch reduction and is not divided by the batch
//! size, as Keras does; it is part of the reported `loss`.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A weight penalty: `l1 * sum |w| + l2 * sum w^2`.
///
/// Keras defaults: `L1` 0.01, `L2` 0.01, `L1L2` 0 and 0.
///
/// ```
/// use horn::regularizers::Regularizer;
/// let r = Regularizer::l2(0.01);
/// assert!((r.penalty(&[1.0, -2.0]) - 0.05).abs() < 1e-7);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Regularizer {
    /// L1 factor.
    pub l1: f32,
    /// L2 factor.
    pub l2: f32,
}

impl Regularizer {
    /// `l1 * sum |w|` (Keras `L1`, default 0.01).
    pub fn l1(l1: f32) -> Self {
        Regularizer { l1, l2: 0.0 }
    }
    /// `l2 * sum w^2` (Keras `L2`, default 0.01).
    pub fn l2(l2: f32) -> Self {
        Regularizer { l1: 0.0, l2 }
    }
    /// Both penalties (Keras `L1L2`).
    pub fn l1_l2(l1: f32, l2: f32) -> Self {
        Regularizer { l1, l2 }
    }

    /// Checks that both factors are finite and non-negative.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [("l1", self.l1), ("l2", self.l2)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::arg(name, "a finite, non-negative number", v));
            }
        }
        Ok(())
    }

    /// The penalty for a weight tensor.
    pub fn penalty(&self, w: &[f32]) -> f32 {
        let mut s = 0.0f64;
        for &v in w {
            s += (self.l1 * v.abs() + self.l2 * v * v) as f64;
        }
        s as f32
    }

    /// Adds the penalty's gradient `l1 * sign(w) + 2 * l2 * w` to `grad`.
    pub fn add_gradient(&self, w: &[f32], grad: &mut [f32]) {
        for (g, &v) in grad.iter_mut().zip(w) {
            let sign = if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                0.0
            };
            *g += self.l1 * sign + 2.0 * self.l2 * v;
        }
    }
}
