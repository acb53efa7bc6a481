//! Each bundled example runs end to end on a small budget (the full runs are
//! `cargo run --release --example NAME`).

#[allow(dead_code)]
#[path = "../examples/penguins.rs"]
mod penguins;

#[allow(dead_code)]
#[path = "../examples/regression.rs"]
mod regression;

#[allow(dead_code)]
#[path = "../examples/multilabel.rs"]
mod multilabel;

#[test]
fn penguins_reaches_high_accuracy() {
    let acc = penguins::run(60, 1, 0).unwrap();
    assert!(acc >= 0.95, "penguins test accuracy {acc}");
}

#[test]
fn regression_beats_the_mean_baseline() {
    let (mae, baseline) = regression::run(60, 1, 0).unwrap();
    assert!(mae < 0.6 * baseline, "MAE {mae} g vs baseline {baseline} g");
}

#[test]
fn multilabel_reports_each_label() {
    let acc = multilabel::run(1, 3000, 0).unwrap();
    assert_eq!(acc.len(), 3);
    assert!(acc.iter().all(|&a| a > 0.8), "{acc:?}");
}
