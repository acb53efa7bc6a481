//! Learning-rate schedules, evaluated at the optimizer's iteration count before
//! each step (Keras `keras/src/optimizers/schedules/learning_rate_schedule.py`).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A learning rate that changes with the step count.
///
/// ```
/// use horn::optimizers::LearningRateSchedule;
/// let s = LearningRateSchedule::ExponentialDecay {
///     initial_learning_rate: 0.1, decay_steps: 10, decay_rate: 0.5, staircase: false };
/// assert!((s.at(10) - 0.05).abs() < 1e-7);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum LearningRateSchedule {
    /// `lr = initial * rate^(step / decay_steps)` (the exponent floored when `staircase`).
    ExponentialDecay {
        /// Rate at step 0.
        initial_learning_rate: f32,
        /// Steps per decay period.
        decay_steps: u64,
        /// Factor per period.
        decay_rate: f32,
        /// Whether to decay in whole periods.
        staircase: bool,
    },
    /// `values[0]` while `step <= boundaries[0]`, `values[i]` while
    /// `boundaries[i-1] < step <= boundaries[i]`, the last value after that.
    PiecewiseConstantDecay {
        /// Increasing step boundaries.
        boundaries: Vec<u64>,
        /// One more value than boundaries.
        values: Vec<f32>,
    },
    /// Linear warm-up from `initial` to `warmup_target` over `warmup_steps`, then
    /// `lr = target * ((1 - alpha) * 0.5 * (1 + cos(pi * s / decay_steps)) + alpha)`
    /// with `s = min(step - warmup_steps, decay_steps)`; `target` is
    /// `warmup_target` if set, else `initial`.
    CosineDecay {
        /// Rate at step 0.
        initial_learning_rate: f32,
        /// Length of the cosine part.
        decay_steps: u64,
        /// Final fraction of the rate (Keras default 0).
        alpha: f32,
        /// Rate reached after warm-up (Keras default none).
        warmup_target: Option<f32>,
        /// Warm-up length (Keras default 0).
        warmup_steps: u64,
    },
    /// `lr = initial / (1 + rate * step / decay_steps)` (floored when `staircase`).
    InverseTimeDecay {
        /// Rate at step 0.
        initial_learning_rate: f32,
        /// Steps per period.
        decay_steps: u64,
        /// Decay per period.
        decay_rate: f32,
        /// Whether to decay in whole periods.
        staircase: bool,
    },
}

impl LearningRateSchedule {
    /// The learning rate at step 0 (the first of a piecewise schedule's
    /// values).
    pub fn initial_learning_rate(&self) -> f32 {
        match self {
            LearningRateSchedule::ExponentialDecay {
                initial_learning_rate,
                ..
            }
            | LearningRateSchedule::CosineDecay {
                initial_learning_rate,
                ..
            }
            | LearningRateSchedule::InverseTimeDecay {
                initial_learning_rate,
                ..
            } => *initial_learning_rate,
            LearningRateSchedule::PiecewiseConstantDecay { values, .. } => {
                values.first().copied().unwrap_or(0.0)
            }
        }
    }

    /// Checks the parameters.
    pub fn validate(&self) -> Result<()> {
        let pos = |name: &str, v: u64| {
            if v == 0 {
                Err(Error::arg(name, "a positive integer", v))
            } else {
                Ok(())
            }
        };
        // A negative or NaN rate would climb the loss instead of descending it.
        let rate = |name: &str, v: f32| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(Error::arg(name, "a finite, non-negative number", v))
            }
        };
        match self {
            LearningRateSchedule::ExponentialDecay {
                initial_learning_rate,
                decay_steps,
                decay_rate,
                ..
            }
            | LearningRateSchedule::InverseTimeDecay {
                initial_learning_rate,
                decay_steps,
                decay_rate,
                ..
            } => {
                rate("initial_learning_rate", *initial_learning_rate)?;
                rate("decay_rate", *decay_rate)?;
                pos("decay_steps", *decay_steps)
            }
            LearningRateSchedule::CosineDecay {
                initial_learning_rate,
                decay_steps,
                alpha,
                warmup_target,
                ..
            } => {
                rate("initial_learning_rate", *initial_learning_rate)?;
                if !(0.0..=1.0).contains(alpha) {
                    return Err(Error::arg("alpha", "a number in [0, 1]", alpha));
                }
                if let Some(t) = warmup_target {
                    rate("warmup_target", *t)?;
                }
                pos("decay_steps", *decay_steps)
            }
            LearningRateSchedule::PiecewiseConstantDecay { boundaries, values } => {
                for v in values {
                    rate("values", *v)?;
                }
                if values.len() != boundaries.len() + 1 {
                    return Err(Error::arg(
                        "values",
                        format!("{} values (one more than boundaries)", boundaries.len() + 1),
                        values.len(),
                    ));
                }
                if boundaries.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(Error::arg(
                        "boundaries",
                        "strictly increasing steps",
                        format!("{boundaries:?}"),
                    ));
                }
                Ok(())
            }
        }
    }

    /// The learning rate at a step (the optimizer's iteration count).
    pub fn at(&self, step: u64) -> f32 {
        let s = step as f64;
        match self {
            LearningRateSchedule::ExponentialDecay {
                initial_learning_rate,
                decay_steps,
                decay_rate,
                staircase,
            } => {
                let mut p = s / *decay_steps as f64;
                if *staircase {
                    p = p.floor();
                }
                (*initial_learning_rate as f64 * (*decay_rate as f64).powf(p)) as f32
            }
            LearningRateSchedule::PiecewiseConstantDecay { boundaries, values } => {
                let i = boundaries.iter().take_while(|&&b| step > b).count();
                values[i.min(values.len() - 1)]
            }
            LearningRateSchedule::CosineDecay {
                initial_learning_rate,
                decay_steps,
                alpha,
                warmup_target,
                warmup_steps,
            } => {
                let init = *initial_learning_rate as f64;
                if let Some(target) = warmup_target {
                    if step < *warmup_steps {
                        let frac = s / *warmup_steps as f64;
                        return (init + (*target as f64 - init) * frac) as f32;
                    }
                }
                let base = warmup_target.map_or(init, |t| t as f64);
                let done = (step.saturating_sub(*warmup_steps)).min(*decay_steps) as f64;
                let cos = 0.5 * (1.0 + (std::f64::consts::PI * done / *decay_steps as f64).cos());
                let a = *alpha as f64;
                (base * ((1.0 - a) * cos + a)) as f32
            }
            LearningRateSchedule::InverseTimeDecay {
                initial_learning_rate,
                decay_steps,
                decay_rate,
                staircase,
            } => {
                let mut p = s / *decay_steps as f64;
                if *staircase {
                    p = p.floor();
                }
                (*initial_learning_rate as f64 / (1.0 + *decay_rate as f64 * p)) as f32
            }
        }
    }
}
