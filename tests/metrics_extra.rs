//! Metrics the Keras fixtures do not cover, with hand-derived values, and the
//! stateful accumulation across batches.

use horn::metrics::{Metric, MetricState};
use ndarray::array;

#[test]
fn auc_of_perfect_reversed_and_tied_scores() {
    let y = array![[0.0f32], [0.0], [1.0], [1.0]];
    // Every positive scores above every negative: area 1.
    assert!(
        (Metric::Auc
            .compute(y.view(), array![[0.1f32], [0.2], [0.8], [0.9]].view())
            .unwrap()
            - 1.0)
            .abs()
            < 1e-6
    );
    // Reversed: area 0.
    assert!(
        Metric::Auc
            .compute(y.view(), array![[0.9f32], [0.8], [0.2], [0.1]].view())
            .unwrap()
            .abs()
            < 1e-6
    );
    // All tied: the ROC curve is the diagonal, area 0.5.
    assert!(
        (Metric::Auc
            .compute(y.view(), array![[0.5f32], [0.5], [0.5], [0.5]].view())
            .unwrap()
            - 0.5)
            .abs()
            < 1e-6
    );
}

#[test]
fn r2_matches_the_formula() {
    // y = 1, 2, 3 (mean 2, SS_tot 2); p = 1, 2, 4 (SS_res 1): R2 = 1 - 1/2 = 0.5
    let v = Metric::R2Score
        .compute(
            array![[1.0f32], [2.0], [3.0]].view(),
            array![[1.0f32], [2.0], [4.0]].view(),
        )
        .unwrap();
    assert!((v - 0.5).abs() < 1e-6);
}

#[test]
fn metrics_accumulate_over_batches_like_keras() {
    // Precision over two batches is TP / (TP + FP) over both, not the mean of the two.
    let mut s = MetricState::new(Metric::Precision);
    s.update(
        array![[1.0f32], [0.0]].view(),
        array![[0.9f32], [0.8]].view(),
        None,
    ); // TP 1, FP 1
    s.update(
        array![[1.0f32], [1.0], [1.0]].view(),
        array![[0.9f32], [0.7], [0.6]].view(),
        None,
    ); // TP 3
    assert!((s.result() - 0.8).abs() < 1e-6);
    // Accuracy is a weighted running mean: (1 + 0 + 2 * 1) / (1 + 1 + 2) = 0.75
    let mut a = MetricState::new(Metric::CategoricalAccuracy);
    a.update(
        array![[1.0f32, 0.0], [0.0, 1.0]].view(),
        array![[0.7f32, 0.3], [0.6, 0.4]].view(),
        None,
    );
    a.update(
        array![[0.0f32, 1.0]].view(),
        array![[0.2f32, 0.8]].view(),
        Some(&[2.0]),
    );
    assert!((a.result() - 0.75).abs() < 1e-6);
    a.reset();
    assert_eq!(a.result(), 0.0);
    // Top-2: the true class is second-largest in row 0 and last in row 1.
    let v = Metric::TopKCategoricalAccuracy { k: 2 }
        .compute(
            array![[0.0f32, 1.0, 0.0], [1.0, 0.0, 0.0]].view(),
            array![[0.5f32, 0.3, 0.2], [0.1, 0.6, 0.3]].view(),
        )
        .unwrap();
    assert!((v - 0.5).abs() < 1e-6);
    // RMSE is the root of the mean over the epoch: sqrt((1 + 9) / 2)
    let mut r = MetricState::new(Metric::RootMeanSquaredError);
    r.update(array![[0.0f32]].view(), array![[1.0f32]].view(), None);
    r.update(array![[0.0f32]].view(), array![[3.0f32]].view(), None);
    assert!((r.result() - 5.0f32.sqrt()).abs() < 1e-6);
}
