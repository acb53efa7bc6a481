//! Elementwise `exp`, `sigmoid` and `tanh` that the compiler vectorizes.
//!
//! The standard library's `f32::exp` and `f32::tanh` call libm one value at a
//! time (10-20 ns each); a recurrent layer evaluates hundreds of thousands of
//! gate activations per batch, which made them most of an LSTM's step. These
//! are branch-free polynomial and rational forms (Cephes' `expf`, Eigen's
//! `tanh`) written with plain arithmetic and selects, so loops over
//! slices become SIMD code. Their error is a few ulp (see the tests); the
//! results are the same on every x86-64 CPU (no fused multiply-add is used,
//! and Rust never contracts `a * b + c`).

// The coefficients are written as published, digits beyond f32 included.
#![allow(clippy::excessive_precision)]

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// `ln 2` split in two for an exact `n * ln 2` (Cody-Waite).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Adding and subtracting 1.5 * 2^23 rounds to the nearest integer.
const ROUND: f32 = 12_582_912.0;

/// `e^x`, to about 2 ulp; inputs are clamped to `[-87.3, 88.3]` (no
/// infinities or subnormals come out; NaN stays NaN).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.3);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5.000_000_1e-1;
    let y = p * r * r + r + 1.0;
    // 2^n through the exponent bits: the low bits of `shifted` hold n (in
    // [-126, 127] after the clamp) offset by ROUND's, integer arithmetic only
    // (a float-to-int cast would not vectorize).
    let scale = f32::from_bits(shifted.to_bits().wrapping_sub(0x4B40_0000 - 127) << 23);
    y * scale
}

/// `1 / (1 + e^-z)`.
#[inline(always)]
pub(crate) fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + exp(-z))
}

/// `tanh z` as a rational function `z P(z^2) / Q(z^2)` on `[-7.9, 7.9]`
/// (the form Eigen uses, one division and no exponential), `z` itself
/// where `|z| < 4e-4`, and +-1 beyond 7.9.
#[inline(always)]
pub(crate) fn tanh(z: f32) -> f32 {
    let x = z.clamp(-7.905_311, 7.905_311);
    let x2 = x * x;
    let p = -2.760_768_5e-16;
    let p = p * x2 + 2.000_187_9e-13;
    let p = p * x2 - 8.604_671_5e-11;
    let p = p * x2 + 5.122_297e-8;
    let p = p * x2 + 1.485_722_4e-5;
    let p = p * x2 + 6.372_619_3e-4;
    let p = p * x2 + 4.893_524_6e-3;
    let q = 1.198_258_4e-6;
    let q = q * x2 + 1.185_347_1e-4;
    let q = q * x2 + 2.268_434_6e-3;
    let q = q * x2 + 4.893_525e-3;
    let t = x * p / q;
    if z.abs() < 4e-4 {
        z
    } else {
        t
    }
}

/// [`sigmoid`] over a slice, in place.
#[inline(always)]
pub(crate) fn sigmoid_slice(v: &mut [f32]) {
    for x in v.iter_mut() {
        *x = sigmoid(*x);
    }
}

/// [`tanh`] over a slice, in place.
#[inline(always)]
pub(crate) fn tanh_slice(v: &mut [f32]) {
    for x in v.iter_mut() {
        *x = tanh(*x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_a_few_ulp_of_std() {
        let mut worst = 0;
        for i in -87_000..88_000 {
            let x = i as f32 * 1e-3;
            worst = worst.max(ulps(exp(x), x.exp()));
        }
        assert!(worst <= 3, "exp: {worst} ulp");
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(-1e4) >= 0.0 && exp(1e4).is_finite());
    }

    #[test]
    fn tanh_and_sigmoid_are_close_to_std() {
        for i in -20_000..20_000 {
            let z = i as f32 * 1e-3;
            let (t, want) = (tanh(z), z.tanh());
            assert!(t.abs() <= 1.0, "tanh({z}) = {t}");
            assert!(
                (t - want).abs() <= 2e-7 + 4.0 * f32::EPSILON * want.abs(),
                "tanh({z}) = {t}, std {want}"
            );
            let s = sigmoid(z);
            let want = 1.0 / (1.0 + (-z as f64).exp()) as f32;
            assert!(
                (s - want).abs() <= 4.0 * f32::EPSILON * want.abs(),
                "sigmoid({z}) = {s}, exact {want}"
            );
        }
        for z in [1e-6f32, -3e-5, 1e-20] {
            assert!((tanh(z) - z).abs() <= f32::EPSILON * z.abs(), "tanh({z})");
        }
        assert!(tanh(f32::NAN).is_nan() && sigmoid(f32::NAN).is_nan());
        assert_eq!(tanh(50.0), 1.0);
        assert_eq!(tanh(-50.0), -1.0);
        assert!((0.0..1e-37).contains(&sigmoid(-200.0)));
        assert_eq!(sigmoid(200.0), 1.0);
    }
}
