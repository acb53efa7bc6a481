//! Finite-difference checks of the back-propagated gradients: Dense with every
//! activation, and every loss (including the fused softmax/sigmoid forms).

mod common;

use horn::prelude::*;
use ndarray::{Array2, ArrayD};

/// Analytic gradient from one full-batch SGD step with learning rate 1.
fn analytic<D: ndarray::Dimension>(
    model: &mut Sequential,
    loss: Loss,
    x: &ndarray::Array<f32, D>,
    y: &Array2<f32>,
) -> Vec<ArrayD<f32>> {
    model
        .compile(
            Sgd {
                learning_rate: 1.0,
                ..Default::default()
            },
            loss,
            &[] as &[Metric],
        )
        .unwrap();
    let before = model.get_weights().unwrap();
    model
        .fit(
            x,
            y,
            FitOptions {
                epochs: 1,
                batch_size: x.shape()[0],
                shuffle: false,
                verbose: 0,
                ..Default::default()
            },
        )
        .unwrap();
    let after = model.get_weights().unwrap();
    model.set_weights(&before).unwrap();
    before.iter().zip(&after).map(|(b, a)| b - a).collect()
}

fn check<D: ndarray::Dimension>(
    model: Sequential,
    loss: Loss,
    x: &ndarray::Array<f32, D>,
    y: &Array2<f32>,
    label: &str,
) {
    check_within(model, loss, x, y, label, 2e-3);
}

/// [`check`] with an absolute tolerance of `abs_tol` (plus 3% of the
/// numeric value): small gradients need a tighter one to be checked at all.
fn check_within<D: ndarray::Dimension>(
    mut model: Sequential,
    loss: Loss,
    x: &ndarray::Array<f32, D>,
    y: &Array2<f32>,
    label: &str,
    abs_tol: f32,
) {
    let grads = analytic(&mut model, loss, x, y);
    let base = model.get_weights().unwrap();
    let eps = 1e-2f32;
    let mut checked = 0;
    for t in 0..base.len() {
        for i in (0..base[t].len()).step_by(3) {
            let mut w = base.clone();
            let orig = w[t].as_slice_mut().unwrap()[i];
            w[t].as_slice_mut().unwrap()[i] = orig + eps;
            model.set_weights(&w).unwrap();
            let up = model.evaluate(x, y).unwrap()["loss"];
            w[t].as_slice_mut().unwrap()[i] = orig - eps;
            model.set_weights(&w).unwrap();
            let down = model.evaluate(x, y).unwrap()["loss"];
            let numeric = (up - down) / (2.0 * eps);
            let a = grads[t].as_slice().unwrap()[i];
            assert!(
                (a - numeric).abs() <= abs_tol + 3e-2 * numeric.abs(),
                "{label}: tensor {t}[{i}] analytic {a} vs numeric {numeric}"
            );
            checked += 1;
        }
    }
    model.set_weights(&base).unwrap();
    assert!(checked > 5);
}

#[test]
fn every_activation_backpropagates_correctly() {
    let (x, _) = common::blobs(12, 4, 1);
    let y = Array2::from_shape_fn((12, 3), |(i, j)| ((i + j) % 4) as f32 * 0.3 - 0.4);
    for name in Activation::NAMES.split(", ") {
        let act: Activation = name.parse().unwrap();
        // Keep inputs of relu-like kinks away from 0 by a random init; exponential stays small.
        let model = Sequential::new()
            .seed(7)
            .input(4)
            .dense(5, act)
            .dense(3, Linear);
        check(model, Loss::MeanSquaredError, &x, &y, name);
    }
    let approx = Sequential::new()
        .seed(7)
        .input(4)
        .dense(5, Gelu { approximate: true })
        .dense(3, Linear);
    check(approx, Loss::MeanSquaredError, &x, &y, "gelu approximate");
}

#[test]
fn every_loss_backpropagates_correctly() {
    let (x, onehot) = common::blobs(10, 4, 2);
    let sparse = Array2::from_shape_fn((10, 1), |(i, _)| {
        (0..3).find(|&c| onehot[[i, c]] == 1.0).unwrap() as f32
    });
    let soft = onehot.mapv(|v| v * 0.8 + 0.2 / 3.0);
    let binary = Array2::from_shape_fn((10, 3), |(i, j)| ((i * 3 + j) % 2) as f32);
    let real = Array2::from_shape_fn((10, 3), |(i, j)| 0.2 + ((i + 2 * j) % 5) as f32 * 0.4);
    let signed = binary.mapv(|v| 2.0 * v - 1.0);
    let soft_binary = binary.mapv(|v| v * 0.5 + 0.25);
    let cases: Vec<(Loss, Activation, &Array2<f32>)> = vec![
        (CategoricalCrossentropy::default().into(), Softmax, &onehot),
        (
            CategoricalCrossentropy {
                from_logits: false,
                label_smoothing: 0.1,
            }
            .into(),
            Softmax,
            &onehot,
        ),
        (CategoricalCrossentropy::default().into(), Sigmoid, &soft),
        (
            CategoricalCrossentropy {
                from_logits: true,
                label_smoothing: 0.0,
            }
            .into(),
            Linear,
            &onehot,
        ),
        (
            SparseCategoricalCrossentropy::default().into(),
            Softmax,
            &sparse,
        ),
        (
            SparseCategoricalCrossentropy { from_logits: true }.into(),
            Linear,
            &sparse,
        ),
        (BinaryCrossentropy::default().into(), Sigmoid, &binary),
        (BinaryCrossentropy::default().into(), Sigmoid, &soft_binary),
        (BinaryCrossentropy::default().into(), HardSigmoid, &binary),
        (
            BinaryCrossentropy {
                from_logits: true,
                label_smoothing: 0.1,
            }
            .into(),
            Linear,
            &binary,
        ),
        (Loss::MeanSquaredError, Linear, &real),
        (Loss::MeanAbsoluteError, Linear, &real),
        (Loss::MeanAbsolutePercentageError, Linear, &real),
        (Loss::MeanSquaredLogarithmicError, Sigmoid, &real),
        (Huber { delta: 0.5 }.into(), Linear, &real),
        (Loss::LogCosh, Linear, &real),
        (Loss::KlDivergence, Softmax, &soft),
        (Loss::Poisson, Softplus, &real),
        (Loss::Hinge, Linear, &binary),
        (Loss::SquaredHinge, Linear, &signed),
        (Loss::CategoricalHinge, Linear, &onehot),
        (Loss::CosineSimilarity, Linear, &real),
    ];
    for (loss, act, y) in cases {
        let model = Sequential::new()
            .seed(3)
            .input(4)
            .dense(6, Tanh)
            .dense(3, act);
        check(model, loss, &x, y, &format!("{} after {act}", loss.name()));
    }
}

/// Convolutions (padding, strides, dilation, causal), average pooling,
/// reshape and Dense on sequences, against finite differences of the loss.
/// (Max pooling's and the normalizations' gradients are checked against
/// Keras' in `keras_layer_parity.rs`: a finite step can move a window's
/// maximum, and a normalization over a few values curves the loss so much
/// that a step of 1e-2 misses the slope by half, while 1e-3 agrees.)
#[test]
fn vision_layers_backpropagate_correctly() {
    let x = ndarray::Array4::<f32>::from_shape_fn((6, 6, 6, 2), |(i, r, c, ch)| {
        ((i * 13 + r * 5 + c * 3 + ch * 7) % 11) as f32 / 11.0 - 0.4
    });
    let y = Array2::from_shape_fn((6, 3), |(i, j)| (i % 3 == j) as u8 as f32);
    let model = Sequential::new()
        .seed(3)
        .input_shape(&[6, 6, 2])
        .add(Conv2D::new(3, 3, Tanh).padding(Padding::Same))
        .add(AveragePooling2D::new(2).strides(1).padding(Padding::Same))
        .add(Conv2D::new(4, [2, 3], Linear).strides([2, 1]))
        .add(Reshape::new(&[-1, 4]))
        .dense(2, Tanh)
        .flatten()
        .dense(3, Softmax);
    check(
        model,
        CategoricalCrossentropy::default().into(),
        &x,
        &y,
        "conv2d stack",
    );

    let x = ndarray::Array3::<f32>::from_shape_fn((5, 9, 3), |(i, t, ch)| {
        ((i * 7 + t * 3 + ch * 5) % 13) as f32 / 13.0 - 0.5
    });
    let y = Array2::from_shape_fn((5, 2), |(i, j)| ((i + j) % 3) as f32 * 0.4 - 0.3);
    let model = Sequential::new()
        .seed(5)
        .input_shape(&[9, 3])
        .add(
            Conv1D::new(4, 3, Tanh)
                .padding(Padding::Causal)
                .dilation_rate(2),
        )
        .add(AveragePooling1D::new(2).padding(Padding::Same))
        .add(Conv1D::new(3, 2, Sigmoid).strides(2))
        .add(GlobalAveragePooling1D::new())
        .dense(2, Linear);
    check(model, MeanSquaredError.into(), &x, &y, "conv1d stack");
}

/// Convolutions large enough to run in several tiles and lanes: the first
/// layer's long patches (18 values) are unrolled again in backward (6 tiles
/// of 5 samples, one per lane) and its kernel gradient summed over the
/// lanes; the second's activation (silu) keeps its pre-activation, written
/// tile by tile, and its input gradient goes through 9 tiles of 3 samples
/// on 8 lanes (so one lane works through two tiles).
#[test]
fn tiled_convolutions_backpropagate_correctly() {
    let x = ndarray::Array4::<f32>::from_shape_fn((26, 20, 20, 2), |(i, r, c, ch)| {
        ((i * 13 + r * 5 + c * 3 + ch * 7) % 17) as f32 / 17.0 - 0.45
    });
    let y = Array2::from_shape_fn((26, 2), |(i, j)| ((i + 2 * j) % 5) as f32 * 0.3 - 0.5);
    let model = Sequential::new()
        .seed(11)
        .input_shape(&[20, 20, 2])
        .add(Conv2D::new(3, 3, Tanh))
        .add(Conv2D::new(3, 3, Silu).padding(Padding::Same))
        .add(AveragePooling2D::new(6))
        .flatten()
        .dense(2, Linear);
    // The first kernel's gradients are of order 1e-3: checked to 5e-5.
    check_within(
        model,
        MeanSquaredError.into(),
        &x,
        &y,
        "tiled conv2d stack",
        5e-5,
    );
}

/// The recurrent layers in stacks, so that each one's input gradient is
/// checked through the weights below it: LSTM with sequences, a backwards GRU,
/// Bidirectional SimpleRNN (mul and ave merges), and the non-default
/// activations a recurrent cell supports.
#[test]
fn recurrent_layers_backpropagate_correctly() {
    let x = ndarray::Array3::<f32>::from_shape_fn((4, 6, 3), |(i, t, f)| {
        ((i * 11 + t * 5 + f * 7) % 13) as f32 / 13.0 - 0.5
    });
    let y = Array2::from_shape_fn((4, 2), |(i, j)| ((i + 2 * j) % 3) as f32 * 0.5 - 0.4);
    let model = Sequential::new()
        .seed(7)
        .input_shape(&[6, 3])
        .add(LSTM::new(4).return_sequences(true))
        .add(GRU::new(3).go_backwards(true).return_sequences(true))
        .add(
            Bidirectional::new(SimpleRNN::new(3).return_sequences(true)).merge_mode(MergeMode::Mul),
        )
        .add(Bidirectional::new(LSTM::new(2)).merge_mode(MergeMode::Ave))
        .dense(2, Linear);
    check(model, MeanSquaredError.into(), &x, &y, "recurrent stack");

    let model = Sequential::new()
        .seed(8)
        .input_shape(&[6, 3])
        .add(
            LSTM::new(3)
                .activation(Softsign)
                .recurrent_activation(HardSigmoid)
                .return_sequences(true),
        )
        .add(
            GRU::new(3)
                .activation(Elu(1.0))
                .use_bias(false)
                .return_sequences(true),
        )
        .add(Bidirectional::new(SimpleRNN::new(2).activation(Linear)))
        .dense(2, Linear);
    check(
        model,
        MeanSquaredError.into(),
        &x,
        &y,
        "recurrent activations",
    );

    // An Embedding under a GRU: the table's rows get the summed gradients
    // of every occurrence of their id.
    let ids = ndarray::Array2::<f32>::from_shape_fn((4, 5), |(i, t)| ((i * 3 + t * t) % 6) as f32);
    let model = Sequential::new()
        .seed(9)
        .input_shape(&[5])
        .embedding(6, 3)
        .add(GRU::new(3))
        .dense(2, Linear);
    check(model, MeanSquaredError.into(), &ids, &y, "embedding + gru");

    // Padding ids masked (Keras' mask_zero): the gradients skip those steps.
    let padded = ids.mapv(|v| if v < 2.0 { 0.0 } else { v });
    let model = Sequential::new()
        .seed(11)
        .input_shape(&[5])
        .add(Embedding::new(6, 3).mask_zero(true))
        .add(LSTM::new(3).return_sequences(true))
        .add(Bidirectional::new(GRU::new(2)))
        .dense(2, Linear);
    check(
        model,
        MeanSquaredError.into(),
        &padded,
        &y,
        "masked recurrent stack",
    );

    // A wrapped layer sees every step as a row.
    let model = Sequential::new()
        .seed(10)
        .input_shape(&[6, 3])
        .add(TimeDistributed::new(Dense::new(4, Tanh)))
        .add(TimeDistributed::new(LayerNormalization::new()))
        .add(LSTM::new(3))
        .dense(2, Linear);
    check(model, MeanSquaredError.into(), &x, &y, "time distributed");
}
