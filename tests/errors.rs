//! Every bad input gets a clear error, never a panic.

mod common;

use horn::callbacks::EarlyStopping;
use horn::prelude::*;
use ndarray::{Array2, ArrayD, IxDyn};

fn compiled() -> Sequential {
    let mut m = Sequential::new()
        .seed(1)
        .input(4)
        .dense(8, Relu)
        .dense(3, Softmax);
    m.compile("adam", "categorical_crossentropy", &["accuracy"])
        .unwrap();
    m
}

fn quiet() -> FitOptions {
    FitOptions {
        verbose: 0,
        ..Default::default()
    }
}

fn msg(e: Error) -> String {
    e.to_string()
}

#[test]
fn wrong_input_width_names_the_argument() {
    let mut m = compiled();
    let (x, y) = common::blobs(10, 5, 1);
    let e = msg(m.fit(&x, &y, quiet()).unwrap_err());
    assert!(
        e.contains("`x`") && e.contains("(n, 4)") && e.contains("[10, 5]"),
        "{e}"
    );
    assert!(matches!(m.predict(&x).unwrap_err(), Error::Shape { .. }));
}

#[test]
fn wrong_target_width_and_row_counts() {
    let mut m = compiled();
    let x = Array2::<f32>::zeros((10, 4));
    let e = msg(m
        .fit(&x, Array2::<f32>::zeros((10, 2)), quiet())
        .unwrap_err());
    assert!(e.contains("`y`") && e.contains("(n, 3)"), "{e}");
    let e = msg(m
        .fit(&x, Array2::<f32>::zeros((9, 3)), quiet())
        .unwrap_err());
    assert!(e.contains("same number of rows"), "{e}");
    let e = msg(m.evaluate(&x, Array2::<f32>::zeros((9, 3))).unwrap_err());
    assert!(e.contains("same number of rows"), "{e}");
}

#[test]
fn non_finite_values_are_located() {
    let mut m = compiled();
    let (mut x, mut y) = common::blobs(10, 4, 1);
    x[[3, 2]] = f32::NAN;
    match m.fit(&x, &y, quiet()).unwrap_err() {
        Error::NonFinite { name, row, col, .. } => {
            assert_eq!((name.as_str(), row, col), ("x", 3, 2))
        }
        e => panic!("{e}"),
    }
    x[[3, 2]] = 0.0;
    y[[7, 0]] = f32::INFINITY;
    assert!(msg(m.fit(&x, &y, quiet()).unwrap_err()).contains("`y` contains a non-finite value"));
    let mut bad = x.clone();
    bad[[0, 0]] = f32::NEG_INFINITY;
    assert!(matches!(
        m.predict(&bad).unwrap_err(),
        Error::NonFinite { .. }
    ));
}

#[test]
fn empty_data() {
    let mut m = compiled();
    let x = Array2::<f32>::zeros((0, 4));
    let y = Array2::<f32>::zeros((0, 3));
    assert!(matches!(
        m.fit(&x, &y, quiet()).unwrap_err(),
        Error::Empty { .. }
    ));
    assert!(matches!(m.predict(&x).unwrap_err(), Error::Empty { .. }));
}

#[test]
fn bad_fit_options() {
    let mut m = compiled();
    let (x, y) = common::blobs(10, 4, 1);
    let e = msg(m
        .fit(
            &x,
            &y,
            FitOptions {
                batch_size: 0,
                ..quiet()
            },
        )
        .unwrap_err());
    assert!(
        e.contains("batch_size") && e.contains("batch_size=0"),
        "{e}"
    );
    for split in [1.0, -0.1, 1.5, f32::NAN] {
        let e = msg(m
            .fit(
                &x,
                &y,
                FitOptions {
                    validation_split: split,
                    ..quiet()
                },
            )
            .unwrap_err());
        assert!(e.contains("validation_split"), "{e}");
    }
    // One row: floor(1 * 0.5) = 0 rows left for training.
    let e = msg(m
        .fit(
            x.slice(ndarray::s![..1, ..]),
            y.slice(ndarray::s![..1, ..]),
            FitOptions {
                validation_split: 0.5,
                ..quiet()
            },
        )
        .unwrap_err());
    assert!(e.contains("leaves rows on both sides"), "{e}");
    assert!(msg(m
        .fit(
            &x,
            &y,
            FitOptions {
                verbose: 3,
                ..quiet()
            }
        )
        .unwrap_err())
    .contains("verbose"));
    let e = msg(m
        .fit(
            &x,
            &y,
            FitOptions {
                sample_weight: Some(vec![1.0; 3]),
                ..quiet()
            },
        )
        .unwrap_err());
    assert!(e.contains("sample_weight"), "{e}");
}

#[test]
fn fit_evaluate_before_compile() {
    let mut m = Sequential::new().input(4).dense(3, Softmax);
    let (x, y) = common::blobs(10, 4, 1);
    assert!(matches!(
        m.fit(&x, &y, quiet()).unwrap_err(),
        Error::NotCompiled("fit")
    ));
    assert!(matches!(
        m.evaluate(&x, &y).unwrap_err(),
        Error::NotCompiled("evaluate")
    ));
    assert!(msg(m.fit(&x, &y, quiet()).unwrap_err()).contains("compile"));
}

#[test]
fn set_weights_checks_count_and_shapes() {
    let mut m = compiled();
    let mut w = m.get_weights().unwrap();
    w.pop();
    assert!(msg(m.set_weights(&w).unwrap_err()).contains("4 arrays"));
    let mut w = m.get_weights().unwrap();
    w[2] = ArrayD::zeros(IxDyn(&[3, 8]));
    let e = msg(m.set_weights(&w).unwrap_err());
    assert!(
        e.contains("dense_1/kernel") && e.contains("[8, 3]") && e.contains("[3, 8]"),
        "{e}"
    );
}

#[test]
fn sparse_label_out_of_range() {
    let mut m = Sequential::new().seed(1).input(4).dense(3, Softmax);
    m.compile("adam", "sparse_categorical_crossentropy", &["accuracy"])
        .unwrap();
    let x = Array2::<f32>::zeros((4, 4));
    let y = Array2::from_shape_vec((4, 1), vec![0.0, 1.0, 3.0, 2.0]).unwrap();
    let e = msg(m.fit(&x, &y, quiet()).unwrap_err());
    assert!(
        e.contains("y[2]") && e.contains("0..3") && e.contains("=3"),
        "{e}"
    );
    let y = Array2::from_shape_vec((4, 1), vec![0.0, 1.5, 1.0, 2.0]).unwrap();
    assert!(m.fit(&x, &y, quiet()).is_err());
}

#[test]
fn unknown_names() {
    let mut m = Sequential::new().input(4).dense(3, Softmax);
    let e = msg(m
        .compile("rmsprob", "categorical_crossentropy", &["accuracy"])
        .unwrap_err());
    assert!(
        e.contains("unknown optimizer `rmsprob`") && e.contains("rmsprop"),
        "{e}"
    );
    let e = msg(m
        .compile("rmsprop", "categorical_crossentropie", &["accuracy"])
        .unwrap_err());
    assert!(e.contains("unknown loss"), "{e}");
    let e = msg(m.compile("rmsprop", "mse", &["acuracy"]).unwrap_err());
    assert!(e.contains("unknown metric"), "{e}");
    assert!("relux".parse::<Activation>().is_err());
}

#[test]
fn bad_layer_and_optimizer_options() {
    let mut m = Sequential::new().input(4).dense(0, Relu);
    assert!(msg(m.compile("adam", "mse", &["mae"]).unwrap_err()).contains("units=0"));
    let mut m = Sequential::new().input(4).dropout(1.5).dense(1, Linear);
    assert!(msg(m.compile("adam", "mse", &["mae"]).unwrap_err()).contains("rate"));
    // Without an input shape, compile succeeds (the first fit builds the
    // model, as Keras), and predicting before that says what is missing.
    let mut m = Sequential::new().dense(2, Relu);
    m.compile("adam", "mse", &["mae"]).unwrap();
    let e = msg(m
        .predict(ndarray::Array2::<f32>::zeros((1, 3)))
        .unwrap_err());
    assert!(e.contains("input") && e.contains("fit"), "{e}");
    let mut m = Sequential::new().input(4).dense(1, Linear);
    let e = msg(m
        .compile(
            Adam {
                learning_rate: -0.1,
                ..Default::default()
            },
            "mse",
            &["mae"],
        )
        .unwrap_err());
    assert!(e.contains("learning_rate"), "{e}");
    let e = msg(m
        .compile(
            Optimizer::from(Sgd::default())
                .with_clipnorm(1.0)
                .with_global_clipnorm(1.0),
            "mse",
            &["mae"],
        )
        .unwrap_err());
    assert!(e.contains("global_clipnorm"), "{e}");
    let e = msg(m
        .compile("adam", "mse", &[Metric::TopKCategoricalAccuracy { k: 0 }])
        .unwrap_err());
    assert!(e.contains("k=0"), "{e}");
    let e = msg(m
        .compile(
            "adam",
            CategoricalCrossentropy {
                from_logits: false,
                label_smoothing: 2.0,
            },
            &["mae"],
        )
        .unwrap_err());
    assert!(e.contains("label_smoothing"), "{e}");
}

#[test]
fn divergence_is_reported_with_the_partial_history() {
    let mut m = Sequential::new().seed(1).input(4).dense(1, Linear);
    m.compile(
        Sgd {
            learning_rate: 1e6,
            ..Default::default()
        },
        "mse",
        &["mae"],
    )
    .unwrap();
    let x = Array2::from_shape_fn((64, 4), |(i, j)| (i + j) as f32);
    let y = Array2::from_shape_fn((64, 1), |(i, _)| i as f32 * 3.0);
    match m
        .fit(
            &x,
            &y,
            FitOptions {
                epochs: 20,
                batch_size: 8,
                ..quiet()
            },
        )
        .unwrap_err()
    {
        Error::Diverged {
            epoch,
            loss,
            history,
            ..
        } => {
            assert!(!loss.is_finite());
            assert!(epoch >= 1);
            assert_eq!(history.len(), epoch - 1);
        }
        e => panic!("{e}"),
    }
}

#[test]
fn unknown_monitor_key() {
    let mut m = compiled();
    let (x, y) = common::blobs(20, 4, 1);
    let mut es = EarlyStopping::default().monitor("val_acc");
    let e = msg(m
        .fit_with_callbacks(
            &x,
            &y,
            FitOptions {
                validation_split: 0.25,
                ..quiet()
            },
            &mut [&mut es],
        )
        .unwrap_err());
    assert!(e.contains("monitor") && e.contains("val_accuracy"), "{e}");
}
