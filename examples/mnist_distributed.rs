//! The reference MNIST MLP (784 -> Dense(512, relu) -> Dense(10, softmax),
//! rmsprop, batch 128, validation_split 0.25), trained data-parallel over MPI
//! processes (feature `mpi`; see the README's "Training on several machines").
//!
//! ```text
//! cargo build --release --features mpi --example mnist_distributed
//! mpirun -np 2 target/release/examples/mnist_distributed --epochs 3 --threads 1
//! mpirun -np 2 --hostfile hosts target/release/examples/mnist_distributed --epochs 10
//! ```
//! Every rank loads the data and builds the same model; rank 0 prints.
//! `--chunks N` cuts each batch into N pieces summed over a fixed tree, so
//! runs with the same N give bit-identical weights on 1, 2, 4, ... N
//! processes. `--checkpoint model.safetensors` saves the model after every
//! epoch (rank 0); after a failure, `--resume model.safetensors
//! --initial-epoch E` continues from it to the same final weights.
//! `--threads N` sets each process's rayon threads; `--json` ends with the
//! timing line of `../shared/bench/` (rank 0).

use std::time::Instant;

use horn::datasets::mnist;
use horn::distribute::Mpi;
use horn::prelude::*;
use horn::preprocessing::to_categorical;

mod common;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // MPI first: it must outlive every use of the DataParallel made from it.
    let mpi = Mpi::init()?;
    let args = common::parse_args("mnist_distributed", 10)?;
    let chief = mpi.rank() == 0;

    let data = mnist::load_default()?;
    let mut x_train = data.train.flat_scaled();
    let mut y_train = to_categorical(&data.train.labels(), Some(10))?;
    if let Some(n) = args.limit {
        let n = n.min(x_train.nrows());
        x_train = x_train.slice(ndarray::s![..n, ..]).to_owned();
        y_train = y_train.slice(ndarray::s![..n, ..]).to_owned();
    }
    let x_test = data.test.flat_scaled();
    let y_test = to_categorical(&data.test.labels(), Some(10))?;
    drop(data);

    let mut model = match &args.resume {
        Some(path) => Sequential::load(path)?,
        None => {
            let mut m = Sequential::new()
                .seed(args.seed)
                .input(784)
                .dense(512, Relu)
                .dense(10, Softmax);
            m.compile(
                RmsProp::default(),
                CategoricalCrossentropy::default(),
                &[Metric::Accuracy],
            )?;
            m
        }
    };
    if chief && !args.json {
        println!(
            "{} processes, {} rayon thread(s) each",
            mpi.size(),
            rayon::current_num_threads()
        );
        println!("{}", model.summary());
    }

    let mut dp = mpi.data_parallel()?;
    if let Some(c) = args.chunks {
        dp = dp.chunks(c);
    }
    let mut timer = common::EpochTimer::default();
    let mut checkpoint = args.checkpoint.as_ref().map(ModelCheckpoint::new);
    let mut callbacks: Vec<&mut dyn Callback> = vec![&mut timer];
    if let Some(c) = checkpoint.as_mut() {
        callbacks.push(c);
    }
    let fit_start = Instant::now();
    let history = model.fit_with_callbacks(
        &x_train,
        &y_train,
        FitOptions {
            epochs: args.epochs,
            batch_size: args.batch_size,
            validation_split: 0.25,
            seed: Some(args.seed),
            initial_epoch: args.initial_epoch,
            verbose: if args.json { 0 } else { args.verbose },
            distribution: Some(dp),
            ..Default::default()
        },
        &mut callbacks,
    )?;
    let fit_s = fit_start.elapsed().as_secs_f64();
    if chief {
        common::report(
            &model,
            &history,
            &args,
            &timer,
            fit_s,
            x_test.view(),
            &y_test,
        )?;
    }
    Ok(())
}
