//! [`Shape`]: the per-sample shape of a tensor, batch axis excluded.
//!
//! horn keeps every batch as rows: a batch of `n` images of shape
//! `(28, 28, 1)` is an `n x 784` block whose rows are the images in
//! channels-last (NHWC) order, exactly the memory order of Keras' arrays. A
//! layer learns its input's `Shape` when it is built and interprets each row
//! accordingly (a `Conv2D` as `h x w x c`, a `Dense` on a sequence as `steps`
//! rows of `features`), so the engine moves plain rows and the matrix kernels
//! see contiguous blocks.

use std::fmt;

use crate::error::{Error, Result};

/// The shape of one sample (the batch axis excluded), channels last as in Keras:
/// `[28, 28, 1]` for an MNIST image, `[50, 8]` for a sequence of 50 steps of 8
/// features, `[784]` for a flat row.
///
/// ```
/// use horn::Shape;
/// let s = Shape::new(&[26, 26, 32]);
/// assert_eq!(s.size(), 21_632);
/// assert_eq!(s.rank(), 3);
/// assert_eq!(s.to_string(), "(None, 26, 26, 32)");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(Vec<usize>);

impl Shape {
    /// A shape from its dimensions.
    pub fn new(dims: &[usize]) -> Self {
        Shape(dims.to_vec())
    }

    /// The dimensions, outermost first.
    pub fn dims(&self) -> &[usize] {
        &self.0
    }

    /// The number of axes (1 for a flat row).
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// Values per sample: the product of the dimensions (saturating, so a
    /// hostile shape cannot wrap around).
    pub fn size(&self) -> usize {
        self.0.iter().fold(1usize, |a, &d| a.saturating_mul(d))
    }

    /// The last axis (features or channels); 0 for an empty shape.
    pub fn last(&self) -> usize {
        self.0.last().copied().unwrap_or(0)
    }

    /// The same shape with the last axis replaced (Dense on the last axis).
    pub fn with_last(&self, last: usize) -> Shape {
        let mut d = self.0.clone();
        match d.last_mut() {
            Some(l) => *l = last,
            None => d.push(last),
        }
        Shape(d)
    }

    /// Checks that the shape has `rank` axes, for the layer `layer`.
    pub(crate) fn expect_rank(&self, layer: &str, rank: usize, what: &str) -> Result<()> {
        if self.rank() != rank {
            return Err(Error::shape(
                format!("{layer} input"),
                format!("{what} (rank {} with the batch)", rank + 1),
                format!("{self} (rank {})", self.rank() + 1),
            ));
        }
        Ok(())
    }
}

impl fmt::Display for Shape {
    /// Keras' notation with the batch axis: `(None, 26, 26, 32)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(None")?;
        for d in &self.0 {
            write!(f, ", {d}")?;
        }
        f.write_str(")")
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl From<&[usize]> for Shape {
    fn from(d: &[usize]) -> Self {
        Shape::new(d)
    }
}

impl<const N: usize> From<[usize; N]> for Shape {
    fn from(d: [usize; N]) -> Self {
        Shape::new(&d)
    }
}

impl From<Vec<usize>> for Shape {
    fn from(d: Vec<usize>) -> Self {
        Shape(d)
    }
}

impl From<usize> for Shape {
    fn from(d: usize) -> Self {
        Shape(vec![d])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_size() {
        assert_eq!(Shape::from(10).to_string(), "(None, 10)");
        assert_eq!(Shape::new(&[3, 4]).with_last(7), Shape::new(&[3, 7]));
        assert_eq!(Shape::new(&[usize::MAX, 2]).size(), usize::MAX);
        assert!(Shape::new(&[2, 2])
            .expect_rank("Conv2D", 3, "(h, w, c)")
            .is_err());
    }
}
