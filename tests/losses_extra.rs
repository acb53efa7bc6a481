//! Values of the losses the Keras fixtures do not cover, derived by hand from
//! Keras' formulas (in the comments), and the regularization penalty in the loss.

use horn::prelude::*;
use ndarray::array;

fn v(loss: Loss, t: ndarray::Array2<f32>, p: ndarray::Array2<f32>) -> f32 {
    loss.compute(t.view(), p.view()).unwrap()
}

#[test]
fn extra_losses_match_hand_derived_values() {
    // kl_divergence: sum y log(y / p) = 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75) = 0.5 (0.693147 - 0.405465) = 0.143841
    assert!(
        (v(Loss::KlDivergence, array![[0.5, 0.5]], array![[0.25, 0.75]]) - 0.143_841).abs() < 1e-5
    );
    // poisson: mean(p - y ln(p + 1e-7)) = (1 - 2 ln 1 + 2 - 1 ln 2) / 2 = (3 - 0.693147) / 2 = 1.153426
    assert!((v(Loss::Poisson, array![[2.0, 1.0]], array![[1.0, 2.0]]) - 1.153_426).abs() < 1e-5);
    // hinge with 0/1 labels mapped to -1/1: mean(max(1 - y p, 0)) = (max(1 - 0.3, 0) + max(1 + 0.2, 0)) / 2 = 0.95
    assert!((v(Loss::Hinge, array![[1.0, 0.0]], array![[0.3, 0.2]]) - 0.95).abs() < 1e-6);
    // squared_hinge: (0.7^2 + 1.2^2) / 2 = (0.49 + 1.44) / 2 = 0.965
    assert!((v(Loss::SquaredHinge, array![[1.0, 0.0]], array![[0.3, 0.2]]) - 0.965).abs() < 1e-6);
    // categorical_hinge: pos = 0.3, neg = max(0.5, 0.2) = 0.5 -> max(0.5 - 0.3 + 1, 0) = 1.2
    assert!(
        (v(
            Loss::CategoricalHinge,
            array![[1.0, 0.0, 0.0]],
            array![[0.3, 0.5, 0.2]]
        ) - 1.2)
            .abs()
            < 1e-6
    );
    // mape: 100 * mean(|y - p| / |y|) = 100 * (0.5 / 2 + 1 / 4) / 2 = 25
    assert!(
        (v(
            Loss::MeanAbsolutePercentageError,
            array![[2.0, 4.0]],
            array![[2.5, 3.0]]
        ) - 25.0)
            .abs()
            < 1e-4
    );
    // msle: mean((ln(p + 1) - ln(y + 1))^2) = ((ln 2 - ln 4)^2 + 0) / 2 = 0.240227
    assert!(
        (v(
            Loss::MeanSquaredLogarithmicError,
            array![[3.0, 1.0]],
            array![[1.0, 1.0]]
        ) - 0.240_227)
            .abs()
            < 1e-5
    );
    // cosine_similarity: -(y.p)/(|y||p|) = -(3)/(1 * 5) = -0.6 for y = (1, 0), p = (3, 4)
    assert!(
        (v(
            Loss::CosineSimilarity,
            array![[1.0, 0.0]],
            array![[3.0, 4.0]]
        ) + 0.6)
            .abs()
            < 1e-6
    );
}

#[test]
fn regularization_penalty_is_added_after_the_reduction() {
    let mut m = Sequential::new().seed(1).input(2).add(
        Dense::new(1, Linear)
            .kernel_initializer(Initializer::Constant(0.5))
            .kernel_regularizer(Regularizer::l2(0.1)),
    );
    m.compile("sgd", "mse", &[] as &[Metric]).unwrap();
    let x = array![[1.0f32, 1.0], [2.0, 0.0]];
    let y = array![[0.0f32], [0.0]];
    // predictions 1.0 and 1.0 -> mse 1.0; penalty 0.1 * (0.25 + 0.25) = 0.05, not divided by N.
    let loss = m.evaluate(&x, &y).unwrap()["loss"];
    assert!((loss - 1.05).abs() < 1e-6, "{loss}");
}
