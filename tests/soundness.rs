//! Memory safety and numeric integrity under careless or hostile calls
//! (issue "Soundness first"). Each reproducer from the report is here; these
//! tests also run in release mode and with the portable GEMM (`.ci/run`), so a
//! check that only debug assertions make would not pass them.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use horn::callbacks::{Callback, CallbackContext, EarlyStopping, LambdaCallback};
use horn::layers::{BackwardContext, Dense, ForwardContext, Layer};
use horn::metrics::{Metric, MetricState};
use horn::optimizers::LearningRateSchedule;
use horn::prelude::*;
use ndarray::{s, Array2, ArrayD};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Runs `f`, which must panic, and returns its message.
fn panic_message(f: impl FnOnce()) -> String {
    let err = catch_unwind(AssertUnwindSafe(f)).expect_err("expected a panic");
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn gemm_refuses_mismatched_shapes_before_writing() {
    // C is a 4x4 window of a larger buffer; a 4x8 product would run past it.
    let a = Array2::<f32>::ones((4, 3));
    let b = Array2::<f32>::ones((3, 8));
    for serial in [false, true] {
        let mut buf = Array2::<f32>::from_elem((8, 8), 7.0);
        let msg = panic_message(|| {
            let c = buf.slice_mut(s![..4, ..4]);
            if serial {
                horn::kernels::gemm_serial(a.view(), b.view(), c);
            } else {
                horn::kernels::gemm(a.view(), b.view(), c);
            }
        });
        assert!(msg.contains("shapes do not agree"), "{msg}");
        assert!(
            buf.iter().all(|&v| v == 7.0),
            "the kernel wrote before the check"
        );
    }
    // Inner dimensions that disagree.
    let b = Array2::<f32>::ones((5, 4));
    let mut c = Array2::<f32>::zeros((4, 4));
    let msg = panic_message(|| horn::kernels::gemm(a.view(), b.view(), c.view_mut()));
    assert!(msg.contains("A is 4x3, B is 5x4"), "{msg}");
}

#[test]
fn gemm_handles_empty_and_negative_stride_views() {
    let a = Array2::<f32>::from_shape_fn((7, 5), |(i, j)| (i * 5 + j) as f32);
    let b = Array2::<f32>::from_shape_fn((5, 3), |(i, j)| (i + 2 * j) as f32 - 3.0);
    let mut c = Array2::<f32>::zeros((7, 3));
    // Reversed rows of A and reversed columns of C.
    let ar = a.slice(s![..;-1, ..]);
    horn::kernels::gemm(ar, b.view(), c.slice_mut(s![.., ..;-1]));
    let expect = ar.dot(&b);
    assert_eq!(c.slice(s![.., ..;-1]), expect);
    // k = 0 gives zeros, m = 0 or n = 0 nothing.
    let mut c = Array2::<f32>::from_elem((7, 3), 1.0);
    horn::kernels::gemm(
        Array2::<f32>::zeros((7, 0)).view(),
        Array2::<f32>::zeros((0, 3)).view(),
        c.view_mut(),
    );
    assert!(c.iter().all(|&v| v == 0.0));
    horn::kernels::gemm_serial(
        Array2::<f32>::zeros((0, 4)).view(),
        Array2::<f32>::zeros((4, 3)).view(),
        Array2::<f32>::zeros((0, 3)).view_mut(),
    );
}

fn built_dense() -> Dense {
    let mut d = Dense::new(3, Relu);
    d.build(&horn::Shape::from(4), &mut StdRng::seed_from_u64(1))
        .unwrap();
    d
}

#[test]
fn dense_forward_by_hand_checks_every_view() {
    let d = built_dense();
    let mut rng = StdRng::seed_from_u64(0);
    let x = Array2::<f32>::ones((2, 4));
    // An output with too few columns, inside a buffer that would take the spill.
    let mut buf = Array2::<f32>::from_elem((2, 8), 5.0);
    let msg = panic_message(|| {
        let mut ctx = ForwardContext::new(false, &mut rng);
        d.forward(
            x.view(),
            buf.slice_mut(s![.., ..2]),
            Array2::zeros((2, 0)).view_mut(),
            &mut ctx,
        );
    });
    assert!(
        msg.contains("Dense: `y` has shape [2, 2], expected [2, 3]"),
        "{msg}"
    );
    assert!(buf.iter().all(|&v| v == 5.0));
    // An input of the wrong width.
    let msg = panic_message(|| {
        let mut rng = StdRng::seed_from_u64(0);
        let mut ctx = ForwardContext::new(false, &mut rng);
        d.forward(
            Array2::<f32>::ones((2, 5)).view(),
            Array2::zeros((2, 3)).view_mut(),
            Array2::zeros((2, 0)).view_mut(),
            &mut ctx,
        );
    });
    assert!(
        msg.contains("`x` has shape [2, 5], expected [2, 4]"),
        "{msg}"
    );
}

#[test]
fn dense_backward_by_hand_checks_every_view() {
    let d = built_dense();
    let x = Array2::<f32>::ones((2, 4));
    let y = Array2::<f32>::ones((2, 3));
    let mut grads = vec![vec![0.0; 12], vec![0.0; 3]];
    // dx with the wrong width.
    let msg = panic_message(|| {
        d.backward(
            x.view(),
            y.view(),
            Array2::zeros((2, 0)).view(),
            Array2::<f32>::ones((2, 3)).view_mut(),
            Some(Array2::zeros((2, 2)).view_mut()),
            &mut grads,
            &mut BackwardContext::new(false),
        )
    });
    assert!(
        msg.contains("`dx` has shape [2, 2], expected [2, 4]"),
        "{msg}"
    );
    // Gradient buffers of the wrong size.
    let mut short = vec![vec![0.0; 5], vec![0.0; 3]];
    let msg = panic_message(|| {
        d.backward(
            x.view(),
            y.view(),
            Array2::zeros((2, 0)).view(),
            Array2::<f32>::ones((2, 3)).view_mut(),
            None,
            &mut short,
            &mut BackwardContext::new(false),
        )
    });
    assert!(msg.contains("`grads`"), "{msg}");
    // dy with more rows than x.
    let msg = panic_message(|| {
        d.backward(
            x.view(),
            y.view(),
            Array2::zeros((2, 0)).view(),
            Array2::<f32>::ones((3, 3)).view_mut(),
            None,
            &mut grads,
            &mut BackwardContext::new(false),
        )
    });
    assert!(msg.contains("`dy` has shape [3, 3]"), "{msg}");
}

#[test]
fn callbacks_cannot_change_the_architecture_under_fit() {
    // The report swapped a 4-2-3 model for a 4-8-3 one from on_batch_begin and
    // crashed fit. The handle only allows shape-checked weights now: the same
    // attempt through it is an error, and fit returns it cleanly.
    struct Swap(Vec<ArrayD<f32>>);
    impl Callback for Swap {
        fn on_batch_begin(
            &mut self,
            batch: usize,
            ctx: &mut CallbackContext<'_>,
        ) -> horn::Result<()> {
            if batch == 1 {
                ctx.set_weights(&self.0)?;
            }
            Ok(())
        }
    }
    let bigger = Sequential::new()
        .seed(2)
        .input(4)
        .dense(8, Relu)
        .dense(3, Softmax)
        .get_weights()
        .unwrap();
    let mut m = Sequential::new()
        .seed(1)
        .input(4)
        .dense(2, Relu)
        .dense(3, Softmax);
    m.compile("adam", "categorical_crossentropy", &["accuracy"])
        .unwrap();
    let (x, y) = common::blobs(64, 4, 3);
    let e = m
        .fit_with_callbacks(
            &x,
            &y,
            FitOptions {
                batch_size: 8,
                verbose: 0,
                ..Default::default()
            },
            &mut [&mut Swap(bigger)],
        )
        .unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    // The model is intact and trains on.
    let h = m.fit(&x, &y, common::quiet(2)).unwrap();
    assert!(h.get("loss").unwrap().iter().all(|v| v.is_finite()));
}

#[test]
fn metric_state_accepts_strided_and_transposed_views() {
    let t = Array2::from_shape_vec((3, 2), vec![0.0f32, 1.0, 1.0, 0.0, 0.0, 1.0]).unwrap();
    let p = Array2::from_shape_vec((3, 2), vec![0.2f32, 0.8, 0.4, 0.6, 0.9, 0.1]).unwrap();
    let mut plain = MetricState::new(Metric::CategoricalAccuracy);
    plain.update(t.view(), p.view(), None);
    // The same predictions, stored transposed and read through `.t()`.
    let pt = p.t().to_owned();
    let mut strided = MetricState::new(Metric::CategoricalAccuracy);
    strided.update(t.view(), pt.t(), None);
    assert_eq!(plain.result(), strided.result());
    assert!((plain.result() - 1.0 / 3.0).abs() < 1e-7);
    // Every other row of a larger array.
    let big = ndarray::concatenate![ndarray::Axis(1), p, p];
    let mut cols = MetricState::new(Metric::MeanAbsoluteError);
    cols.update(t.view(), big.slice(s![.., ..;2]), None);
    let mut dense = MetricState::new(Metric::MeanAbsoluteError);
    dense.update(t.view(), big.slice(s![.., ..;2]).to_owned().view(), None);
    assert_eq!(cols.result(), dense.result());
}

#[test]
fn relu_propagates_nan_instead_of_hiding_it() {
    let mut y = [0.0f32; 3];
    Activation::Relu.forward(&[f32::NAN, -1.0, 2.0], &mut y, 3);
    assert!(y[0].is_nan());
    assert_eq!(&y[1..], &[0.0, 2.0]);
    // A model whose values overflow to inf predicts NaN, not plausible
    // numbers (a NaN weight itself is refused by set_weights, as by
    // loading).
    let mut m = Sequential::new()
        .seed(1)
        .input(3)
        .dense(4, Relu)
        .dense(2, Softmax);
    let mut w = m.get_weights().unwrap();
    w[1][[0]] = f32::NAN;
    assert!(m.set_weights(&w).is_err());
    w[1][[0]] = 0.0;
    w[0].fill(3e38);
    m.set_weights(&w).unwrap();
    let p = m.predict(Array2::<f32>::ones((2, 3))).unwrap();
    assert!(p.iter().all(|v| v.is_nan()), "{p}");
}

#[test]
fn non_finite_initializer_and_schedule_parameters_are_refused() {
    for init in [
        Initializer::Constant(f32::NAN),
        Initializer::Constant(f32::INFINITY),
        Initializer::RandomUniform {
            minval: f32::NEG_INFINITY,
            maxval: 1.0,
        },
        Initializer::RandomNormal {
            mean: 0.0,
            stddev: f32::INFINITY,
        },
        Initializer::Orthogonal { gain: f32::NAN },
    ] {
        let mut m = Sequential::new()
            .input(3)
            .add(Dense::new(2, Linear).kernel_initializer(init));
        let e = m.compile("sgd", "mse", &[] as &[Metric]).unwrap_err();
        assert!(e.to_string().contains("finite"), "{init:?}: {e}");
    }
    for (lr, rate) in [(-0.1, 0.5), (f32::NAN, 0.5), (0.1, f32::NAN), (0.1, -1.0)] {
        let sched = LearningRateSchedule::ExponentialDecay {
            initial_learning_rate: lr,
            decay_steps: 10,
            decay_rate: rate,
            staircase: false,
        };
        let mut m = Sequential::new().input(3).dense(1, Linear);
        let opt = Optimizer::from(Sgd::default()).with_schedule(sched);
        assert!(
            m.compile(opt, "mse", &[] as &[Metric]).is_err(),
            "{lr} {rate}"
        );
    }
}

#[test]
fn huge_layers_fail_with_an_error_instead_of_aborting() {
    // 2^40 x 2^40 overflows; 2^20 x 2^40 cannot be allocated. Neither aborts.
    for units in [1usize << 40, usize::MAX / 2] {
        let mut m = Sequential::new().input(1 << 20).dense(units, Linear);
        let e = m.compile("sgd", "mse", &[] as &[Metric]).unwrap_err();
        assert!(e.to_string().contains("shape"), "{e}");
    }
}

#[test]
fn orthogonal_initializer_is_orthogonal_for_wide_kernels_too() {
    let w = Initializer::Orthogonal { gain: 2.0 }
        .sample(&[10, 30], &mut StdRng::seed_from_u64(3))
        .unwrap();
    let w: Array2<f32> = w.into_dimensionality().unwrap();
    let g = w.dot(&w.t());
    for i in 0..10 {
        for j in 0..10 {
            let e = if i == j { 4.0 } else { 0.0 };
            assert!((g[[i, j]] - e).abs() < 1e-4, "{i},{j}: {}", g[[i, j]]);
        }
    }
}

#[test]
fn clip_options_conflict_like_keras() {
    let mut m = Sequential::new().input(3).dense(1, Linear);
    for opt in [
        Optimizer::from(Sgd::default())
            .with_clipvalue(1.0)
            .with_clipnorm(1.0),
        Optimizer::from(Sgd::default())
            .with_clipvalue(1.0)
            .with_global_clipnorm(1.0),
        Optimizer::from(Sgd::default())
            .with_clipnorm(1.0)
            .with_global_clipnorm(1.0),
    ] {
        let e = m.compile(opt, "mse", &[] as &[Metric]).unwrap_err();
        assert!(e.to_string().contains("only one of"), "{e}");
    }
}

#[test]
fn optimizer_state_belongs_to_its_weights() {
    let mut opt = Optimizer::from(Adam::default());
    let (mut w, mut g) = (vec![1.0f32; 4], vec![0.5f32; 4]);
    opt.apply(&mut [&mut w[..]], &mut [&mut g[..]]).unwrap();
    // Other sizes, or another count: refused, not silently reset.
    let (mut w2, mut g2) = (vec![1.0f32; 5], vec![0.5f32; 5]);
    let e = opt
        .apply(&mut [&mut w2[..]], &mut [&mut g2[..]])
        .unwrap_err();
    assert!(e.to_string().contains("built with"), "{e}");
    assert!(opt
        .apply(
            &mut [&mut w[..], &mut w2[..]],
            &mut [&mut g[..], &mut g2[..]]
        )
        .is_err());
    assert_eq!(opt.iterations(), 1);
    opt.reset();
    opt.apply(&mut [&mut w2[..]], &mut [&mut g2[..]]).unwrap();
}

/// Counts `on_train_end` calls.
#[derive(Default)]
struct Ends(usize);
impl Callback for Ends {
    fn on_train_end(&mut self, _logs: &Logs, _ctx: &mut CallbackContext<'_>) -> horn::Result<()> {
        self.0 += 1;
        Ok(())
    }
}

#[test]
fn divergence_still_runs_on_train_end_and_restores_the_best_weights() {
    let (x, y) = common::blobs(96, 4, 8);
    let mut m = Sequential::new()
        .seed(3)
        .input(4)
        .dense(8, Relu)
        .dense(3, Softmax);
    m.compile("adam", "categorical_crossentropy", &["accuracy"])
        .unwrap();
    let snapshots = std::cell::RefCell::new(Vec::new());
    // Blow the weights up at the start of epoch 3, so the next batch diverges.
    struct Explode;
    impl Callback for Explode {
        fn on_epoch_begin(
            &mut self,
            epoch: usize,
            ctx: &mut CallbackContext<'_>,
        ) -> horn::Result<()> {
            if epoch == 3 {
                let w: Vec<ArrayD<f32>> = ctx
                    .model()
                    .get_weights()?
                    .into_iter()
                    .map(|w| w.mapv(|v| v * 1e30 + 1e30))
                    .collect();
                ctx.set_weights(&w)?;
            }
            Ok(())
        }
    }
    let mut record = LambdaCallback::default().on_epoch_end(|_, logs: &Logs| {
        snapshots.borrow_mut().push(logs["loss"]);
    });
    let mut es = EarlyStopping::default()
        .monitor("loss")
        .patience(10)
        .restore_best_weights(true);
    let mut ends = Ends::default();
    let weights_by_epoch = std::cell::RefCell::new(Vec::new());
    struct Keep<'a>(&'a std::cell::RefCell<Vec<Vec<ArrayD<f32>>>>);
    impl Callback for Keep<'_> {
        fn on_epoch_end(
            &mut self,
            _e: usize,
            _l: &mut Logs,
            ctx: &mut CallbackContext<'_>,
        ) -> horn::Result<()> {
            self.0.borrow_mut().push(ctx.model().get_weights()?);
            Ok(())
        }
    }
    let e = m
        .fit_with_callbacks(
            &x,
            &y,
            FitOptions {
                epochs: 6,
                batch_size: 16,
                verbose: 0,
                seed: Some(1),
                ..Default::default()
            },
            &mut [
                &mut Explode,
                &mut record,
                &mut Keep(&weights_by_epoch),
                &mut es,
                &mut ends,
            ],
        )
        .unwrap_err();
    assert!(matches!(e, Error::Diverged { epoch: 4, .. }), "{e}");
    assert_eq!(ends.0, 1, "on_train_end must run on the error path");
    drop(record);
    let losses = snapshots.into_inner();
    assert_eq!(losses.len(), 3);
    let best = (0..3).fold(0, |b, i| if losses[i] < losses[b] { i } else { b });
    assert_eq!(m.get_weights().unwrap(), weights_by_epoch.borrow()[best]);
    assert!(m.predict(&x).unwrap().iter().all(|v| v.is_finite()));
}

#[test]
fn a_callback_error_still_runs_on_train_end() {
    struct Fail;
    impl Callback for Fail {
        fn on_epoch_end(
            &mut self,
            epoch: usize,
            _l: &mut Logs,
            _c: &mut CallbackContext<'_>,
        ) -> horn::Result<()> {
            if epoch == 1 {
                return Err(Error::Data("callback failed".into()));
            }
            Ok(())
        }
    }
    let (x, y) = common::blobs(40, 4, 2);
    let mut m = Sequential::new().seed(1).input(4).dense(3, Softmax);
    m.compile("sgd", "categorical_crossentropy", &["accuracy"])
        .unwrap();
    let mut ends = Ends::default();
    let e = m
        .fit_with_callbacks(&x, &y, common::quiet(5), &mut [&mut Fail, &mut ends])
        .unwrap_err();
    assert!(e.to_string().contains("callback failed"));
    assert_eq!(ends.0, 1);
}

#[test]
fn an_epoch_stopped_mid_way_is_marked_partial() {
    struct StopAt(usize);
    impl Callback for StopAt {
        fn on_batch_end(
            &mut self,
            b: usize,
            _l: &Logs,
            ctx: &mut CallbackContext<'_>,
        ) -> horn::Result<()> {
            if b == self.0 {
                ctx.stop_training();
            }
            Ok(())
        }
    }
    let (x, y) = common::blobs(80, 4, 2);
    let mut m = Sequential::new().seed(1).input(4).dense(3, Softmax);
    m.compile("sgd", "categorical_crossentropy", &["accuracy"])
        .unwrap();
    let opts = || FitOptions {
        epochs: 3,
        batch_size: 10,
        validation_split: 0.25,
        verbose: 0,
        ..Default::default()
    };
    let h = m
        .fit_with_callbacks(&x, &y, opts(), &mut [&mut StopAt(2)])
        .unwrap();
    assert_eq!((h.len(), h.partial_epoch), (1, Some(0)));
    // A callback stop still validates the epoch, as Keras does.
    assert!(h.get("val_loss").unwrap()[0].is_finite());
    // Stopping on the last batch of an epoch leaves it complete.
    let h = m
        .fit_with_callbacks(&x, &y, opts(), &mut [&mut StopAt(5)])
        .unwrap();
    assert_eq!((h.len(), h.partial_epoch), (1, None));
    assert!(h.to_json().contains("\"partial_epoch\":null"));
}

#[test]
fn to_categorical_refuses_absurd_labels_without_allocating() {
    use horn::preprocessing::to_categorical;
    let e = to_categorical(&[1 << 40], None).unwrap_err();
    assert!(e.to_string().contains("num_classes"), "{e}");
    assert!(to_categorical(&[usize::MAX], None).is_err());
    assert!(to_categorical(&[0; 3], Some(usize::MAX)).is_err());
    assert_eq!(to_categorical(&[2, 0], None).unwrap().dim(), (2, 3));
}
