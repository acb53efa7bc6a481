//! The reference workload: MNIST, 784 -> Dense(512, relu) -> Dense(10, softmax),
//! rmsprop, categorical cross-entropy, 10 epochs, batch 128, validation_split 0.25.
//!
//! ```text
//! cargo run --release --example mnist
//! cargo run --release --example mnist -- --epochs 3 --batch-size 128 --threads 2 --seed 1 --json
//! ```
//! `--show-digits N` draws the first N test digits with their true and predicted
//! labels (`digits.png`, the first one in the terminal), `--plot-model model.svg`
//! (or `.dot`) the model's diagram, `--confusion confusion.png` the test set's
//! confusion matrix.
//! `--limit N` trains on the first N training rows (quick runs), `--history-csv F`
//! writes the History, `--plot history.svg` plots it (R's `plot(history)`), `--json` ends with one line of timings in the format of the
//! reference scripts in `../shared/bench/` (for `compare.sh`).
//! `--dense` maps the pixels to `2x - 1` (a dense input: no zeros for the
//! kernels to skip), the workload of `scripts/torch_mnist_dense.py` and
//! `scripts/compare_dense.sh`.

use std::time::Instant;

use horn::datasets::mnist;
use horn::prelude::*;
use horn::preprocessing::to_categorical;

mod common;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = common::parse_args("mnist", 10)?;

    // dataset_mnist(), array_reshape(x, c(n, 784)) / 255, to_categorical(y, 10)
    let data = mnist::load_default()?;
    let mut x_train = data.train.flat_scaled();
    let mut y_train = to_categorical(&data.train.labels(), Some(10))?;
    if let Some(n) = args.limit {
        let n = n.min(x_train.nrows());
        x_train = x_train.slice(ndarray::s![..n, ..]).to_owned();
        y_train = y_train.slice(ndarray::s![..n, ..]).to_owned();
    }
    let mut x_test = data.test.flat_scaled();
    if args.dense {
        x_train.mapv_inplace(|v| 2.0 * v - 1.0);
        x_test.mapv_inplace(|v| 2.0 * v - 1.0);
    }
    let test_labels = data.test.labels();
    let y_test = to_categorical(&test_labels, Some(10))?;
    drop(data);

    let mut model = Sequential::new()
        .seed(args.seed)
        .input(784)
        .dense(512, Relu)
        .dense(10, Softmax);
    model.compile(
        RmsProp::default(),
        CategoricalCrossentropy::default(),
        &[Metric::Accuracy],
    )?;
    if !args.json {
        println!("{}", model.summary());
    }

    let mut timer = common::EpochTimer::default();
    let fit_start = Instant::now();
    let history = model.fit_with_callbacks(
        &x_train,
        &y_train,
        FitOptions {
            epochs: args.epochs,
            batch_size: args.batch_size,
            validation_split: 0.25,
            seed: Some(args.seed),
            verbose: if args.json { 0 } else { args.verbose },
            ..Default::default()
        },
        &mut [&mut timer],
    )?;
    let fit_s = fit_start.elapsed().as_secs_f64();
    common::report(
        &model,
        &history,
        &args,
        &timer,
        fit_s,
        x_test.view(),
        &y_test,
    )?;
    common::pictures(&model, &args, x_test.view(), &test_labels)
}
