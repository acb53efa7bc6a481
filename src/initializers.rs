//! Weight initializers with Keras 3 formulas and defaults
//! (`keras/src/initializers/random_initializers.py`).
//!
//! Fans follow Keras' `compute_fans`: a kernel of shape `(in, out)` has
//! `fan_in = in`, `fan_out = out`; a 1-D shape `(n,)` has both equal to `n`.
//! "Truncated normal" draws are re-drawn until they fall within two standard
//! deviations, as Keras does; the variance-scaling normals divide the standard
//! deviation by 0.87962566103423978 to make up for the truncation.

use std::str::FromStr;

use ndarray::{Array2, ArrayD, IxDyn};
use ndarray_rand::rand_distr::{Distribution, StandardNormal};
use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How a weight tensor is filled before training.
///
/// ```
/// use horn::initializers::Initializer;
/// use rand::SeedableRng;
/// let mut rng = rand::rngs::StdRng::seed_from_u64(1);
/// let w = Initializer::GlorotUniform.sample(&[784, 512], &mut rng).unwrap();
/// let limit = (6.0f32 / (784.0 + 512.0)).sqrt();
/// assert!(w.iter().all(|v| v.abs() <= limit));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
// Adjacent tagging, because some variants carry a bare number:
// {"name": "relu"}, {"name": "elu", "config": 1.0}, {"name": "gelu", "config": {"approximate": true}}.
#[serde(tag = "name", content = "config", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Initializer {
    /// `U(-l, l)`, `l = sqrt(6 / (fan_in + fan_out))`; Keras' Dense kernel default.
    GlorotUniform,
    /// Truncated normal, `stddev = sqrt(2 / (fan_in + fan_out)) / 0.8796...`.
    GlorotNormal,
    /// `U(-l, l)`, `l = sqrt(6 / fan_in)`.
    HeUniform,
    /// Truncated normal, `stddev = sqrt(2 / fan_in) / 0.8796...`.
    HeNormal,
    /// `U(-l, l)`, `l = sqrt(3 / fan_in)`.
    LecunUniform,
    /// Truncated normal, `stddev = sqrt(1 / fan_in) / 0.8796...`.
    LecunNormal,
    /// `U(minval, maxval)`; Keras defaults -0.05, 0.05.
    RandomUniform {
        /// Lower bound.
        minval: f32,
        /// Upper bound.
        maxval: f32,
    },
    /// `N(mean, stddev)`; Keras defaults 0, 0.05.
    RandomNormal {
        /// Mean.
        mean: f32,
        /// Standard deviation.
        stddev: f32,
    },
    /// All zeros; Keras' Dense bias default.
    Zeros,
    /// All ones.
    Ones,
    /// Every value equal to the constant.
    Constant(f32),
    /// A (semi-)orthogonal matrix from the QR decomposition of a normal draw,
    /// times `gain` (Keras default 1.0).
    Orthogonal {
        /// Multiplicative factor.
        gain: f32,
    },
}

impl FromStr for Initializer {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        // Keys without underscores: Keras function and class names both match.
        Ok(match crate::name_key(s).as_str() {
            "glorotuniform" => Initializer::GlorotUniform,
            "glorotnormal" => Initializer::GlorotNormal,
            "heuniform" => Initializer::HeUniform,
            "henormal" => Initializer::HeNormal,
            "lecununiform" => Initializer::LecunUniform,
            "lecunnormal" => Initializer::LecunNormal,
            "randomuniform" => Initializer::RandomUniform {
                minval: -0.05,
                maxval: 0.05,
            },
            "randomnormal" => Initializer::RandomNormal {
                mean: 0.0,
                stddev: 0.05,
            },
            "zeros" => Initializer::Zeros,
            "ones" => Initializer::Ones,
            "orthogonal" => Initializer::Orthogonal { gain: 1.0 },
            _ => {
                return Err(Error::UnknownName {
                    kind: "initializer",
                    name: s.into(),
                    known: "glorot_uniform, glorot_normal, he_uniform, he_normal, lecun_uniform, lecun_normal, random_uniform, random_normal, zeros, ones, orthogonal".into(),
                })
            }
        })
    }
}

/// Keras' correction for a normal truncated at two standard deviations.
const TRUNC_STD: f32 = 0.879_625_7;

/// `(fan_in, fan_out)` as Keras' `compute_fans` gives them.
pub fn compute_fans(shape: &[usize]) -> (f32, f32) {
    match shape {
        [] => (1.0, 1.0),
        [n] => (*n as f32, *n as f32),
        [a, b] => (*a as f32, *b as f32),
        _ => {
            // In f64, exact for every shape that can be allocated, and no
            // overflow for one that cannot (a zero axis after huge ones).
            let receptive: f64 = shape[..shape.len() - 2].iter().map(|&d| d as f64).product();
            (
                (shape[shape.len() - 2] as f64 * receptive) as f32,
                (shape[shape.len() - 1] as f64 * receptive) as f32,
            )
        }
    }
}

impl Initializer {
    /// Checks the parameters: every number finite, `minval <= maxval`,
    /// `stddev >= 0`. A NaN or infinite parameter would fill the weights with
    /// values no training can recover from.
    ///
    /// ```
    /// use horn::initializers::Initializer;
    /// assert!(Initializer::Constant(f32::NAN).validate().is_err());
    /// assert!(Initializer::RandomUniform { minval: -1.0, maxval: f32::INFINITY }.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<()> {
        let finite = |name: &str, v: f32| {
            if v.is_finite() {
                Ok(())
            } else {
                Err(Error::arg(name, "a finite number", v))
            }
        };
        match *self {
            Initializer::RandomUniform { minval, maxval } => {
                finite("minval", minval)?;
                finite("maxval", maxval)?;
                if minval > maxval {
                    return Err(Error::arg(
                        "maxval",
                        format!("a number >= minval ({minval})"),
                        maxval,
                    ));
                }
                Ok(())
            }
            Initializer::RandomNormal { mean, stddev } => {
                finite("mean", mean)?;
                finite("stddev", stddev)?;
                if stddev < 0.0 {
                    return Err(Error::arg("stddev", "a non-negative number", stddev));
                }
                Ok(())
            }
            Initializer::Constant(v) => finite("value", v),
            Initializer::Orthogonal { gain } => finite("gain", gain),
            _ => Ok(()),
        }
    }

    /// Draws a tensor of the given shape.
    ///
    /// Fails, instead of aborting, when the tensor cannot be allocated (a
    /// `Dense(10^12)`): the size is computed with overflow checks, checked
    /// against [`crate::memory::memory_limit`] and the memory reserved
    /// before anything is drawn.
    pub fn sample(&self, shape: &[usize], rng: &mut StdRng) -> Result<ArrayD<f32>> {
        self.validate()?;
        let n = checked_len(shape)?;
        // Within horn's memory limit (a reservation that overcommit grants
        // would kill the process when the values are drawn).
        crate::memory::Budget::new("building the model")?.check(n, 4, || {
            format!("a weight tensor of shape {shape:?} ({n} values)")
        })?;
        let mut reserve = Vec::<f32>::new();
        reserve.try_reserve_exact(n).map_err(|_| {
            Error::arg(
                "shape",
                "a weight tensor that fits in memory",
                format!("{shape:?} ({n} values)"),
            )
        })?;
        drop(reserve);
        let (fan_in, fan_out) = compute_fans(shape);
        let fan_avg = (fan_in + fan_out) / 2.0;
        let uniform = |rng: &mut StdRng, limit: f32| -> Vec<f32> {
            (0..n).map(|_| rng.random_range(-limit..=limit)).collect()
        };
        let truncated = |rng: &mut StdRng, stddev: f32| -> Vec<f32> {
            (0..n).map(|_| truncated_normal(rng) * stddev).collect()
        };
        let data = match *self {
            Initializer::GlorotUniform => uniform(rng, (3.0 / fan_avg).sqrt()),
            Initializer::HeUniform => uniform(rng, (6.0 / fan_in).sqrt()),
            Initializer::LecunUniform => uniform(rng, (3.0 / fan_in).sqrt()),
            Initializer::GlorotNormal => truncated(rng, (1.0 / fan_avg).sqrt() / TRUNC_STD),
            Initializer::HeNormal => truncated(rng, (2.0 / fan_in).sqrt() / TRUNC_STD),
            Initializer::LecunNormal => truncated(rng, (1.0 / fan_in).sqrt() / TRUNC_STD),
            Initializer::RandomUniform { minval, maxval } => (0..n)
                .map(|_| minval + (maxval - minval) * rng.random::<f32>())
                .collect(),
            Initializer::RandomNormal { mean, stddev } => (0..n)
                .map(|_| {
                    let v: f64 = StandardNormal.sample(rng);
                    mean + stddev * v as f32
                })
                .collect::<Vec<f32>>(),
            Initializer::Zeros => vec![0.0; n],
            Initializer::Ones => vec![1.0; n],
            Initializer::Constant(c) => vec![c; n],
            Initializer::Orthogonal { gain } => orthogonal(shape, gain, rng),
        };
        ArrayD::from_shape_vec(IxDyn(shape), data)
            .map_err(|e| Error::shape("initializer", format!("{shape:?}"), e.to_string()))
    }
}

/// The number of values of a shape, or an error when it overflows `usize` or
/// exceeds what one allocation can hold.
pub(crate) fn checked_len(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize / std::mem::size_of::<f32>())
        .ok_or_else(|| {
            Error::arg(
                "shape",
                "a tensor small enough to address",
                format!("{shape:?}"),
            )
        })
}

/// A standard normal draw re-drawn until it lies within two standard deviations.
fn truncated_normal(rng: &mut StdRng) -> f32 {
    loop {
        let v: f64 = StandardNormal.sample(rng);
        if v.abs() <= 2.0 {
            return v as f32;
        }
    }
}

/// Keras' orthogonal initializer: QR of a `(max, min)` normal draw, signs fixed by
/// the diagonal of R, transposed when the kernel is wide.
///
/// Modified Gram-Schmidt on the columns gives Q with a positive R diagonal,
/// which equals numpy's `Q * sign(diag(R))`. The columns are stored as
/// contiguous rows, so every dot product and update is a unit-stride loop
/// (a 2000 x 2000 kernel takes seconds, not minutes).
fn orthogonal(shape: &[usize], gain: f32, rng: &mut StdRng) -> Vec<f32> {
    let n: usize = shape.iter().product();
    if n == 0 {
        return Vec::new();
    }
    let cols = *shape.last().unwrap_or(&1);
    let rows = n / cols.max(1);
    let (tall, short) = (rows.max(cols), rows.min(cols));
    // Drawn in the row-major order of a (tall, short) matrix, as before.
    let draws: Vec<f64> = (0..tall * short)
        .map(|_| StandardNormal.sample(rng))
        .collect();
    // qt[j] is column j of the (tall, short) matrix.
    let mut qt = Array2::<f64>::from_shape_fn((short, tall), |(j, i)| draws[i * short + j]);
    for j in 0..short {
        let (done, rest) = qt.view_mut().split_at(ndarray::Axis(0), j);
        let mut col = rest.index_axis_move(ndarray::Axis(0), 0);
        let col = col.as_slice_mut().unwrap_or(&mut []);
        for k in 0..j {
            let qk = done.row(k);
            let qk = qk.as_slice().unwrap_or(&[]);
            let dot: f64 = col.iter().zip(qk).map(|(a, b)| a * b).sum();
            col.iter_mut().zip(qk).for_each(|(a, b)| *a -= dot * b);
        }
        let norm = col.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-30);
        col.iter_mut().for_each(|v| *v /= norm);
    }
    // Q is (tall, short) = qt^T; a wide kernel (rows < cols) takes Q^T = qt.
    let q = if rows < cols {
        qt
    } else {
        qt.reversed_axes().as_standard_layout().into_owned()
    };
    q.iter().map(|&v| v as f32 * gain).collect()
}
