//! Initializer statistics (Keras formulas), and hand-derived values for the
//! optimizers and schedules that the Keras fixtures do not cover.

use horn::initializers::Initializer;
use horn::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn stats(init: Initializer, shape: &[usize]) -> (f64, f64, f32) {
    let w = init.sample(shape, &mut StdRng::seed_from_u64(5)).unwrap();
    let n = w.len() as f64;
    let mean = w.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = w.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var, w.iter().fold(0.0f32, |m, v| m.max(v.abs())))
}

#[test]
fn random_initializers_follow_keras_formulas() {
    let (fi, fo) = (400.0f64, 200.0f64);
    let shape = [400, 200];
    // Uniform(-l, l) has variance l^2 / 3.
    for (init, limit) in [
        (Initializer::GlorotUniform, (6.0 / (fi + fo)).sqrt()),
        (Initializer::HeUniform, (6.0 / fi).sqrt()),
        (Initializer::LecunUniform, (3.0 / fi).sqrt()),
    ] {
        let (mean, var, max) = stats(init, &shape);
        assert!(mean.abs() < 0.002, "{init:?} mean {mean}");
        assert!(
            (var / (limit * limit / 3.0) - 1.0).abs() < 0.02,
            "{init:?} var {var}"
        );
        assert!(
            max as f64 <= limit + 1e-6 && max as f64 > 0.99 * limit,
            "{init:?} max {max}"
        );
    }
    // Truncated normals: variance = scale / fan (the 0.8796 factor undoes the
    // truncation), bounded by two of the pre-truncation standard deviations.
    for (init, target) in [
        (Initializer::GlorotNormal, 2.0 / (fi + fo)),
        (Initializer::HeNormal, 2.0 / fi),
        (Initializer::LecunNormal, 1.0 / fi),
    ] {
        let (mean, var, max) = stats(init, &shape);
        let bound = 2.0 * target.sqrt() / 0.879_625_661_034_239_8;
        assert!(mean.abs() < 0.002, "{init:?} mean {mean}");
        assert!(
            (var / target - 1.0).abs() < 0.03,
            "{init:?} var {var} vs {target}"
        );
        assert!(max as f64 <= bound + 1e-6, "{init:?} max {max} > {bound}");
    }
    let (mean, var, _) = stats(
        Initializer::RandomNormal {
            mean: 0.0,
            stddev: 0.05,
        },
        &shape,
    );
    assert!(mean.abs() < 0.001 && (var / 0.0025 - 1.0).abs() < 0.03);
    let (_, _, max) = stats(
        Initializer::RandomUniform {
            minval: -0.05,
            maxval: 0.05,
        },
        &shape,
    );
    assert!(max <= 0.05);
    let c = Initializer::Constant(0.5)
        .sample(&[3], &mut StdRng::seed_from_u64(1))
        .unwrap();
    assert!(c.iter().all(|&v| v == 0.5));
}

#[test]
fn orthogonal_gives_orthonormal_columns() {
    let w = Initializer::Orthogonal { gain: 1.0 }
        .sample(&[30, 10], &mut StdRng::seed_from_u64(2))
        .unwrap();
    let w: ndarray::Array2<f32> = w.into_dimensionality().unwrap();
    let g = w.t().dot(&w);
    for i in 0..10 {
        for j in 0..10 {
            let e = if i == j { 1.0 } else { 0.0 };
            assert!((g[[i, j]] - e).abs() < 1e-5);
        }
    }
}

#[test]
fn initializers_are_deterministic_under_a_seed() {
    let a = Sequential::new().seed(9).input(20).dense(30, Relu);
    let b = Sequential::new().input(20).dense(30, Relu).seed(9);
    let c = Sequential::new().seed(10).input(20).dense(30, Relu);
    assert_eq!(a.get_weights().unwrap(), b.get_weights().unwrap());
    assert_ne!(a.get_weights().unwrap(), c.get_weights().unwrap());
}

#[test]
fn lion_matches_the_formula() {
    // Keras Lion: w -= lr * sign(b1 m + (1 - b1) g); m = b2 m + (1 - b2) g.
    // Step 1 (m = 0): w = 1 - 0.001 * sign(0.1 * 0.5) = 0.999; m = 0.01 * 0.5 = 0.005.
    // Step 2 with g = -0.2: d = 0.9 * 0.005 + 0.1 * (-0.2) = -0.0155 -> w = 0.999 + 0.001 = 1.0.
    let mut opt = Optimizer::from(Lion::default());
    let mut w = [1.0f32];
    opt.apply(&mut [&mut w[..]], &mut [&mut [0.5f32][..]])
        .unwrap();
    assert!((w[0] - 0.999).abs() < 1e-7);
    opt.apply(&mut [&mut w[..]], &mut [&mut [-0.2f32][..]])
        .unwrap();
    assert!((w[0] - 1.0).abs() < 1e-7);
}

#[test]
fn clipvalue_and_global_clipnorm_follow_keras_order() {
    // clipvalue 0.5 turns g = 3 into 0.5; SGD lr 0.1: w = 1 - 0.05 = 0.95.
    let mut opt = Optimizer::from(Sgd {
        learning_rate: 0.1,
        ..Default::default()
    })
    .with_clipvalue(0.5);
    let mut w = [1.0f32];
    opt.apply(&mut [&mut w[..]], &mut [&mut [3.0f32][..]])
        .unwrap();
    assert!((w[0] - 0.95).abs() < 1e-7);
    // global_clipnorm 1 on gradients (3) and (4): norm 5 -> (0.6) and (0.8).
    let mut opt = Optimizer::from(Sgd {
        learning_rate: 1.0,
        ..Default::default()
    })
    .with_global_clipnorm(1.0);
    let (mut a, mut b) = ([0.0f32], [0.0f32]);
    opt.apply(
        &mut [&mut a[..], &mut b[..]],
        &mut [&mut [3.0f32][..], &mut [4.0f32][..]],
    )
    .unwrap();
    assert!((a[0] + 0.6).abs() < 1e-6 && (b[0] + 0.8).abs() < 1e-6);
    // weight decay before the update: w = 1 - 1 * 0.1 * 0.5 = 0.95, then - 0.5 * 0 (g = 0).
    let mut opt = Optimizer::from(Sgd {
        learning_rate: 0.5,
        ..Default::default()
    })
    .with_weight_decay(0.1);
    let mut w = [1.0f32];
    opt.apply(&mut [&mut w[..]], &mut [&mut [0.0f32][..]])
        .unwrap();
    assert!((w[0] - 0.95).abs() < 1e-7);
}

#[test]
fn schedules_match_the_formulas() {
    let exp = LearningRateSchedule::ExponentialDecay {
        initial_learning_rate: 0.1,
        decay_steps: 100,
        decay_rate: 0.96,
        staircase: true,
    };
    // staircase: floor(250 / 100) = 2 -> 0.1 * 0.96^2 = 0.09216
    assert!((exp.at(250) - 0.09216).abs() < 1e-7);
    let pw = LearningRateSchedule::PiecewiseConstantDecay {
        boundaries: vec![10, 20],
        values: vec![1.0, 0.5, 0.1],
    };
    assert_eq!(
        [pw.at(0), pw.at(10), pw.at(11), pw.at(20), pw.at(21)],
        [1.0, 1.0, 0.5, 0.5, 0.1]
    );
    let cos = LearningRateSchedule::CosineDecay {
        initial_learning_rate: 0.0,
        decay_steps: 100,
        alpha: 0.1,
        warmup_target: Some(1.0),
        warmup_steps: 10,
    };
    // warm-up: 0 + (1 - 0) * 5 / 10 = 0.5; half-way through the decay: 0.9 * 0.5 + 0.1 = 0.55; the end: alpha.
    assert!((cos.at(5) - 0.5).abs() < 1e-7);
    assert!((cos.at(60) - 0.55).abs() < 1e-6);
    assert!((cos.at(1000) - 0.1).abs() < 1e-7);
    let inv = LearningRateSchedule::InverseTimeDecay {
        initial_learning_rate: 0.1,
        decay_steps: 1,
        decay_rate: 0.5,
        staircase: false,
    };
    // 0.1 / (1 + 0.5 * 2) = 0.05
    assert!((inv.at(2) - 0.05).abs() < 1e-8);
    // A schedule drives the optimizer's rate by step.
    let mut opt = Optimizer::from(Sgd::default()).with_schedule(pw);
    assert!(opt.set_learning_rate(0.3).is_err());
    let mut w = [0.0f32];
    for _ in 0..12 {
        opt.apply(&mut [&mut w[..]], &mut [&mut [1.0f32][..]])
            .unwrap();
    }
    // 11 steps at 1.0 (steps 0..=10) and one at 0.5.
    assert!((w[0] + 11.5).abs() < 1e-5);
}

#[test]
fn sample_and_class_weights_scale_the_loss() {
    let x = ndarray::Array2::<f32>::from_shape_fn((4, 2), |(i, j)| (i + j) as f32 * 0.1);
    let y = ndarray::Array2::<f32>::from_shape_fn((4, 2), |(i, j)| (i % 2 == j) as u8 as f32);
    let build = || {
        let mut m = Sequential::new().seed(1).input(2).dense(2, Softmax);
        m.compile(
            Sgd {
                learning_rate: 0.0,
                ..Default::default()
            },
            "categorical_crossentropy",
            &[] as &[Metric],
        )
        .unwrap();
        m
    };
    let per_sample: Vec<f32> = (0..4)
        .map(|i| {
            build()
                .evaluate(
                    x.slice(ndarray::s![i..i + 1, ..]),
                    y.slice(ndarray::s![i..i + 1, ..]),
                )
                .unwrap()["loss"]
        })
        .collect();
    let w = vec![1.0, 0.0, 2.0, 0.5];
    let h = build()
        .fit(
            &x,
            &y,
            FitOptions {
                batch_size: 4,
                shuffle: false,
                verbose: 0,
                sample_weight: Some(w.clone()),
                ..Default::default()
            },
        )
        .unwrap();
    // Keras: sum_i w_i l_i / N, N = 4 (not the sum of weights).
    let expected: f32 = per_sample.iter().zip(&w).map(|(l, w)| l * w).sum::<f32>() / 4.0;
    assert!((h.get("loss").unwrap()[0] - expected).abs() < 1e-6);
    // class 1 (rows 1 and 3, one-hot argmax) weighs 3.
    let cw = [(1usize, 3.0f32)].into_iter().collect();
    let h = build()
        .fit(
            &x,
            &y,
            FitOptions {
                batch_size: 4,
                shuffle: false,
                verbose: 0,
                class_weight: Some(cw),
                ..Default::default()
            },
        )
        .unwrap();
    let expected =
        (per_sample[0] + 3.0 * per_sample[1] + per_sample[2] + 3.0 * per_sample[3]) / 4.0;
    assert!((h.get("loss").unwrap()[0] - expected).abs() < 1e-6);
}
