//! The functional API through its public surface: Keras parity of the four
//! two-input, two-output fixtures, graph errors, shared layers, summary,
//! data by name, determinism.

mod common;

use common::fixture_array as arr;
use horn::layers::MergeOp;
use horn::model::Callee;
use horn::prelude::*;
use ndarray::{Array2, ArrayD};
use serde_json::Value;

fn fixtures() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/keras-layer-fixtures.json"
    ))
    .expect("fixture file");
    serde_json::from_str(&text).expect("valid JSON")
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{i}]: horn {g}, Keras {w}"
        );
    }
}

/// The fixtures' model: a->Dense(4, relu, 'da'); b->Dense(4, tanh, 'db');
/// merge; then Dense(3, softmax, 'out_class') and Dense(1, 'out_value').
fn fixture_model(merge: impl Callee) -> Model {
    let mut g = Graph::with_seed(0);
    let a = g.input("a", &[5]);
    let b = g.input("b", &[5]);
    let da = g.call_named("da", Dense::new(4, Relu), a);
    let db = g.call_named("db", Dense::new(4, Tanh), b);
    let m = g.call(merge, [da, db]);
    let class = g.call_named("out_class", Dense::new(3, Softmax), m);
    let value = g.call_named("out_value", Dense::new(1, Linear), m);
    Model::new(g, [a, b], [class, value]).unwrap()
}

fn set_fixture_weights(model: &mut Model, list: &Value) {
    let pairs: Vec<(String, ArrayD<f32>)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["name"].as_str().unwrap().to_string(), arr(&w["value"])))
        .collect();
    model
        .set_weights_by_name(pairs.iter().map(|(n, a)| (n.as_str(), a)))
        .unwrap();
}

fn two_d(a: &ArrayD<f32>) -> Array2<f32> {
    a.clone().into_dimensionality().unwrap()
}

#[test]
fn the_four_keras_functional_cases_match() {
    let f = fixtures();
    let cases = f["functional"].as_object().unwrap();
    assert_eq!(cases.len(), 4);
    for (key, case) in cases {
        let merge: MergeOp = match case["merge"].as_str().unwrap() {
            "Concatenate" => Concatenate::new().into(),
            "Add" => Add::new().into(),
            "Multiply" => Multiply::new().into(),
            "Average" => Average::new().into(),
            other => panic!("unexpected merge {other}"),
        };
        let mut model = match merge {
            MergeOp::Concatenate { .. } => fixture_model(Concatenate::new()),
            MergeOp::Add => fixture_model(Add::new()),
            MergeOp::Multiply => fixture_model(Multiply::new()),
            _ => fixture_model(Average::new()),
        };
        set_fixture_weights(&mut model, &case["initial_weights"]);
        let xa = two_d(&arr(&case["inputs"][0]));
        let xb = two_d(&arr(&case["inputs"][1]));
        let yc = two_d(&arr(&case["targets"][0]));
        let yv = two_d(&arr(&case["targets"][1]));

        let p = model.predict([&xa, &xb]).unwrap();
        for (o, want) in case["predictions"].as_array().unwrap().iter().enumerate() {
            let want = arr(want);
            assert_eq!(p[o].shape(), want.shape(), "{key}: prediction {o} shape");
            assert_close(
                p[o].as_slice().unwrap(),
                want.as_slice().unwrap(),
                1e-5,
                &format!("{key}: prediction {o}"),
            );
        }

        model
            .compile(
                Sgd {
                    learning_rate: 0.1,
                    ..Default::default()
                },
                ModelCompile::new()
                    .losses(["categorical_crossentropy", "mse"])
                    .loss_weights(&[1.0, 0.5]),
            )
            .unwrap();
        let h = model
            .fit(
                [&xa, &xb],
                [&yc, &yv],
                FitOptions {
                    epochs: 3,
                    batch_size: 3,
                    shuffle: false,
                    verbose: 0,
                    ..Default::default()
                },
            )
            .unwrap();
        let mut keys: Vec<&str> = h.keys().collect();
        keys.sort_unstable();
        assert_eq!(keys, ["loss", "out_class_loss", "out_value_loss"], "{key}");
        for k in ["loss", "out_class_loss", "out_value_loss"] {
            let want: Vec<f32> = case["history"][k]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            assert_close(
                h.get(k).unwrap(),
                &want,
                1e-4,
                &format!("{key}: history {k}"),
            );
        }
        let names = model.weight_names();
        let weights = model.get_weights().unwrap();
        for w in case["final_weights"].as_array().unwrap() {
            let name = w["name"].as_str().unwrap();
            let i = names.iter().position(|n| n == name).unwrap();
            assert_close(
                weights[i].as_slice().unwrap(),
                arr(&w["value"]).as_slice().unwrap(),
                1e-4,
                &format!("{key}: final {name}"),
            );
        }
    }
}

/// Analytic gradients of a model from one full-batch SGD step with
/// learning rate 1 (`w0 - w1`), checked against central differences of
/// `evaluate`'s loss.
fn gradient_check(
    mut model: Model,
    losses: ModelCompile,
    x: &[&Array2<f32>],
    y: &[&Array2<f32>],
    label: &str,
) {
    model
        .compile(
            Sgd {
                learning_rate: 1.0,
                ..Default::default()
            },
            losses,
        )
        .unwrap();
    let before = model.get_weights().unwrap();
    model
        .fit(
            x.to_vec(),
            y.to_vec(),
            FitOptions {
                batch_size: x[0].nrows(),
                shuffle: false,
                verbose: 0,
                ..Default::default()
            },
        )
        .unwrap();
    let after = model.get_weights().unwrap();
    let grads: Vec<ArrayD<f32>> = before.iter().zip(&after).map(|(b, a)| b - a).collect();
    model.set_weights(&before).unwrap();
    // Small steps: Maximum and Minimum have kinks where the branches meet.
    let eps = 1e-3f32;
    let mut checked = 0;
    for t in 0..before.len() {
        for i in (0..before[t].len()).step_by(2) {
            let mut w = before.clone();
            let orig = w[t].as_slice().unwrap()[i];
            w[t].as_slice_mut().unwrap()[i] = orig + eps;
            model.set_weights(&w).unwrap();
            let up = model.evaluate(x.to_vec(), y.to_vec()).unwrap()["loss"];
            w[t].as_slice_mut().unwrap()[i] = orig - eps;
            model.set_weights(&w).unwrap();
            let down = model.evaluate(x.to_vec(), y.to_vec()).unwrap()["loss"];
            let numeric = (up - down) / (2.0 * eps);
            let a = grads[t].as_slice().unwrap()[i];
            assert!(
                (a - numeric).abs() <= 2e-3 + 3e-2 * numeric.abs(),
                "{label}: {}[{i}] analytic {a} vs numeric {numeric}",
                model.weight_names()[t]
            );
            checked += 1;
        }
    }
    assert!(checked > 20, "{label}: only {checked} weights checked");
}

fn data(n: usize, d: usize, seed: u64) -> Array2<f32> {
    Array2::from_shape_fn((n, d), |(i, j)| {
        let v = ((i * 31 + j * 17 + seed as usize * 7) % 23) as f32 / 23.0;
        2.0 * v - 1.0
    })
}

#[test]
fn a_shared_layer_and_fan_out_match_finite_differences() {
    let mut g = Graph::with_seed(5);
    let left = g.input("left", &[4]);
    let right = g.input("right", &[4]);
    let encoder = g.layer_named("encoder", Dense::new(3, Tanh));
    let l = g.call(encoder, left);
    let r = g.call(encoder, right);
    let diff = g.call(Subtract::new(), [l, r]);
    let prod = g.call(Multiply::new(), [l, r, l]);
    let hi = g.call(Maximum::new(), [l, r]);
    let lo = g.call(Minimum::new(), [diff, prod]);
    let cos = g.call(Dot::new(1).normalize(true), [l, r]);
    let joined = g.call(Concatenate::new(), [diff, prod, hi, lo, cos, l]);
    let class = g.call_named("class", Dense::new(3, Softmax), joined);
    let value = g.call_named("value", Dense::new(2, Linear), joined);
    let model = Model::new(g, [left, right], [class, value]).unwrap();
    assert_eq!(
        model
            .layer_names()
            .iter()
            .filter(|n| **n == "encoder")
            .count(),
        1
    );
    let x1 = data(6, 4, 1);
    let x2 = data(6, 4, 2);
    let yc = Array2::from_shape_fn((6, 3), |(i, j)| (i % 3 == j) as u8 as f32);
    let yv = data(6, 2, 3);
    gradient_check(
        model,
        ModelCompile::new()
            .output_loss("class", "categorical_crossentropy")
            .output_loss("value", "mse")
            .loss_weights(&[1.0, 0.7]),
        &[&x1, &x2],
        &[&yc, &yv],
        "shared encoder",
    );
}

#[test]
fn sequences_through_a_shared_lstm_and_a_matrix_dot_match_finite_differences() {
    let mut g = Graph::with_seed(9);
    let a = g.input("a", &[4, 3]);
    let b = g.input("b", &[4, 3]);
    let lstm = g.layer(LSTM::new(2).return_sequences(true));
    let ha = g.call(lstm, a);
    let hb = g.call(lstm, b);
    let att = g.call(Dot::axes(2, 2), [ha, hb]); // (4, 4)
    let both = g.call(Concatenate::new().axis(1), [ha, hb]); // (8, 2)
    let f1 = g.call(Flatten::new(), att);
    let f2 = g.call(Flatten::new(), both);
    let joined = g.call(Concatenate::new(), [f1, f2]);
    let out = g.call(Dense::new(1, Linear), joined);
    let model = Model::new(g, [a, b], [out]).unwrap();
    assert_eq!(model.output_shapes()[0].dims(), &[1]);
    let xa = data(5, 12, 4).into_shape_with_order((5, 4, 3)).unwrap();
    let xb = data(5, 12, 5).into_shape_with_order((5, 4, 3)).unwrap();
    let y = data(5, 1, 6);
    // 3-D inputs go in as they are; the check helper wants 2-D views, so
    // flatten them (a 2-D array of flat rows is accepted too).
    let xa2 = xa.into_shape_with_order((5, 12)).unwrap();
    let xb2 = xb.into_shape_with_order((5, 12)).unwrap();
    gradient_check(
        model,
        ModelCompile::new().loss("mse"),
        &[&xa2, &xb2],
        &[&y],
        "shared LSTM + Dot",
    );
}

#[test]
fn graph_mistakes_are_clear_errors() {
    // Shapes that do not merge, naming the layer and both shapes.
    let mut g = Graph::new();
    let a = g.input("a", &[4]);
    let b = g.input("b", &[5]);
    let s = g.call(Add::new(), [a, b]);
    let e = Model::new(g, [a, b], [s]).unwrap_err().to_string();
    assert!(
        e.contains("add") && e.contains("(None, 4) and (None, 5)"),
        "{e}"
    );

    // Two inputs with one name.
    let mut g = Graph::new();
    let a = g.input("x", &[4]);
    let b = g.input("x", &[4]);
    let s = g.call(Add::new(), [a, b]);
    let e = Model::new(g, [a, b], [s]).unwrap_err().to_string();
    assert!(e.contains("two layers (or inputs) are named `x`"), "{e}");

    // An input no output depends on.
    let mut g = Graph::new();
    let a = g.input("a", &[4]);
    let b = g.input("unused", &[4]);
    let o = g.call(Dense::new(1, Linear), a);
    let e = Model::new(g, [a, b], [o]).unwrap_err().to_string();
    assert!(
        e.contains("input `unused` is not connected to any output"),
        "{e}"
    );

    // An output that needs an input the model does not list.
    let mut g = Graph::new();
    let a = g.input("a", &[4]);
    let b = g.input("b", &[4]);
    let s = g.call(Add::new(), [a, b]);
    let e = Model::new(g, [a], [s]).unwrap_err().to_string();
    assert!(e.contains("graph disconnected") && e.contains("`b`"), "{e}");

    // A tensor of another graph.
    let mut g1 = Graph::new();
    let mut g2 = Graph::new();
    let a = g1.input("a", &[4]);
    let b = g2.input("b", &[4]);
    let o = g2.call(Dense::new(1, Linear), a);
    let e = Model::new(g2, [b], [o]).unwrap_err().to_string();
    assert!(e.contains("another graph"), "{e}");

    // A shared layer called on a second shape.
    let mut g = Graph::new();
    let a = g.input("a", &[4]);
    let b = g.input("b", &[5]);
    let d = g.layer(Dense::new(2, Relu));
    let x = g.call(d, a);
    let y = g.call(d, b);
    let e = Model::new(g, [a, b], [x, y]).unwrap_err().to_string();
    assert!(
        e.contains("shared layer `dense`") && e.contains("(None, 5)"),
        "{e}"
    );

    // A layer with weights called on two tensors.
    let mut g = Graph::new();
    let a = g.input("a", &[4]);
    let b = g.input("b", &[4]);
    let o = g.call(Dense::new(2, Relu), [a, b]);
    let e = Model::new(g, [a, b], [o]).unwrap_err().to_string();
    assert!(e.contains("exactly one tensor"), "{e}");

    // A kernel larger than its input, inside a graph.
    let mut g = Graph::new();
    let a = g.input("img", &[2, 2, 1]);
    let o = g.call(Conv2D::new(4, 3, Relu), a);
    let e = Model::new(g, [a], [o]).unwrap_err().to_string();
    assert!(e.contains("conv2d"), "{e}");
}

fn two_branch(seed: u64) -> Model {
    let mut g = Graph::with_seed(seed);
    let a = g.input("numbers", &[5]);
    let b = g.input("flags", &[3]);
    let h = g.call(Dense::new(8, Relu), a);
    let h = g.call(Dropout::new(0.2), h);
    let j = g.call(Concatenate::new(), [h, b]);
    let c = g.call_named("class", Dense::new(3, Softmax), j);
    let v = g.call_named("value", Dense::new(1, Linear), j);
    Model::new(g, [a, b], [c, v]).unwrap()
}

fn two_branch_data() -> [Array2<f32>; 4] {
    let n = 40;
    let x = data(n, 5, 1);
    let f = Array2::from_shape_fn((n, 3), |(i, j)| (i % 3 == j) as u8 as f32);
    let c = Array2::from_shape_fn((n, 3), |(i, j)| {
        ((i + (x[[i, 0]] > 0.0) as usize) % 3 == j) as u8 as f32
    });
    let v = Array2::from_shape_fn((n, 1), |(i, _)| x[[i, 1]] * 2.0 + f[[i, 0]]);
    [x, f, c, v]
}

fn compiled_two_branch(seed: u64) -> Model {
    let mut m = two_branch(seed);
    m.compile(
        "adam",
        ModelCompile::new()
            .output_loss("class", "categorical_crossentropy")
            .output_loss("value", "mse")
            .loss_weights(&[1.0, 0.5])
            .metrics("class", &["accuracy"])
            .metrics("value", &["mae"]),
    )
    .unwrap();
    m
}

#[test]
fn data_by_name_equals_data_by_position_and_history_keys_follow_keras() {
    let [x, f, c, v] = two_branch_data();
    let opts = FitOptions {
        epochs: 3,
        batch_size: 8,
        validation_split: 0.25,
        verbose: 0,
        ..Default::default()
    };
    let mut by_pos = compiled_two_branch(3);
    let h1 = by_pos.fit([&x, &f], [&c, &v], opts.clone()).unwrap();
    let mut by_name = compiled_two_branch(3);
    let h2 = by_name
        .fit(
            [("flags", &f), ("numbers", &x)],
            [("value", &v), ("class", &c)],
            opts,
        )
        .unwrap();
    let mut keys: Vec<&str> = h1.keys().collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "class_accuracy",
            "class_loss",
            "loss",
            "val_class_accuracy",
            "val_class_loss",
            "val_loss",
            "val_value_loss",
            "val_value_mae",
            "value_loss",
            "value_mae"
        ]
    );
    for k in h1.keys() {
        assert_eq!(h1.get(k), h2.get(k), "{k}");
    }
    assert_eq!(
        by_pos.get_weights().unwrap(),
        by_name.get_weights().unwrap()
    );
    // The total is the weighted sum of the outputs' losses (no penalties here).
    let last = h1.last();
    let total = last.get("class_loss").unwrap() + 0.5 * last.get("value_loss").unwrap();
    assert!((last.get("loss").unwrap() - total).abs() < 1e-5);
    // evaluate reports the same keys, and its numbers match predict's.
    let e = by_pos.evaluate([&x, &f], [&c, &v]).unwrap();
    let p = by_pos.predict([("numbers", &x), ("flags", &f)]).unwrap();
    // Owned arrays in a Vec (built in a loop) are accepted as they are.
    assert_eq!(by_pos.predict(vec![x.clone(), f.clone()]).unwrap(), p);
    let pv: Array2<f32> = p[1].clone().into_dimensionality().unwrap();
    let mse = (&pv - &v).mapv(|d| d * d).mean().unwrap();
    assert!(
        (e["value_loss"] - mse).abs() < 1e-5,
        "{} vs {mse}",
        e["value_loss"]
    );
}

#[test]
fn bad_data_is_a_clear_error() {
    let [x, f, c, v] = two_branch_data();
    let mut m = compiled_two_branch(1);
    let quiet = || FitOptions {
        verbose: 0,
        ..Default::default()
    };
    let e = m.fit([&x], [&c, &v], quiet()).unwrap_err().to_string();
    assert!(
        e.contains("2 arrays, one per model input (numbers, flags)"),
        "{e}"
    );
    let e = m
        .fit([("numbers", &x), ("flag", &f)], [&c, &v], quiet())
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"flag\""), "{e}");
    let e = m.fit([&x, &x], [&c, &v], quiet()).unwrap_err().to_string();
    assert!(e.contains("x[\"flags\"]"), "{e}");
    let short = c.slice(ndarray::s![..10, ..]).to_owned();
    let e = m
        .fit([&x, &f], [&short, &v], quiet())
        .unwrap_err()
        .to_string();
    assert!(e.contains("y[\"class\"]") && e.contains("40 rows"), "{e}");
    let mut nan = x.clone();
    nan[[3, 2]] = f32::NAN;
    let e = m.predict([&nan, &f]).unwrap_err().to_string();
    assert!(e.contains("non-finite") && e.contains("numbers"), "{e}");
    let mut un = two_branch(1);
    assert!(matches!(
        un.fit([&x, &f], [&c, &v], quiet()),
        Err(Error::NotCompiled(_))
    ));
    let e = un
        .compile("sgd", ModelCompile::new().output_loss("class", "mse"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("none for `value`"), "{e}");
    let e = un
        .compile(
            "sgd",
            ModelCompile::new().loss("mse").metrics("nope", &["mae"]),
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"nope\""), "{e}");
}

fn fingerprint(m: &Model) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for w in m.get_weights().unwrap() {
        for v in w.iter() {
            h ^= v.to_bits() as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

#[test]
fn seeded_fit_is_bit_identical_on_one_and_four_threads() {
    let run = || {
        let [x, f, c, v] = two_branch_data();
        let mut m = compiled_two_branch(11);
        let h = m
            .fit(
                [&x, &f],
                [&c, &v],
                FitOptions {
                    epochs: 3,
                    batch_size: 16,
                    verbose: 0,
                    ..Default::default()
                },
            )
            .unwrap();
        (fingerprint(&m), h.get("loss").unwrap().to_vec())
    };
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(run);
    let four = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap()
        .install(run);
    assert_eq!(one, four);
}

#[test]
fn summary_shows_connections_like_keras() {
    let m = fixture_model(Concatenate::new());
    let s = m.summary();
    for want in [
        "Model: \"functional\"",
        "Connected to",
        "a (InputLayer)",
        "(None, 5)",
        "da (Dense)",
        "a[0][0]",
        "da[0][0], db[0][0]",
        "concatenate[0][0]",
        "Total params: 84 (336.00 B)",
        "Trainable params: 84",
    ] {
        assert!(
            s.replace("│\n│", " ").contains(want) || s.contains(want),
            "missing {want:?} in\n{s}"
        );
    }
    // A shared layer is one row with a connection per call.
    let mut g = Graph::with_seed(1);
    let a = g.input("a", &[3]);
    let b = g.input("b", &[3]);
    let d = g.layer_named("shared", Dense::new(2, Relu));
    let x = g.call(d, a);
    let y = g.call(d, b);
    let s = g.call(Add::new(), [x, y]);
    let m = Model::new(g, [a, b], [s]).unwrap();
    let text = m.summary();
    assert_eq!(text.matches("shared (Dense)").count(), 1, "{text}");
    // The diagram: one box per input and layer, an arrow per connection.
    let d = m.plot_model();
    let names: Vec<&str> = d.nodes().iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "shared", "add"]);
    assert_eq!(d.edges(), [(0, 2), (1, 2), (2, 3)]);
    assert_eq!(d.nodes()[3].input_shape, "[(None, 2), (None, 2)]");
    let svg = d.to_svg();
    assert_eq!(svg.matches("class=\"edge\"").count(), 3);
    assert!(
        text.contains("shared[0][0]") && text.contains("shared[1][0]"),
        "{text}"
    );
    assert_eq!(m.count_params(), 8);
}

#[test]
fn save_load_and_resume_are_exact() {
    let [x, f, c, v] = two_branch_data();
    let opts = |epochs, initial_epoch| FitOptions {
        epochs,
        initial_epoch,
        batch_size: 8,
        verbose: 0,
        seed: Some(4),
        ..Default::default()
    };
    let mut straight = compiled_two_branch(2);
    straight.fit([&x, &f], [&c, &v], opts(4, 0)).unwrap();

    let mut first = compiled_two_branch(2);
    first.fit([&x, &f], [&c, &v], opts(2, 0)).unwrap();
    let path = std::env::temp_dir().join(format!(
        "horn-functional-{}.safetensors",
        std::process::id()
    ));
    first.save(&path).unwrap();
    let mut resumed = Model::load(&path).unwrap();
    std::fs::remove_file(&path).ok();
    assert_eq!(resumed.input_names(), ["numbers", "flags"]);
    assert_eq!(resumed.output_names(), ["class", "value"]);
    assert_eq!(resumed.summary(), first.summary());
    let p0 = first.predict([&x, &f]).unwrap();
    let p1 = resumed.predict([&x, &f]).unwrap();
    assert_eq!(p0, p1);
    let h = resumed.fit([&x, &f], [&c, &v], opts(4, 2)).unwrap();
    assert!(h.get("class_accuracy").is_some() && h.get("value_mae").is_some());
    assert_eq!(
        resumed.get_weights().unwrap(),
        straight.get_weights().unwrap()
    );
    // The same model gives the same bytes.
    assert_eq!(resumed.to_bytes().unwrap(), straight.to_bytes().unwrap());

    // Each kind of model file names the loader it needs.
    let bytes = first.to_bytes().unwrap();
    let e = Sequential::from_bytes(&bytes).unwrap_err().to_string();
    assert!(e.contains("Model::load"), "{e}");
    let seq = Sequential::new().seed(1).input(3).dense(2, Linear);
    let e = Model::from_bytes(&seq.to_bytes().unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("Sequential::load"), "{e}");

    // Weights by Keras name.
    let wpath = std::env::temp_dir().join(format!(
        "horn-functional-w-{}.safetensors",
        std::process::id()
    ));
    straight.save_weights(&wpath).unwrap();
    let mut fresh = two_branch(99);
    assert_ne!(
        fresh.get_weights().unwrap(),
        straight.get_weights().unwrap()
    );
    fresh.load_weights(&wpath).unwrap();
    std::fs::remove_file(&wpath).ok();
    assert_eq!(
        fresh.get_weights().unwrap(),
        straight.get_weights().unwrap()
    );
}

/// A change to a model file's graph.
type Edit = dyn Fn(&mut Value);

/// The `model` metadata of a functional file, edited, written back.
fn with_graph(bytes: &[u8], edit: impl Fn(&mut Value)) -> Vec<u8> {
    let (mut header, data) = common::split_safetensors(bytes);
    let mut model: Value =
        serde_json::from_str(header["__metadata__"]["model"].as_str().unwrap()).unwrap();
    edit(&mut model);
    header["__metadata__"]["model"] = Value::String(model.to_string());
    common::join_safetensors(&header, &data)
}

#[test]
fn hostile_graph_files_are_refused_without_panics() {
    let model = compiled_two_branch(1);
    let bytes = model.to_bytes().unwrap();
    assert!(Model::from_bytes(&bytes).is_ok());
    let cases: Vec<(&str, Box<Edit>)> = vec![
        (
            "reads tensor",
            Box::new(|m| m["nodes"][0]["inputs"][0] = 7.into()),
        ),
        (
            "calls layer",
            Box::new(|m| m["nodes"][1]["layer"] = 40.into()),
        ),
        (
            "used twice",
            Box::new(|m| m["layers"][1]["name"] = m["layers"][0]["name"].clone()),
        ),
        (
            "shape",
            Box::new(|m| m["inputs"][0]["shape"] = serde_json::json!([0])),
        ),
        (
            "shape",
            Box::new(|m| m["inputs"][0]["shape"] = serde_json::json!([1usize << 40, 1usize << 40])),
        ),
        (
            "not made by a layer",
            Box::new(|m| m["outputs"][0] = 0.into()),
        ),
        (
            "not made by a layer",
            Box::new(|m| m["outputs"][1] = 1000.into()),
        ),
        (
            "never called",
            Box::new(|m| {
                m["layers"].as_array_mut().unwrap().push(
                    serde_json::json!({"name": "extra", "body": {"Merge": {"class_name": "Add"}}}),
                )
            }),
        ),
        (
            "tensors",
            Box::new(|m| m["nodes"][0]["inputs"] = serde_json::json!([0, 1])),
        ),
        (
            "compiled outputs",
            Box::new(|m| {
                m["compile"]["outputs"].as_array_mut().unwrap().pop();
            }),
        ),
        (
            "",
            Box::new(|m| m["inputs"][0]["shape"] = serde_json::json!([6])),
        ),
    ];
    for (want, edit) in cases {
        let e = Model::from_bytes(&with_graph(&bytes, edit))
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "expected {want:?} in: {e}");
    }
    // Random byte flips anywhere: an error or a model, never a panic.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..2000 {
        let mut b = bytes.clone();
        for _ in 0..3 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let i = (state % b.len() as u64) as usize;
            b[i] = (state >> 32) as u8;
        }
        let _ = Model::from_bytes(&b);
    }
}

#[test]
fn a_chain_as_a_graph_trains_bit_identically_to_sequential() {
    let x = data(50, 6, 1);
    let y = Array2::from_shape_fn((50, 3), |(i, j)| ((i * 7 % 3) == j) as u8 as f32);
    let mut seq = Sequential::new()
        .seed(21)
        .input(6)
        .dense(16, Relu)
        .dropout(0.3)
        .dense(3, Softmax);
    seq.compile("rmsprop", "categorical_crossentropy", &["accuracy"])
        .unwrap();
    let mut g = Graph::with_seed(21);
    let i = g.input("x", &[6]);
    let h = g.call(Dense::new(16, Relu), i);
    let h = g.call(Dropout::new(0.3), h);
    let o = g.call(Dense::new(3, Softmax), h);
    let mut model = Model::new(g, [i], [o]).unwrap();
    model
        .compile(
            "rmsprop",
            ModelCompile::new()
                .loss("categorical_crossentropy")
                .metrics_all(&["accuracy"]),
        )
        .unwrap();
    assert_eq!(seq.get_weights().unwrap(), model.get_weights().unwrap());
    let opts = FitOptions {
        epochs: 3,
        batch_size: 8,
        validation_split: 0.2,
        verbose: 0,
        ..Default::default()
    };
    let hs = seq.fit(&x, &y, opts.clone()).unwrap();
    let hm = model.fit(&x, &y, opts).unwrap();
    assert_eq!(seq.get_weights().unwrap(), model.get_weights().unwrap());
    // One output: Keras' single-output keys, no per-output prefix.
    for k in ["loss", "accuracy", "val_loss", "val_accuracy"] {
        assert_eq!(hs.get(k), hm.get(k), "{k}");
    }
    assert_eq!(hm.len(), 3);
    let p = model.predict(&x).unwrap();
    assert_eq!(
        p[0].clone().into_dimensionality::<ndarray::Ix2>().unwrap(),
        seq.predict(&x).unwrap()
    );
}

#[test]
fn masks_flow_through_a_graph_as_through_sequential() {
    // Embedding(mask_zero) -> LSTM, as a chain and as a graph, on padded ids.
    let ids = Array2::from_shape_fn((6, 5), |(i, j)| {
        if j + i % 3 >= 5 {
            0.0
        } else {
            ((i + 2 * j) % 9 + 1) as f32
        }
    });
    let seq = Sequential::new()
        .seed(4)
        .input_shape(&[5])
        .add(Embedding::new(10, 4).mask_zero(true))
        .add(LSTM::new(3))
        .dense(2, Linear);
    let mut g = Graph::with_seed(4);
    let i = g.input("ids", &[5]);
    let e = g.call(Embedding::new(10, 4).mask_zero(true), i);
    let h = g.call(LSTM::new(3), e);
    let o = g.call(Dense::new(2, Linear), h);
    let model = Model::new(g, [i], [o]).unwrap();
    let p = model.predict(&ids).unwrap();
    let want = seq.predict(&ids).unwrap();
    assert_eq!(p[0].as_slice().unwrap(), want.as_slice().unwrap());
    // Padding changes nothing: a row with extra zeros at the end predicts
    // what the unpadded steps give.
    let mut unmasked = Sequential::new()
        .seed(4)
        .input_shape(&[5])
        .add(Embedding::new(10, 4))
        .add(LSTM::new(3))
        .dense(2, Linear);
    unmasked.set_weights(&seq.get_weights().unwrap()).unwrap();
    assert_ne!(
        unmasked.predict(&ids).unwrap(),
        want,
        "the mask must matter on padded rows"
    );
}

#[test]
fn callbacks_work_on_functional_models() {
    let [x, f, c, v] = two_branch_data();
    let mut model = compiled_two_branch(6);
    let dir = std::env::temp_dir().join(format!("horn-functional-cb-{}", std::process::id()));
    let mut early = EarlyStopping::default()
        .monitor("val_class_loss")
        .patience(2)
        .restore_best_weights(true);
    let mut checkpoint = ModelCheckpoint::new(
        dir.join("epoch-{epoch:02d}.safetensors")
            .to_string_lossy()
            .to_string(),
    );
    let mut lr = ReduceLrOnPlateau::default().monitor("val_loss").patience(1);
    let h = model
        .fit_with_callbacks(
            [&x, &f],
            [&c, &v],
            FitOptions {
                epochs: 60,
                batch_size: 8,
                validation_split: 0.25,
                verbose: 0,
                ..Default::default()
            },
            &mut [&mut early, &mut checkpoint, &mut lr],
        )
        .unwrap();
    assert!(h.get("lr").is_some(), "ReduceLrOnPlateau logs lr");
    assert_eq!(checkpoint.saved.len(), h.len());
    // Every checkpoint is a functional model file that loads.
    let last = Model::load(checkpoint.saved.last().unwrap()).unwrap();
    assert_eq!(last.output_names(), ["class", "value"]);
    std::fs::remove_dir_all(&dir).ok();
    // Seeded: it stops early, and restores the best epoch's weights, so
    // evaluating gives the best val_class_loss seen.
    assert!(early.stopped_epoch > 0 && h.len() < 60);
    {
        let n_train = 30;
        let sl = |a: &Array2<f32>| a.slice(ndarray::s![n_train.., ..]).to_owned();
        let e = model
            .evaluate([&sl(&x), &sl(&f)], [&sl(&c), &sl(&v)])
            .unwrap();
        let best = h
            .get("val_class_loss")
            .unwrap()
            .iter()
            .cloned()
            .fold(f32::INFINITY, f32::min);
        assert!(
            (e["class_loss"] - best).abs() < 1e-5,
            "{} vs {best}",
            e["class_loss"]
        );
    }
}

#[test]
fn explicit_validation_data_reports_what_evaluate_reports() {
    let [x, f, c, v] = two_branch_data();
    let mut m = compiled_two_branch(8);
    let (vx, vf, vc, vv) = (
        x.slice(ndarray::s![..10, ..]).to_owned(),
        f.slice(ndarray::s![..10, ..]).to_owned(),
        c.slice(ndarray::s![..10, ..]).to_owned(),
        v.slice(ndarray::s![..10, ..]).to_owned(),
    );
    let h = m
        .fit_validated(
            [&x, &f],
            [&c, &v],
            [&vx, &vf],
            [("value", &vv), ("class", &vc)],
            FitOptions {
                epochs: 2,
                batch_size: 8,
                verbose: 0,
                ..Default::default()
            },
            &mut [],
        )
        .unwrap();
    let e = m.evaluate([&vx, &vf], [&vc, &vv]).unwrap();
    for k in [
        "loss",
        "class_loss",
        "value_loss",
        "class_accuracy",
        "value_mae",
    ] {
        let last = *h.get(&format!("val_{k}")).unwrap().last().unwrap();
        assert!(
            (last - e[k]).abs() < 1e-6,
            "val_{k} {last} vs evaluate {}",
            e[k]
        );
    }
    // Mismatched validation arrays are named.
    let short = vc.slice(ndarray::s![..5, ..]).to_owned();
    let err = m
        .fit_validated(
            [&x, &f],
            [&c, &v],
            [&vx, &vf],
            [&short, &vv],
            FitOptions {
                verbose: 0,
                ..Default::default()
            },
            &mut [],
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("validation_y"), "{err}");
}

/// Trains the same layers as a `Sequential` (which fuses each pooling layer
/// with the convolution before it, forward and backward) and as a graph
/// (which runs every layer on its own), and checks that History, weights and
/// predictions are the same bits.
macro_rules! fused_matches_unfused {
    ($x:expr, $y:expr, $batch:expr, $shape:expr, [$($layer:expr),+ $(,)?]) => {{
        let (x, y) = ($x, $y);
        let mut seq = Sequential::new().seed(3).input_shape($shape);
        $(seq = seq.add($layer);)+
        seq.compile("adam", "categorical_crossentropy", &["accuracy"])
            .unwrap();
        let mut g = Graph::with_seed(3);
        let i = g.input("x", $shape);
        let mut h = i;
        $(h = g.call($layer, h);)+
        let mut model = Model::new(g, [i], [h]).unwrap();
        model
            .compile(
                "adam",
                ModelCompile::new()
                    .loss("categorical_crossentropy")
                    .metrics_all(&["accuracy"]),
            )
            .unwrap();
        assert_eq!(seq.get_weights().unwrap(), model.get_weights().unwrap());
        let opts = FitOptions {
            epochs: 2,
            batch_size: $batch,
            verbose: 0,
            ..Default::default()
        };
        let hs = seq.fit(x, y, opts.clone()).unwrap();
        let hm = model.fit(x, y, opts).unwrap();
        assert_eq!(hs.get("loss"), hm.get("loss"));
        assert_eq!(seq.get_weights().unwrap(), model.get_weights().unwrap());
        let p = model.predict(x).unwrap();
        assert_eq!(
            p[0].clone().into_dimensionality::<ndarray::Ix2>().unwrap(),
            seq.predict(x).unwrap()
        );
    }};
}

#[test]
fn a_convnet_as_a_graph_trains_and_predicts_bit_identically_to_sequential() {
    // Sequential runs each pooling layer on the tiles of the convolution
    // before it while they are in cache (`Layer::forward_then`,
    // `Layer::backward_after`); the graph engine runs the layers one after
    // the other. Batches of 48 images make the first convolution tile in
    // parallel (two tiles a batch), in training and in inference.
    let x = ndarray::Array4::from_shape_fn((96, 14, 14, 1), |(i, r, c, _)| {
        ((i * 13 + r * 7 + c * 3) % 17) as f32 / 17.0 - 0.3
    });
    let y = Array2::from_shape_fn((96, 3), |(i, j)| ((i * 5 % 3) == j) as u8 as f32);
    fused_matches_unfused!(
        &x,
        &y,
        48,
        &[14, 14, 1],
        [
            Conv2D::new(8, 3, Relu),
            MaxPooling2D::new(2),
            Conv2D::new(8, 3, Relu),
            MaxPooling2D::new(2),
            Flatten::new(),
            Dense::new(3, Softmax),
        ]
    );
}

#[test]
fn fused_convolutions_and_poolings_give_the_bits_of_separate_layers() {
    // Batches of 29 rows (not a multiple of the 8 gradient blocks, and a
    // short last batch); long and short patches; a 1x1 convolution; short
    // patches with an input gradient; overlapping and `same` pooling
    // windows; average pooling; activations with and without kept
    // pre-activations; no bias.
    let images = ndarray::Array4::from_shape_fn((70, 12, 12, 2), |(i, r, c, ch)| {
        ((i * 13 + r * 7 + c * 3 + ch * 5) % 17) as f32 / 17.0 - 0.4
    });
    let labels = Array2::from_shape_fn((70, 3), |(i, j)| ((i * 5 % 3) == j) as u8 as f32);
    fused_matches_unfused!(
        &images,
        &labels,
        29,
        &[12, 12, 2],
        [
            Conv2D::new(4, 3, Tanh).padding(Padding::Same),
            AveragePooling2D::new(2).strides(1),
            Conv2D::new(6, 3, Relu).use_bias(false),
            MaxPooling2D::new(3).strides(2).padding(Padding::Same),
            Flatten::new(),
            Dense::new(3, Softmax),
        ]
    );
    fused_matches_unfused!(
        &images,
        &labels,
        29,
        &[12, 12, 2],
        [
            Conv2D::new(2, 1, Linear),
            MaxPooling2D::new(2),
            Conv2D::new(3, 2, Relu),
            MaxPooling2D::new(2),
            Conv2D::new(4, 2, "gelu").padding(Padding::Same),
            AveragePooling2D::new(2),
            Flatten::new(),
            Dense::new(3, Softmax),
        ]
    );
    let sequences = ndarray::Array3::from_shape_fn((70, 20, 2), |(i, t, ch)| {
        ((i * 11 + t * 3 + ch * 7) % 13) as f32 / 13.0 - 0.5
    });
    fused_matches_unfused!(
        &sequences,
        &labels,
        29,
        &[20, 2],
        [
            Conv1D::new(5, 3, Relu),
            MaxPooling1D::new(2),
            Conv1D::new(4, 5, Sigmoid).padding(Padding::Causal),
            AveragePooling1D::new(2).padding(Padding::Same),
            Flatten::new(),
            Dense::new(3, Softmax),
        ]
    );
    fused_matches_unfused!(
        &sequences,
        &labels,
        29,
        &[20, 2],
        [
            Conv1D::new(5, 3, "elu"),
            MaxPooling1D::new(3).strides(2),
            Flatten::new(),
            Dense::new(3, Softmax),
        ]
    );
}
