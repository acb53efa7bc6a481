//! GEMM throughput at the MNIST model's training-step shapes: horn's own kernel,
//! ndarray's matrixmultiply and the `gemm` crate, each on one thread (horn splits
//! the output over threads itself), then horn's parallel split on all threads.
//! The last three rows use real MNIST images (81% zeros), where horn's packing
//! skips the zero steps: their figures are dense-equivalent GFLOP/s (the dense
//! product's flops over the time taken). The `rows:` and `cols:` rows are one
//! of two data-parallel ranks' share of the first layer's products (half the
//! batch's rows, or all rows and half the columns): a product half the size
//! runs at lower GFLOP/s (packing and stores do not halve), which is what
//! keeps two processes below twice one process's speed.
//!
//! `cargo bench --bench gemm_shapes`

use std::time::Instant;

use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array2, ArrayView2, ArrayViewMut2};

fn gemm_crate(a: ArrayView2<f32>, b: ArrayView2<f32>, mut c: ArrayViewMut2<f32>) {
    let (m, k) = a.dim();
    let n = b.ncols();
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            c.strides()[1],
            c.strides()[0],
            false,
            a.as_ptr(),
            a.strides()[1],
            a.strides()[0],
            b.as_ptr(),
            b.strides()[1],
            b.strides()[0],
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Best of 7 rounds of 10 calls: the machines are shared, and the minimum is the
/// figure least disturbed by other work.
fn time(mut f: impl FnMut()) -> f64 {
    f();
    (0..7)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..10 {
                f();
            }
            t.elapsed().as_secs_f64() / 10.0
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let x = Array2::<f32>::from_shape_fn((128, 784), |(i, j)| ((i * 7 + j) % 13) as f32 * 0.01);
    let w1 = Array2::<f32>::from_shape_fn((784, 512), |(i, j)| ((i + j * 3) % 11) as f32 * 0.01);
    let dh = Array2::<f32>::from_shape_fn((128, 512), |(i, j)| ((i * 5 + j) % 7) as f32 * 0.01);
    let h = dh.clone();
    let w2 = Array2::<f32>::from_shape_fn((512, 10), |(i, j)| ((i + j) % 5) as f32 * 0.01);
    let dy = Array2::<f32>::from_shape_fn((128, 10), |(i, j)| ((i + 2 * j) % 3) as f32 * 0.01);
    let xt = Array2::<f32>::from_shape_fn((10000, 784), |(i, j)| ((i * 7 + j) % 13) as f32 * 0.01);
    let mnist = horn::datasets::mnist::load_default()
        .expect("MNIST ships in data/mnist")
        .test
        .flat_scaled();
    let mx = mnist.slice(s![..128, ..]);
    let mx_half = mnist.slice(s![..64, ..]);
    // The MNIST convnet's products at batch 128: patches of the second
    // convolution (121 positions x 288) and of the first (676 x 9).
    let p2 = Array2::<f32>::from_shape_fn((15488, 288), |(i, j)| ((i * 3 + j) % 17) as f32 * 0.01);
    let k2 = Array2::<f32>::from_shape_fn((288, 64), |(i, j)| ((i + j * 5) % 9) as f32 * 0.01);
    let dz2 = Array2::<f32>::from_shape_fn((15488, 64), |(i, j)| ((i + j) % 7) as f32 * 0.01);
    let p1 = Array2::<f32>::from_shape_fn((86528, 9), |(i, j)| ((i + j) % 5) as f32 * 0.1);
    let k1 = Array2::<f32>::from_shape_fn((9, 32), |(i, j)| ((i + j) % 3) as f32 * 0.1);
    let dz1 = Array2::<f32>::from_shape_fn((86528, 32), |(i, j)| ((i + j) % 7) as f32 * 0.01);
    let cases: Vec<(&str, ArrayView2<f32>, ArrayView2<f32>)> = vec![
        ("conv2 P[15488x288] @ K", p2.view(), k2.view()),
        ("conv2 P^T @ dZ[15488x64]", p2.t(), dz2.view()),
        ("conv2 dZ @ K^T[64x288]", dz2.view(), k2.t()),
        ("conv1 P[86528x9] @ K[9x32]", p1.view(), k1.view()),
        ("conv1 P^T @ dZ[86528x32]", p1.t(), dz1.view()),
        ("X[128x784] @ W1[784x512]", x.view(), w1.view()),
        ("X^T[784x128] @ dH[128x512]", x.t(), dh.view()),
        ("dH[128x512] @ W1^T[512x784]", dh.view(), w1.t()),
        ("H[128x512] @ W2[512x10]", h.view(), w2.view()),
        ("H^T[512x128] @ dY[128x10]", h.t(), dy.view()),
        ("dY[128x10] @ W2^T[10x512]", dy.view(), w2.t()),
        ("X[10000x784] @ W1[784x512]", xt.view(), w1.view()),
        ("MNIST X[128x784] @ W1", mx, w1.view()),
        ("MNIST X^T[784x128] @ dH", mx.t(), dh.view()),
        ("MNIST X[10000x784] @ W1", mnist.view(), w1.view()),
        // One of two data-parallel ranks: half the rows (each rank its rows),
        // or all rows and half the columns (the first layer split by columns).
        ("rows: MNIST X[64x784] @ W1", mx_half, w1.view()),
        ("cols: MNIST X @ W1[784x256]", mx, w1.slice(s![.., ..256])),
        (
            "rows: MNIST X^T[784x64] @ dH",
            mx_half.t(),
            dh.slice(s![..64, ..]),
        ),
        (
            "cols: X^T[784x64] @ dH[64x256]",
            mx_half.t(),
            dh.slice(s![..64, ..256]),
        ),
    ];
    let pool = rayon::ThreadPoolBuilder::new()
        .build()
        .expect("a rayon pool");
    println!(
        "{:<30} {:>14} {:>16} {:>14} {:>18}",
        "GFLOP/s", "horn 1 thread", "matrixmultiply", "gemm crate", "horn all threads"
    );
    for (name, a, b) in cases {
        let mut c = Array2::<f32>::zeros((a.nrows(), b.ncols()));
        let flops = 2.0 * (a.nrows() * a.ncols() * b.ncols()) as f64;
        let t_mm = time(|| general_mat_mul(1.0, &a, &b, 0.0, &mut c));
        let t_g = time(|| gemm_crate(a, b, c.view_mut()));
        let t_h = time(|| horn::kernels::gemm_serial(a, b, c.view_mut()));
        // Inside the pool, as `fit` runs a step: the calling thread is a worker.
        let t_p = pool.install(|| time(|| horn::kernels::gemm(a, b, c.view_mut())));
        let g = |t: f64| flops / t / 1e9;
        println!(
            "{name:<30} {:>14.1} {:>16.1} {:>14.1} {:>18.1}",
            g(t_h),
            g(t_mm),
            g(t_g),
            g(t_p)
        );
    }
}
