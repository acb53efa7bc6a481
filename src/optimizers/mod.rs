//! Optimizers with Keras 3 defaults and update rules.
//!
//! The split mirrors Keras' base optimizer: [`Optimizer`] owns what every
//! optimizer shares (learning rate or schedule, gradient clipping, weight decay,
//! the iteration count and the slot variables) and applies it in Keras' order:
//! clip the gradients (`clipnorm` per tensor, else `global_clipnorm`, else
//! `clipvalue`), apply weight decay `w -= w * weight_decay * lr`, run the
//! optimizer's own update, then `iterations += 1`. The typed configurations
//! ([`Sgd`], [`RmsProp`], [`Adam`], ...) carry only their own hyper-parameters.
//!
//! Slot variables start at zero (Adagrad: at `initial_accumulator_value`) and are
//! stored planar per tensor (slot 0 of every element, then slot 1, ...), so each
//! update is one branch-free, vectorized pass over plain slices. Large tensors are updated in fixed-size parallel
//! chunks; every element's arithmetic is independent, so results do not depend on
//! the number of threads.

mod schedules;

pub use schedules::LearningRateSchedule;

use std::str::FromStr;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Stochastic gradient descent (Keras `SGD`): `m = momentum * m - lr * g`, then
/// `w += m`, or with Nesterov `w += momentum * m - lr * g`. Defaults: lr 0.01,
/// momentum 0, nesterov false.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sgd {
    /// Step size (Keras default 0.01).
    pub learning_rate: f32,
    /// Momentum factor in `[0, 1]` (default 0).
    pub momentum: f32,
    /// Nesterov momentum (default false).
    pub nesterov: bool,
}

impl Default for Sgd {
    fn default() -> Self {
        Sgd {
            learning_rate: 0.01,
            momentum: 0.0,
            nesterov: false,
        }
    }
}

/// RMSprop (Keras 3 form, epsilon inside the square root):
/// `v = rho v + (1 - rho) g^2`; `w -= lr g / sqrt(v + eps)`. Centered:
/// `a = rho a + (1 - rho) g` and the denominator is `sqrt(v - a^2 + eps)`. With
/// momentum: `m = momentum m + lr g / sqrt(...)`, `w -= m`.
/// Defaults: lr 0.001, rho 0.9, momentum 0, epsilon 1e-7, centered false.
///
/// Note: the legacy tf.keras RMSprop (TF <= 2.10) put epsilon outside the root.
#[doc(alias = "RMSprop")]
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RmsProp {
    /// Step size (default 0.001).
    pub learning_rate: f32,
    /// Decay of the squared-gradient average (default 0.9).
    pub rho: f32,
    /// Momentum (default 0).
    pub momentum: f32,
    /// Fuzz factor, positive (default 1e-7). Keras accepts 0, but then a
    /// weight whose gradient is 0 divides 0 by 0 and becomes NaN: refused.
    pub epsilon: f32,
    /// Normalise by the gradient's variance instead of its second moment (default false).
    pub centered: bool,
}

impl Default for RmsProp {
    fn default() -> Self {
        RmsProp {
            learning_rate: 0.001,
            rho: 0.9,
            momentum: 0.0,
            epsilon: 1e-7,
            centered: false,
        }
    }
}

/// Adam (Keras form, "epsilon hat"): `m += (g - m)(1 - b1)`, `v += (g^2 - v)(1 - b2)`,
/// `alpha = lr sqrt(1 - b2^t) / (1 - b1^t)`, `w -= alpha m / (sqrt(v) + eps)`,
/// `t = iterations + 1`. AMSGrad uses the running maximum of `v`.
/// Defaults: lr 0.001, beta_1 0.9, beta_2 0.999, epsilon 1e-7, amsgrad false.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Adam {
    /// Step size (default 0.001).
    pub learning_rate: f32,
    /// First-moment decay, in [0, 1) (default 0.9).
    pub beta_1: f32,
    /// Second-moment decay, in [0, 1) (default 0.999).
    pub beta_2: f32,
    /// Fuzz factor, positive (default 1e-7). Keras accepts 0, but then a
    /// weight whose gradient is 0 divides 0 by 0 and becomes NaN: refused.
    pub epsilon: f32,
    /// Use AMSGrad (default false).
    pub amsgrad: bool,
}

impl Default for Adam {
    fn default() -> Self {
        Adam {
            learning_rate: 0.001,
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-7,
            amsgrad: false,
        }
    }
}

/// AdamW: Adam with decoupled weight decay `w -= w * weight_decay * lr` before each
/// update. Defaults as [`Adam`] plus weight_decay 0.004 (Keras).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamW {
    /// Step size (default 0.001).
    pub learning_rate: f32,
    /// Decoupled weight decay (default 0.004).
    pub weight_decay: f32,
    /// First-moment decay, in [0, 1) (default 0.9).
    pub beta_1: f32,
    /// Second-moment decay, in [0, 1) (default 0.999).
    pub beta_2: f32,
    /// Fuzz factor, positive (default 1e-7). Keras accepts 0, but then a
    /// weight whose gradient is 0 divides 0 by 0 and becomes NaN: refused.
    pub epsilon: f32,
    /// Use AMSGrad (default false).
    pub amsgrad: bool,
}

impl Default for AdamW {
    fn default() -> Self {
        AdamW {
            learning_rate: 0.001,
            weight_decay: 0.004,
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-7,
            amsgrad: false,
        }
    }
}

/// Adagrad: `acc += g^2`, `w -= lr g / sqrt(acc + eps)`.
/// Defaults: lr 0.001, initial_accumulator_value 0.1, epsilon 1e-7.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Adagrad {
    /// Step size (default 0.001).
    pub learning_rate: f32,
    /// Starting accumulator (default 0.1).
    pub initial_accumulator_value: f32,
    /// Fuzz factor, positive (default 1e-7). Keras accepts 0, but then a
    /// weight whose gradient is 0 divides 0 by 0 and becomes NaN: refused.
    pub epsilon: f32,
}

impl Default for Adagrad {
    fn default() -> Self {
        Adagrad {
            learning_rate: 0.001,
            initial_accumulator_value: 0.1,
            epsilon: 1e-7,
        }
    }
}

/// Adadelta: `a = rho a + (1 - rho) g^2`, `d = -g sqrt(D + eps) / sqrt(a + eps)`,
/// `D = rho D + (1 - rho) d^2`, `w += lr d`. Defaults: lr 0.001, rho 0.95, epsilon 1e-7.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Adadelta {
    /// Step size (default 0.001).
    pub learning_rate: f32,
    /// Decay (default 0.95).
    pub rho: f32,
    /// Fuzz factor, positive (default 1e-7). Keras accepts 0, but then a
    /// weight whose gradient is 0 divides 0 by 0 and becomes NaN: refused.
    pub epsilon: f32,
}

impl Default for Adadelta {
    fn default() -> Self {
        Adadelta {
            learning_rate: 0.001,
            rho: 0.95,
            epsilon: 1e-7,
        }
    }
}

/// Adamax: `m += (g - m)(1 - b1)`, `u = max(b2 u, |g|)`,
/// `w -= lr / (1 - b1^t) * m / (u + eps)`. Defaults: lr 0.001, 0.9, 0.999, 1e-7.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Adamax {
    /// Step size (default 0.001).
    pub learning_rate: f32,
    /// First-moment decay, in [0, 1) (default 0.9).
    pub beta_1: f32,
    /// Infinity-norm decay, in [0, 1) (default 0.999).
    pub beta_2: f32,
    /// Fuzz factor, positive (default 1e-7). Keras accepts 0, but then a
    /// weight whose gradient is 0 divides 0 by 0 and becomes NaN: refused.
    pub epsilon: f32,
}

impl Default for Adamax {
    fn default() -> Self {
        Adamax {
            learning_rate: 0.001,
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-7,
        }
    }
}

/// Nadam (Keras 3): Adam with Nesterov momentum and the momentum schedule
/// `u_t = b1 (1 - 0.5 * 0.96^t)`. Defaults: lr 0.001, 0.9, 0.999, 1e-7.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Nadam {
    /// Step size (default 0.001).
    pub learning_rate: f32,
    /// First-moment decay, in [0, 1) (default 0.9).
    pub beta_1: f32,
    /// Second-moment decay, in [0, 1) (default 0.999).
    pub beta_2: f32,
    /// Fuzz factor, positive (default 1e-7). Keras accepts 0, but then a
    /// weight whose gradient is 0 divides 0 by 0 and becomes NaN: refused.
    pub epsilon: f32,
}

impl Default for Nadam {
    fn default() -> Self {
        Nadam {
            learning_rate: 0.001,
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-7,
        }
    }
}

/// Lion: `w -= lr sign(b1 m + (1 - b1) g)`, then `m = b2 m + (1 - b2) g`.
/// Defaults (Keras): lr 0.001, beta_1 0.9, beta_2 0.99.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Lion {
    /// Step size (default 0.001).
    pub learning_rate: f32,
    /// Interpolation factor for the update direction (default 0.9).
    pub beta_1: f32,
    /// Momentum decay (default 0.99).
    pub beta_2: f32,
}

impl Default for Lion {
    fn default() -> Self {
        Lion {
            learning_rate: 0.001,
            beta_1: 0.9,
            beta_2: 0.99,
        }
    }
}

/// The update rule and its own hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum Rule {
    /// See [`Sgd`].
    Sgd {
        /// Momentum.
        momentum: f32,
        /// Nesterov.
        nesterov: bool,
    },
    /// See [`RmsProp`].
    RmsProp {
        /// rho.
        rho: f32,
        /// Momentum.
        momentum: f32,
        /// epsilon.
        epsilon: f32,
        /// Centered.
        centered: bool,
    },
    /// See [`Adam`].
    Adam {
        /// beta_1.
        beta_1: f32,
        /// beta_2.
        beta_2: f32,
        /// epsilon.
        epsilon: f32,
        /// AMSGrad.
        amsgrad: bool,
    },
    /// See [`Adagrad`].
    Adagrad {
        /// Starting accumulator.
        initial_accumulator_value: f32,
        /// epsilon.
        epsilon: f32,
    },
    /// See [`Adadelta`].
    Adadelta {
        /// rho.
        rho: f32,
        /// epsilon.
        epsilon: f32,
    },
    /// See [`Adamax`].
    Adamax {
        /// beta_1.
        beta_1: f32,
        /// beta_2.
        beta_2: f32,
        /// epsilon.
        epsilon: f32,
    },
    /// See [`Nadam`].
    Nadam {
        /// beta_1.
        beta_1: f32,
        /// beta_2.
        beta_2: f32,
        /// epsilon.
        epsilon: f32,
    },
    /// See [`Lion`].
    Lion {
        /// beta_1.
        beta_1: f32,
        /// beta_2.
        beta_2: f32,
    },
}

impl Rule {
    /// Slot variables per weight.
    fn slots(&self) -> usize {
        match *self {
            Rule::Sgd { momentum, .. } => (momentum > 0.0) as usize,
            Rule::RmsProp {
                momentum, centered, ..
            } => 1 + (momentum > 0.0) as usize + centered as usize,
            Rule::Adam { amsgrad, .. } => 2 + amsgrad as usize,
            Rule::Adagrad { .. } | Rule::Lion { .. } => 1,
            Rule::Adadelta { .. } | Rule::Adamax { .. } | Rule::Nadam { .. } => 2,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Rule::Sgd { .. } => "sgd",
            Rule::RmsProp { .. } => "rmsprop",
            Rule::Adam { .. } => "adam",
            Rule::Adagrad { .. } => "adagrad",
            Rule::Adadelta { .. } => "adadelta",
            Rule::Adamax { .. } => "adamax",
            Rule::Nadam { .. } => "nadam",
            Rule::Lion { .. } => "lion",
        }
    }
}

/// A configured optimizer with its state: what `compile` takes.
///
/// Build one from a typed configuration and add the shared options:
///
/// ```
/// use horn::prelude::*;
/// let opt = Optimizer::from(Sgd { learning_rate: 0.1, ..Default::default() })
///     .with_clipnorm(1.0)
///     .with_weight_decay(1e-4);
/// assert_eq!(opt.learning_rate(), 0.1);
/// let named: Optimizer = "rmsprop".parse().unwrap();
/// assert_eq!(named.learning_rate(), 0.001);
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct Optimizer {
    rule: Rule,
    learning_rate: f32,
    schedule: Option<LearningRateSchedule>,
    weight_decay: Option<f32>,
    clipnorm: Option<f32>,
    clipvalue: Option<f32>,
    global_clipnorm: Option<f32>,
    iterations: u64,
    /// Nadam's running product of momentum factors.
    u_product: f64,
    /// Slot variables per weight tensor, planar (`[slot][element]`).
    #[serde(skip)]
    slots: Vec<Vec<f32>>,
    /// The weight each entry of `slots` belongs to (`dense/kernel`, ...): the
    /// state is built for one set of variables and refuses any other, as Keras
    /// does ("Unknown variable"), instead of silently resetting.
    #[serde(skip)]
    slot_keys: Vec<String>,
}

impl std::fmt::Debug for Optimizer {
    /// The configuration and the size of the state, not the state itself (the
    /// slot variables of a real model are megabytes).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Optimizer")
            .field("rule", &self.rule)
            .field("learning_rate", &self.learning_rate)
            .field("schedule", &self.schedule)
            .field("weight_decay", &self.weight_decay)
            .field("clipnorm", &self.clipnorm)
            .field("clipvalue", &self.clipvalue)
            .field("global_clipnorm", &self.global_clipnorm)
            .field("iterations", &self.iterations)
            .field(
                "slot_values",
                &self.slots.iter().map(Vec::len).sum::<usize>(),
            )
            .finish()
    }
}

macro_rules! optimizer_from {
    ($t:ident, |$v:ident| $rule:expr, $wd:expr) => {
        impl From<$t> for Optimizer {
            fn from($v: $t) -> Optimizer {
                let mut o = Optimizer::new($rule, $v.learning_rate);
                o.weight_decay = $wd;
                o
            }
        }
    };
}

optimizer_from!(
    Sgd,
    |v| Rule::Sgd {
        momentum: v.momentum,
        nesterov: v.nesterov
    },
    None
);
optimizer_from!(
    RmsProp,
    |v| Rule::RmsProp {
        rho: v.rho,
        momentum: v.momentum,
        epsilon: v.epsilon,
        centered: v.centered
    },
    None
);
optimizer_from!(
    Adam,
    |v| Rule::Adam {
        beta_1: v.beta_1,
        beta_2: v.beta_2,
        epsilon: v.epsilon,
        amsgrad: v.amsgrad
    },
    None
);
optimizer_from!(
    AdamW,
    |v| Rule::Adam {
        beta_1: v.beta_1,
        beta_2: v.beta_2,
        epsilon: v.epsilon,
        amsgrad: v.amsgrad
    },
    Some(v.weight_decay)
);
optimizer_from!(
    Adagrad,
    |v| Rule::Adagrad {
        initial_accumulator_value: v.initial_accumulator_value,
        epsilon: v.epsilon
    },
    None
);
optimizer_from!(
    Adadelta,
    |v| Rule::Adadelta {
        rho: v.rho,
        epsilon: v.epsilon
    },
    None
);
optimizer_from!(
    Adamax,
    |v| Rule::Adamax {
        beta_1: v.beta_1,
        beta_2: v.beta_2,
        epsilon: v.epsilon
    },
    None
);
optimizer_from!(
    Nadam,
    |v| Rule::Nadam {
        beta_1: v.beta_1,
        beta_2: v.beta_2,
        epsilon: v.epsilon
    },
    None
);
optimizer_from!(
    Lion,
    |v| Rule::Lion {
        beta_1: v.beta_1,
        beta_2: v.beta_2
    },
    None
);

/// Anything `compile` accepts as an optimizer: a typed configuration, an
/// [`Optimizer`], or a Keras name (`"rmsprop"`, `"adam"`, ...).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an optimizer",
    label = "expected an optimizer (such as `RmsProp::default()`) or a Keras name (such as \"rmsprop\")"
)]
pub trait IntoOptimizer {
    /// Converts, failing on unknown names.
    fn into_optimizer(self) -> Result<Optimizer>;
}

impl<T: Into<Optimizer>> IntoOptimizer for T {
    fn into_optimizer(self) -> Result<Optimizer> {
        Ok(self.into())
    }
}
impl IntoOptimizer for &str {
    fn into_optimizer(self) -> Result<Optimizer> {
        self.parse()
    }
}
impl IntoOptimizer for String {
    fn into_optimizer(self) -> Result<Optimizer> {
        self.parse()
    }
}

impl FromStr for Optimizer {
    type Err = Error;
    fn from_str(s: &str) -> Result<Optimizer> {
        // Keys without underscores: Keras function and class names both match.
        Ok(match crate::name_key(s).as_str() {
            "sgd" => Sgd::default().into(),
            "rmsprop" => RmsProp::default().into(),
            "adam" => Adam::default().into(),
            "adamw" => AdamW::default().into(),
            "adagrad" => Adagrad::default().into(),
            "adadelta" => Adadelta::default().into(),
            "adamax" => Adamax::default().into(),
            "nadam" => Nadam::default().into(),
            "lion" => Lion::default().into(),
            _ => {
                return Err(Error::UnknownName {
                    kind: "optimizer",
                    name: s.into(),
                    known: "sgd, rmsprop, adam, adamw, adagrad, adadelta, adamax, nadam, lion"
                        .into(),
                })
            }
        })
    }
}

/// Elements per parallel task in an update (fixed, so splits do not depend on threads).
const CHUNK: usize = 1 << 14;

/// Per-step scalars shared by every tensor.
#[derive(Clone, Copy)]
struct StepScalars {
    lr: f32,
    /// Adam: lr * sqrt(1 - b2^t) / (1 - b1^t); Adamax: lr / (1 - b1^t).
    alpha: f32,
    // Nadam terms.
    u_t: f32,
    u_t_1: f32,
    u_prod_t: f32,
    u_prod_t_1: f32,
    b2_power: f32,
}

impl Optimizer {
    fn new(rule: Rule, learning_rate: f32) -> Self {
        Optimizer {
            rule,
            learning_rate,
            schedule: None,
            weight_decay: None,
            clipnorm: None,
            clipvalue: None,
            global_clipnorm: None,
            iterations: 0,
            u_product: 1.0,
            slots: Vec::new(),
            slot_keys: Vec::new(),
        }
    }

    /// Clips each gradient tensor to this L2 norm (Keras `clipnorm`).
    pub fn with_clipnorm(mut self, v: f32) -> Self {
        self.clipnorm = Some(v);
        self
    }
    /// Clips every gradient element to `[-v, v]` (Keras `clipvalue`).
    pub fn with_clipvalue(mut self, v: f32) -> Self {
        self.clipvalue = Some(v);
        self
    }
    /// Clips all gradients together to this global L2 norm (Keras `global_clipnorm`).
    pub fn with_global_clipnorm(mut self, v: f32) -> Self {
        self.global_clipnorm = Some(v);
        self
    }
    /// Decoupled weight decay `w -= w * v * lr` before each update (Keras `weight_decay`).
    pub fn with_weight_decay(mut self, v: f32) -> Self {
        self.weight_decay = Some(v);
        self
    }
    /// Replaces the constant learning rate by a schedule evaluated per step.
    pub fn with_schedule(mut self, s: LearningRateSchedule) -> Self {
        self.schedule = Some(s);
        self
    }

    /// The optimizer's Keras name.
    pub fn name(&self) -> &'static str {
        self.rule.name()
    }

    /// The update rule and its hyper-parameters.
    pub fn rule(&self) -> &Rule {
        &self.rule
    }

    /// Steps taken so far (Keras `iterations`).
    /// The learning-rate schedule, when one drives the learning rate.
    pub fn schedule(&self) -> Option<&LearningRateSchedule> {
        self.schedule.as_ref()
    }

    /// The number of update steps taken (Keras `optimizer.iterations`).
    pub fn iterations(&self) -> u64 {
        self.iterations
    }

    /// The learning rate the next step will use.
    pub fn learning_rate(&self) -> f32 {
        match &self.schedule {
            Some(s) => s.at(self.iterations),
            None => self.learning_rate,
        }
    }

    /// Sets a constant learning rate. Fails on an optimizer driven by a schedule,
    /// as Keras does, and on a negative or non-finite value.
    pub fn set_learning_rate(&mut self, lr: f32) -> Result<()> {
        if !(lr.is_finite() && lr >= 0.0) {
            return Err(Error::arg(
                "learning_rate",
                "a finite, non-negative number",
                lr,
            ));
        }
        if self.schedule.is_some() {
            return Err(Error::arg(
                "learning_rate",
                "an optimizer with a constant learning rate (this one follows a schedule)",
                lr,
            ));
        }
        self.learning_rate = lr;
        Ok(())
    }

    /// Checks every hyper-parameter.
    pub fn validate(&self) -> Result<()> {
        let nonneg = |name: &str, v: f32| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(Error::arg(name, "a finite, non-negative number", v))
            }
        };
        let unit = |name: &str, v: f32| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(Error::arg(name, "a number in [0, 1]", v))
            }
        };
        // The Adam family's bias corrections divide by `1 - beta^t`: 1 is a
        // division by zero (Keras accepts it and trains to NaN).
        let decay = |name: &str, v: f32| {
            if (0.0..1.0).contains(&v) {
                Ok(())
            } else {
                Err(Error::arg(
                    name,
                    "a number in [0, 1) (the bias correction divides by 1 - beta^t)",
                    v,
                ))
            }
        };
        // Every epsilon guards a division (or the square root under one) whose
        // other terms can all be 0: 0 (accepted by Keras) gives 0/0 = NaN.
        let fuzz = |v: f32| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(Error::arg(
                    "epsilon",
                    "a finite, positive number (it keeps a division by a zero moment from giving NaN)",
                    v,
                ))
            }
        };
        nonneg("learning_rate", self.learning_rate)?;
        if let Some(s) = &self.schedule {
            s.validate()?;
        }
        for (n, v) in [
            ("weight_decay", self.weight_decay),
            ("clipvalue", self.clipvalue),
        ] {
            if let Some(v) = v {
                nonneg(n, v)?;
            }
        }
        for (n, v) in [
            ("clipnorm", self.clipnorm),
            ("global_clipnorm", self.global_clipnorm),
        ] {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0) {
                    return Err(Error::arg(n, "a positive number", v));
                }
            }
        }
        let clips = [self.clipnorm, self.clipvalue, self.global_clipnorm];
        if clips.iter().filter(|c| c.is_some()).count() > 1 {
            // Keras: "Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set."
            return Err(Error::arg(
                "clipnorm, clipvalue, global_clipnorm",
                "only one of `clipnorm`, `clipvalue` and `global_clipnorm` set",
                format!(
                    "clipnorm={:?}, clipvalue={:?}, global_clipnorm={:?}",
                    self.clipnorm, self.clipvalue, self.global_clipnorm
                ),
            ));
        }
        match self.rule {
            Rule::Sgd { momentum, .. } => unit("momentum", momentum),
            Rule::RmsProp {
                rho,
                momentum,
                epsilon,
                ..
            } => {
                unit("rho", rho)?;
                unit("momentum", momentum)?;
                fuzz(epsilon)
            }
            Rule::Adam {
                beta_1,
                beta_2,
                epsilon,
                ..
            }
            | Rule::Adamax {
                beta_1,
                beta_2,
                epsilon,
            }
            | Rule::Nadam {
                beta_1,
                beta_2,
                epsilon,
            } => {
                decay("beta_1", beta_1)?;
                decay("beta_2", beta_2)?;
                fuzz(epsilon)
            }
            Rule::Adagrad {
                initial_accumulator_value,
                epsilon,
            } => {
                nonneg("initial_accumulator_value", initial_accumulator_value)?;
                fuzz(epsilon)
            }
            Rule::Adadelta { rho, epsilon } => {
                unit("rho", rho)?;
                fuzz(epsilon)
            }
            Rule::Lion { beta_1, beta_2 } => {
                unit("beta_1", beta_1)?;
                unit("beta_2", beta_2)
            }
        }
    }

    /// Forgets all slot variables and the step count (a fresh optimizer).
    pub fn reset(&mut self) {
        self.slots.clear();
        self.slot_keys.clear();
        self.iterations = 0;
        self.u_product = 1.0;
    }

    /// Slot variables of each parameter tensor, planar (`[slot][element]`),
    /// with the weight each belongs to.
    pub(crate) fn slots(&self) -> impl Iterator<Item = (&str, &[f32])> {
        self.slot_keys
            .iter()
            .map(String::as_str)
            .zip(self.slots.iter().map(Vec::as_slice))
    }

    /// Restores slot variables and the step count (used by model loading).
    pub(crate) fn restore_state(
        &mut self,
        iterations: u64,
        u_product: f64,
        state: Vec<(String, Vec<f32>)>,
    ) {
        self.iterations = iterations;
        self.u_product = u_product;
        (self.slot_keys, self.slots) = state.into_iter().unzip();
    }

    /// Creates the slot variables for `vars` (each a weight's name and size), or,
    /// when they exist, checks that they belong to exactly these variables
    /// (Keras' `optimizer.build(var_list)`; an optimizer built for other
    /// variables refuses them).
    pub(crate) fn build(&mut self, vars: &[(String, usize)]) -> Result<()> {
        let k = self.rule.slots();
        if self.slot_keys.is_empty() && self.slots.is_empty() {
            let init = match self.rule {
                Rule::Adagrad {
                    initial_accumulator_value,
                    ..
                } => initial_accumulator_value,
                _ => 0.0,
            };
            self.slot_keys = vars.iter().map(|(name, _)| name.clone()).collect();
            self.slots = vars.iter().map(|&(_, n)| vec![init; n * k]).collect();
            return Ok(());
        }
        let same = self.slot_keys.len() == vars.len()
            && self
                .slot_keys
                .iter()
                .zip(&self.slots)
                .zip(vars)
                .all(|((key, s), (name, n))| key == name && s.len() == n * k);
        if same {
            return Ok(());
        }
        let built: Vec<String> = self
            .slot_keys
            .iter()
            .zip(&self.slots)
            .map(|(key, s)| format!("{key} ({})", s.len() / k.max(1)))
            .collect();
        let given: Vec<String> = vars.iter().map(|(n, len)| format!("{n} ({len})")).collect();
        Err(Error::arg(
            "optimizer variables",
            format!(
                "the variables this optimizer was built with: [{}] (recompile, or call `reset`, to train other variables)",
                built.join(", ")
            ),
            format!("[{}]", given.join(", ")),
        ))
    }

    /// Nadam's running product, saved with the state.
    pub(crate) fn u_product(&self) -> f64 {
        self.u_product
    }

    /// Number of slot variables per weight element for this rule.
    pub fn slots_per_weight(&self) -> usize {
        self.rule.slots()
    }

    /// One optimizer step over all parameters: `params[i]` is updated from
    /// `grads[i]` (which are clipped in place). Parameters are identified by their
    /// position: the first call builds the state for these tensors, and a later
    /// call with another count or other sizes is refused (call
    /// [`Optimizer::reset`] to start over).
    ///
    /// ```
    /// use horn::prelude::*;
    /// // Keras' RMSprop docstring: lr 0.1, w = 10, loss = w^2 / 2 -> 9.683772
    /// let mut opt = Optimizer::from(RmsProp { learning_rate: 0.1, ..Default::default() });
    /// let mut w = vec![10.0f32];
    /// let mut g = vec![10.0f32];
    /// opt.apply(&mut [&mut w[..]], &mut [&mut g[..]]).unwrap();
    /// assert!((w[0] - 9.683772).abs() < 1e-5);
    /// ```
    pub fn apply(&mut self, params: &mut [&mut [f32]], grads: &mut [&mut [f32]]) -> Result<()> {
        if params.len() != grads.len() {
            return Err(Error::shape(
                "optimizer step",
                format!("{} gradients", params.len()),
                format!("{} gradients", grads.len()),
            ));
        }
        for (i, (p, g)) in params.iter().zip(grads.iter()).enumerate() {
            if p.len() != g.len() {
                return Err(Error::shape(
                    format!("optimizer step, tensor {i}"),
                    format!("{} gradient values", p.len()),
                    format!("{}", g.len()),
                ));
            }
        }
        let vars: Vec<(String, usize)> = params
            .iter()
            .enumerate()
            .map(|(i, p)| (i.to_string(), p.len()))
            .collect();
        self.build(&vars)?;
        let norm = self.begin_step(grads.iter().map(|g| &**g));
        for (i, (p, g)) in params.iter_mut().zip(grads.iter_mut()).enumerate() {
            self.update_tensor(i, p, g, norm);
        }
        self.finish_step();
        Ok(())
    }

    /// Start of a step: returns the global gradient norm when
    /// `global_clipnorm` needs it.
    pub(crate) fn begin_step<'a>(&self, grads: impl Iterator<Item = &'a [f32]>) -> Option<f32> {
        self.global_clipnorm.map(|_| {
            let mut s = 0.0f64;
            for g in grads {
                s += sum_squares(g);
            }
            s.sqrt() as f32
        })
    }

    fn scalars(&self) -> StepScalars {
        let lr = self.learning_rate();
        // In f64, so no iteration count (a file may hold any) can overflow.
        let t = self.iterations as f64 + 1.0;
        let mut s = StepScalars {
            lr,
            alpha: lr,
            u_t: 0.0,
            u_t_1: 0.0,
            u_prod_t: 0.0,
            u_prod_t_1: 0.0,
            b2_power: 0.0,
        };
        match self.rule {
            Rule::Adam { beta_1, beta_2, .. } => {
                s.alpha = (lr as f64 * (1.0 - (beta_2 as f64).powf(t)).sqrt()
                    / (1.0 - (beta_1 as f64).powf(t))) as f32;
            }
            Rule::Adamax { beta_1, .. } => {
                s.alpha = (lr as f64 / (1.0 - (beta_1 as f64).powf(t))) as f32;
            }
            Rule::Nadam { beta_1, beta_2, .. } => {
                let b1 = beta_1 as f64;
                let u_t = b1 * (1.0 - 0.5 * 0.96f64.powf(t));
                let u_t_1 = b1 * (1.0 - 0.5 * 0.96f64.powf(t + 1.0));
                let u_prod_t = self.u_product * u_t;
                s.u_t = u_t as f32;
                s.u_t_1 = u_t_1 as f32;
                s.u_prod_t = u_prod_t as f32;
                s.u_prod_t_1 = (u_prod_t * u_t_1) as f32;
                s.b2_power = (beta_2 as f64).powf(t) as f32;
            }
            _ => {}
        }
        s
    }

    /// Clips, decays and updates parameter tensor `i`.
    pub(crate) fn update_tensor(
        &mut self,
        i: usize,
        p: &mut [f32],
        g: &mut [f32],
        global_norm: Option<f32>,
    ) {
        // 1. clip
        if let Some(c) = self.clipnorm {
            let n = sum_squares(g).sqrt() as f32;
            if n > c {
                let f = c / n;
                g.iter_mut().for_each(|v| *v *= f);
            }
        } else if let (Some(c), Some(n)) = (self.global_clipnorm, global_norm) {
            if n > c {
                let f = c / n;
                g.iter_mut().for_each(|v| *v *= f);
            }
        }
        self.update_range(i, p, g, 0..p.len());
    }

    /// Whether a step is elementwise, so that ranks can each update a range of
    /// a tensor's elements (data-parallel training): no clipping by a norm,
    /// which needs whole tensors.
    #[cfg_attr(not(feature = "distribute"), allow(dead_code))]
    pub(crate) fn is_elementwise(&self) -> bool {
        self.clipnorm.is_none() && self.global_clipnorm.is_none()
    }

    /// What an elementwise update of part of tensor `i` (`n` elements)
    /// needs, and the tensor's state planes (empty where the rule has fewer
    /// slots).
    ///
    /// # Panics
    /// When the state was not built for the tensor (an internal invariant:
    /// `build` runs before any step).
    fn elementwise_step(&mut self, i: usize, n: usize) -> (ElementwiseStep, [&mut [f32]; 3]) {
        let clip = match (self.clipnorm, self.global_clipnorm, self.clipvalue) {
            (None, None, Some(c)) => Some(c),
            _ => None,
        };
        let scalars = self.scalars();
        let decay = self
            .weight_decay
            .filter(|&wd| wd > 0.0)
            .map(|wd| wd * scalars.lr);
        let k = self.rule.slots();
        assert!(
            self.slots.get(i).is_some_and(|s| s.len() == n * k),
            "optimizer state not built for weight tensor {i} (an internal invariant: `build` runs before any step)"
        );
        // Planar slots: plane j holds slot j of every element, so each loop
        // walks plain slices and vectorizes.
        let (s0, rest) = self.slots[i].split_at_mut(if k >= 1 { n } else { 0 });
        let (s1, s2) = rest.split_at_mut(if k >= 2 { n } else { 0 });
        let step = ElementwiseStep {
            clip,
            decay,
            rule: self.rule,
            scalars,
        };
        (step, [s0, s1, s2])
    }

    /// [`Optimizer::update_tensor`] on the elements `range` of tensor `i`
    /// alone (`p` and `g` are the whole tensor), without norm clipping: each
    /// element gets exactly the arithmetic of the whole-tensor update.
    pub(crate) fn update_range(
        &mut self,
        i: usize,
        p: &mut [f32],
        g: &mut [f32],
        range: std::ops::Range<usize>,
    ) {
        let n = p.len();
        let at = range.start;
        self.update_at(i, n, &mut p[range.clone()], &mut g[range], at);
    }

    /// [`Optimizer::update_range`] with `p` and `g` holding only the
    /// elements `at..at + p.len()` of tensor `i` (of `n` elements): a
    /// data-parallel rank's own block of a tensor it keeps apart.
    ///
    /// # Panics
    /// When the block does not fit in the tensor, or `p` and `g` differ in
    /// length (internal invariants of the data-parallel step).
    pub(crate) fn update_at(
        &mut self,
        i: usize,
        n: usize,
        p: &mut [f32],
        g: &mut [f32],
        at: usize,
    ) {
        let range = at..at + p.len();
        assert!(
            g.len() == p.len() && range.end <= n,
            "update_at: elements {range:?} of a tensor of {n}, {} gradients (an internal invariant)",
            g.len()
        );
        let (step, [s0, s1, s2]) = self.elementwise_step(i, n);
        step.clip_and_decay(p, g);
        // 3. the rule's update, on the state `build` made for this tensor
        let (rule, s) = (step.rule, step.scalars);
        let planes = [
            row_part(s0, range.clone()),
            row_part(s1, range.clone()),
            row_part(s2, range),
        ];
        par_tasks(CHUNK, p, g, planes, |pc, gc, planes| {
            update_chunk_fast(rule, s, pc, gc, planes)
        });
    }

    /// The state of tensor `i` as `planes` planes of one value per element.
    #[cfg_attr(not(feature = "distribute"), allow(dead_code))]
    pub(crate) fn slot_planes_mut(&mut self, i: usize) -> (&mut [f32], usize) {
        let k = self.rule.slots();
        (
            self.slots
                .get_mut(i)
                .map_or(&mut [][..], |v| v.as_mut_slice()),
            k,
        )
    }

    /// End of a step: `iterations += 1` (and Nadam's momentum product).
    pub(crate) fn finish_step(&mut self) {
        if let Rule::Nadam { .. } = self.rule {
            self.u_product = self.scalars().u_prod_t as f64;
        }
        self.iterations = self.iterations.saturating_add(1);
    }
}

/// An elementwise update's settings for one step.
#[derive(Clone, Copy)]
struct ElementwiseStep {
    /// Clipping by value (when no norm clipping applies).
    clip: Option<f32>,
    /// The decoupled weight decay's factor, `weight_decay * lr`.
    decay: Option<f32>,
    rule: Rule,
    scalars: StepScalars,
}

impl ElementwiseStep {
    /// Steps 1 and 2 of an update: the gradient clipped by value, then the
    /// weights' decoupled decay.
    #[inline(always)]
    fn clip_and_decay(&self, p: &mut [f32], g: &mut [f32]) {
        if let Some(c) = self.clip {
            g.iter_mut().for_each(|v| *v = v.clamp(-c, c));
        }
        if let Some(f) = self.decay {
            p.iter_mut().for_each(|w| *w -= *w * f);
        }
    }
}

/// Runs `body` on matching tasks of `task` elements of a tensor `p`, its
/// gradient `g` and its state `planes` (an empty plane where the rule has no
/// such slot), in parallel.
fn par_tasks(
    task: usize,
    p: &mut [f32],
    g: &mut [f32],
    planes: [&mut [f32]; 3],
    body: impl Fn(&mut [f32], &mut [f32], [&mut [f32]; 3]) + Sync + Send,
) {
    let [s0, s1, s2] = planes;
    let parts = p.par_chunks_mut(task).zip(g.par_chunks_mut(task));
    match (s0.is_empty(), s1.is_empty(), s2.is_empty()) {
        (true, _, _) => parts.for_each(|(pc, gc)| body(pc, gc, [&mut [], &mut [], &mut []])),
        (false, true, _) => parts
            .zip(s0.par_chunks_mut(task))
            .for_each(|((pc, gc), a)| body(pc, gc, [a, &mut [], &mut []])),
        (false, false, true) => parts
            .zip(s0.par_chunks_mut(task))
            .zip(s1.par_chunks_mut(task))
            .for_each(|(((pc, gc), a), b)| body(pc, gc, [a, b, &mut []])),
        (false, false, false) => parts
            .zip(s0.par_chunks_mut(task))
            .zip(s1.par_chunks_mut(task))
            .zip(s2.par_chunks_mut(task))
            .for_each(|((((pc, gc), a), b), c)| body(pc, gc, [a, b, c])),
    }
}

/// Elements `at` of a state plane, or the plane itself when the rule has no
/// such slot (empty).
fn row_part(s: &mut [f32], at: std::ops::Range<usize>) -> &mut [f32] {
    if s.is_empty() {
        s
    } else {
        &mut s[at]
    }
}

fn sum_squares(g: &[f32]) -> f64 {
    g.iter().map(|&v| (v as f64) * (v as f64)).sum()
}

/// [`update_chunk`], compiled for AVX2 where the CPU has it: twice the vector
/// width for the square roots and divisions of RMSprop and Adam. The same
/// IEEE operations in the same order (Rust never fuses a multiply and an add
/// on its own), so the same bits as the baseline build.
#[inline]
fn update_chunk_fast(
    rule: Rule,
    sc: StepScalars,
    p: &mut [f32],
    g: &[f32],
    slots: [&mut [f32]; 3],
) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        fn wide(rule: Rule, sc: StepScalars, p: &mut [f32], g: &[f32], slots: [&mut [f32]; 3]) {
            update_chunk(rule, sc, p, g, slots)
        }
        if crate::kernels::avx2_available() {
            // SAFETY: the CPU has AVX2 (checked at run time just above).
            unsafe { wide(rule, sc, p, g, slots) };
            return;
        }
    }
    update_chunk(rule, sc, p, g, slots)
}

/// The rule's arithmetic over one chunk. `slots[j]` is slot `j` of each element
/// (empty when the rule has fewer slots). Every configuration gets its own
/// branch-free loop over equal-length slices, which the compiler vectorizes.
// Index loops over slices re-cut to one length let the compiler drop the bounds
// checks and vectorize, which iterator zips over five slices do not always get.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn update_chunk(rule: Rule, sc: StepScalars, p: &mut [f32], g: &[f32], slots: [&mut [f32]; 3]) {
    let lr = sc.lr;
    let n = p.len();
    let g = &g[..n];
    let [s0, s1, s2] = slots;
    match rule {
        Rule::Sgd { momentum, nesterov } => {
            if momentum > 0.0 {
                let m = &mut s0[..n];
                for i in 0..n {
                    m[i] = momentum * m[i] - lr * g[i];
                    p[i] += if nesterov {
                        momentum * m[i] - lr * g[i]
                    } else {
                        m[i]
                    };
                }
            } else {
                for i in 0..n {
                    p[i] -= lr * g[i];
                }
            }
        }
        Rule::RmsProp {
            rho,
            momentum,
            epsilon,
            centered,
        } => {
            let v = &mut s0[..n];
            // Slot order: v, then the momentum if any, then the centred average if any.
            let (m, a) = match (momentum > 0.0, centered) {
                (true, true) => (Some(&mut s1[..n]), Some(&mut s2[..n])),
                (true, false) => (Some(&mut s1[..n]), None),
                (false, true) => (None, Some(&mut s1[..n])),
                (false, false) => (None, None),
            };
            match (m, a) {
                (None, None) => {
                    for i in 0..n {
                        v[i] = rho * v[i] + (1.0 - rho) * g[i] * g[i];
                        p[i] -= lr * g[i] / (v[i] + epsilon).sqrt();
                    }
                }
                (m, a) => {
                    let mut m = m;
                    let mut a = a;
                    for i in 0..n {
                        v[i] = rho * v[i] + (1.0 - rho) * g[i] * g[i];
                        let denom = match a.as_deref_mut() {
                            Some(a) => {
                                a[i] = rho * a[i] + (1.0 - rho) * g[i];
                                v[i] - a[i] * a[i] + epsilon
                            }
                            None => v[i] + epsilon,
                        };
                        let inc = lr * g[i] / denom.sqrt();
                        match m.as_deref_mut() {
                            Some(m) => {
                                m[i] = momentum * m[i] + inc;
                                p[i] -= m[i];
                            }
                            None => p[i] -= inc,
                        }
                    }
                }
            }
        }
        Rule::Adam {
            beta_1,
            beta_2,
            epsilon,
            amsgrad,
        } => {
            let (m, v) = (&mut s0[..n], &mut s1[..n]);
            if amsgrad {
                let vmax = &mut s2[..n];
                for i in 0..n {
                    m[i] += (g[i] - m[i]) * (1.0 - beta_1);
                    v[i] += (g[i] * g[i] - v[i]) * (1.0 - beta_2);
                    vmax[i] = vmax[i].max(v[i]);
                    p[i] -= sc.alpha * m[i] / (vmax[i].sqrt() + epsilon);
                }
            } else {
                for i in 0..n {
                    m[i] += (g[i] - m[i]) * (1.0 - beta_1);
                    v[i] += (g[i] * g[i] - v[i]) * (1.0 - beta_2);
                    p[i] -= sc.alpha * m[i] / (v[i].sqrt() + epsilon);
                }
            }
        }
        Rule::Adagrad { epsilon, .. } => {
            let acc = &mut s0[..n];
            for i in 0..n {
                acc[i] += g[i] * g[i];
                p[i] -= lr * g[i] / (acc[i] + epsilon).sqrt();
            }
        }
        Rule::Adadelta { rho, epsilon } => {
            let (ag, ad) = (&mut s0[..n], &mut s1[..n]);
            for i in 0..n {
                ag[i] = rho * ag[i] + (1.0 - rho) * g[i] * g[i];
                let delta = -g[i] * (ad[i] + epsilon).sqrt() / (ag[i] + epsilon).sqrt();
                ad[i] = rho * ad[i] + (1.0 - rho) * delta * delta;
                p[i] += lr * delta;
            }
        }
        Rule::Adamax {
            beta_1,
            beta_2,
            epsilon,
        } => {
            let (m, u) = (&mut s0[..n], &mut s1[..n]);
            for i in 0..n {
                m[i] += (g[i] - m[i]) * (1.0 - beta_1);
                u[i] = (beta_2 * u[i]).max(g[i].abs());
                p[i] -= sc.alpha * m[i] / (u[i] + epsilon);
            }
        }
        Rule::Nadam {
            beta_1,
            beta_2,
            epsilon,
        } => {
            let (m, v) = (&mut s0[..n], &mut s1[..n]);
            for i in 0..n {
                m[i] += (g[i] - m[i]) * (1.0 - beta_1);
                v[i] += (g[i] * g[i] - v[i]) * (1.0 - beta_2);
                let m_hat = sc.u_t_1 * m[i] / (1.0 - sc.u_prod_t_1)
                    + (1.0 - sc.u_t) * g[i] / (1.0 - sc.u_prod_t);
                let v_hat = v[i] / (1.0 - sc.b2_power);
                p[i] -= lr * m_hat / (v_hat.sqrt() + epsilon);
            }
        }
        Rule::Lion { beta_1, beta_2 } => {
            let m = &mut s0[..n];
            for i in 0..n {
                let d = beta_1 * m[i] + (1.0 - beta_1) * g[i];
                let sign = if d > 0.0 {
                    1.0
                } else if d < 0.0 {
                    -1.0
                } else {
                    0.0
                };
                p[i] -= lr * sign;
                m[i] = beta_2 * m[i] + (1.0 - beta_2) * g[i];
            }
        }
    }
}

#[cfg(test)]
mod wide_build_tests {
    use super::*;

    #[test]
    fn the_avx2_build_of_every_rule_gives_the_baseline_bits() {
        let rules = [
            Rule::Sgd {
                momentum: 0.0,
                nesterov: false,
            },
            Rule::Sgd {
                momentum: 0.9,
                nesterov: true,
            },
            Rule::RmsProp {
                rho: 0.9,
                momentum: 0.0,
                epsilon: 1e-7,
                centered: false,
            },
            Rule::RmsProp {
                rho: 0.9,
                momentum: 0.5,
                epsilon: 1e-7,
                centered: true,
            },
            Rule::Adam {
                beta_1: 0.9,
                beta_2: 0.999,
                epsilon: 1e-7,
                amsgrad: false,
            },
            Rule::Adam {
                beta_1: 0.9,
                beta_2: 0.999,
                epsilon: 1e-7,
                amsgrad: true,
            },
            Rule::Adagrad {
                initial_accumulator_value: 0.1,
                epsilon: 1e-7,
            },
            Rule::Adadelta {
                rho: 0.95,
                epsilon: 1e-7,
            },
            Rule::Adamax {
                beta_1: 0.9,
                beta_2: 0.999,
                epsilon: 1e-7,
            },
            Rule::Nadam {
                beta_1: 0.9,
                beta_2: 0.999,
                epsilon: 1e-7,
            },
            Rule::Lion {
                beta_1: 0.9,
                beta_2: 0.99,
            },
        ];
        let sc = StepScalars {
            lr: 1e-3,
            alpha: 7e-4,
            u_t: 0.8,
            u_t_1: 0.81,
            u_prod_t: 0.7,
            u_prod_t_1: 0.56,
            b2_power: 0.998,
        };
        let n = 1003;
        let wave = |k: usize, s: f32| (0..n).map(move |i| ((i * k % 97) as f32 - 48.0) * s);
        for rule in rules {
            let k = rule.slots();
            let mut base: Vec<Vec<f32>> = (0..4).map(|j| wave(j + 3, 0.01).collect()).collect();
            // Accumulators start positive, as they are in use.
            for s in base.iter_mut().skip(1) {
                s.iter_mut().for_each(|v| *v = v.abs() + 0.01);
            }
            let mut wide = base.clone();
            for step in 0..3 {
                let g: Vec<f32> = wave(step + 5, 0.003).collect();
                for (state, fast) in [(&mut base, false), (&mut wide, true)] {
                    let (p, slots) = state.split_at_mut(1);
                    let [a, b, c] = slots else { unreachable!() };
                    fn take(v: &mut [f32], used: bool) -> &mut [f32] {
                        if used {
                            v
                        } else {
                            &mut []
                        }
                    }
                    let slots = [take(a, k > 0), take(b, k > 1), take(c, k > 2)];
                    if fast {
                        update_chunk_fast(rule, sc, &mut p[0], &g, slots);
                    } else {
                        update_chunk(rule, sc, &mut p[0], &g, slots);
                    }
                }
            }
            for (x, y) in base.iter().zip(&wide) {
                assert!(
                    x.iter().zip(y).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{rule:?}"
                );
            }
        }
    }
}

#[cfg(test)]
mod block_update_tests {
    use super::*;

    /// A tensor updated block by block, each block held apart (as the ranks
    /// of a split first layer hold theirs), gets the bits of one whole-tensor
    /// update, for rules with 0 to 3 state planes, clipping by value and
    /// weight decay.
    #[test]
    fn blocks_held_apart_give_the_bits_of_the_whole_update() {
        let optimizers: Vec<Optimizer> = vec![
            Sgd::default().into(),
            Optimizer::from(RmsProp {
                momentum: 0.5,
                centered: true,
                ..RmsProp::default()
            })
            .with_clipvalue(0.01),
            Optimizer::from(Adam::default()).with_weight_decay(0.01),
            Nadam::default().into(),
        ];
        let n = 851;
        let p0: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5)
            .collect();
        let g: Vec<f32> = (0..n)
            .map(|i| ((i * 104_729) % 997) as f32 * 1e-4 - 0.05)
            .collect();
        for opt in optimizers {
            let (mut whole, mut blocks) = (opt.clone(), opt.clone());
            whole.build(&[("k".into(), n)]).unwrap();
            blocks.build(&[("k".into(), n)]).unwrap();
            let mut pw = p0.clone();
            let mut pb: Vec<Vec<f32>> = [0..300, 300..301, 301..n]
                .iter()
                .map(|r| p0[r.clone()].to_vec())
                .collect();
            for _ in 0..3 {
                whole.update_range(0, &mut pw, &mut g.clone(), 0..n);
                whole.finish_step();
                let mut at = 0;
                for block in pb.iter_mut() {
                    let len = block.len();
                    blocks.update_at(0, n, block, &mut g[at..at + len].to_vec(), at);
                    at += len;
                }
                blocks.finish_step();
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&pw), bits(&pb.concat()), "{opt:?}");
            assert_eq!(bits(&whole.slots[0]), bits(&blocks.slots[0]), "{opt:?}");
        }
    }
}
