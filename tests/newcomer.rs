//! Rough edges a Keras newcomer hit (issue 18), through the public API.

mod common;

use horn::metrics::confusion_matrix;
use horn::prelude::*;
use ndarray::Array2;

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("horn-newcomer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn predicted_classes_and_the_confusion_matrix() {
    let (x, y) = common::blobs(150, 6, 3);
    let mut m = Sequential::new()
        .seed(2)
        .input(6)
        .dense(16, Relu)
        .dense(3, Softmax);
    m.compile("adam", "categorical_crossentropy", &["accuracy"])
        .unwrap();
    m.fit(
        &x,
        &y,
        FitOptions {
            epochs: 30,
            batch_size: 16,
            verbose: 0,
            ..Default::default()
        },
    )
    .unwrap();
    let pred = m.predict_classes(&x).unwrap();
    let probs = m.predict(&x).unwrap();
    for (i, &c) in pred.iter().enumerate() {
        assert!(probs.row(i).iter().all(|&p| p <= probs[[i, c]]));
    }
    let truth: Vec<usize> = y
        .rows()
        .into_iter()
        .map(|r| r.iter().position(|&v| v == 1.0).unwrap())
        .collect();
    let cm = confusion_matrix(&truth, &pred, Some(3)).unwrap();
    assert_eq!(cm.counts().sum(), 150);
    let acc = m.evaluate(&x, &y).unwrap()["accuracy"];
    assert!((cm.accuracy() as f32 - acc).abs() < 1e-6);
    let table = cm
        .with_labels(&["Adelie", "Chinstrap", "Gentoo"])
        .unwrap()
        .to_string();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4);
    assert!(lines[0].starts_with("truth \\ predicted") && lines[0].ends_with("Gentoo"));
    assert!(lines[1].trim_start().starts_with("Adelie"));

    // A single sigmoid output: class 1 above 0.5.
    let mut b = Sequential::new().seed(1).input(2).dense(1, Sigmoid);
    b.set_weights(&[
        ndarray::array![[1.0f32], [0.0]].into_dyn(),
        ndarray::array![0.0f32].into_dyn(),
    ])
    .unwrap();
    let c = b
        .predict_classes(&ndarray::array![[2.0f32, 0.0], [-2.0, 5.0]])
        .unwrap();
    assert_eq!(c, [1, 0]);
}

#[test]
fn confusion_matrix_errors() {
    assert!(confusion_matrix(&[0, 1], &[0], None).is_err());
    let e = confusion_matrix(&[0, 3], &[0, 1], Some(3)).unwrap_err();
    assert!(e.to_string().contains("truth 3"), "{e}");
    assert!(confusion_matrix(&[1 << 40], &[0], None).is_err());
    let cm = confusion_matrix(&[0, 1], &[1, 1], None).unwrap();
    assert!(cm.clone().with_labels(&["a"]).is_err());
    assert_eq!(cm.get(0, 1), 1);
    assert_eq!(cm.get(7, 7), 0);
}

#[test]
fn keras_file_names_are_refused_with_a_reason() {
    let m = Sequential::new().seed(1).input(2).dense(1, Sigmoid);
    for name in ["model.keras", "model.weights.h5"] {
        let e = m.save(tmp(name)).unwrap_err().to_string();
        assert!(e.contains(".safetensors"), "{e}");
        assert!(!tmp(name).exists());
    }
    // A zip (what a .keras file is) given to load says what horn expected.
    let zip = tmp("real.keras");
    std::fs::write(&zip, b"PK\x03\x04rest of a zip").unwrap();
    let e = Sequential::load(&zip).unwrap_err().to_string();
    assert!(e.contains("zip archive") && e.contains("load_keras"), "{e}");
}

#[test]
fn checkpoints_create_their_folder() {
    let (x, y) = common::blobs(30, 4, 1);
    let mut m = Sequential::new().seed(1).input(4).dense(3, Softmax);
    m.compile("sgd", "categorical_crossentropy", &["accuracy"])
        .unwrap();
    let dir = tmp("checkpoints").join("run-1");
    let _ = std::fs::remove_dir_all(&dir);
    let template = dir.join("epoch-{epoch:02d}.safetensors");
    let mut cp = ModelCheckpoint::new(template.to_str().unwrap());
    m.fit_with_callbacks(&x, &y, common::quiet(2), &mut [&mut cp])
        .unwrap();
    assert_eq!(cp.saved.len(), 2);
    assert!(dir.join("epoch-02.safetensors").exists());
}

#[test]
fn optimizer_debug_prints_its_configuration_not_its_state() {
    let mut m = Sequential::new()
        .seed(1)
        .input(200)
        .dense(300, Relu)
        .dense(2, Softmax);
    m.compile("adam", "categorical_crossentropy", &["accuracy"])
        .unwrap();
    let x = Array2::<f32>::zeros((4, 200));
    let y = Array2::<f32>::from_shape_fn((4, 2), |(i, j)| (i % 2 == j) as u8 as f32);
    m.fit(&x, &y, common::quiet(1)).unwrap();
    let s = format!("{:?}", m.optimizer().unwrap());
    assert!(s.len() < 500, "{} characters", s.len());
    // (200 x 300 + 300 + 300 x 2 + 2) weights, two Adam slots each.
    assert!(
        s.contains("Adam") && s.contains("slot_values: 121804"),
        "{s}"
    );
}

#[test]
fn names_work_everywhere_a_keras_user_writes_them() {
    // Activations by name in the builder, and "no metrics" that compiles.
    let mut m = Sequential::new()
        .seed(1)
        .input(4)
        .dense(8, "relu")
        .dense(3, "softmax");
    m.compile("RMSprop", "CategoricalCrossentropy", Metric::NONE)
        .unwrap();
    assert_eq!(m.loss(), Some(&"categorical_crossentropy".parse().unwrap()));
    assert!(m.metric_keys().is_empty());
    // Keras class names for losses, metrics and optimizers, as Python writes them.
    m.compile(
        "Adam",
        "MeanSquaredError",
        &["MeanAbsoluteError", "RootMeanSquaredError", "AUC"],
    )
    .unwrap();
    assert_eq!(
        m.metric_keys(),
        ["MeanAbsoluteError", "RootMeanSquaredError", "AUC"]
    );
    assert_eq!(m.metrics()[0], Metric::MeanAbsoluteError);
    // A misspelt activation is reported with the known names.
    let mut bad = Sequential::new().input(4).dense(8, "relux");
    let e = bad
        .compile("sgd", "mse", Metric::NONE)
        .unwrap_err()
        .to_string();
    assert!(e.contains("relux") && e.contains("relu"), "{e}");
    let bad = Sequential::new()
        .input(4)
        .dense(2, Linear)
        .activation("sofmax");
    assert!(bad.predict(Array2::<f32>::ones((1, 4))).is_err());
}

#[test]
fn messages_that_teach() {
    let mut m = Sequential::new().seed(1).input(2).dense(3, Softmax);
    m.compile("adam", "categorical_crossentropy", &["accuracy"])
        .unwrap();
    let x = Array2::<f32>::zeros((4, 2));
    // Integer labels with a one-hot loss.
    let labels = ndarray::array![[0.0f32], [2.0], [1.0], [0.0]];
    let e = m
        .fit(&x, &labels, common::quiet(1))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("to_categorical") && e.contains("sparse_categorical_crossentropy"),
        "{e}"
    );
    // Labels counted from 1.
    m.compile("adam", "sparse_categorical_crossentropy", Metric::NONE)
        .unwrap();
    let from_one = ndarray::array![[1.0f32], [3.0], [2.0], [1.0]];
    let e = m
        .fit(&x, &from_one, common::quiet(1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("start at 0"), "{e}");
    // A text cell in a numeric column is shown.
    let t = horn::preprocessing::Table::from_csv_str("a,b\n1,2\nx7,3\n").unwrap();
    let e = t.numeric("a").unwrap_err().to_string();
    assert!(e.contains("`x7`") && e.contains("line 3"), "{e}");
}

#[test]
fn datasets_for_users_of_the_published_crate() {
    // Penguins ship inside the crate.
    let t = horn::datasets::penguins::load().unwrap();
    assert_eq!(t.nrows(), 344);
    assert_eq!(t.names()[0], "species");
    // A folder without MNIST: the error names the folder, the variable and the files.
    let empty = tmp("no-mnist");
    std::fs::create_dir_all(&empty).unwrap();
    let e = horn::datasets::mnist::load(&empty).unwrap_err().to_string();
    assert!(e.contains("no-mnist"), "{e}");
    let dirs = horn::datasets::mnist::default_dirs();
    assert!(dirs.iter().any(|d| d.ends_with("data/mnist")));
}

#[test]
fn the_history_of_a_failed_fit_is_kept() {
    struct FailAt(usize);
    impl Callback for FailAt {
        fn on_epoch_end(
            &mut self,
            epoch: usize,
            _logs: &mut Logs,
            _ctx: &mut CallbackContext<'_>,
        ) -> horn::Result<()> {
            if epoch == self.0 {
                return Err(Error::Data("disk full".into()));
            }
            Ok(())
        }
    }
    let (x, y) = common::blobs(30, 4, 1);
    let mut m = Sequential::new().seed(1).input(4).dense(3, Softmax);
    m.compile("sgd", "categorical_crossentropy", &["accuracy"])
        .unwrap();
    assert!(m.history().is_none());
    let e = m
        .fit_with_callbacks(&x, &y, common::quiet(5), &mut [&mut FailAt(2)])
        .unwrap_err();
    assert!(e.to_string().contains("disk full"));
    let h = m.history().unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(h.get("loss").unwrap().len(), 2);
}

#[test]
fn a_recipe_learns_on_training_rows_and_bakes_any_rows() {
    use horn::preprocessing::{Recipe, Table};
    let t =
        Table::from_csv_str("mass,island,sex\n1,Dream,m\n3,Biscoe,f\n5,Dream,f\n100,Torgersen,m\n")
            .unwrap();
    let train = t.select_rows(&[0, 1, 2]).unwrap();
    let prepped = Recipe::new()
        .normalize(&["mass"])
        .dummy(&["island", "sex"])
        .prep(&train)
        .unwrap();
    let baked = prepped.bake(&train).unwrap();
    assert_eq!(
        baked.columns,
        ["mass", "island_Biscoe", "island_Dream", "sex_f", "sex_m"]
    );
    // Mean 3 and sd 2 come from the training rows alone.
    assert_eq!(baked.x.column(0).to_vec(), vec![-1.0, 0.0, 1.0]);
    assert_eq!(baked.x.row(0).to_vec(), vec![-1.0, 0.0, 1.0, 0.0, 1.0]);
    // A category the training rows never saw is an error, not a zero row.
    let e = prepped.bake(&t).unwrap_err().to_string();
    assert!(e.contains("Torgersen"), "{e}");
    // Bad recipes.
    assert!(Recipe::new()
        .normalize(&["mass"])
        .dummy(&["mass"])
        .prep(&train)
        .is_err());
    assert!(Recipe::new().normalize(&["nope"]).prep(&train).is_err());
    assert!(Recipe::new().normalize(&["island"]).prep(&train).is_err());
}

#[test]
fn save_errors_name_the_users_path() {
    let m = Sequential::new().seed(1).input(2).dense(1, Sigmoid);
    let p = tmp("missing-folder")
        .join("deeper")
        .join("model.safetensors");
    let e = m.save(&p).unwrap_err().to_string();
    assert!(e.contains("missing-folder/deeper/model.safetensors"), "{e}");
    assert!(!e.contains(".horn-save-"), "{e}");
}

/// Keras builds a model on its first call: a model without `.input(..)` can
/// be compiled, and `fit` builds it for the data's shape (any rank).
#[test]
fn fit_builds_a_model_without_an_input_shape() {
    let (x, y) = common::blobs(60, 4, 2);
    let mut model = Sequential::new().seed(1).dense(8, Relu).dense(3, Softmax);
    model
        .compile("adam", "categorical_crossentropy", &["accuracy"])
        .unwrap();
    let e = model.predict(&x).unwrap_err().to_string();
    assert!(e.contains("fit"), "{e}");
    let h = model.fit(&x, &y, common::quiet(2)).unwrap();
    assert_eq!(h.get("accuracy").unwrap().len(), 2);
    assert_eq!(model.get_input_shape().unwrap().dims(), &[4]);
    assert!(model.summary().contains("(None, 8)"));
    assert_eq!(model.predict(&x).unwrap().dim(), (60, 3));
    // Images: the first fit builds the convolution for (6, 6, 1).
    let imgs = ndarray::Array4::<f32>::from_shape_fn((12, 6, 6, 1), |(i, r, c, _)| {
        ((i + r * c) % 5) as f32 / 5.0
    });
    let labels = ndarray::Array2::from_shape_fn((12, 2), |(i, j)| (i % 2 == j) as u8 as f32);
    let mut cnn = Sequential::new()
        .conv2d(2, 3, Relu)
        .flatten()
        .dense(2, Softmax);
    cnn.compile("adam", "categorical_crossentropy", &["accuracy"])
        .unwrap();
    cnn.fit(&imgs, &labels, common::quiet(1)).unwrap();
    assert_eq!(cnn.output_shape().unwrap().dims(), &[2]);
    // A layer that cannot take the data's shape says so at fit.
    let mut bad = Sequential::new().conv2d(2, 3, Relu).dense(2, Softmax);
    bad.compile("adam", "mse", Metric::NONE).unwrap();
    let e = bad.fit(&x, &y, common::quiet(1)).unwrap_err().to_string();
    assert!(e.contains("conv2d"), "{e}");
}

/// f64 arrays (ndarray's usual float) work everywhere f32 arrays do, with
/// the same results: they are converted to f32 once per call.
#[test]
fn f64_arrays_are_accepted() {
    let (x, y) = common::blobs(40, 4, 3);
    let (x64, y64) = (x.mapv(|v| v as f64), y.mapv(|v| v as f64));
    let build = || {
        let mut m = Sequential::new()
            .seed(2)
            .input(4)
            .dense(6, Relu)
            .dense(3, Softmax);
        m.compile("adam", "categorical_crossentropy", &["accuracy"])
            .unwrap();
        m
    };
    let (mut a, mut b) = (build(), build());
    a.fit(&x, &y, common::quiet(2)).unwrap();
    b.fit(&x64, &y64, common::quiet(2)).unwrap();
    assert_eq!(common::fingerprint(&a), common::fingerprint(&b));
    assert_eq!(a.predict(&x).unwrap(), b.predict(&x64).unwrap());
    assert_eq!(a.predict(x.view()).unwrap(), b.predict(x64.view()).unwrap());
    assert_eq!(
        a.evaluate(&x, &y).unwrap()["loss"].to_bits(),
        b.evaluate(&x64, &y64).unwrap()["loss"].to_bits()
    );
    assert_eq!(b.predict_classes(&x64).unwrap().len(), 40);
}
