//! Models that a small file (or a few builder calls) can describe but that
//! must not abort, corrupt a file or answer wrongly (issue 29): buffers too
//! large for memory, saves that must load back, hostile names and shapes,
//! non-finite weights, out-of-range ids deep in a model, file permissions.
//!
//! No test here allocates more than a few hundred MiB: the huge models are
//! refused before anything is allocated. A counting allocator measures the
//! peak of the split `predict`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use horn::prelude::*;
use ndarray::{Array2, Array3};

/// Live bytes, and the most live since the last reset.
struct Peak;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Peak {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Peak = Peak;

/// The most bytes live while `f` runs (other tests' small allocations may
/// add a little).
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    PEAK.store(LIVE.load(Ordering::SeqCst), Ordering::SeqCst);
    let before = LIVE.load(Ordering::SeqCst);
    let out = f();
    (out, PEAK.load(Ordering::SeqCst).saturating_sub(before))
}

/// Issue 29 item 2: 256 KiB of weights, 16 GiB of output per sample.
fn conv_16_gib() -> Sequential {
    Sequential::new()
        .seed(1)
        .input_shape(&[65536, 1])
        .conv1d(65536, 1, Linear)
}

#[test]
fn a_16_gib_output_per_sample_is_an_error_not_an_abort() {
    let model = conv_16_gib();
    let x = Array3::<f32>::zeros((1, 65536, 1));
    let (result, peak) = peak_during(|| model.predict_nd(&x));
    let err = result.unwrap_err();
    assert!(matches!(err, Error::OutOfMemory { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("predict needs 16.0 GiB for the predictions (1 row of 4294967296 values)"),
        "{msg}"
    );
    assert!(msg.contains("memory limit of 8.0 GiB"), "{msg}");
    assert!(peak < 64 << 20, "refused, yet {peak} bytes were taken");
}

#[test]
fn a_16_gib_layer_output_is_an_error_in_predict_evaluate_and_fit() {
    // The output is small (the pooling), the convolution's is 16 GiB a row.
    let mut model = conv_16_gib().add(GlobalMaxPooling1D::new());
    let x = Array3::<f32>::zeros((1, 65536, 1));
    let y = Array2::<f32>::zeros((1, 65536));
    let err = model.predict(&x).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(
            "predict needs 16.0 GiB for the output of layer `conv1d` (1 row of 4294967296 values)"
        ),
        "{msg}"
    );
    model.compile("sgd", "mse", Metric::NONE).unwrap();
    for (call, err) in [
        ("evaluate", model.evaluate(&x, &y).unwrap_err()),
        (
            "fit",
            model
                .fit(
                    &x,
                    &y,
                    FitOptions {
                        epochs: 1,
                        verbose: 0,
                        ..Default::default()
                    },
                )
                .unwrap_err(),
        ),
    ] {
        let msg = err.to_string();
        assert!(matches!(err, Error::OutOfMemory { .. }), "{call}: {err:?}");
        assert!(msg.starts_with(&format!("{call} needs 16.0 GiB")), "{msg}");
        assert!(msg.contains("layer `conv1d`"), "{msg}");
    }
}

#[test]
fn a_functional_model_with_a_16_gib_tensor_is_an_error() {
    let mut g = Graph::with_seed(1);
    let x = g.input("x", &[65536, 1]);
    let c = g.call_named("wide", Conv1D::new(65536, 1, Linear), x);
    let p = g.call(GlobalMaxPooling1D::new(), c);
    let mut model = Model::new(g, [x], [p]).unwrap();
    let xs = Array3::<f32>::zeros((1, 65536, 1));
    let msg = model.predict(&xs).unwrap_err().to_string();
    assert!(
        msg.starts_with("predict needs 16.0 GiB for the output of layer `wide`"),
        "{msg}"
    );
    model
        .compile("sgd", ModelCompile::new().loss("mse"))
        .unwrap();
    let y = Array2::<f32>::zeros((1, 65536));
    let err = model
        .fit(
            &xs,
            &y,
            FitOptions {
                epochs: 1,
                verbose: 0,
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(err.to_string().starts_with("fit needs 16.0 GiB"), "{err}");
    let err = model.evaluate(&xs, &y).unwrap_err();
    assert!(
        err.to_string().starts_with("evaluate needs 16.0 GiB"),
        "{err}"
    );
}

#[test]
fn a_batch_too_large_for_the_limit_is_refused_by_fit_but_predict_splits() {
    // 65536 values (256 KiB) a row after the first layer: a batch of 40000
    // rows needs 9.8 GiB for that output alone.
    let mut model = Sequential::new()
        .seed(1)
        .input(1)
        .dense(1 << 16, Relu)
        .dense(1, Linear);
    model.compile("sgd", "mse", Metric::NONE).unwrap();
    let x = Array2::<f32>::from_shape_fn((40000, 1), |(i, _)| (i % 7) as f32);
    let y = Array2::<f32>::zeros((40000, 1));
    let opts = FitOptions {
        epochs: 1,
        batch_size: 40000,
        verbose: 0,
        ..Default::default()
    };
    let err = model.fit(&x, &y, opts).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(
            "fit needs 9.8 GiB for the output of layer `dense` (40000 rows of 65536 values)"
        ),
        "{msg}"
    );
    // The same rows predict block by block.
    let p = model.predict(x.slice(ndarray::s![..3000, ..])).unwrap();
    assert_eq!(p.dim(), (3000, 1));
}

#[test]
fn big_rows_predict_in_smaller_blocks() {
    // 8 Mi values (32 MiB) per row in the convolution's output, 2048 in the
    // model's: 16 rows at once would take over 512 MiB, the blocks of a few
    // rows far less, with the same predictions as one row at a time.
    let model = Sequential::new()
        .seed(3)
        .input_shape(&[4096, 1])
        .conv1d(2048, 1, Relu)
        .add(GlobalMaxPooling1D::new());
    let x = Array3::<f32>::from_shape_fn((16, 4096, 1), |(i, t, _)| {
        ((i * 31 + t * 7) % 23) as f32 / 23.0 - 0.5
    });
    let (p, peak) = peak_during(|| model.predict(&x).unwrap());
    assert_eq!(p.dim(), (16, 2048));
    assert!(peak < 300 << 20, "predict took {} MiB at once", peak >> 20);
    let one = model
        .predict(x.slice(ndarray::s![5..6, .., ..]).to_owned())
        .unwrap();
    assert_eq!(one.row(0), p.row(5));
    assert!(p.iter().all(|v| v.is_finite()) && p.iter().any(|&v| v > 0.0));
}

/// A safetensors file's JSON header and the data after it.
fn split_file(bytes: &[u8]) -> (serde_json::Map<String, serde_json::Value>, Vec<u8>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header, bytes[8 + n..].to_vec())
}

fn join_file(header: &serde_json::Map<String, serde_json::Value>, data: &[u8]) -> Vec<u8> {
    let text = serde_json::to_string(header).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(data);
    out
}

/// A horn model file with its architecture (the `model` metadata) changed
/// by `f` and tensors renamed as `renames` says.
fn patch_model(
    bytes: &[u8],
    renames: &[(&str, &str)],
    f: impl FnOnce(&mut serde_json::Value),
) -> Vec<u8> {
    let (mut header, data) = split_file(bytes);
    let meta = header["__metadata__"].as_object_mut().unwrap();
    let mut model: serde_json::Value =
        serde_json::from_str(meta["model"].as_str().unwrap()).unwrap();
    f(&mut model);
    meta.insert("model".into(), model.to_string().into());
    for (from, to) in renames {
        let t = header
            .remove(*from)
            .unwrap_or_else(|| panic!("no tensor {from}"));
        header.insert(to.to_string(), t);
    }
    join_file(&header, &data)
}

fn rows(n: usize, shape: &[usize]) -> ndarray::ArrayD<f32> {
    let mut dims = vec![n];
    dims.extend_from_slice(shape);
    let len: usize = dims.iter().product();
    let v = (0..len)
        .map(|i| ((i * 7 % 13) as f32 - 6.0) / 7.0)
        .collect();
    ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&dims), v).unwrap()
}

#[cfg(feature = "keras")]
fn bits(a: &ndarray::ArrayD<f32>) -> Vec<u32> {
    a.iter().map(|v| v.to_bits()).collect()
}

/// Issue 29 item 10: a Keras model's names (`dense_5`, `conv1d`, ...) are
/// not the ones horn would give, and the weights are stored under them.
#[cfg(feature = "keras")]
#[test]
fn a_keras_sequential_with_its_own_names_saves_and_loads_back() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keras-files");
    for file in ["opt_adam_amsgrad.keras", "signals.keras", "sequences.keras"] {
        let mut model = Sequential::load_keras(format!("{dir}/{file}")).unwrap();
        let bytes = model.to_bytes().unwrap();
        let mut copy = Sequential::from_bytes(&bytes)
            .unwrap_or_else(|e| panic!("{file}: saved, then refused: {e}"));
        assert_eq!(copy.layer_names(), model.layer_names(), "{file}");
        let shape = model.get_input_shape().unwrap().dims().to_vec();
        let x = if file == "sequences.keras" {
            rows(3, &shape).mapv(|v| (v.abs() * 7.0).floor())
        } else {
            rows(3, &shape)
        };
        let p = model.predict_nd(&x).unwrap();
        assert_eq!(bits(&p), bits(&copy.predict_nd(&x).unwrap()), "{file}");
        // The optimizer state came back too: one more step gives the same
        // weights.
        if model.optimizer().is_some() && file == "opt_adam_amsgrad.keras" {
            let y = ndarray::Array2::<f32>::from_shape_fn((3, model.output_dim()), |(i, j)| {
                ((i + j) % 2) as f32
            });
            let opts = || FitOptions {
                epochs: 1,
                verbose: 0,
                seed: Some(1),
                shuffle: false,
                ..Default::default()
            };
            model.fit(&x, &y, opts()).unwrap();
            copy.fit(&x, &y, opts()).unwrap();
            let (a, b) = (model.get_weights().unwrap(), copy.get_weights().unwrap());
            assert!(a.iter().zip(&b).all(|(a, b)| bits(a) == bits(b)), "{file}");
        }
    }
}

/// The names are read from the file, with Keras' rules: unique, not
/// empty, without `/`.
#[test]
fn a_horn_file_with_bad_layer_names_is_refused() {
    let model = Sequential::new()
        .seed(1)
        .input(3)
        .dense(2, Relu)
        .dense(1, Linear);
    let bytes = model.to_bytes().unwrap();
    let renamed = patch_model(
        &bytes,
        &[
            ("dense/kernel", "first/kernel"),
            ("dense/bias", "first/bias"),
        ],
        |m| m["layers"][0]["name"] = "first".into(),
    );
    let copy = Sequential::from_bytes(&renamed).unwrap();
    assert_eq!(copy.layer_names(), ["first", "dense_1"]);
    for (name, why) in [("dense", "unique"), ("", "non-empty"), ("a/b", "`/`")] {
        let bad = patch_model(&bytes, &[], |m| m["layers"][1]["name"] = name.into());
        let err = Sequential::from_bytes(&bad).unwrap_err().to_string();
        assert!(err.contains(why), "{name:?}: {err}");
    }
}

/// Issue 29 item 11: a layer named like an optimizer tensor
/// (`optimizer/dense`) made a file with two tensors under one key.
#[test]
fn layer_names_cannot_collide_with_optimizer_tensors() {
    let mut g = Graph::with_seed(1);
    let x = g.input("x", &[3]);
    let d = g.call_named("optimizer/dense", Dense::new(2, Linear), x);
    let err = Model::new(g, [x], [d]).unwrap_err().to_string();
    assert!(
        err.contains("`/`") && err.contains("optimizer/dense"),
        "{err}"
    );
    let mut g = Graph::with_seed(1);
    let err = g.input("in/put", &[3]);
    let _ = err;
    assert!(g.error().unwrap().to_string().contains("`/`"));

    // A layer named `optimizer` is fine: its weights and the optimizer's
    // slots keep distinct keys, and the file loads back.
    let mut g = Graph::with_seed(1);
    let x = g.input("x", &[3]);
    let h = g.call_named("optimizer", Dense::new(2, Linear), x);
    let o = g.call_named("dense", Dense::new(1, Linear), h);
    let mut model = Model::new(g, [x], [o]).unwrap();
    model
        .compile("adam", ModelCompile::new().loss("mse"))
        .unwrap();
    let xs = Array2::<f32>::from_shape_fn((4, 3), |(i, j)| (i + j) as f32 / 5.0);
    let ys = Array2::<f32>::from_shape_fn((4, 1), |(i, _)| i as f32);
    model
        .fit(
            &xs,
            &ys,
            FitOptions {
                epochs: 1,
                verbose: 0,
                ..Default::default()
            },
        )
        .unwrap();
    let bytes = model.to_bytes().unwrap();
    let (header, _) = split_file(&bytes);
    assert!(header.contains_key("optimizer/kernel"));
    assert!(header.contains_key("optimizer/optimizer/kernel"));
    assert!(header.contains_key("optimizer/dense/kernel"));
    let copy = Model::from_bytes(&bytes).unwrap();
    assert_eq!(
        copy.predict(&xs).unwrap()[0],
        model.predict(&xs).unwrap()[0]
    );
    // A file that names a layer `optimizer/dense` is refused as Model::new
    // refuses it.
    let bad = patch_model(&bytes, &[], |m| {
        m["layers"][1]["name"] = "optimizer/x".into()
    });
    let err = Model::from_bytes(&bad).unwrap_err().to_string();
    assert!(err.contains("`/`"), "{err}");
}

/// A save that returns Ok loads back: a layer added after a loaded one
/// named `dense_1` must not give a file with two `dense_1/kernel`.
#[test]
fn a_save_that_succeeds_always_loads_back() {
    let one = Sequential::new().seed(1).input(3).dense(2, Relu);
    let bytes = patch_model(
        &one.to_bytes().unwrap(),
        &[
            ("dense/kernel", "dense_1/kernel"),
            ("dense/bias", "dense_1/bias"),
        ],
        |m| m["layers"][0]["name"] = "dense_1".into(),
    );
    let model = Sequential::from_bytes(&bytes).unwrap().dense(1, Linear);
    let x = Array2::<f32>::from_shape_fn((2, 3), |(i, j)| (i * 3 + j) as f32);
    match model.to_bytes() {
        Ok(saved) => {
            let copy = Sequential::from_bytes(&saved).unwrap();
            assert_eq!(copy.layer_names(), model.layer_names());
            assert_eq!(copy.predict(&x).unwrap(), model.predict(&x).unwrap());
        }
        Err(e) => {
            assert_eq!(model.layer_names(), ["dense_1", "dense_1"]);
            assert!(e.to_string().contains("two tensors named `dense_1/"), "{e}");
        }
    }
}

/// Every integer of a model entry (and every input dimension) replaced in
/// turn by hostile values: loading and, when it loads, predicting give an
/// answer or an error, never a panic ("attempt to multiply with overflow"
/// in this overflow-checked build).
fn hostile_integers(value: &serde_json::Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match value {
        serde_json::Value::Number(n) if n.is_u64() || n.is_i64() => out.push(path.clone()),
        serde_json::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                path.push(i.to_string());
                hostile_integers(v, path, out);
                path.pop();
            }
        }
        serde_json::Value::Object(o) => {
            for (k, v) in o {
                path.push(k.clone());
                hostile_integers(v, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

fn at<'a>(v: &'a mut serde_json::Value, path: &[String]) -> &'a mut serde_json::Value {
    path.iter().fold(v, |v, k| match v {
        serde_json::Value::Array(a) => &mut a[k.parse::<usize>().unwrap()],
        other => &mut other[k.as_str()],
    })
}

/// Loads `bytes` as whatever kind it is and predicts one row when the input
/// is small; the error text when loading refused.
fn load_and_predict(bytes: &[u8], functional: bool) -> Result<(), String> {
    if functional {
        let m = Model::from_bytes(bytes).map_err(|e| e.to_string())?;
        let xs: Vec<ndarray::ArrayD<f32>> = m
            .input_shapes()
            .iter()
            .filter(|s| s.size() < 1 << 16)
            .map(|s| rows(1, s.dims()))
            .collect();
        if xs.len() == m.input_shapes().len() {
            let _ = m.predict(xs);
        }
    } else {
        let m = Sequential::from_bytes(bytes).map_err(|e| e.to_string())?;
        let s = m.get_input_shape().unwrap();
        if s.size() < 1 << 16 {
            let _ = m.predict_nd(rows(1, s.dims()));
        }
        let _ = m.summary();
    }
    Ok(())
}

#[test]
fn crafted_sizes_in_horn_files_never_panic() {
    let seq = [
        Sequential::new()
            .seed(1)
            .input_shape(&[8, 8, 2])
            .add(Conv2D::new(3, 3, Relu).padding(Padding::Same).strides(2))
            .max_pooling2d(2)
            .batch_normalization()
            .flatten()
            .dense(4, Softmax),
        Sequential::new()
            .seed(1)
            .input_shape(&[10, 3])
            .add(
                Conv1D::new(4, 3, Relu)
                    .padding(Padding::Causal)
                    .dilation_rate(2),
            )
            .add(AveragePooling1D::new(2))
            .add(LSTM::new(3).return_sequences(true))
            .add(TimeDistributed::new(Dense::new(2, Linear)))
            .add(Reshape::new(&[-1, 2]))
            .add(GlobalAveragePooling1D::new())
            .dense(1, Linear),
        Sequential::new()
            .seed(1)
            .input_shape(&[6])
            .embedding(20, 4)
            .add(Bidirectional::new(GRU::new(3)))
            .add(LayerNormalization::new())
            .dropout(0.5)
            .dense(2, Sigmoid),
    ];
    let mut g = Graph::with_seed(1);
    let a = g.input("a", &[4, 3]);
    let b = g.input("b", &[4, 3]);
    let c = g.call(Concatenate::new().axis(1), [a, b]);
    let d = g.call(Dot::axes(2, 2), [a, b]);
    let s = g.call(Add::new(), [a, b]);
    let f = g.call(Flatten::new(), c);
    let f2 = g.call(Flatten::new(), d);
    let f3 = g.call(Flatten::new(), s);
    let j = g.call(Concatenate::new(), [f, f2, f3]);
    let o = g.call(Dense::new(2, Linear), j);
    let functional = Model::new(g, [a, b], [o]).unwrap();

    let mut files: Vec<(Vec<u8>, bool)> =
        seq.iter().map(|m| (m.to_bytes().unwrap(), false)).collect();
    files.push((functional.to_bytes().unwrap(), true));
    let hostile: [u64; 6] = [0, 1 << 32, (1 << 62) + 1, 1 << 63, u64::MAX / 3, u64::MAX];
    let mut panics = Vec::new();
    let mut tried = 0;
    for (bytes, is_functional) in &files {
        let (header, _) = split_file(bytes);
        let model: serde_json::Value =
            serde_json::from_str(header["__metadata__"]["model"].as_str().unwrap()).unwrap();
        let mut paths = Vec::new();
        hostile_integers(&model, &mut Vec::new(), &mut paths);
        for p in paths.iter().filter(|p| p[0] != "seed") {
            for &h in &hostile {
                // The input size follows a changed dimension, so that the
                // shape check passes and the layers see the shape.
                let patched = patch_model(bytes, &[], |m| {
                    *at(m, p) = h.into();
                    if p[0] == "input_shape" {
                        let dims: Vec<u64> = m["input_shape"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|v| v.as_u64().unwrap())
                            .collect();
                        if let Some(n) = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d)) {
                            m["input_dim"] = n.into();
                        }
                    }
                });
                tried += 1;
                let result =
                    std::panic::catch_unwind(|| load_and_predict(&patched, *is_functional));
                if result.is_err() {
                    panics.push(format!("{}={h}", p.join(".")));
                }
            }
        }
    }
    // The tensors' own shapes in the safetensors header.
    for (bytes, is_functional) in &files {
        let (header, data) = split_file(bytes);
        for name in header.keys().filter(|k| *k != "__metadata__") {
            for shape in [
                serde_json::json!([1u64 << 32, 1u64 << 32, 2]),
                serde_json::json!([u64::MAX, 0]),
                serde_json::json!([0, u64::MAX, u64::MAX]),
                serde_json::json!([3, u64::MAX / 3 + 1]),
            ] {
                let mut h = header.clone();
                h[name]["shape"] = shape.clone();
                let patched = join_file(&h, &data);
                tried += 1;
                let result =
                    std::panic::catch_unwind(|| load_and_predict(&patched, *is_functional));
                match result {
                    Err(_) => panics.push(format!("tensor {name} shape {shape}")),
                    Ok(r) => assert!(r.is_err(), "tensor {name} shape {shape} loaded"),
                }
            }
        }
    }
    assert!(tried > 200, "{tried}");
    assert!(panics.is_empty(), "{} panics: {panics:?}", panics.len());
}

/// Two inputs of 2^63 steps joined along the steps: the joined axis does
/// not fit in 64 bits ("attempt to add with overflow" before).
#[test]
fn a_concatenation_whose_axis_overflows_is_an_error() {
    let big = 1usize << 63;
    let mut g = Graph::with_seed(1);
    let a = g.input("a", &[big, 1]);
    let b = g.input("b", &[big, 1]);
    let c = g.call(Concatenate::new().axis(1), [a, b]);
    let err = Model::new(g, [a, b], [c]).unwrap_err().to_string();
    assert!(
        err.contains("Concatenate(axis=1)") && err.contains("2^64"),
        "{err}"
    );

    // The same graph from a file.
    let mut g = Graph::with_seed(1);
    let a = g.input("a", &[4, 1]);
    let b = g.input("b", &[4, 1]);
    let c = g.call(Concatenate::new().axis(1), [a, b]);
    let bytes = Model::new(g, [a, b], [c]).unwrap().to_bytes().unwrap();
    let bad = patch_model(&bytes, &[], |m| {
        for i in 0..2 {
            m["inputs"][i]["shape"] = serde_json::json!([big, 1]);
        }
    });
    let err = Model::from_bytes(&bad).unwrap_err().to_string();
    assert!(err.contains("2^64"), "{err}");
}

/// `compute_fans` on a shape with a zero axis after huge ones (nothing to
/// allocate, but the product of the others overflows).
#[test]
fn fans_of_hostile_shapes_do_not_overflow() {
    let (fan_in, fan_out) = horn::initializers::compute_fans(&[1 << 40, 1 << 40, 0, 5]);
    assert_eq!(fan_in, 0.0);
    assert_eq!(fan_out, 5.0 * 2f32.powi(80));
    assert_eq!(
        horn::initializers::compute_fans(&[3, 3, 4, 8]),
        (36.0, 72.0)
    );
}

/// Issue 29: `set_weights` took NaN and inf that loading refuses.
#[test]
fn set_weights_refuses_non_finite_values() {
    let mut model = Sequential::new()
        .seed(1)
        .input(3)
        .dense(2, Relu)
        .dense(1, Linear);
    let good = model.get_weights().unwrap();
    for bad_value in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut w = good.clone();
        w[2][[1, 0]] = bad_value;
        let err = model.set_weights(&w).unwrap_err();
        assert!(
            matches!(err, Error::NonFinite { row: 1, col: 0, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("`dense_1/kernel`"), "{err}");
        assert_eq!(model.get_weights().unwrap(), good, "nothing changed");
    }
    let mut g = Graph::with_seed(1);
    let x = g.input("x", &[3]);
    let o = g.call_named("out", Dense::new(2, Linear), x);
    let mut model = Model::new(g, [x], [o]).unwrap();
    let mut w = model.get_weights().unwrap();
    w[1][[1]] = f32::NAN;
    let err = model.set_weights(&w).unwrap_err();
    assert!(
        err.to_string().contains("`out/bias`") && err.to_string().contains("NaN"),
        "{err}"
    );
    let names = model.weight_names();
    let err = model
        .set_weights_by_name(names.iter().map(String::as_str).zip(&w))
        .unwrap_err();
    assert!(matches!(err, Error::NonFinite { .. }), "{err:?}");
}

/// Issue 29: an Embedding fed by another layer predicted NaN for an id out
/// of range; the first layer's ids were already checked.
#[test]
fn an_embedding_after_another_layer_refuses_ids_out_of_range() {
    let mut model = Sequential::new()
        .seed(1)
        .input(4)
        .add(Reshape::new(&[4]))
        .embedding(10, 3)
        .flatten()
        .dense(1, Linear);
    let good = ndarray::array![[0.0f32, 1.0, 9.0, 2.0]];
    assert!(model.predict(&good).unwrap().iter().all(|v| v.is_finite()));
    for bad in [12.0f32, -1.0, 2.5] {
        let x = ndarray::array![[0.0f32, 1.0, 2.0, 3.0], [1.0, 2.0, bad, 3.0]];
        let msg = model.predict(&x).unwrap_err().to_string();
        assert!(
            msg.contains("the input of layer `embedding`[1, 2]"),
            "{msg}"
        );
        assert!(
            msg.contains("0..10") && msg.contains(&bad.to_string()),
            "{msg}"
        );
        model.compile("sgd", "mse", Metric::NONE).unwrap();
        let y = Array2::<f32>::zeros((2, 1));
        let msg = model.evaluate(&x, &y).unwrap_err().to_string();
        assert!(msg.contains("layer `embedding`"), "{msg}");
        let opts = FitOptions {
            epochs: 1,
            verbose: 0,
            ..Default::default()
        };
        let msg = model.fit(&x, &y, opts).unwrap_err().to_string();
        assert!(msg.contains("layer `embedding`"), "{msg}");
    }

    let mut g = Graph::with_seed(1);
    let x = g.input("ids", &[4]);
    let r = g.call(Reshape::new(&[4]), x);
    let e = g.call_named("vocab", Embedding::new(10, 3), r);
    let f = g.call(Flatten::new(), e);
    let model = Model::new(g, [x], [f]).unwrap();
    assert!(model.predict(&good).is_ok());
    let msg = model
        .predict(&ndarray::array![[0.0f32, 10.0, 2.0, 3.0]])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("the input of layer `vocab`[0, 1]"), "{msg}");
}

/// Issue 29: a Conv (or pooling) error said "padding valid" whatever the
/// padding was.
#[test]
fn window_errors_name_the_real_padding() {
    let build_err = |m: Sequential| {
        let mut m = m;
        m.compile("sgd", "mse", Metric::NONE)
            .unwrap_err()
            .to_string()
    };
    let too_large = build_err(Sequential::new().input_shape(&[4, 1]).conv1d(2, 9, Linear));
    assert!(
        too_large.contains("padding valid") && too_large.contains("dilated kernel"),
        "{too_large}"
    );
    for padding in [Padding::Same, Padding::Causal] {
        let conv = Conv1D::new(2, 5, Linear)
            .padding(padding)
            .dilation_rate(usize::MAX / 2);
        let msg = build_err(Sequential::new().input_shape(&[10, 1]).add(conv));
        let name = if padding == Padding::Same {
            "same"
        } else {
            "causal"
        };
        assert!(msg.contains(&format!("padding {name}")), "{msg}");
        assert!(!msg.contains("valid") && msg.contains("64 bits"), "{msg}");
    }
    let conv = Conv2D::new(2, 3, Linear)
        .padding(Padding::Same)
        .dilation_rate(usize::MAX / 2);
    let msg = build_err(Sequential::new().input_shape(&[5, 5, 1]).add(conv));
    assert!(msg.contains("padding same"), "{msg}");
    let pool = MaxPooling2D::new(usize::MAX).padding(Padding::Same);
    let msg = build_err(Sequential::new().input_shape(&[5, 5, 1]).add(pool));
    assert!(
        msg.contains("pool_size") && msg.contains("padding same"),
        "{msg}"
    );
}

/// A folder of this test process's own under the system's temporary one.
fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("horn-hostile-models-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Issue 29: saves created files 0600 whatever the umask (tempfile's
/// default); a new file now gets what `File::create` gives one, and an
/// existing file keeps its own.
#[cfg(unix)]
#[test]
fn saved_files_get_the_permissions_of_file_create() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = scratch_dir("modes");
    let plain = dir.join("plain");
    std::fs::File::create(&plain).unwrap();
    let expected = mode(&plain);
    let model = Sequential::new().seed(1).input(3).dense(2, Linear);
    let saved = dir.join("model.safetensors");
    model.save(&saved).unwrap();
    assert_eq!(
        mode(&saved),
        expected,
        "{:o} vs {:o}",
        mode(&saved),
        expected
    );
    let weights = dir.join("weights.safetensors");
    model.save_weights(&weights).unwrap();
    assert_eq!(mode(&weights), expected);
    #[cfg(feature = "keras")]
    {
        let keras = dir.join("model.keras");
        model.save_keras(&keras).unwrap();
        assert_eq!(mode(&keras), expected);
    }
    std::fs::set_permissions(&saved, std::fs::Permissions::from_mode(0o604)).unwrap();
    model.save(&saved).unwrap();
    assert_eq!(mode(&saved), 0o604);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 29: a full disk was reported on the temporary file's name. The
/// file-size limit of `ulimit -f` (EFBIG, with SIGXFSZ ignored) stands for
/// the full disk: this test runs itself again in a shell with the limit.
#[cfg(unix)]
#[test]
fn write_errors_name_the_target_not_the_temporary_file() {
    let model = Sequential::new().seed(1).input(100).dense(200, Linear);
    let no_temp = |msg: &str| !msg.contains(".horn-save-") && !msg.contains(".tmp");
    if let Ok(dir) = std::env::var("HORN_TEST_FSIZE_CHILD") {
        let target = std::path::Path::new(&dir).join("big.safetensors");
        let msg = model.save(&target).unwrap_err().to_string();
        assert!(
            msg.contains(&target.display().to_string()) && no_temp(&msg),
            "{msg}"
        );
        assert!(msg.contains("os error 27"), "{msg}");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "a temporary file was left"
        );
        println!("child checked: {msg}");
        return;
    }
    // A folder that does not exist: the temporary file cannot be made.
    let dir = scratch_dir("write-errors");
    let target = dir.join("missing").join("m.safetensors");
    let msg = model.save(&target).unwrap_err().to_string();
    assert!(
        msg.contains(&target.display().to_string()) && no_temp(&msg),
        "{msg}"
    );

    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 16 && exec \"$0\" \"$@\"")
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "write_errors_name_the_target_not_the_temporary_file",
            "--nocapture",
        ])
        .env("HORN_TEST_FSIZE_CHILD", &dir)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("child checked"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
