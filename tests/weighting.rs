//! Keras' weighting semantics, against numbers Keras 3.15.1 computed.
//!
//! The values below were printed by `scripts/keras_weighting_fixture.py`
//! (`KERAS_BACKEND=jax`): a Dense(3, softmax) with fixed weights trained with
//! learning rate 0, so every number is a function of the data, the weights and
//! Keras' rules: `metrics` unweighted, `weighted_metrics` weighted,
//! `validation_split` keeping the held-out rows' sample weights (for `val_loss`
//! and the `val_weighted_*` metrics), class weights for training rows only.

// The numbers are kept exactly as Keras printed them (f64 text of f32 values).
#![allow(clippy::excessive_precision)]

use horn::prelude::*;
use ndarray::{array, Array2, ArrayD};

fn data() -> (Array2<f32>, Array2<f32>, Vec<f32>) {
    let x = array![
        [0.5f32, -1.0, 0.25, 2.0],
        [1.5, 0.5, -0.5, 0.0],
        [-1.0, 2.0, 1.0, -0.5],
        [0.0, 0.0, 1.5, 1.0],
        [2.0, -0.5, 0.0, 0.5],
        [-0.5, 1.0, -1.5, 1.5],
        [1.0, 1.0, 1.0, -1.0],
        [0.25, -2.0, 0.5, 0.75]
    ];
    let labels = [0, 1, 2, 2, 0, 1, 1, 0];
    let y = Array2::from_shape_fn((8, 3), |(i, j)| (labels[i] == j) as u8 as f32);
    let w = vec![1.0, 2.0, 0.5, 3.0, 1.0, 0.0, 2.5, 1.5];
    (x, y, w)
}

fn model() -> Sequential {
    let mut m = Sequential::new().seed(1).input(4).dense(3, Softmax);
    let kernel = array![
        [0.3f32, -0.2, 0.1],
        [-0.4, 0.5, 0.2],
        [0.1, 0.1, -0.3],
        [0.2, -0.1, 0.4]
    ]
    .into_dyn();
    let bias: ArrayD<f32> = array![0.05f32, -0.05, 0.0].into_dyn();
    m.set_weights(&[kernel, bias]).unwrap();
    m.compile_with(
        Sgd {
            learning_rate: 0.0,
            ..Default::default()
        },
        "categorical_crossentropy",
        CompileOptions::new()
            .metrics(&["accuracy", "mae"])
            .weighted_metrics(&["accuracy", "mae"]),
    )
    .unwrap();
    m
}

fn opts() -> FitOptions {
    FitOptions {
        epochs: 1,
        batch_size: 3,
        shuffle: false,
        validation_split: 0.25,
        verbose: 0,
        ..Default::default()
    }
}

fn check(got: &History, keras: &[(&str, f32)]) {
    assert_eq!(
        got.keys().count(),
        keras.len(),
        "{:?}",
        got.keys().collect::<Vec<_>>()
    );
    for &(k, v) in keras {
        let g = got.get(k).unwrap_or_else(|| panic!("no `{k}` in History"))[0];
        assert!(
            (g - v).abs() <= 1e-5 * (1.0 + v.abs()),
            "{k}: horn {g}, Keras {v}"
        );
    }
}

#[test]
fn sample_weights_weigh_loss_and_weighted_metrics_only() {
    let (x, y, w) = data();
    let mut m = model();
    let h = m
        .fit(
            &x,
            &y,
            FitOptions {
                sample_weight: Some(w),
                ..opts()
            },
        )
        .unwrap();
    // keras: model.fit(x, y, epochs=1, batch_size=3, shuffle=False,
    //                  validation_split=0.25, sample_weight=w)
    check(
        &h,
        &[
            ("loss", 1.4579559564590454),
            ("accuracy", 0.3333333432674408),
            ("mae", 0.4369109570980072),
            ("weighted_accuracy", 0.2666666805744171),
            ("weighted_mae", 0.4417286813259125),
            ("val_loss", 1.0846542119979858),
            ("val_accuracy", 1.0),
            ("val_mae", 0.25373029708862305),
            ("val_weighted_accuracy", 1.0),
            ("val_weighted_mae", 0.2726285755634308),
        ],
    );
}

#[test]
fn class_weights_apply_to_training_rows_only() {
    let (x, y, _) = data();
    let mut m = model();
    let h = m
        .fit(
            &x,
            &y,
            FitOptions {
                class_weight: Some([(0, 1.0), (1, 2.0), (2, 0.5)].into_iter().collect()),
                ..opts()
            },
        )
        .unwrap();
    // keras: model.fit(..., class_weight={0: 1.0, 1: 2.0, 2: 0.5})
    check(
        &h,
        &[
            ("loss", 1.395096778869629),
            ("accuracy", 0.3333333432674408),
            ("mae", 0.4369109570980072),
            ("weighted_accuracy", 0.2857142984867096),
            ("weighted_mae", 0.44537171721458435),
            ("val_loss", 0.4960397481918335),
            ("val_accuracy", 1.0),
            ("val_mae", 0.25373029708862305),
            ("val_weighted_accuracy", 1.0),
            ("val_weighted_mae", 0.25373029708862305),
        ],
    );
}

#[test]
#[allow(clippy::needless_update)] // EvaluateOptions has more fields with feature `distribute`
fn evaluate_weighs_like_keras() {
    let (x, y, w) = data();
    let m = model();
    let e = m
        .evaluate_with(
            &x,
            &y,
            EvaluateOptions {
                batch_size: 3,
                sample_weight: Some(w),
                ..Default::default()
            },
        )
        .unwrap();
    // keras: model.evaluate(x, y, sample_weight=w, batch_size=3, return_dict=True)
    for (k, v) in [
        ("loss", 1.3646305799484253f32),
        ("accuracy", 0.5),
        ("mae", 0.39111578464508057),
        ("weighted_accuracy", 0.52173912525177),
        ("weighted_mae", 0.3829112648963928),
    ] {
        assert!((e[k] - v).abs() <= 1e-5, "{k}: horn {}, Keras {v}", e[k]);
    }
}

#[test]
fn validation_data_carries_its_own_weights() {
    let (x, y, w) = data();
    let (vx, vy) = (x.slice(ndarray::s![6.., ..]), y.slice(ndarray::s![6.., ..]));
    let mut m = model();
    // Explicit validation data with the split's weights gives the split's numbers.
    let h = m
        .fit(
            x.slice(ndarray::s![..6, ..]),
            y.slice(ndarray::s![..6, ..]),
            FitOptions {
                validation_split: 0.0,
                validation_data: Some((vx.to_owned(), vy.to_owned())),
                validation_sample_weight: Some(w[6..].to_vec()),
                sample_weight: Some(w[..6].to_vec()),
                ..opts()
            },
        )
        .unwrap();
    assert!((h.get("val_loss").unwrap()[0] - 1.0846542).abs() < 1e-5);
    assert!((h.get("val_weighted_mae").unwrap()[0] - 0.27262858).abs() < 1e-5);
    // Zeroing the validation weights changes val_loss (it was ignored before).
    let h0 = m
        .fit(
            x.slice(ndarray::s![..6, ..]),
            y.slice(ndarray::s![..6, ..]),
            FitOptions {
                validation_split: 0.0,
                validation_data: Some((vx.to_owned(), vy.to_owned())),
                validation_sample_weight: Some(vec![0.0, 0.0]),
                ..opts()
            },
        )
        .unwrap();
    assert_eq!(h0.get("val_loss").unwrap()[0], 0.0);
    // Weights without validation data are refused.
    let e = m
        .fit(
            &x,
            &y,
            FitOptions {
                validation_sample_weight: Some(vec![1.0; 2]),
                ..opts()
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("validation_sample_weight"), "{e}");
}

#[test]
fn metric_keys_are_the_names_the_user_wrote() {
    let (x, y, _) = data();
    let mut m = Sequential::new().seed(1).input(4).dense(3, Softmax);
    m.compile(
        "sgd",
        "categorical_crossentropy",
        &["mean_absolute_error", "mae", "acc"],
    )
    .unwrap();
    let h = m.fit(&x, &y, opts()).unwrap();
    let keys: Vec<&str> = h.keys().collect();
    assert_eq!(
        keys,
        [
            "loss",
            "mean_absolute_error",
            "mae",
            "acc",
            "val_loss",
            "val_mean_absolute_error",
            "val_mae",
            "val_acc"
        ]
    );
    // Typed metrics log under Keras' class names; repeats get `_1`.
    m.compile(
        "sgd",
        "categorical_crossentropy",
        &[Metric::MeanAbsoluteError, Metric::MeanAbsoluteError],
    )
    .unwrap();
    assert_eq!(
        m.metric_keys(),
        ["mean_absolute_error", "mean_absolute_error_1"]
    );
}
