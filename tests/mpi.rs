//! Data-parallel `fit` over real MPI processes (feature `mpi`; needs
//! `mpirun`, from `apt-get install libopenmpi-dev openmpi-bin`).
//!
//! Each test starts this test binary under `mpirun -np N`, running only the
//! ignored `mpi_child` test, which trains and writes each rank's final
//! weights and History into a folder the parent then compares.
#![cfg(feature = "mpi")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use horn::distribute::{local_group, DataParallel, Mpi};
use horn::prelude::*;

/// Inputs wider than the batch (30 against 22 rows): on several ranks the
/// first layer is split by columns (the wide model below is not).
fn model() -> Sequential {
    let mut m = Sequential::new()
        .seed(5)
        .input(30)
        .dense(16, Relu)
        .add(Dense::new(3, Softmax).kernel_regularizer(Regularizer::l2(1e-3)));
    m.compile(
        Adam::default(),
        CategoricalCrossentropy::default(),
        &[Metric::Accuracy],
    )
    .unwrap();
    m
}

fn options(epochs: usize, initial_epoch: usize, dp: Option<DataParallel>) -> FitOptions {
    FitOptions {
        epochs,
        initial_epoch,
        batch_size: 22,
        validation_split: 0.2,
        verbose: 0,
        seed: Some(11),
        distribution: dp,
        ..Default::default()
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Dies (the whole process, as a crash would) or stalls for some
/// milliseconds at an epoch and step.
struct Fault {
    epoch: usize,
    step: usize,
    stall_ms: Option<u64>,
    current: usize,
}

impl Callback for Fault {
    fn on_epoch_begin(&mut self, epoch: usize, _: &mut CallbackContext<'_>) -> horn::Result<()> {
        self.current = epoch;
        Ok(())
    }
    fn on_batch_begin(&mut self, step: usize, _: &mut CallbackContext<'_>) -> horn::Result<()> {
        if (self.current, step) == (self.epoch, self.step) {
            match self.stall_ms {
                Some(ms) => std::thread::sleep(std::time::Duration::from_millis(ms)),
                None => std::process::abort(),
            }
        }
        Ok(())
    }
}

/// One rank of a run the tests below start under `mpirun`.
#[test]
#[ignore = "an MPI rank: started by the other tests under mpirun"]
fn mpi_child() {
    let out = PathBuf::from(env("HORN_MPI_OUT").expect("HORN_MPI_OUT"));
    let num = |k: &str, d: usize| env(k).map_or(d, |v| v.parse().unwrap());
    let mpi = Mpi::init().unwrap();
    let rank = mpi.rank();
    // HORN_MPI_WIDE: products large enough to run on several threads.
    let wide = env("HORN_MPI_WIDE").is_some();
    let (x, y) = if wide {
        common::blobs(1200, 64, 9)
    } else {
        common::blobs(150, 30, 9)
    };
    let mut dp = mpi.data_parallel().unwrap().verify_weights(true);
    if let Some(ms) = env("HORN_MPI_TIMEOUT_MS") {
        dp = dp.timeout(std::time::Duration::from_millis(ms.parse().unwrap()));
    }
    if let Some(c) = env("HORN_MPI_CHUNKS") {
        dp = dp.chunks(c.parse().unwrap());
    }
    let mut m = match env("HORN_MPI_RESUME") {
        Some(p) => Sequential::load(p).unwrap(),
        None if wide => {
            let mut m = Sequential::new()
                .seed(5)
                .input(64)
                .dense(512, Relu)
                .dense(3, Softmax);
            m.compile(
                RmsProp::default(),
                CategoricalCrossentropy::default(),
                &[Metric::Accuracy],
            )
            .unwrap();
            m
        }
        None => model(),
    };
    let mut cp = ModelCheckpoint::new(out.join("ckpt.safetensors").to_str().unwrap());
    // HORN_MPI_DIE_AT=epoch:step, or epoch:step:ms to stall instead.
    let mut die = env("HORN_MPI_DIE_AT").map(|v| {
        let f: Vec<usize> = v.split(':').map(|p| p.parse().unwrap()).collect();
        Fault {
            epoch: f[0],
            step: f[1],
            stall_ms: f.get(2).map(|&ms| ms as u64),
            current: 0,
        }
    });
    let mut cbs: Vec<&mut dyn Callback> = vec![&mut cp];
    if let Some(d) = die.as_mut().filter(|_| rank == 1) {
        cbs.push(d);
    }
    let mut o = options(
        num("HORN_MPI_EPOCHS", 3),
        num("HORN_MPI_INITIAL_EPOCH", 0),
        Some(dp),
    );
    if wide {
        o.batch_size = 256;
    }
    let h = m.fit_with_callbacks(&x, &y, o, &mut cbs).unwrap();
    std::fs::write(out.join(format!("weights-{rank}.bin")), weight_bytes(&m)).unwrap();
    std::fs::write(out.join(format!("history-{rank}.csv")), h.to_csv()).unwrap();
    drop(mpi);
}

fn weight_bytes(m: &Sequential) -> Vec<u8> {
    m.get_weights()
        .unwrap()
        .iter()
        .flat_map(|a| a.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>())
        .collect()
}

/// Runs `mpi_child` on `np` processes with the given settings; true when
/// the job succeeded.
fn mpirun(np: usize, out: &Path, vars: &[(&str, String)]) -> bool {
    mpirun_output(np, out, vars).0
}

/// [`mpirun`], with what the job printed on stderr.
fn mpirun_output(np: usize, out: &Path, vars: &[(&str, String)]) -> (bool, String) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new("mpirun");
    cmd.args(["-np", &np.to_string()])
        .arg(&exe)
        .args([
            "--exact",
            "mpi_child",
            "--ignored",
            "--test-threads=1",
            "-q",
            // The ranks' own messages (a timeout's reason) reach stderr.
            "--nocapture",
        ])
        // Open MPI: allow root (CI containers) and more ranks than cores.
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
        .env("RAYON_NUM_THREADS", "1")
        .env("HORN_MPI_OUT", out);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let o = cmd
        .output()
        .expect("mpirun (apt-get install libopenmpi-dev openmpi-bin)");
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    if !o.status.success() {
        eprintln!(
            "mpirun -np {np} failed:\n{}\n{stderr}",
            String::from_utf8_lossy(&o.stdout),
        );
    }
    (o.status.success(), stderr)
}

fn read(out: &Path, name: &str) -> Vec<u8> {
    std::fs::read(out.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn one_two_and_four_processes_give_identical_weights_and_history() {
    let mut runs = Vec::new();
    for np in [1, 2, 4] {
        let dir = tempfile::tempdir().unwrap();
        assert!(mpirun(np, dir.path(), &[("HORN_MPI_CHUNKS", "4".into())]));
        for r in 0..np {
            runs.push((
                np,
                r,
                read(dir.path(), &format!("weights-{r}.bin")),
                read(dir.path(), &format!("history-{r}.csv")),
            ));
        }
    }
    // The same run with threads as ranks, in this process.
    let (x, y) = common::blobs(150, 30, 9);
    let dp = DataParallel::new(local_group(1).remove(0))
        .unwrap()
        .chunks(4);
    let mut m = model();
    let h = m.fit(&x, &y, options(3, 0, Some(dp))).unwrap();
    for (np, r, w, hist) in &runs {
        assert!(*w == weight_bytes(&m), "{np} processes, rank {r}: weights");
        assert_eq!(
            String::from_utf8_lossy(hist),
            h.to_csv(),
            "{np} processes, rank {r}"
        );
    }
}

#[test]
fn two_processes_match_one_plain_process_to_rounding() {
    let dir = tempfile::tempdir().unwrap();
    assert!(mpirun(2, dir.path(), &[]));
    assert_eq!(
        read(dir.path(), "weights-0.bin"),
        read(dir.path(), "weights-1.bin")
    );
    let (x, y) = common::blobs(150, 30, 9);
    let mut m = model();
    let h = m.fit(&x, &y, options(3, 0, None)).unwrap();
    let got = String::from_utf8(read(dir.path(), "history-0.csv")).unwrap();
    for (a, b) in got.lines().zip(h.to_csv().lines()).skip(1) {
        for (p, q) in a.split(',').zip(b.split(',')) {
            let (p, q): (f32, f32) = (p.parse().unwrap(), q.parse().unwrap());
            assert!((p - q).abs() <= 1e-5 * q.abs().max(1.0), "{a} vs {b}");
        }
    }
    assert_eq!(got.lines().count(), 4);
}

#[test]
fn a_killed_rank_stops_the_job_and_the_checkpoint_resumes_it_exactly() {
    let whole = tempfile::tempdir().unwrap();
    assert!(mpirun(2, whole.path(), &[("HORN_MPI_EPOCHS", "4".into())]));

    let broken = tempfile::tempdir().unwrap();
    let died = !mpirun(
        2,
        broken.path(),
        &[
            ("HORN_MPI_EPOCHS", "4".into()),
            ("HORN_MPI_DIE_AT", "2:3".into()),
        ],
    );
    assert!(died, "the job must fail when a rank dies");
    assert!(!broken.path().join("weights-0.bin").exists());
    let ckpt = broken.path().join("ckpt.safetensors");
    assert!(ckpt.exists(), "epochs 1 and 2 were checkpointed");

    let resumed = tempfile::tempdir().unwrap();
    assert!(mpirun(
        2,
        resumed.path(),
        &[
            ("HORN_MPI_EPOCHS", "4".into()),
            ("HORN_MPI_INITIAL_EPOCH", "2".into()),
            ("HORN_MPI_RESUME", ckpt.to_str().unwrap().into()),
        ],
    ));
    for r in 0..2 {
        assert!(
            read(resumed.path(), &format!("weights-{r}.bin"))
                == read(whole.path(), "weights-0.bin"),
            "rank {r}: resumed weights differ from the uninterrupted run"
        );
    }
}

#[test]
fn a_stalled_rank_ends_the_job_after_the_timeout_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let start = std::time::Instant::now();
    // Rank 1 sleeps 20 s in epoch 1; rank 0 gives up after 1 s.
    let (ok, stderr) = mpirun_output(
        2,
        dir.path(),
        &[
            ("HORN_MPI_DIE_AT", "0:2:20000".into()),
            ("HORN_MPI_TIMEOUT_MS", "1000".into()),
        ],
    );
    assert!(!ok, "the job must fail");
    assert!(
        stderr.contains("did not answer rank 0 within 1s (DataParallel::timeout)"),
        "{stderr}"
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(15));
}

#[test]
fn ranks_with_two_threads_each_give_the_same_weights_as_with_one() {
    let mut weights = Vec::new();
    for threads in ["1", "2"] {
        let dir = tempfile::tempdir().unwrap();
        // 128 rows per rank x 64 x 512: products that split over threads.
        assert!(mpirun(
            2,
            dir.path(),
            &[
                ("RAYON_NUM_THREADS", threads.into()),
                ("HORN_MPI_WIDE", "1".into())
            ]
        ));
        weights.push(read(dir.path(), "weights-0.bin"));
    }
    assert!(
        weights[0] == weights[1],
        "weights depend on the thread count"
    );
}
