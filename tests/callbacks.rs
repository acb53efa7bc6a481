//! Callbacks through the public API.

mod common;

use std::cell::RefCell;

use horn::callbacks::Mode;
use horn::prelude::*;
use ndarray::Array2;

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("horn-cb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn model(lr: f32) -> Sequential {
    let mut m = Sequential::new()
        .seed(4)
        .input(6)
        .dense(16, Relu)
        .dense(3, Softmax);
    m.compile(
        Adam {
            learning_rate: lr,
            ..Default::default()
        },
        "categorical_crossentropy",
        &["accuracy"],
    )
    .unwrap();
    m
}

fn opts(epochs: usize) -> FitOptions {
    FitOptions {
        epochs,
        batch_size: 16,
        validation_split: 0.25,
        seed: Some(2),
        verbose: 0,
        ..Default::default()
    }
}

#[test]
fn early_stopping_stops_after_patience_and_restores_best() {
    let (x, y) = common::blobs(120, 6, 5);
    // A monitor that worsens after epoch 2: the validation loss of an over-large
    // learning rate. Record the epoch-by-epoch weights to compare with the restore.
    let snapshots = RefCell::new(Vec::new());
    let mut m = model(0.3);
    let mut es = EarlyStopping::default()
        .patience(2)
        .restore_best_weights(true);
    let mut record = horn::callbacks::LambdaCallback::default()
        .on_epoch_end(|_, logs| snapshots.borrow_mut().push(logs.get("val_loss").unwrap()));
    let h = m
        .fit_with_callbacks(&x, &y, opts(40), &mut [&mut record, &mut es])
        .unwrap();
    drop(record);
    let val = h.get("val_loss").unwrap();
    let best = val
        .iter()
        .enumerate()
        .fold(0, |b, (i, &v)| if v < val[b] { i } else { b });
    assert_eq!(es.best_epoch, best);
    // Stopped `patience` epochs after the best one (or ran to the end).
    if es.stopped_epoch > 0 {
        assert_eq!(es.stopped_epoch, best + 2);
        assert_eq!(h.len(), best + 3);
    }
    // The restored weights give the best epoch's validation loss.
    let split = 90;
    let restored = m
        .evaluate(
            x.slice(ndarray::s![split.., ..]),
            y.slice(ndarray::s![split.., ..]),
        )
        .unwrap()["loss"];
    assert!(
        (restored - val[best]).abs() < 1e-5,
        "restored {restored} vs best {}",
        val[best]
    );
    assert_eq!(snapshots.borrow().len(), h.len());
}

#[test]
fn early_stopping_with_patience_zero_stops_at_first_non_improvement() {
    // Monitor the training accuracy of a model that cannot learn (constant data):
    // it never improves after epoch 0, so training stops at epoch 1.
    let x = Array2::<f32>::zeros((32, 6));
    let y = Array2::from_shape_fn((32, 3), |(i, j)| (i % 3 == j) as u8 as f32);
    let mut m = model(0.01);
    let mut es = EarlyStopping::default().monitor("accuracy").mode(Mode::Max);
    let h = m
        .fit_with_callbacks(&x, &y, opts(10), &mut [&mut es])
        .unwrap();
    assert_eq!(es.stopped_epoch, 1);
    assert_eq!(h.len(), 2);
}

#[test]
fn reduce_lr_on_plateau_lowers_the_rate_and_history_shows_it() {
    let x = Array2::<f32>::zeros((32, 6));
    let y = Array2::from_shape_fn((32, 3), |(i, j)| (i % 3 == j) as u8 as f32);
    let mut m = model(0.01);
    let mut r = ReduceLrOnPlateau::default()
        .monitor("val_accuracy")
        .patience(1)
        .factor(0.5);
    let h = m
        .fit_with_callbacks(&x, &y, opts(4), &mut [&mut r])
        .unwrap();
    let lr = h.get("lr").unwrap();
    // val_accuracy never improves after epoch 0: the rate halves after epochs 1, 2, 3.
    assert_eq!(lr, &[0.01, 0.01, 0.005, 0.0025]);
    assert!((m.learning_rate().unwrap() - 0.00125).abs() < 1e-9);
    assert!(ReduceLrOnPlateau::default()
        .factor(1.5)
        .on_train_begin(&mut horn::callbacks::CallbackContext::manual(&mut m))
        .is_err());
}

#[test]
fn learning_rate_scheduler_sets_the_rate_per_epoch() {
    let (x, y) = common::blobs(40, 6, 1);
    let mut m = model(0.01);
    let mut s = LearningRateScheduler::new(|epoch, _lr| 0.1 / (epoch as f32 + 1.0));
    let h = m
        .fit_with_callbacks(&x, &y, opts(3), &mut [&mut s])
        .unwrap();
    assert_eq!(h.get("lr").unwrap(), &[0.1, 0.05, 0.1 / 3.0]);
}

#[test]
fn terminate_on_nan_ends_training_on_a_nan_validation_loss() {
    let (x, y) = common::blobs(40, 6, 1);
    let mut vy = y.slice(ndarray::s![..8, ..]).to_owned();
    vy[[0, 0]] = f32::NAN;
    let mut m = model(0.01);
    let mut t = TerminateOnNaN::default();
    let o = FitOptions {
        validation_data: Some((x.slice(ndarray::s![..8, ..]).to_owned(), vy)),
        ..opts(5)
    };
    // NaN targets are rejected up front...
    assert!(m.fit_with_callbacks(&x, &y, o, &mut [&mut t]).is_err());
    // ...so drive the callback directly, as a user's own loop would.
    let mut logs = Logs::default();
    logs.insert("loss", 0.5);
    logs.insert("val_loss", f32::NAN);
    let mut ctx = horn::callbacks::CallbackContext::manual(&mut m);
    t.on_epoch_end(0, &mut logs, &mut ctx).unwrap();
    assert!(t.terminated && ctx.stop_requested());
}

#[test]
fn csv_logger_writes_keras_columns() {
    let (x, y) = common::blobs(40, 6, 1);
    let path = tmp("log.csv");
    let mut m = model(0.01);
    let mut log = CsvLogger::new(&path);
    let h = m
        .fit_with_callbacks(&x, &y, opts(3), &mut [&mut log])
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "epoch,accuracy,loss,val_accuracy,val_loss");
    assert_eq!(lines.len(), 4);
    assert!(lines[3].starts_with("2,"));
    let loss: f32 = lines[1].split(',').nth(2).unwrap().parse().unwrap();
    assert_eq!(loss, h.get("loss").unwrap()[0]);
}

#[test]
fn a_user_callback_can_stop_training() {
    struct StopAfter(usize);
    impl Callback for StopAfter {
        fn on_batch_end(
            &mut self,
            batch: usize,
            _logs: &Logs,
            ctx: &mut CallbackContext<'_>,
        ) -> horn::Result<()> {
            if batch + 1 == self.0 {
                ctx.stop_training();
            }
            Ok(())
        }
    }
    let (x, y) = common::blobs(160, 6, 1);
    let mut m = model(0.01);
    let before = m.optimizer().unwrap().iterations();
    let h = m
        .fit_with_callbacks(&x, &y, opts(10), &mut [&mut StopAfter(3)])
        .unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(m.optimizer().unwrap().iterations() - before, 3);
}

#[test]
fn cancel_flag_stops_from_another_thread() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let (x, y) = common::blobs(160, 6, 1);
    let flag = Arc::new(AtomicBool::new(false));
    let mut m = model(0.01);
    // Another thread sets the flag while batch 2 runs; fit stops before batch 3.
    let f2 = flag.clone();
    let mut on_batch = horn::callbacks::LambdaCallback::default().on_batch_end(|b, _| {
        if b == 2 {
            let f = f2.clone();
            std::thread::spawn(move || f.store(true, Ordering::SeqCst))
                .join()
                .unwrap();
        }
    });
    let h = m
        .fit_with_callbacks(
            &x,
            &y,
            FitOptions {
                cancel: Some(flag.clone()),
                ..opts(10)
            },
            &mut [&mut on_batch],
        )
        .unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(m.optimizer().unwrap().iterations(), 3);
    // The cancelled epoch is marked, and it did not validate.
    assert_eq!(h.partial_epoch, Some(0));
    assert!(h.get("val_loss").is_none());

    // A flag left set stops the next fit before its first batch.
    let h = m
        .fit(
            &x,
            &y,
            FitOptions {
                cancel: Some(flag.clone()),
                ..opts(10)
            },
        )
        .unwrap();
    assert!(h.is_empty());
    assert_eq!(m.optimizer().unwrap().iterations(), 3);
    // Cleared by its owner, the flag lets training run to the end.
    flag.store(false, Ordering::SeqCst);
    let h = m
        .fit(
            &x,
            &y,
            FitOptions {
                cancel: Some(flag),
                ..opts(2)
            },
        )
        .unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(h.partial_epoch, None);
}

#[test]
fn model_checkpoint_saves_best_only() {
    let (x, y) = common::blobs(120, 6, 5);
    let mut m = model(0.3);
    let template = tmp("ckpt-{epoch:02d}-{val_loss:.3f}.safetensors");
    let mut cp = ModelCheckpoint::new(template.to_str().unwrap()).save_best_only(true);
    let h = m
        .fit_with_callbacks(&x, &y, opts(8), &mut [&mut cp])
        .unwrap();
    let val = h.get("val_loss").unwrap();
    let improvements = val
        .iter()
        .enumerate()
        .filter(|(i, &v)| val[..*i].iter().all(|&p| v < p))
        .count();
    assert_eq!(cp.saved.len(), improvements);
    let first = cp.saved[0].to_str().unwrap().to_string();
    assert!(
        first.ends_with(&format!("ckpt-01-{:.3}.safetensors", val[0])),
        "{first}"
    );
    let loaded = Sequential::load(cp.saved.last().unwrap()).unwrap();
    assert_eq!(loaded.count_params(), m.count_params());
}
