//! A training step allocates nothing in steady state: the batch buffers live in
//! the workspace, the running logs are updated in place, the matrix products
//! reuse thread-local packing buffers. Counted with a counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use horn::prelude::*;
use ndarray::Array2;

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// (allocations, bytes) of a 1-epoch fit over `rows` rows in batches of 64.
fn fit_cost(model: &mut Sequential, rows: usize) -> (usize, usize) {
    let mut shape = vec![rows];
    shape.extend_from_slice(model.get_input_shape().unwrap().dims());
    let width: usize = shape[1..].iter().product();
    let x = Array2::from_shape_fn((rows, width), |(i, j)| ((i * 7 + j) % 17) as f32 / 17.0)
        .into_shape_with_order(ndarray::IxDyn(&shape))
        .unwrap();
    let y = Array2::from_shape_fn((rows, 10), |(i, j)| (i % 10 == j) as u8 as f32);
    let opts = || FitOptions {
        epochs: 1,
        batch_size: 64,
        verbose: 0,
        seed: Some(1),
        ..Default::default()
    };
    model.fit(&x, &y, opts()).unwrap(); // warm-up: slots, thread-local buffers
    let (a0, b0) = (ALLOCS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst));
    model.fit(&x, &y, opts()).unwrap();
    (
        ALLOCS.load(Ordering::SeqCst) - a0,
        BYTES.load(Ordering::SeqCst) - b0,
    )
}

/// One test for the three models: the allocation counter is global, so two tests
/// running at once would count each other's allocations.
#[test]
fn training_steps_do_not_allocate() {
    let mlp = Sequential::new()
        .seed(1)
        .input(200)
        .dense(256, Relu)
        .dropout(0.2)
        .dense(10, Softmax);
    check_steps_do_not_allocate(mlp, RmsProp::default().into());
    let cnn = Sequential::new()
        .seed(1)
        .input_shape(&[10, 10, 2])
        .conv2d(8, 3, Relu)
        .batch_normalization()
        .max_pooling2d(2)
        .add(Conv2D::new(8, 3, Relu).padding(Padding::Same))
        .add(LayerNormalization::new())
        .flatten()
        .dropout(0.2)
        .dense(10, Softmax);
    check_steps_do_not_allocate(cnn, Adam::default().into());
    let rnn = Sequential::new()
        .seed(1)
        .input_shape(&[12, 4])
        .add(LSTM::new(16).return_sequences(true).dropout(0.1))
        .add(Bidirectional::new(GRU::new(8)))
        .dense(10, Softmax);
    check_steps_do_not_allocate(rnn, Adam::default().into());
    functional_steps_do_not_allocate();
    #[cfg(feature = "distribute")]
    data_parallel_steps_do_not_allocate();
}

/// A data-parallel rank's step (feature `distribute`): its chunks, the tree
/// that sums them (buffers swapped, not copied), the batch's rows and metrics.
/// One rank, so that no transport is counted (the thread transport allocates
/// per message; MPI's exchanges use the buffers in place).
#[cfg(feature = "distribute")]
fn data_parallel_steps_do_not_allocate() {
    use horn::distribute::{local_group, DataParallel};
    if !own_kernel() {
        return;
    }
    let dp = DataParallel::new(local_group(1).remove(0))
        .unwrap()
        .chunks(4)
        .verify_weights(false);
    let mut model = Sequential::new()
        .seed(1)
        .input(200)
        .dense(64, Relu)
        .batch_normalization()
        .dropout(0.2)
        .dense(10, Softmax);
    model
        .compile(
            Adam::default(),
            CategoricalCrossentropy::default(),
            &[Metric::Accuracy],
        )
        .unwrap();
    let mut cost = |rows: usize| {
        let x = Array2::from_shape_fn((rows, 200), |(i, j)| ((i * 7 + j) % 17) as f32 / 17.0);
        let y = Array2::from_shape_fn((rows, 10), |(i, j)| (i % 10 == j) as u8 as f32);
        let opts = || FitOptions {
            epochs: 1,
            batch_size: 64,
            verbose: 0,
            seed: Some(1),
            distribution: Some(dp.clone()),
            ..Default::default()
        };
        model.fit(&x, &y, opts()).unwrap();
        let (a0, b0) = (ALLOCS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst));
        model.fit(&x, &y, opts()).unwrap();
        (
            ALLOCS.load(Ordering::SeqCst) - a0,
            BYTES.load(Ordering::SeqCst) - b0,
        )
    };
    let (a10, b10) = cost(640);
    let (a40, b40) = cost(2560);
    let per_step = (a40 as f64 - a10 as f64) / 30.0;
    let bytes_per_step = (b40 as f64 - b10 as f64) / 30.0;
    println!("data-parallel, per step: {per_step} allocations, {bytes_per_step} bytes");
    assert!(bytes_per_step < 1024.0, "{bytes_per_step} bytes per step");
    assert!(per_step <= 4.0, "{per_step} allocations per step");
}

/// A functional model: two inputs, a shared layer, fan-out, merges (one
/// with scratch), two outputs with a fused and a plain loss.
fn functional_steps_do_not_allocate() {
    if !own_kernel() {
        return;
    }
    let mut g = Graph::with_seed(1);
    let a = g.input("a", &[20]);
    let b = g.input("b", &[20]);
    let shared = g.layer(Dense::new(16, Relu));
    let ha = g.call(shared, a);
    let hb = g.call(shared, b);
    let prod = g.call(Multiply::new(), [ha, hb]);
    let cos = g.call(Dot::new(1).normalize(true), [ha, hb]);
    let joined = g.call(Concatenate::new(), [prod, cos, ha]);
    let joined = g.call(Dropout::new(0.1), joined);
    let class = g.call_named("class", Dense::new(10, Softmax), joined);
    let value = g.call_named("value", Dense::new(1, Linear), joined);
    let mut model = Model::new(g, [a, b], [class, value]).unwrap();
    model
        .compile(
            Adam::default(),
            ModelCompile::new()
                .output_loss("class", "categorical_crossentropy")
                .output_loss("value", "mse")
                .metrics("class", &["accuracy"]),
        )
        .unwrap();
    let cost = |model: &mut Model, rows: usize| {
        let x = Array2::from_shape_fn((rows, 20), |(i, j)| ((i * 7 + j) % 17) as f32 / 17.0);
        let x2 = Array2::from_shape_fn((rows, 20), |(i, j)| ((i * 3 + j) % 13) as f32 / 13.0);
        let y = Array2::from_shape_fn((rows, 10), |(i, j)| (i % 10 == j) as u8 as f32);
        let v = Array2::from_shape_fn((rows, 1), |(i, _)| (i % 5) as f32);
        let opts = || FitOptions {
            epochs: 1,
            batch_size: 64,
            verbose: 0,
            seed: Some(1),
            ..Default::default()
        };
        model.fit([&x, &x2], [&y, &v], opts()).unwrap();
        let (a0, b0) = (ALLOCS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst));
        model.fit([&x, &x2], [&y, &v], opts()).unwrap();
        (
            ALLOCS.load(Ordering::SeqCst) - a0,
            BYTES.load(Ordering::SeqCst) - b0,
        )
    };
    let (a10, b10) = cost(&mut model, 640);
    let (a40, b40) = cost(&mut model, 2560);
    let per_step = (a40 as f64 - a10 as f64) / 30.0;
    let bytes_per_step = (b40 as f64 - b10 as f64) / 30.0;
    println!("functional, per step: {per_step} allocations, {bytes_per_step} bytes");
    assert!(bytes_per_step < 1024.0, "{bytes_per_step} bytes per step");
    assert!(per_step <= 4.0, "{per_step} allocations per step");
}

/// Whether horn's own GEMM runs (the portable fallback allocates per
/// product).
fn own_kernel() -> bool {
    #[cfg(target_arch = "x86_64")]
    let own = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    let own = false;
    own && !horn::kernels::portable_forced()
}

fn check_steps_do_not_allocate(mut model: Sequential, optimizer: Optimizer) {
    model
        .compile(
            optimizer,
            CategoricalCrossentropy::default(),
            &[Metric::Accuracy],
        )
        .unwrap();
    // The portable fallback GEMM (matrixmultiply, on CPUs without AVX2+FMA or
    // with HORN_PORTABLE_GEMM=1) allocates its packing buffers inside every
    // product; horn's own kernel reuses per-thread buffers. Only the latter is
    // allocation-free.
    if !own_kernel() {
        eprintln!("skipped: the portable GEMM allocates per product");
        return;
    }
    // 10 steps against 40 steps: whatever grows with the number of steps is
    // allocated per step.
    let (a10, b10) = fit_cost(&mut model, 640);
    let (a40, b40) = fit_cost(&mut model, 2560);
    let per_step = (a40 as f64 - a10 as f64) / 30.0;
    let bytes_per_step = (b40 as f64 - b10 as f64) / 30.0;
    println!(
        "per step: {per_step} allocations, {bytes_per_step} bytes; per fit: {a10} allocations"
    );
    // One 64-row input batch alone is 51 KB; a step allocates none of its data.
    assert!(bytes_per_step < 1024.0, "{bytes_per_step} bytes per step");
    assert!(per_step <= 4.0, "{per_step} allocations per step");
}
