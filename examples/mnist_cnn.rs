//! Keras' "Simple MNIST convnet": Conv2D(32, 3, relu) -> MaxPooling2D(2) ->
//! Conv2D(64, 3, relu) -> MaxPooling2D(2) -> Flatten -> Dropout(0.5) ->
//! Dense(10, softmax), adam, batch 128, validation_split 0.25 (3 epochs by
//! default, as the reference scripts).
//!
//! ```text
//! cargo run --release --example mnist_cnn
//! cargo run --release --example mnist_cnn -- --epochs 3 --threads 2 --json
//! ```
//! Flags as the `mnist` example: `--epochs`, `--batch-size`, `--threads`,
//! `--seed`, `--limit N`, `--history-csv F`, `--plot F.svg`, `--json`.

use std::time::Instant;

use horn::datasets::mnist;
use horn::prelude::*;
use horn::preprocessing::to_categorical;

mod common;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = common::parse_args("mnist_cnn", 3)?;

    // x_train.astype("float32") / 255, np.expand_dims(x, -1): (n, 28, 28, 1)
    let data = mnist::load_default()?;
    let mut x_train = data.train.images_scaled();
    let mut y_train = to_categorical(&data.train.labels(), Some(10))?;
    if let Some(n) = args.limit {
        let n = n.min(y_train.nrows());
        x_train = x_train.slice(ndarray::s![..n, .., .., ..]).to_owned();
        y_train = y_train.slice(ndarray::s![..n, ..]).to_owned();
    }
    let x_test = data.test.images_scaled();
    let test_labels = data.test.labels();
    let y_test = to_categorical(&test_labels, Some(10))?;
    drop(data);

    let mut model = Sequential::new()
        .seed(args.seed)
        .input_shape(&[28, 28, 1])
        .conv2d(32, 3, Relu)
        .max_pooling2d(2)
        .conv2d(64, 3, Relu)
        .max_pooling2d(2)
        .flatten()
        .dropout(0.5)
        .dense(10, Softmax);
    model.compile(
        Adam::default(),
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
