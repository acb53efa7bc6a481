//! Time of each layer of the MNIST convnet in one training step (batch 128):
//! forward in training mode, then backward, each the best of 15 runs, on all
//! threads. Shows where a step's time goes without a profiler.
//!
//! `cargo bench --bench cnn_layers`

use std::time::Instant;

use horn::layers::{BackwardContext, ForwardContext, Layer};
use horn::prelude::*;
use ndarray::Array2;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn best(f: impl FnMut()) -> f64 {
    best_after(|| {}, f)
}

/// The best of 15 timed runs of `f`, each after an untimed `setup`.
fn best_after(mut setup: impl FnMut(), mut f: impl FnMut()) -> f64 {
    setup();
    f();
    (0..15)
        .map(|_| {
            setup();
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let rows = 128;
    let mut layers: Vec<Box<dyn Layer>> = vec![
        Box::new(Conv2D::new(32, 3, Relu)),
        Box::new(MaxPooling2D::new(2)),
        Box::new(Conv2D::new(64, 3, Relu)),
        Box::new(MaxPooling2D::new(2)),
        Box::new(Flatten::new()),
        Box::new(Dropout::new(0.5)),
        Box::new(Dense::new(10, Linear)),
    ];
    let mut rng = StdRng::seed_from_u64(1);
    let mut shapes = vec![Shape::new(&[28, 28, 1])];
    for l in layers.iter_mut() {
        let s = l.build(shapes.last().unwrap(), &mut rng).unwrap();
        shapes.push(s);
    }
    let mut acts: Vec<Array2<f32>> = shapes
        .iter()
        .map(|s| {
            Array2::from_shape_fn((rows, s.size()), |(i, j)| {
                ((i * 31 + j * 7) % 19) as f32 / 19.0 - 0.3
            })
        })
        .collect();
    let mut total = (0.0, 0.0);
    println!(
        "{:<16} {:>12} {:>12}",
        "layer (batch 128)", "forward ms", "backward ms"
    );
    for (i, layer) in layers.iter().enumerate() {
        let b = layer.buffers(&shapes[i], true);
        let mut aux = Array2::<f32>::zeros((rows, b.aux));
        let mut scratch = vec![0.0f32; b.scratch_len(rows)];
        let mut state = vec![0.0f32; b.state];
        let (before, after) = acts.split_at_mut(i + 1);
        let x = &before[i];
        let y = &mut after[0];
        let mut step_rng = StdRng::seed_from_u64(2);
        let tf = best(|| {
            let mut ctx = ForwardContext::new(true, &mut step_rng);
            ctx.scratch = &mut scratch;
            ctx.state = &mut state;
            layer.forward(x.view(), y.view_mut(), aux.view_mut(), &mut ctx);
        });
        let mut grads: Vec<Vec<f32>> = layer
            .params()
            .iter()
            .filter(|p| p.trainable)
            .map(|p| vec![0.0; p.values.len()])
            .collect();
        let mut dx = Array2::<f32>::zeros(x.dim());
        let dy0 = Array2::from_shape_fn(y.dim(), |(r, c)| ((r + c) % 7) as f32 * 0.01);
        let dy = std::cell::RefCell::new(dy0.clone());
        let needs_dx = i > 0;
        // Backward overwrites `dy` (the activation's gradient): restore it
        // outside the timed region.
        let tb = best_after(
            || dy.borrow_mut().assign(&dy0),
            || {
                let mut dy = dy.borrow_mut();
                let mut ctx = BackwardContext::new(false);
                ctx.scratch = &mut scratch;
                ctx.state = &state;
                layer.backward(
                    x.view(),
                    y.view(),
                    aux.view(),
                    dy.view_mut(),
                    needs_dx.then(|| dx.view_mut()),
                    &mut grads,
                    &mut ctx,
                );
            },
        );
        total.0 += tf;
        total.1 += tb;
        println!(
            "{:<16} {:>12.3} {:>12.3}",
            layer.class_name(),
            tf * 1e3,
            tb * 1e3
        );
    }
    println!(
        "{:<16} {:>12.3} {:>12.3}",
        "total",
        total.0 * 1e3,
        total.1 * 1e3
    );
}
