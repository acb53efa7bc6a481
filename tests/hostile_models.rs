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
    let p = model.predict(&x.slice(ndarray::s![..3000, ..])).unwrap();
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
        .predict(&x.slice(ndarray::s![5..6, .., ..]).to_owned())
        .unwrap();
    assert_eq!(one.row(0), p.row(5));
    assert!(p.iter().all(|v| v.is_finite()) && p.iter().any(|&v| v > 0.0));
}
