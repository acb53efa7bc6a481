//! Keras `.keras` files as a hostile or careless user hands them over: each
//! ends in a clear error or in the model Keras would build, never in an
//! abort, a panic (overflow checks on in `cargo test`) or a model that
//! computes something else.
#![cfg(feature = "keras")]

mod common;

use common::{archive, unzip};
use horn::prelude::*;
use horn::saving::load_keras_bytes;
use ndarray::{Array2, ArrayD, Dimension, IxDyn};
use serde_json::{json, Value};

/// `bytes` (a `.keras` file) with its `config.json` edited by `edit`.
fn edit_config(bytes: &[u8], mut edit: impl FnMut(&mut Value)) -> Vec<u8> {
    let mut parts = unzip(bytes);
    for (name, data) in &mut parts {
        if name == "config.json" {
            let mut v: Value = serde_json::from_slice(data).unwrap();
            edit(&mut v);
            *data = serde_json::to_vec(&v).unwrap();
        }
    }
    let refs: Vec<(&str, &[u8])> = parts.iter().map(|(n, d)| (n.as_str(), &d[..])).collect();
    archive(&refs)
}

fn err(bytes: &[u8]) -> String {
    match load_keras_bytes(bytes) {
        Ok(_) => panic!("the file loaded"),
        Err(e) => e.to_string(),
    }
}

/// A zip archive written by hand: each entry stored, with a zip64 extra
/// field that declares `declared` bytes whatever it holds.
fn zip64_archive(entries: &[(&str, &[u8], u64)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data, declared) in entries {
        let offset = out.len() as u32;
        let crc = {
            // CRC-32 (IEEE), bit by bit: the archive is tiny.
            let mut c = 0xffff_ffffu32;
            for &b in *data {
                c ^= b as u32;
                for _ in 0..8 {
                    c = if c & 1 != 0 {
                        (c >> 1) ^ 0xedb8_8320
                    } else {
                        c >> 1
                    };
                }
            }
            !c
        };
        let mut extra = Vec::new();
        extra.extend_from_slice(&1u16.to_le_bytes());
        extra.extend_from_slice(&16u16.to_le_bytes());
        extra.extend_from_slice(&declared.to_le_bytes());
        extra.extend_from_slice(&declared.to_le_bytes());
        let common = |v: &mut Vec<u8>| {
            v.extend_from_slice(&45u16.to_le_bytes()); // version needed
            v.extend_from_slice(&0u16.to_le_bytes()); // flags
            v.extend_from_slice(&0u16.to_le_bytes()); // stored
            v.extend_from_slice(&0u32.to_le_bytes()); // time, date
            v.extend_from_slice(&crc.to_le_bytes());
            v.extend_from_slice(&u32::MAX.to_le_bytes()); // sizes in zip64
            v.extend_from_slice(&u32::MAX.to_le_bytes());
            v.extend_from_slice(&(name.len() as u16).to_le_bytes());
            v.extend_from_slice(&(extra.len() as u16).to_le_bytes());
        };
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        common(&mut out);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&extra);
        out.extend_from_slice(data);
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&45u16.to_le_bytes()); // made by
        common(&mut central);
        central.extend_from_slice(&[0; 6]); // comment, disk, internal attributes
        central.extend_from_slice(&0u32.to_le_bytes()); // external attributes
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
        central.extend_from_slice(&extra);
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

#[test]
fn a_zip64_entry_declaring_16_gib_is_an_error_not_an_abort() {
    let weights = vec![7u8; 4096];
    let bytes = zip64_archive(&[
        ("config.json", b"{}", 2),
        ("model.weights.h5", &weights, 16 << 30),
    ]);
    assert!(bytes.len() < 5000, "{} bytes", bytes.len());
    let e = err(&bytes);
    assert!(
        e.contains("model.weights.h5") && e.contains("17179869184") && e.contains("archive"),
        "{e}"
    );
    // Just under the 16 GiB limit, and a config that claims 60 MiB: the same.
    let e = err(&zip64_archive(&[("config.json", b"{}", 60 << 20)]));
    assert!(e.contains("config.json") && e.contains("62914560"), "{e}");
    // The hand-made archive itself is sound: with true sizes it reads up
    // to the JSON (which is no model).
    let e = err(&zip64_archive(&[
        ("config.json", b"{}", 2),
        ("model.weights.h5", &weights, 4096),
    ]));
    assert!(!e.contains("declares"), "{e}");
}

/// A weights file of `(path, shape)` float datasets (filled with 0.5).
fn h5(datasets: &[(&str, Vec<u64>)]) -> Vec<u8> {
    use hdf5_writer::{DatasetBuilder, Hdf5Builder, WriteOptions};
    let mut b = Hdf5Builder::new();
    for (path, shape) in datasets {
        let n = shape.iter().product::<u64>() as usize;
        b = b.dataset(DatasetBuilder::typed_data(*path, shape.clone(), &vec![0.5f32; n]).unwrap());
    }
    b = b.dataset(
        DatasetBuilder::typed_data("optimizer/vars/0", Vec::<u64>::new(), &[5i64]).unwrap(),
    );
    b.into_plan()
        .unwrap()
        .encode(WriteOptions::default())
        .unwrap()
}

/// Bob Jenkins' lookup3 `hashlittle`, which checksums HDF5 object headers.
fn lookup3(data: &[u8]) -> u32 {
    let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let mut a = 0xdead_beefu32.wrapping_add(data.len() as u32);
    let (mut b, mut c) = (a, a);
    let mut k = data;
    while k.len() > 12 {
        a = a.wrapping_add(word(&k[0..]));
        b = b.wrapping_add(word(&k[4..]));
        c = c.wrapping_add(word(&k[8..]));
        a = a.wrapping_sub(c) ^ c.rotate_left(4);
        c = c.wrapping_add(b);
        b = b.wrapping_sub(a) ^ a.rotate_left(6);
        a = a.wrapping_add(c);
        c = c.wrapping_sub(b) ^ b.rotate_left(8);
        b = b.wrapping_add(a);
        a = a.wrapping_sub(c) ^ c.rotate_left(16);
        c = c.wrapping_add(b);
        b = b.wrapping_sub(a) ^ a.rotate_left(19);
        a = a.wrapping_add(c);
        c = c.wrapping_sub(b) ^ b.rotate_left(4);
        b = b.wrapping_add(a);
        k = &k[12..];
    }
    if k.is_empty() {
        return c;
    }
    let mut t = [0u8; 12];
    t[..k.len()].copy_from_slice(k);
    a = a.wrapping_add(word(&t[0..]));
    b = b.wrapping_add(word(&t[4..]));
    c = c.wrapping_add(word(&t[8..]));
    c = (c ^ b).wrapping_sub(b.rotate_left(14));
    a = (a ^ c).wrapping_sub(c.rotate_left(11));
    b = (b ^ a).wrapping_sub(a.rotate_left(25));
    c = (c ^ b).wrapping_sub(b.rotate_left(16));
    a = (a ^ c).wrapping_sub(c.rotate_left(4));
    b = (b ^ a).wrapping_sub(a.rotate_left(14));
    (c ^ b).wrapping_sub(b.rotate_left(24))
}

/// `file` (HDF5) with the one dataspace of dimensions `from` declaring `to`
/// instead, its object header's checksum renewed: what a crafted file can
/// say, which no writer would write.
fn redeclare(file: &mut [u8], from: &[u64], to: &[u64]) {
    let bytes = |d: &[u64]| d.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let pattern = bytes(from);
    let at: Vec<usize> = (0..file.len() - pattern.len())
        .filter(|&i| file[i..].starts_with(&pattern))
        .collect();
    assert_eq!(at.len(), 1, "dimensions {from:?} found {} times", at.len());
    let p = at[0];
    file[p..p + pattern.len()].copy_from_slice(&bytes(to));
    // The version 2 object header around it: "OHDR", version, flags,
    // optional times and attribute limits, chunk size, messages, checksum.
    let start = (0..p)
        .rev()
        .find(|&i| file[i..].starts_with(b"OHDR"))
        .unwrap();
    let flags = file[start + 5];
    let mut q =
        start + 6 + if flags & 0x20 != 0 { 16 } else { 0 } + if flags & 0x10 != 0 { 4 } else { 0 };
    let width = 1usize << (flags & 3);
    let mut size = [0u8; 8];
    size[..width].copy_from_slice(&file[q..q + width]);
    q += width;
    let end = q + u64::from_le_bytes(size) as usize;
    let sum = lookup3(&file[start..end]);
    file[end..end + 4].copy_from_slice(&sum.to_le_bytes());
}

#[test]
fn dimensions_whose_product_overflows_are_errors() {
    // The checksum helper agrees with the writer's own.
    let plain = h5(&[("a", vec![2, 3])]);
    let mut same = plain.clone();
    redeclare(&mut same, &[2, 3], &[2, 3]);
    assert_eq!(same, plain);

    // A compiled model with momentum, whose first optimizer slot declares
    // 2^33 x 2^33 values: Keras skips optimizer state that does not fit the
    // weights, and so does horn (fresh slots, the saved step count).
    let mut m = Sequential::new().seed(1).input(4).dense(3, Linear);
    let sgd = Sgd {
        learning_rate: 0.1,
        momentum: 0.9,
        nesterov: false,
    };
    m.compile(sgd, "mse", &[] as &[Metric]).unwrap();
    let config = unzip(&m.to_keras_bytes().unwrap())
        .into_iter()
        .find(|(n, _)| n == "config.json")
        .unwrap()
        .1;
    let mut file = h5(&[
        ("layers/dense/vars/0", vec![4, 3]),
        ("layers/dense/vars/1", vec![3]),
        ("optimizer/vars/2", vec![17, 19]),
    ]);
    redeclare(&mut file, &[17, 19], &[1 << 33, 1 << 33]);
    let loaded = Sequential::load_keras_bytes(&archive(&[
        ("config.json", &config),
        ("model.weights.h5", &file),
    ]))
    .unwrap();
    assert!(loaded.get_weights().unwrap()[0].iter().all(|&v| v == 0.5));
    assert_eq!(loaded.optimizer().unwrap().iterations(), 5);

    // A Conv2D whose kernel has 2^20 * 2^20 * 4 * (2^32 - 1) values, and a
    // weights file that declares exactly that.
    let conv = json!({
        "module": "keras", "class_name": "Sequential",
        "config": {"name": "s", "layers": [
            {"module": "keras.layers", "class_name": "InputLayer",
             "config": {"name": "x", "batch_shape": [null, 1 << 20, 1 << 20, 4]}},
            {"module": "keras.layers", "class_name": "Conv2D",
             "config": {"name": "conv2d", "filters": u32::MAX, "kernel_size": [1 << 20, 1 << 20]}}
        ]}
    });
    let mut file = h5(&[
        ("layers/conv2d/vars/0", vec![2, 3, 5, 7]),
        ("layers/conv2d/vars/1", vec![11]),
    ]);
    redeclare(
        &mut file,
        &[2, 3, 5, 7],
        &[1 << 20, 1 << 20, 4, u32::MAX as u64],
    );
    redeclare(&mut file, &[11], &[u32::MAX as u64]);
    let e = err(&archive(&[
        ("config.json", conv.to_string().as_bytes()),
        ("model.weights.h5", &file),
    ]));
    assert!(
        e.contains("layers/conv2d/vars/0") && e.contains("claims"),
        "{e}"
    );
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/keras-files/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// The entry of layer `name` in a parsed `config.json`.
fn layer<'a>(config: &'a mut Value, name: &str) -> &'a mut Value {
    config["config"]["layers"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|l| l["config"]["name"] == name)
        .unwrap_or_else(|| panic!("no layer `{name}`"))
}

/// Three samples for each of a model's inputs.
fn samples(model: &Model) -> Vec<ArrayD<f32>> {
    model
        .input_shapes()
        .iter()
        .map(|s| {
            let mut shape = vec![3];
            shape.extend_from_slice(s.dims());
            ArrayD::from_shape_fn(IxDyn(&shape), |i| {
                ((i.as_array_view().sum() * 7 % 11) as f32) / 11.0 - 0.4
            })
        })
        .collect()
}

fn predict(model: &Model) -> Vec<ArrayD<f32>> {
    let x = samples(model);
    model.predict(x.iter().collect::<Vec<_>>()).unwrap()
}

/// A Keras tensor reference in a node's arguments.
fn keras_tensor(layer: &str) -> Value {
    json!({"class_name": "__keras_tensor__",
           "config": {"shape": [null, 3], "dtype": "float32", "keras_history": [layer, 0, 0]}})
}

#[test]
fn uncompiled_keras_models_load_for_inference() {
    // Keras 3.15 writes `{}` for a model saved without compile(); older
    // versions `null` or nothing.
    let good = fixture("functional.keras");
    let want = predict(&load_keras_bytes(&good).unwrap().into_model());
    let edits: [fn(&mut Value); 3] = [
        |c| c["compile_config"] = json!({}),
        |c| c["compile_config"] = Value::Null,
        |c| {
            c.as_object_mut().unwrap().remove("compile_config");
        },
    ];
    for edit in edits {
        let model = load_keras_bytes(&edit_config(&good, edit))
            .unwrap()
            .into_model();
        assert!(model.optimizer().is_none());
        assert_eq!(predict(&model), want);
        let x = samples(&model);
        let e = model.evaluate(x.iter().collect::<Vec<_>>(), [&want[0], &want[1]]);
        assert!(e.unwrap_err().to_string().contains("compiled"));
    }
    let seq = Sequential::load_keras_bytes(&edit_config(&fixture("sequences.keras"), |c| {
        c["compile_config"] = json!({})
    }))
    .unwrap();
    assert!(seq.optimizer().is_none());
    assert_eq!(seq.predict(Array2::<f32>::ones((2, 7))).unwrap().nrows(), 2);
}

#[test]
fn tensor_keyword_arguments_are_refused_by_name() {
    // The case: `LSTM(4)(x, initial_state=[h0, c0])`, which would
    // otherwise predict as if the state were zero.
    let mut g = Graph::with_seed(1);
    let x = g.input("x", &[5, 3]);
    let h = g.call(LSTM::new(4), x);
    let o = g.call(Dense::new(1, Linear), h);
    let model = Model::new(g, [x], [o]).unwrap();
    let bytes = model.to_keras_bytes().unwrap();
    let add_state = |c: &mut Value| {
        for name in ["h0", "c0"] {
            let mut input = layer(c, "x").clone();
            input["name"] = json!(name);
            input["config"]["name"] = json!(name);
            input["config"]["batch_shape"] = json!([null, 4]);
            c["config"]["layers"]
                .as_array_mut()
                .unwrap()
                .insert(0, input);
            c["config"]["input_layers"]
                .as_array_mut()
                .unwrap()
                .push(json!([name, 0, 0]));
        }
    };
    // Without the keyword argument the two extra inputs are just unused...
    let unused = load_keras_bytes(&edit_config(&bytes, add_state)).unwrap();
    assert_eq!(unused.into_model().input_names(), ["x", "h0", "c0"]);
    // ... with it, the state would be dropped: an error names it.
    let with_state = edit_config(&bytes, |c| {
        add_state(c);
        layer(c, "lstm")["inbound_nodes"][0]["kwargs"] =
            json!({"initial_state": [keras_tensor("h0"), keras_tensor("c0")]});
    });
    let e = err(&with_state);
    assert!(e.contains("initial_state") && e.contains("`lstm`"), "{e}");

    let good = fixture("functional.keras");
    let want = predict(&load_keras_bytes(&good).unwrap().into_model());
    let with_kwargs = |kwargs: Value| {
        edit_config(&good, |c| {
            layer(c, "pa")["inbound_nodes"][0]["kwargs"] = kwargs.clone();
        })
    };
    // An explicit mask, in a list or a dict: refused by name.
    for kwargs in [
        json!({"mask": keras_tensor("b")}),
        json!({"mask": [null, keras_tensor("b")]}),
        json!({"mask": {"nested": keras_tensor("b")}}),
    ] {
        let e = err(&with_kwargs(kwargs));
        assert!(e.contains("`mask`") && e.contains("`pa`"), "{e}");
    }
    // Keras 2's form: `[layer, node, tensor, {kwargs}]`, a tensor as a
    // `[layer, node, tensor]` triple.
    let keras2 = edit_config(&good, |c| {
        layer(c, "pa")["inbound_nodes"] = json!([[["concat", 0, 0, {"mask": ["b", 0, 0]}]]]);
    });
    let e = err(&keras2);
    assert!(e.contains("`mask`") && e.contains("`pa`"), "{e}");
    // ... and without tensors it loads as before.
    let keras2 = edit_config(&good, |c| {
        layer(c, "pa")["inbound_nodes"] = json!([[["concat", 0, 0, {}]]]);
    });
    assert_eq!(
        predict(&load_keras_bytes(&keras2).unwrap().into_model()),
        want
    );
    // What Keras writes for plain calls loads: unset masks, training=None.
    for kwargs in [
        json!({}),
        json!({"mask": null}),
        json!({"mask": [null, null], "training": null}),
    ] {
        let model = load_keras_bytes(&with_kwargs(kwargs)).unwrap().into_model();
        assert_eq!(predict(&model), want);
    }
    // training=True would keep dropout on in Keras' predict: refused.
    let e = err(&with_kwargs(json!({"training": true})));
    assert!(e.contains("`training`") && e.contains("`pa`"), "{e}");
    // An argument horn does not know, with a value: refused, not dropped.
    let e = err(&with_kwargs(json!({"use_causal_mask": true})));
    assert!(e.contains("`use_causal_mask`"), "{e}");
}

#[test]
fn bidirectional_without_a_merge_is_refused() {
    let good = fixture("sequences.keras");
    let e = err(&edit_config(&good, |c| {
        layer(c, "bidirectional")["config"]["merge_mode"] = Value::Null;
    }));
    assert!(
        e.contains("merge_mode") && e.contains("`bidirectional`"),
        "{e}"
    );
    // Absent, Keras' default: concat, as before.
    let absent = edit_config(&good, |c| {
        layer(c, "bidirectional")["config"]
            .as_object_mut()
            .unwrap()
            .remove("merge_mode");
    });
    let x = Array2::<f32>::ones((2, 7));
    assert_eq!(
        Sequential::load_keras_bytes(&absent)
            .unwrap()
            .predict(&x)
            .unwrap(),
        Sequential::load_keras_bytes(&good)
            .unwrap()
            .predict(&x)
            .unwrap()
    );
}

#[test]
fn custom_layer_errors_name_the_module_given() {
    let good = fixture("functional.keras");
    let e = err(&edit_config(&good, |c| {
        let l = layer(c, "pa");
        l["module"] = Value::Null;
        l["class_name"] = json!("Fancy");
        l["registered_name"] = json!("my_package>Fancy");
    }));
    assert!(
        e.contains("Fancy with no module, registered as `my_package>Fancy`")
            && !e.contains("keras.layers"),
        "{e}"
    );
    let e = err(&edit_config(&good, |c| {
        layer(c, "pa")["module"] = json!("my_package.layers");
    }));
    assert!(e.contains("Dense from `my_package.layers`"), "{e}");
}

#[test]
fn save_keras_refuses_what_load_keras_refuses() {
    // horn builds a stride over 2^20 (one output step), but its reader,
    // like Keras' files in practice, stops at 2^20: the writer refuses it.
    let m = Sequential::new()
        .seed(1)
        .input_shape(&[6, 2])
        .add(Conv1D::new(3, 1, Linear).strides((1 << 20) + 1));
    let e = m.to_keras_bytes().unwrap_err().to_string();
    assert!(
        e.contains("strides") && e.contains("`conv1d`") && e.contains("read back"),
        "{e}"
    );
    let m = Sequential::new()
        .seed(1)
        .input_shape(&[6, 2])
        .add(Conv1D::new(3, 1, Linear).dilation_rate((1 << 20) + 1));
    let e = m.to_keras_bytes().unwrap_err().to_string();
    assert!(e.contains("dilation_rate"), "{e}");
    // In a functional model too.
    let mut g = Graph::with_seed(1);
    let x = g.input("x", &[6, 2]);
    let o = g.call(Conv1D::new(3, 1, Linear).strides((1 << 20) + 1), x);
    let e = Model::new(g, [x], [o])
        .unwrap()
        .to_keras_bytes()
        .unwrap_err();
    assert!(e.to_string().contains("strides"), "{e}");
    // The largest stride the reader takes is written and read back.
    let m = Sequential::new()
        .seed(1)
        .input_shape(&[6, 2])
        .add(Conv1D::new(3, 1, Linear).strides(1 << 20));
    let back = Sequential::load_keras_bytes(&m.to_keras_bytes().unwrap()).unwrap();
    let x = ArrayD::<f32>::ones(IxDyn(&[2, 6, 2]));
    assert_eq!(back.predict_nd(&x).unwrap(), m.predict_nd(&x).unwrap());
}

fn quiet() -> FitOptions {
    FitOptions {
        epochs: 1,
        verbose: 0,
        ..Default::default()
    }
}

/// `fit`'s result for a functional model on its own predictions.
fn fit_model(model: &mut Model) -> horn::Result<History> {
    let x = samples(model);
    let y = predict(model);
    model.fit(
        x.iter().collect::<Vec<_>>(),
        y.iter().collect::<Vec<_>>(),
        quiet(),
    )
}

#[test]
fn frozen_keras_layers_predict_but_do_not_train() {
    // A functional model whose Dense `pa` is frozen: it loads and predicts
    // as before, but horn cannot train it as Keras would (with `pa` fixed).
    let good = fixture("functional.keras");
    let want = predict(&load_keras_bytes(&good).unwrap().into_model());
    let frozen = edit_config(&good, |c| {
        layer(c, "pa")["config"]["trainable"] = json!(false)
    });
    let mut model = load_keras_bytes(&frozen).unwrap().into_model();
    assert_eq!(predict(&model), want);
    let before = model.get_weights().unwrap();
    let e = fit_model(&mut model).unwrap_err().to_string();
    assert!(
        e.contains("`pa` frozen") && e.contains("cannot train"),
        "{e}"
    );
    assert_eq!(model.get_weights().unwrap(), before, "nothing moved");
    // horn's own format cannot record the freeze: refused, not dropped.
    let e = model.to_bytes().unwrap_err().to_string();
    assert!(e.contains("`pa`") && e.contains("save_keras"), "{e}");
    // `.keras` keeps it.
    let again = model.to_keras_bytes().unwrap();
    let config: Value = serde_json::from_slice(
        &unzip(&again)
            .into_iter()
            .find(|(n, _)| n == "config.json")
            .unwrap()
            .1,
    )
    .unwrap();
    let mut config = config;
    assert_eq!(
        layer(&mut config, "pa")["config"]["trainable"],
        json!(false)
    );
    assert_eq!(layer(&mut config, "pb")["config"]["trainable"], json!(true));
    let mut back = load_keras_bytes(&again).unwrap().into_model();
    assert!(fit_model(&mut back).is_err());
    // The unfrozen file still trains.
    assert!(fit_model(&mut load_keras_bytes(&good).unwrap().into_model()).is_ok());

    // A frozen BatchNormalization in a Sequential model (Keras runs it in
    // inference mode during fit, which horn cannot yet).
    let mut seq = Sequential::new()
        .seed(3)
        .input(4)
        .dense(3, Relu)
        .batch_normalization()
        .dropout(0.5)
        .dense(2, Softmax);
    seq.compile("sgd", "categorical_crossentropy", &[] as &[Metric])
        .unwrap();
    let bytes = seq.to_keras_bytes().unwrap();
    let x = Array2::<f32>::from_shape_fn((8, 4), |(i, j)| (i * 3 + j) as f32 / 10.0);
    let y = Array2::<f32>::from_shape_fn((8, 2), |(i, j)| ((i + j) % 2) as f32);
    let mut bn = Sequential::load_keras_bytes(&edit_config(&bytes, |c| {
        layer(c, "batch_normalization")["config"]["trainable"] = json!(false)
    }))
    .unwrap();
    assert_eq!(bn.predict(&x).unwrap(), seq.predict(&x).unwrap());
    let e = bn.fit(&x, &y, quiet()).unwrap_err().to_string();
    assert!(e.contains("`batch_normalization` frozen"), "{e}");
    assert!(bn
        .to_bytes()
        .unwrap_err()
        .to_string()
        .contains("batch_normalization"));
    assert!(bn.evaluate(&x, &y).is_ok(), "evaluate is unaffected");
    // A frozen layer without weights changes nothing in Keras: it trains.
    let mut dropout = Sequential::load_keras_bytes(&edit_config(&bytes, |c| {
        layer(c, "dropout")["config"]["trainable"] = json!(false)
    }))
    .unwrap();
    assert!(dropout.fit(&x, &y, quiet()).is_ok());
    // `model.trainable = False` freezes every layer with weights.
    let mut all = Sequential::load_keras_bytes(&edit_config(&bytes, |c| {
        c["config"]["trainable"] = json!(false)
    }))
    .unwrap();
    let e = all.fit(&x, &y, quiet()).unwrap_err().to_string();
    assert!(
        e.contains("`dense`, `batch_normalization`, `dense_1` frozen") && !e.contains("dropout"),
        "{e}"
    );
    // A wrapped layer frozen inside its wrapper.
    let text = fixture("sequences.keras");
    let mut inner = Sequential::load_keras_bytes(&edit_config(&text, |c| {
        layer(c, "bidirectional")["config"]["layer"]["config"]["trainable"] = json!(false)
    }))
    .unwrap();
    let ids = Array2::<f32>::ones((2, 7));
    let e = inner.fit(&ids, inner.predict(&ids).unwrap(), quiet());
    assert!(e
        .unwrap_err()
        .to_string()
        .contains("`bidirectional` frozen"));

    // A call with training=False (inference mode, also in fit): predicts,
    // does not train, and is written back as it was.
    let inference = edit_config(&good, |c| {
        layer(c, "pa")["inbound_nodes"][0]["kwargs"] = json!({"training": false});
    });
    let mut model = load_keras_bytes(&inference).unwrap().into_model();
    assert_eq!(predict(&model), want);
    let e = fit_model(&mut model).unwrap_err().to_string();
    assert!(e.contains("`pa` called with training=False"), "{e}");
    let mut back = load_keras_bytes(&model.to_keras_bytes().unwrap())
        .unwrap()
        .into_model();
    assert!(fit_model(&mut back)
        .unwrap_err()
        .to_string()
        .contains("training=False"));
}

#[allow(dead_code)]
#[path = "../examples/keras_run.rs"]
mod keras_run;

#[test]
fn keras_run_reports_errors_as_sentences() {
    let dir = std::env::temp_dir().join(format!("horn-keras-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("not-a-model.keras");
    std::fs::write(&path, b"hello").unwrap();
    let e = keras_run::run([path.display().to_string()]).unwrap_err();
    let line = keras_run::error_line(e.as_ref());
    assert!(
        line.starts_with("error: cannot read") && line.contains("zip archive"),
        "{line}"
    );
    assert!(!line.contains("Format {"), "{line}");
    let e = keras_run::run(Vec::<String>::new()).unwrap_err();
    assert!(keras_run::error_line(e.as_ref()).contains("usage"));
    // A good file runs: the summary, no inputs.
    let model = dir.join("model.keras");
    std::fs::write(&model, fixture("functional.keras")).unwrap();
    assert!(keras_run::run([model.display().to_string()]).is_ok());
}
