//! Files as a hostile or careless user hands them over: model and weights
//! files, IDX and CSV data, and saving under concurrency, links and
//! permissions. Every case ends in a clear error (or the right file), never a
//! panic, an abort, or memory the file's size does not justify.

mod common;

use common::{gzip, idx_images};

use std::path::PathBuf;

use horn::datasets::mnist;
use horn::prelude::*;
use horn::preprocessing::Table;
use serde_json::Value;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("horn-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn small_model() -> Sequential {
    let mut m = Sequential::new()
        .seed(1)
        .input(4)
        .dense(3, Relu)
        .dense(2, Softmax);
    m.compile("adam", "categorical_crossentropy", &["accuracy"])
        .unwrap();
    m
}

use common::{join_safetensors as join, split_safetensors as split};

/// A saved model file with its architecture JSON edited by `edit`.
fn edited_model(name: &str, model: &Sequential, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let path = tmp(name);
    model.save(&path).unwrap();
    let (mut header, data) = split(&std::fs::read(&path).unwrap());
    let mut arch: Value =
        serde_json::from_str(header["__metadata__"]["model"].as_str().unwrap()).unwrap();
    edit(&mut arch);
    header["__metadata__"]["model"] = Value::String(arch.to_string());
    std::fs::write(&path, join(&header, &data)).unwrap();
    path
}

fn load_err(path: &PathBuf) -> String {
    Sequential::load(path).unwrap_err().to_string()
}

#[test]
fn absurd_layer_sizes_fail_before_any_allocation() {
    let m = small_model();
    // 10^12 units (16 TB of weights), 2^63 units, an input width of i64::MAX:
    // the file holds none of those tensors, so loading stops at the check.
    for (units, input) in [
        (Some(1_000_000_000_000u64), None),
        (Some(1u64 << 63), None),
        (Some(u64::MAX), None),
        (None, Some(i64::MAX as u64)),
        (Some(10_000_000), None),
    ] {
        let p = edited_model("huge.safetensors", &m, |a| {
            if let Some(u) = units {
                a["layers"][0]["units"] = u.into();
            }
            if let Some(i) = input {
                a["input_dim"] = i.into();
            }
        });
        let e = load_err(&p);
        assert!(e.contains("dense/kernel") || e.contains("tensor"), "{e}");
    }
    // Zero units and zero input width are refused with their own message.
    let p = edited_model("zero.safetensors", &m, |a| {
        a["layers"][0]["units"] = 0.into()
    });
    assert!(load_err(&p).contains("units"), "{}", load_err(&p));
    let p = edited_model("zero-in.safetensors", &m, |a| a["input_dim"] = 0.into());
    assert!(load_err(&p).contains("input width 0"));
    let p = edited_model("rate.safetensors", &small_model(), |a| {
        a["layers"][0]["activation"] = serde_json::json!({"name": "leaky_relu", "config": -1.0});
    });
    assert!(load_err(&p).contains("negative_slope"), "{}", load_err(&p));
}

#[test]
fn many_layers_load_in_linear_time() {
    // 40,000 Dropout layers (weightless), then the model's two Dense layers'
    // weights: the report measured 110 s for this; naming is constant-time now.
    let m = small_model();
    let p = edited_model("deep.safetensors", &m, |a| {
        let layers = a["layers"].as_array_mut().unwrap();
        let dense = layers.remove(0);
        let mut new = vec![dense];
        for i in 0..40_000 {
            new.push(
                serde_json::json!({"name": format!("d{i}"), "class_name": "Dropout", "rate": 0.1}),
            );
        }
        new.append(layers);
        *layers = new;
    });
    let loaded = Sequential::load(&p).unwrap();
    assert_eq!(loaded.layers().len(), 40_002);
    assert_eq!(loaded.layer_names()[40_001], "dense_1");
    // The saved names are kept (the weights are stored under them).
    assert_eq!(loaded.layer_names()[40_000], "d39999");
}

#[test]
fn optimizer_counters_from_a_file_are_bounded() {
    let mut m = small_model();
    let (x, y) = common::blobs(12, 4, 1);
    let y = y.slice(ndarray::s![.., ..2]).to_owned();
    m.fit(&x, &y, common::quiet(1)).unwrap();
    let p = edited_model("iters.safetensors", &m, |a| {
        a["compile"]["optimizer"]["iterations"] = u64::MAX.into();
    });
    assert!(load_err(&p).contains("iterations"));
    // The largest count Keras can store loads, and a step keeps weights finite.
    let p = edited_model("iters-max.safetensors", &m, |a| {
        a["compile"]["optimizer"]["iterations"] = (i64::MAX as u64).into();
    });
    let mut loaded = Sequential::load(&p).unwrap();
    loaded.fit(&x, &y, common::quiet(1)).unwrap();
    for w in loaded.get_weights().unwrap() {
        assert!(w.iter().all(|v| v.is_finite()));
    }
    let p = edited_model("uprod.safetensors", &m, |a| {
        a["compile"]["optimizer"]["u_product"] = 5.0.into();
    });
    assert!(load_err(&p).contains("momentum product"));
}

#[test]
fn non_finite_weights_in_a_file_are_refused() {
    let m = small_model();
    let path = tmp("nan.safetensors");
    m.save(&path).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let (header, _) = split(&bytes);
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let start = header["dense/kernel"]["data_offsets"][0].as_u64().unwrap() as usize;
    bytes[8 + n + start..8 + n + start + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let e = load_err(&path);
    assert!(
        e.contains("non-finite") && e.contains("dense/kernel"),
        "{e}"
    );
    let mut other = small_model();
    let e = other.load_weights(&path).unwrap_err().to_string();
    assert!(e.contains("non-finite"), "{e}");
}

#[test]
fn version_1_files_still_load() {
    // Version 1 numbered the optimizer state `optimizer/{i}`.
    let mut m = small_model();
    let (x, y) = common::blobs(12, 4, 1);
    let y = y.slice(ndarray::s![.., ..2]).to_owned();
    let quiet = || common::quiet(1);
    m.fit(&x, &y, quiet()).unwrap();
    let path = tmp("v1.safetensors");
    m.save(&path).unwrap();
    let (mut header, data) = split(&std::fs::read(&path).unwrap());
    header["__metadata__"]["format_version"] = "1".into();
    let obj = header.as_object_mut().unwrap();
    for (i, key) in [
        "dense/kernel",
        "dense/bias",
        "dense_1/kernel",
        "dense_1/bias",
    ]
    .iter()
    .enumerate()
    {
        let v = obj.remove(&format!("optimizer/{key}")).unwrap();
        obj.insert(format!("optimizer/{i}"), v);
    }
    std::fs::write(&path, join(&header, &data)).unwrap();
    let mut loaded = Sequential::load(&path).unwrap();
    m.fit(&x, &y, quiet()).unwrap();
    loaded.fit(&x, &y, quiet()).unwrap();
    assert_eq!(loaded.get_weights().unwrap(), m.get_weights().unwrap());
}

#[test]
fn devices_and_folders_are_not_files() {
    for p in ["/dev/zero", "/dev/urandom"] {
        if std::path::Path::new(p).exists() {
            assert!(load_err(&PathBuf::from(p)).contains("not a regular file"));
            assert!(mnist::read_images(p)
                .unwrap_err()
                .to_string()
                .contains("regular file"));
            assert!(Table::read_csv(p).is_err());
        }
    }
    let dir = std::env::temp_dir();
    assert!(Sequential::load(&dir).is_err());
}

#[test]
fn saved_bytes_are_deterministic() {
    let a = tmp("det-a.safetensors");
    let b = tmp("det-b.safetensors");
    let mut m = small_model();
    m.save(&a).unwrap();
    small_model().save(&b).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let (x, y) = common::blobs(12, 4, 1);
    m.fit(&x, y.slice(ndarray::s![.., ..2]), common::quiet(1))
        .unwrap();
    for _ in 0..5 {
        m.save(&a).unwrap();
        m.save(&b).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    }
    // Still a standard safetensors file.
    let bytes = std::fs::read(&a).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("dense/kernel").unwrap().shape(), &[4, 3]);
    assert!(st.tensor("optimizer/dense/kernel").is_ok());
}

#[test]
fn concurrent_saves_never_mix_files() {
    let dir = tmp("concurrent");
    std::fs::create_dir_all(&dir).unwrap();
    let models: Vec<Sequential> = (0..2)
        .map(|s| {
            let mut m = Sequential::new()
                .seed(s)
                .input(64)
                .dense(128, Relu)
                .dense(4, Softmax);
            m.compile("adam", "categorical_crossentropy", &["accuracy"])
                .unwrap();
            m
        })
        .collect();
    std::thread::scope(|sc| {
        for (i, m) in models.iter().enumerate() {
            let path = dir.join(format!("ckpt.v{}", i + 1));
            sc.spawn(move || {
                for _ in 0..60 {
                    m.save(&path).unwrap();
                }
            });
        }
    });
    for (i, m) in models.iter().enumerate() {
        let loaded = Sequential::load(dir.join(format!("ckpt.v{}", i + 1))).unwrap();
        assert_eq!(common::fingerprint(&loaded), common::fingerprint(m));
    }
    // No temporary file is left behind.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, ["ckpt.v1", "ckpt.v2"], "{names:?}");
}

#[test]
fn saving_spares_neighbours_keeps_links_and_permissions() {
    let dir = tmp("neighbours");
    std::fs::create_dir_all(&dir).unwrap();
    // A user's own `report.horn-tmp` survives `save("report.safetensors")`.
    let own = dir.join("report.horn-tmp");
    std::fs::write(&own, b"mine").unwrap();
    let m = small_model();
    m.save(dir.join("report.safetensors")).unwrap();
    assert_eq!(std::fs::read(&own).unwrap(), b"mine");

    // A failed save (the target is a folder) leaves no temporary file.
    let folder = dir.join("is-a-folder");
    std::fs::create_dir_all(&folder).unwrap();
    assert!(m.save(&folder).is_err());
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // A symbolic link stays a link; its target gets the model.
        let target = dir.join("real.safetensors");
        std::fs::write(&target, b"old").unwrap();
        let link = dir.join("link.safetensors");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        m.save(&link).unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(Sequential::load(&target).is_ok());
        // Permissions of an existing file are kept.
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).unwrap();
        m.save(&target).unwrap();
        let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
    }
}

#[test]
fn idx_headers_and_payloads_are_checked() {
    // Sizes whose product overflows 32 and 64 bits.
    let p = tmp("overflow-idx");
    std::fs::write(&p, idx_images(u32::MAX, u32::MAX, u32::MAX, 4)).unwrap();
    let e = mnist::read_images(&p).unwrap_err().to_string();
    assert!(e.contains("overflow") || e.contains("announces"), "{e}");
    // The gzipped twin: same error, nothing decompressed past the header.
    std::fs::write(&p, gzip(&idx_images(u32::MAX, u32::MAX, u32::MAX, 4))).unwrap();
    assert!(mnist::read_images(&p).is_err());
    // A gzip bomb: the header announces 10 images, the stream holds 64 MiB.
    std::fs::write(&p, gzip(&idx_images(10, 28, 28, 64 << 20))).unwrap();
    let e = mnist::read_images(&p).unwrap_err().to_string();
    assert!(e.contains("more data than"), "{e}");
    // Truncated payloads, plain and gzipped.
    std::fs::write(&p, idx_images(10, 28, 28, 100)).unwrap();
    assert!(mnist::read_images(&p)
        .unwrap_err()
        .to_string()
        .contains("announces"));
    std::fs::write(&p, gzip(&idx_images(10, 28, 28, 100))).unwrap();
    assert!(mnist::read_images(&p)
        .unwrap_err()
        .to_string()
        .contains("fewer than"));
    // A good file still reads.
    std::fs::write(&p, gzip(&idx_images(2, 3, 4, 24))).unwrap();
    assert_eq!(mnist::read_images(&p).unwrap().dim(), (2, 3, 4));
}

#[test]
fn csv_values_that_lie_are_refused_or_missing() {
    let e = Table::from_csv_str("a,b,a\n1,2,3\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("duplicate column name `a`"), "{e}");
    // NaN tokens are missing values, as in pandas.
    let t = Table::from_csv_str("a,b\nNaN,1\n2,nan\n3,4\n").unwrap();
    assert_eq!(t.drop_na().numeric("a").unwrap(), vec![3.0]);
    // Infinities are errors with their place.
    let e = Table::from_csv_str("a,b\n1,2\ninf,3\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("column `a` line 3") && e.contains("infinite"),
        "{e}"
    );
    assert!(Table::from_csv_str("a\n-Infinity\n").is_err());
    // Beyond f32: an error, not a silent infinity.
    let t = Table::from_csv_str("a,b\n1e300,1\n2,2\n").unwrap();
    let e = t.numeric_matrix(&["a", "b"]).unwrap_err().to_string();
    assert!(e.contains("beyond the range of f32"), "{e}");
    // An all-missing column says so.
    let t = Table::from_csv_str("a,b\nNA,1\nNA,2\n").unwrap();
    let e = t.numeric("a").unwrap_err().to_string();
    assert!(e.contains("no values"), "{e}");
}

#[test]
fn checkpoint_placeholders_must_name_logged_values() {
    let (x, y) = common::blobs(30, 4, 1);
    let mut m = Sequential::new().seed(1).input(4).dense(3, Softmax);
    m.compile("sgd", "categorical_crossentropy", &["accuracy"])
        .unwrap();
    let template = tmp("ck-{epoch:02d}-{val_acc:.2f}.safetensors");
    let mut cp = ModelCheckpoint::new(template.to_str().unwrap());
    let e = m
        .fit_with_callbacks(
            &x,
            &y,
            FitOptions {
                validation_split: 0.2,
                verbose: 0,
                ..Default::default()
            },
            &mut [&mut cp],
        )
        .unwrap_err();
    assert!(e.to_string().contains("`val_acc` is not logged"), "{e}");
    assert!(cp.saved.is_empty());
}

/// Absurd windows, strides and shapes in a convnet's file give errors (no
/// overflow, no allocation); pooling, which has no weights to check, must
/// refuse windows that cannot be addressed.
#[test]
fn absurd_vision_configurations_are_refused() {
    let mut m = Sequential::new()
        .seed(1)
        .input_shape(&[6, 6, 1])
        .conv2d(2, 3, Relu)
        .add(MaxPooling2D::new(2).padding(Padding::Same))
        .flatten()
        .dense(2, Softmax);
    m.compile("adam", "categorical_crossentropy", Metric::NONE)
        .unwrap();
    let huge = 1u64 << 62;
    type Edit = Box<dyn Fn(&mut Value)>;
    let edits: Vec<(&str, Edit)> = vec![
        (
            "kernel",
            Box::new(move |a| a["layers"][0]["kernel_size"] = serde_json::json!([huge, 3])),
        ),
        (
            "dilation",
            Box::new(|a| a["layers"][0]["dilation_rate"] = serde_json::json!([1u64 << 63, 1])),
        ),
        (
            "span",
            Box::new(move |a| {
                a["layers"][0]["kernel_size"] = serde_json::json!([huge + 1, 3]);
                a["layers"][0]["dilation_rate"] = serde_json::json!([4, 1]);
            }),
        ),
        (
            "pool",
            Box::new(move |a| a["layers"][1]["pool_size"] = serde_json::json!([huge, huge])),
        ),
        (
            "stride",
            Box::new(move |a| a["layers"][1]["strides"] = serde_json::json!([u64::MAX, 1])),
        ),
        (
            "input",
            Box::new(move |a| {
                a["input_shape"] = serde_json::json!([1u64 << 31, 1u64 << 31, 1]);
                a["input_dim"] = serde_json::json!(1u64 << 62);
            }),
        ),
        (
            "rank",
            Box::new(|a| a["layers"][0]["kernel_size"] = serde_json::json!([3])),
        ),
        (
            "filters",
            Box::new(move |a| a["layers"][0]["filters"] = serde_json::json!(huge)),
        ),
    ];
    for (what, edit) in edits {
        let p = edited_model(&format!("cnn-{what}.safetensors"), &m, |a| edit(a));
        let r = std::panic::catch_unwind(|| Sequential::load(&p));
        match r {
            Ok(Err(_)) => {}
            Ok(Ok(loaded)) => {
                // A file that still describes a usable model must predict
                // without panicking.
                let x = ndarray::Array4::<f32>::zeros((1, 6, 6, 1));
                let _ = loaded.predict(&x);
            }
            Err(_) => panic!("{what}: loading panicked"),
        }
    }
}

/// Sequence layers in a model file with absurd or unknown options: an error,
/// never a panic or an allocation the file does not justify.
#[test]
fn absurd_sequence_configurations_are_refused() {
    let mut m = Sequential::new()
        .seed(1)
        .input_shape(&[5])
        .add(Embedding::new(10, 4).mask_zero(true))
        .add(LSTM::new(3).return_sequences(true))
        .add(TimeDistributed::new(Dense::new(3, Tanh)))
        .add(Bidirectional::new(GRU::new(2)))
        .dense(2, Softmax);
    m.compile("adam", "categorical_crossentropy", Metric::NONE)
        .unwrap();
    let huge = 1u64 << 62;
    type Edit = Box<dyn Fn(&mut Value)>;
    let mut nested = serde_json::json!({"class_name": "Dense", "units": 3, "activation": {"name": "tanh"},
        "use_bias": true, "kernel_initializer": {"name": "glorot_uniform"},
        "bias_initializer": {"name": "zeros"}, "kernel_regularizer": null, "bias_regularizer": null});
    for _ in 0..100 {
        nested = serde_json::json!({"class_name": "TimeDistributed", "layer": nested});
    }
    let edits: Vec<(&str, Edit)> = vec![
        (
            "vocabulary",
            Box::new(move |a| a["layers"][0]["input_dim"] = serde_json::json!(huge)),
        ),
        (
            "width",
            Box::new(move |a| a["layers"][0]["output_dim"] = serde_json::json!(huge)),
        ),
        (
            "units",
            Box::new(move |a| a["layers"][1]["units"] = serde_json::json!(huge)),
        ),
        (
            "dropout",
            Box::new(|a| a["layers"][1]["dropout"] = serde_json::json!(5.0)),
        ),
        (
            "activation",
            Box::new(|a| a["layers"][1]["activation"] = serde_json::json!({"name": "softmax"})),
        ),
        (
            "steps",
            Box::new(move |a| a["input_shape"] = serde_json::json!([huge])),
        ),
        (
            "class",
            Box::new(|a| a["layers"][3]["layer_class"] = serde_json::json!("Foo")),
        ),
        (
            "merge",
            Box::new(|a| a["layers"][3]["merge_mode"] = serde_json::json!("bogus")),
        ),
        (
            "nesting",
            Box::new(move |a| a["layers"][2] = nested.clone()),
        ),
    ];
    for (what, edit) in edits {
        let p = edited_model(&format!("seq-{what}.safetensors"), &m, |a| edit(a));
        match std::panic::catch_unwind(|| Sequential::load(&p)) {
            Ok(Err(_)) => {}
            Ok(Ok(loaded)) => {
                let _ = loaded.predict(ndarray::Array2::<f32>::zeros((1, 5)));
            }
            Err(_) => panic!("{what}: loading panicked"),
        }
    }
    // The unedited file loads and predicts the same.
    let p = edited_model("seq-ok.safetensors", &m, |_| {});
    let x = ndarray::array![[1.0f32, 0.0, 3.0, 9.0, 0.0]];
    assert_eq!(
        Sequential::load(&p).unwrap().predict(&x).unwrap(),
        m.predict(&x).unwrap()
    );
}
