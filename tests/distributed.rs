//! Data-parallel `fit` with ranks as threads (`local_group`): the same
//! engine as over MPI (tests/mpi.rs runs it under `mpirun`), without MPI.
//! Feature `distribute` (CI runs these with `--features mpi`).
#![cfg(feature = "distribute")]

mod common;

use std::time::Duration;

use horn::distribute::{local_group, DataParallel, LocalCommunicator};
use horn::prelude::*;
use ndarray::{Array2, ArrayD};

/// A model with every part the data-parallel step treats apart: a
/// regularizer, batch statistics, dropout, fused softmax + cross-entropy.
fn model() -> Sequential {
    let mut m = Sequential::new()
        .seed(5)
        .input(6)
        .add(Dense::new(16, Relu).kernel_regularizer(Regularizer::l2(1e-3)))
        .batch_normalization()
        .dropout(0.25)
        .dense(3, Softmax);
    m.compile(
        Adam::default(),
        CategoricalCrossentropy::default(),
        &[Metric::Accuracy],
    )
    .unwrap();
    m
}

fn data() -> (Array2<f32>, Array2<f32>) {
    common::blobs(150, 6, 9)
}

/// Options with an uneven last batch (150 rows: 120 train in batches of 22).
fn options(epochs: usize, dp: Option<DataParallel>) -> FitOptions {
    FitOptions {
        epochs,
        batch_size: 22,
        validation_split: 0.2,
        verbose: 0,
        seed: Some(11),
        distribution: dp,
        ..Default::default()
    }
}

/// Runs `f` once per rank of a group of `n`, each on its own thread.
fn on_ranks<T: Send>(n: usize, f: impl Fn(LocalCommunicator) -> T + Sync) -> Vec<T> {
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = local_group(n)
            .into_iter()
            .map(|c| s.spawn(move || f(c)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("rank thread panicked"))
            .collect()
    })
}

type Run = (History, Vec<ArrayD<f32>>);

fn fit_on(n: usize, chunks: Option<usize>, epochs: usize) -> Vec<Run> {
    let (x, y) = data();
    on_ranks(n, |comm| {
        let mut dp = DataParallel::new(comm).unwrap().verify_weights(true);
        if let Some(c) = chunks {
            dp = dp.chunks(c);
        }
        let mut m = model();
        let h = m.fit(&x, &y, options(epochs, Some(dp))).unwrap();
        (h, m.get_weights().unwrap())
    })
}

fn bits(w: &[ArrayD<f32>]) -> Vec<u32> {
    w.iter()
        .flat_map(|a| a.iter().map(|v| v.to_bits()))
        .collect()
}

#[test]
fn one_rank_with_one_chunk_is_exactly_plain_fit() {
    let (x, y) = data();
    let mut plain = model();
    let h = plain.fit(&x, &y, options(3, None)).unwrap();
    let runs = fit_on(1, None, 3);
    assert_eq!(runs[0].0, h);
    assert_eq!(bits(&runs[0].1), bits(&plain.get_weights().unwrap()));
}

#[test]
fn same_chunks_give_identical_weights_on_1_2_and_4_ranks() {
    let one = fit_on(1, Some(4), 3);
    let two = fit_on(2, Some(4), 3);
    let four = fit_on(4, Some(4), 3);
    let reference = bits(&one[0].1);
    for (ranks, runs) in [(2, &two), (4, &four)] {
        for (r, (h, w)) in runs.iter().enumerate() {
            assert_eq!(bits(w), reference, "{ranks} ranks, rank {r}: weights");
            assert_eq!(*h, one[0].0, "{ranks} ranks, rank {r}: History");
        }
    }
    // Chunks change the rounding of the summed gradient, not the training.
    let plain = fit_on(1, None, 3);
    assert_ne!(bits(&plain[0].1), reference);
}

#[test]
fn history_is_the_same_on_every_rank_and_close_to_one_process() {
    let (x, y) = data();
    let mut plain = model();
    let runs = fit_on(2, None, 15);
    assert_eq!(runs[0].0, runs[1].0);
    assert_eq!(bits(&runs[0].1), bits(&runs[1].1));
    let h = plain.fit(&x, &y, options(15, None)).unwrap();
    assert_eq!(runs[0].0.params, h.params);
    // Dropout draws per chunk, so the two runs differ as two seeds do: the
    // first epoch's figures are close, and both learn.
    for key in ["loss", "accuracy", "val_loss", "val_accuracy"] {
        let (a, b) = (runs[0].0.get(key).unwrap(), h.get(key).unwrap());
        assert_eq!(a.len(), 15, "{key}");
        assert!((a[0] - b[0]).abs() < 0.15, "{key}: {a:?} vs {b:?}");
    }
    for h in [&runs[0].0, &h] {
        let loss = h.get("loss").unwrap();
        assert!(loss[14] < 0.8 * loss[0], "{h}");
        assert!(h.get("val_accuracy").unwrap()[14] > 0.8, "{h}");
    }
}

#[test]
fn without_dropout_two_ranks_follow_one_process_to_rounding() {
    let (x, y) = data();
    let build = || {
        let mut m = Sequential::new()
            .seed(5)
            .input(6)
            .dense(16, Relu)
            .dense(3, Softmax);
        m.compile(
            RmsProp::default(),
            CategoricalCrossentropy::default(),
            &[Metric::Accuracy],
        )
        .unwrap();
        m
    };
    let mut plain = build();
    let h = plain.fit(&x, &y, options(4, None)).unwrap();
    let runs = on_ranks(2, |comm| {
        let mut m = build();
        let dp = DataParallel::new(comm).unwrap();
        let h = m.fit(&x, &y, options(4, Some(dp))).unwrap();
        (h, m.get_weights().unwrap())
    });
    for key in ["loss", "val_loss", "accuracy", "val_accuracy"] {
        for (a, b) in runs[0].0.get(key).unwrap().iter().zip(h.get(key).unwrap()) {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                "{key}: {a} vs {b}"
            );
        }
    }
    for (a, b) in runs[0].1.iter().zip(plain.get_weights().unwrap()) {
        for (p, q) in a.iter().zip(b.iter()) {
            assert!((p - q).abs() < 1e-5, "weights {p} vs {q}");
        }
    }
}

#[test]
fn distributed_evaluate_and_predict_equal_one_process() {
    let (x, y) = data();
    let mut m = model();
    m.fit(&x, &y, options(2, None)).unwrap();
    let want = m.evaluate(&x, &y).unwrap();
    let want_p = m.predict(&x).unwrap();
    let got = on_ranks(4, |comm| {
        let dp = DataParallel::new(comm).unwrap();
        let e = m
            .evaluate_with(
                &x,
                &y,
                EvaluateOptions {
                    distribution: Some(dp.clone()),
                    ..Default::default()
                },
            )
            .unwrap();
        (e, m.predict_distributed(&x, &dp).unwrap())
    });
    for (e, p) in got {
        assert_eq!(e, want);
        assert_eq!(p, want_p);
    }
}

#[test]
fn distributed_predict_and_evaluate_refuse_ranks_with_other_data_or_weights() {
    let (x, y) = data();
    let m = model();
    // Rank 1's x differs in one row (which rank 1 forwards), in its row
    // count, or rank 1's model in one weight.
    let mut x_row = x.clone();
    x_row[[140, 2]] += 1.0;
    let x_short = x.slice(ndarray::s![..149, ..]).to_owned();
    let mut other = model();
    let mut w = other.get_weights().unwrap();
    w[0][[0, 0]] += 0.5;
    other.set_weights(&w).unwrap();
    let cases: [(&str, &Array2<f32>, &Sequential); 3] = [
        ("one row", &x_row, &m),
        ("row count", &x_short, &m),
        ("one weight", &x, &other),
    ];
    for (what, x1, m1) in cases {
        let errs = on_ranks(2, |comm| {
            let rank = comm.rank_of();
            let (xr, mr) = if rank == 1 { (x1, m1) } else { (&x, &m) };
            let dp = DataParallel::new(comm).unwrap();
            mr.predict_distributed(xr, &dp).unwrap_err().to_string()
        });
        for e in &errs {
            assert!(
                e.contains("rank(s) [1]") && e.contains("inputs `x`"),
                "{what}: {e}"
            );
        }
    }
    // evaluate: other targets on rank 1.
    let mut y1 = y.clone();
    y1[[3, 0]] = 1.0 - y1[[3, 0]];
    let errs = on_ranks(2, |comm| {
        let rank = comm.rank_of();
        let yr = if rank == 1 { &y1 } else { &y };
        let o = EvaluateOptions {
            distribution: Some(DataParallel::new(comm).unwrap()),
            ..Default::default()
        };
        m.evaluate_with(&x, yr, o).unwrap_err().to_string()
    });
    for e in &errs {
        assert!(e.contains("rank(s) [1]") && e.contains("`y`"), "{e}");
    }
}

#[test]
fn ranks_with_different_data_refuse_to_start() {
    let (x, y) = data();
    let mut x2 = x.clone();
    x2[[7, 2]] += 1.0;
    let errs = on_ranks(2, |comm| {
        let rank = comm.rank_of();
        let mut m = model();
        let xr = if rank == 1 { &x2 } else { &x };
        let dp = DataParallel::new(comm).unwrap();
        m.fit(xr, &y, options(1, Some(dp))).unwrap_err().to_string()
    });
    for e in errs {
        assert!(e.contains("rank(s) [1] hold other data"), "{e}");
    }
}

/// `rank()` through the trait, for the closures above.
trait RankOf {
    fn rank_of(&self) -> usize;
}
impl RankOf for LocalCommunicator {
    fn rank_of(&self) -> usize {
        horn::distribute::Communicator::rank(self)
    }
}

/// Fails (or stalls) one rank at a given epoch and step.
struct Fault {
    epoch: usize,
    step: usize,
    stall: Option<Duration>,
    current: usize,
}

impl Callback for Fault {
    fn on_epoch_begin(&mut self, epoch: usize, _ctx: &mut CallbackContext<'_>) -> horn::Result<()> {
        self.current = epoch;
        Ok(())
    }
    fn on_batch_begin(&mut self, step: usize, _ctx: &mut CallbackContext<'_>) -> horn::Result<()> {
        if (self.current, step) == (self.epoch, self.step) {
            match self.stall {
                Some(d) => std::thread::sleep(d),
                None => return Err(horn::Error::Data("rank lost on purpose".into())),
            }
        }
        Ok(())
    }
}

#[test]
fn a_lost_rank_stops_the_others_with_an_error() {
    let (x, y) = data();
    let errs = on_ranks(2, |comm| {
        let rank = comm.rank_of();
        let mut m = model();
        let dp = DataParallel::new(comm).unwrap();
        let mut fault = Fault {
            epoch: 1,
            step: 2,
            stall: None,
            current: 0,
        };
        let mut cbs: Vec<&mut dyn Callback> = Vec::new();
        if rank == 1 {
            cbs.push(&mut fault);
        }
        let r = m.fit_with_callbacks(&x, &y, options(3, Some(dp)), &mut cbs);
        r.unwrap_err().to_string()
    });
    assert!(errs[1].contains("rank lost on purpose"), "{}", errs[1]);
    assert!(errs[0].contains("rank 1 has left"), "{}", errs[0]);
}

#[test]
fn a_stalled_rank_times_out_instead_of_hanging() {
    let (x, y) = data();
    let start = std::time::Instant::now();
    let errs = on_ranks(2, |comm| {
        let rank = comm.rank_of();
        let mut m = model();
        let dp = DataParallel::new(comm)
            .unwrap()
            .timeout(Duration::from_millis(300));
        let mut fault = Fault {
            epoch: 0,
            step: 1,
            stall: Some(Duration::from_millis(1500)),
            current: 0,
        };
        let mut cbs: Vec<&mut dyn Callback> = Vec::new();
        if rank == 1 {
            cbs.push(&mut fault);
        }
        m.fit_with_callbacks(&x, &y, options(2, Some(dp)), &mut cbs)
            .unwrap_err()
            .to_string()
    });
    assert!(
        errs[0].contains("rank 1 did not answer rank 0 within 300ms"),
        "{}",
        errs[0]
    );
    // Rank 1 wakes to find rank 0 gone.
    assert!(errs[1].contains("rank 0 has left"), "{}", errs[1]);
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn resuming_from_the_checkpoint_gives_the_uninterrupted_weights() {
    let (x, y) = data();
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt.safetensors");
    let uninterrupted = fit_on(2, None, 4);

    // Epochs 0 and 1 complete and are saved; rank 1 fails in epoch 2.
    let first = on_ranks(2, |comm| {
        let rank = comm.rank_of();
        let mut m = model();
        let dp = DataParallel::new(comm).unwrap();
        let mut cp = ModelCheckpoint::new(ckpt.to_str().unwrap());
        let mut fault = Fault {
            epoch: 2,
            step: 3,
            stall: None,
            current: 0,
        };
        let mut cbs: Vec<&mut dyn Callback> = vec![&mut cp];
        if rank == 1 {
            cbs.push(&mut fault);
        }
        m.fit_with_callbacks(&x, &y, options(4, Some(dp)), &mut cbs)
            .is_err()
    });
    assert_eq!(first, [true, true]);

    let resumed = on_ranks(2, |comm| {
        let mut m = Sequential::load(&ckpt).unwrap();
        let dp = DataParallel::new(comm).unwrap();
        let o = FitOptions {
            initial_epoch: 2,
            ..options(4, Some(dp))
        };
        let h = m.fit(&x, &y, o).unwrap();
        (h, m.get_weights().unwrap())
    });
    for (r, (h, w)) in resumed.iter().enumerate() {
        assert_eq!(bits(w), bits(&uninterrupted[0].1), "rank {r}");
        assert_eq!(
            h.get("loss").unwrap(),
            &uninterrupted[0].0.get("loss").unwrap()[2..]
        );
    }
}

#[test]
fn only_rank_0_writes_files() {
    let (x, y) = data();
    let dir = tempfile::tempdir().unwrap();
    let wrote = on_ranks(2, |comm| {
        let rank = comm.rank_of();
        let mut m = model();
        let dp = DataParallel::new(comm).unwrap();
        let path = dir.path().join(format!("log-{rank}.csv"));
        let mut log = CsvLogger::new(&path);
        let mut cp = ModelCheckpoint::new(
            dir.path()
                .join(format!("m-{rank}.safetensors"))
                .to_str()
                .unwrap(),
        );
        m.fit_with_callbacks(&x, &y, options(1, Some(dp)), &mut [&mut log, &mut cp])
            .unwrap();
        (path.exists(), cp.saved.len())
    });
    assert_eq!(wrote, [(true, 1), (false, 0)]);
}

#[test]
fn bad_groups_and_chunk_counts_are_refused() {
    let err = DataParallel::new(local_group(3).remove(0)).unwrap_err();
    assert!(err.to_string().contains("power of two"), "{err}");
    for chunks in [3, 1] {
        let errs = chunk_errors(chunks);
        assert!(errs[0].contains("DataParallel::chunks"), "{}", errs[0]);
    }
}

/// Each rank's error from `fit` on 2 ranks cutting batches into `chunks`.
fn chunk_errors(chunks: usize) -> Vec<String> {
    let (x, y) = data();
    on_ranks(2, |comm| {
        let dp = DataParallel::new(comm).unwrap().chunks(chunks);
        model()
            .fit(&x, &y, options(1, Some(dp)))
            .unwrap_err()
            .to_string()
    })
}

#[test]
fn a_functional_model_refuses_data_parallel_fit_instead_of_ignoring_it() {
    let (x, y) = data();
    let mut g = Graph::with_seed(0);
    let a = g.input("a", &[6]);
    let out = g.call(Dense::new(3, Softmax), a);
    let mut m = Model::new(g, [a], [out]).unwrap();
    m.compile(
        Adam::default(),
        ModelCompile::new().loss(CategoricalCrossentropy::default()),
    )
    .unwrap();
    let dp = DataParallel::new(local_group(1).remove(0)).unwrap();
    let err = m
        .fit([&x], [&y], options(1, Some(dp)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("distribution"), "{err}");
}

#[test]
fn optimizers_with_and_without_norm_clipping_agree_across_ranks() {
    // Clipping by a norm needs whole tensors, so those steps are replicated
    // on every rank; the others update one segment per rank. Both must give
    // the one-rank weights.
    let (x, y) = data();
    let optimizers: Vec<Optimizer> = vec![
        Optimizer::from(RmsProp::default()).with_global_clipnorm(0.5),
        Optimizer::from(Adam::default()).with_clipnorm(0.3),
        Optimizer::from(Sgd::default()),
    ];
    for opt in optimizers {
        let run = |n: usize| {
            on_ranks(n, |comm| {
                let mut m = Sequential::new()
                    .seed(5)
                    .input(6)
                    .dense(16, Relu)
                    .batch_normalization()
                    .dense(3, Softmax);
                m.compile(
                    opt.clone(),
                    CategoricalCrossentropy::default(),
                    &[] as &[Metric],
                )
                .unwrap();
                let dp = DataParallel::new(comm).unwrap().chunks(4);
                m.fit(&x, &y, options(2, Some(dp))).unwrap();
                bits(&m.get_weights().unwrap())
            })
        };
        let one = run(1);
        for w in run(4).iter().chain(&run(2)) {
            assert_eq!(*w, one[0], "{opt:?}");
        }
    }
}

/// Each rank's History and weight bits after fitting `build()`, compiled
/// with `opt` (categorical cross-entropy, accuracy), on `n` ranks that cut
/// each batch into `chunks` and compare their weights after every epoch.
fn fit_ranks(
    n: usize,
    chunks: usize,
    build: impl Fn() -> Sequential + Sync,
    opt: &Optimizer,
    (x, y): (&Array2<f32>, &Array2<f32>),
    o: &FitOptions,
) -> Vec<(History, Vec<u32>)> {
    on_ranks(n, |comm| {
        let mut m = build();
        m.compile(
            opt.clone(),
            CategoricalCrossentropy::default(),
            &[Metric::Accuracy],
        )
        .unwrap();
        let dp = DataParallel::new(comm)
            .unwrap()
            .chunks(chunks)
            .verify_weights(true);
        let o = FitOptions {
            distribution: Some(dp),
            ..o.clone()
        };
        let h = m.fit(x, y, o).unwrap();
        (h, bits(&m.get_weights().unwrap()))
    })
}

/// Fails unless every rank of `runs` got `one`'s History and weights.
fn assert_as_one_rank(one: &(History, Vec<u32>), runs: &[(History, Vec<u32>)], what: &str) {
    for (r, (h, w)) in runs.iter().enumerate() {
        assert_eq!(*w, one.1, "{what}: {} ranks, rank {r}", runs.len());
        assert_eq!(*h, one.0, "{what}: {} ranks, rank {r}", runs.len());
    }
}

#[test]
fn a_first_layer_split_by_columns_keeps_the_bits_of_one_rank() {
    // Inputs wider than the batch: each rank computes its columns of the
    // first Dense layer for every row and exchanges outputs and their
    // gradients instead of the kernel. One rank (no split) is the reference.
    // Uneven blocks of units (25 over 4 ranks), a pre-activation the
    // gradient reads (elu), rules with 0, 1 and 2 state planes, clipping by
    // value and weight decay, a partial last batch, and the gathers at each
    // epoch's end (validation runs on the gathered layer).
    let (x, y) = common::blobs(150, 40, 4);
    let optimizers: Vec<Optimizer> = vec![
        Optimizer::from(Sgd::default()),
        Optimizer::from(RmsProp::default()).with_clipvalue(0.05),
        Optimizer::from(AdamW::default()),
    ];
    for opt in &optimizers {
        for act in [Relu, Elu(1.0)] {
            let build = || {
                Sequential::new()
                    .seed(3)
                    .input(40)
                    .dense(25, act)
                    .add(Dense::new(8, Tanh).kernel_regularizer(Regularizer::l2(1e-3)))
                    .dropout(0.2)
                    .dense(3, Softmax)
            };
            let o = options(3, None);
            let run = |n| fit_ranks(n, 4, build, opt, (&x, &y), &o);
            let one = run(1);
            for n in [2, 4] {
                assert_as_one_rank(&one[0], &run(n), &format!("{opt:?} {act:?}"));
            }
        }
    }
}

#[test]
fn a_split_first_layer_handles_a_last_batch_smaller_than_the_chunk_count() {
    // 111 rows in batches of 22: the last batch has one row, so three of its
    // four chunks are empty, and with four ranks three ranks own no row of
    // it. Those ranks still compute their columns of that row and exchange.
    let (x, y) = common::blobs(111, 40, 8);
    let build = || {
        Sequential::new()
            .seed(9)
            .input(40)
            .dense(12, Gelu { approximate: false })
            .dense(3, Softmax)
    };
    let o = FitOptions {
        epochs: 2,
        batch_size: 22,
        verbose: 0,
        seed: Some(2),
        ..Default::default()
    };
    let opt = Optimizer::from(RmsProp::default());
    let one = fit_ranks(1, 4, build, &opt, (&x, &y), &o);
    assert_as_one_rank(&one[0], &fit_ranks(4, 4, build, &opt, (&x, &y), &o), "gelu");
}

#[test]
fn a_first_layer_that_cannot_be_split_trains_as_before() {
    // Inputs wider than the batch, but the first layer has a regularizer
    // (whose penalty needs the whole kernel every step), or a softmax (which
    // needs every column), or the batch is as wide as the inputs: the ranks
    // then sum the kernel's gradient as for any layer. Same bits as one rank.
    let (x, y) = common::blobs(120, 40, 6);
    let firsts = [
        (
            Dense::new(12, Relu).kernel_regularizer(Regularizer::l1_l2(1e-3, 1e-3)),
            16,
        ),
        (Dense::new(12, Softmax), 16),
        (Dense::new(12, Relu), 40),
    ];
    let opt = Optimizer::from(Adam::default());
    for (i, (first, batch_size)) in firsts.into_iter().enumerate() {
        let build = || {
            Sequential::new()
                .seed(4)
                .input(40)
                .add(first.clone())
                .dense(3, Softmax)
        };
        let o = FitOptions {
            epochs: 2,
            batch_size,
            verbose: 0,
            seed: Some(3),
            ..Default::default()
        };
        let one = fit_ranks(1, 2, build, &opt, (&x, &y), &o);
        assert_as_one_rank(
            &one[0],
            &fit_ranks(2, 2, build, &opt, (&x, &y), &o),
            &format!("model {i}"),
        );
    }
}

/// A communicator of one rank that reports `first` as its size on the first
/// call and `later` on every other: sizes are read once, when the group is
/// made.
#[derive(Debug)]
struct ShiftingSize {
    first: usize,
    later: usize,
    calls: std::sync::atomic::AtomicUsize,
}

impl horn::distribute::Communicator for ShiftingSize {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        let n = self
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n == 0 {
            self.first
        } else {
            self.later
        }
    }
    fn exchange(&self, _: usize, _: &[f32], _: &mut [f32], _: Duration) -> horn::Result<()> {
        Err(Error::Distributed(
            "this test communicator exchanges nothing".into(),
        ))
    }
}

fn shifting(first: usize, later: usize) -> ShiftingSize {
    ShiftingSize {
        first,
        later,
        calls: Default::default(),
    }
}

#[test]
fn huge_groups_and_chunk_counts_are_refused_before_anything_is_sized_by_them() {
    use horn::distribute::{MAX_CHUNKS, MAX_RANKS};
    // A communicator claiming 2^40 ranks (a power of two, rank 0 below it).
    for size in [1usize << 40, MAX_RANKS * 2] {
        let err = DataParallel::new(shifting(size, size)).unwrap_err();
        assert!(err.to_string().contains("up to 65536"), "{err}");
    }
    // One that grows after the check: the group keeps the size it checked,
    // so agreeing on the data sizes nothing by 2^40 (it aborted before).
    let dp = DataParallel::new(shifting(1, 1 << 40)).unwrap();
    assert_eq!(dp.size(), 1);
    let (x, y) = data();
    model().fit(&x, &y, options(1, Some(dp))).unwrap();
    // 2^40 chunks would spin for hours inside one step (no exchange, so no
    // timeout); refused when fit starts, as any count past MAX_CHUNKS.
    for chunks in [1usize << 40, MAX_CHUNKS * 2] {
        let t = std::time::Instant::now();
        for e in &chunk_errors(chunks) {
            assert!(
                e.contains("DataParallel::chunks") && e.contains("at most 65536"),
                "{e}"
            );
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    }
}
