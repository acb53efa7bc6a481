//! The reusable buffers of a forward/backward pass, and the passes themselves.
//!
//! One `Workspace` is sized for a number of rows (the batch size) when `fit`,
//! `evaluate` or `predict` starts, and every batch works inside it: gathering the
//! batch's rows, each layer's output and auxiliary values, the two ping-pong
//! gradient buffers and the parameter gradients. A partial last batch uses the
//! first rows of the same buffers. Nothing is allocated per batch.

use std::convert::Infallible;

use ndarray::ArrayView2;

use rand::rngs::StdRng;

use crate::error::Result;
use crate::layers::{BackwardContext, Buffers, ForwardContext, Layer, NextLayer, NextLayerGrad};
use crate::memory::Budget;
use crate::shape::Shape;

pub(crate) struct Workspace {
    /// The layers' names, for errors.
    names: Vec<String>,
    /// `widths[0]` is the input width, `widths[i + 1]` layer `i`'s output width
    /// (values per row: the product of the sample shape).
    pub widths: Vec<usize>,
    pub aux_widths: Vec<usize>,
    /// `acts[0]` holds the gathered input rows, `acts[i + 1]` layer `i`'s output.
    pub acts: Vec<Vec<f32>>,
    pub aux: Vec<Vec<f32>>,
    /// Per-layer state (batch statistics) and the scratch all layers share.
    pub state: Vec<Vec<f32>>,
    pub scratch: Vec<f32>,
    /// Training only: gradient buffers and per-sample values.
    pub grad_a: Vec<f32>,
    pub grad_b: Vec<f32>,
    /// The output gradient of a layer fused with the sample-local one after
    /// it ([`Layer::backward_after`]), for layers that materialize it.
    pub grad_c: Vec<f32>,
    /// `fuse_next[i]`: layer `i + 1` is sample-local and sees no mask or
    /// state, so layer `i` may run it fused in both passes.
    pub fuse_next: Vec<bool>,
    /// One buffer per trainable weight tensor of each layer.
    pub param_grads: Vec<Vec<Vec<f32>>>,
    /// Per layer, the trainable flag of each weight tensor in `params()` order.
    pub trainable: Vec<Vec<bool>>,
    pub targets: Vec<f32>,
    pub target_cols: usize,
    pub sample_weights: Vec<f32>,
    pub losses: Vec<f32>,
    /// Keras' time-step mask: the layer that makes it, its values per row,
    /// which layers see it, and the mask of the current batch.
    pub mask_from: Option<usize>,
    pub mask_steps: usize,
    pub mask_reaches: Vec<bool>,
    pub mask: Vec<f32>,
    /// Whether `backward` adds the regularization gradient (a data-parallel
    /// step adds it once, after summing the chunks' gradients).
    pub regularize: bool,
}

// Every buffer is allocated for `cap` rows of its width and every pass uses at
// most `cap` rows, so the views always fit.
pub(crate) use crate::kernels::{matrix as view, matrix_mut as view_mut};

/// The scratch all layers share: as long as the longest one needs for
/// `cap` rows (`name(i)` is layer `i`'s name, for the error).
pub(crate) fn shared_scratch<'a, N: AsRef<str> + 'a>(
    budget: &mut Budget,
    needs: &[Buffers],
    cap: usize,
    name: impl Fn(usize) -> Option<&'a N>,
) -> Result<Vec<f32>> {
    let (len, widest) = needs
        .iter()
        .enumerate()
        .map(|(i, b)| (b.scratch_len(cap), i))
        .max()
        .unwrap_or((0, 0));
    budget.values(len, 0.0, || match name(widest) {
        Some(n) => format!("the scratch of layer `{}`", n.as_ref()),
        None => "the scratch".into(),
    })
}

impl Workspace {
    /// Buffers for `cap` rows through `layers` (`shapes[0]` the input shape,
    /// `shapes[i + 1]` layer `i`'s output, `names[i]` layer `i`'s name);
    /// `training` adds the gradient buffers. Every buffer is taken from one
    /// [`Budget`] for `context`, so a model too large for memory is an error.
    pub fn new(
        layers: &[Box<dyn Layer>],
        names: &[String],
        shapes: &[Shape],
        cap: usize,
        training: bool,
        target_cols: usize,
        context: &'static str,
    ) -> Result<Self> {
        let widths: Vec<usize> = shapes.iter().map(Shape::size).collect();
        let needs: Vec<Buffers> = layers
            .iter()
            .zip(shapes)
            .map(|(l, s)| l.buffers(s, training))
            .collect();
        let aux_widths: Vec<usize> = needs.iter().map(|b| b.aux).collect();
        // The first layer that makes a mask; the layers after it see the mask
        // while every layer before them passes it on.
        let mask_from = layers
            .iter()
            .zip(shapes)
            .position(|(l, s)| l.mask_steps(s) > 0);
        let mask_steps = mask_from.map_or(0, |i| layers[i].mask_steps(&shapes[i]));
        let mut mask_reaches = vec![false; layers.len()];
        if let Some(m) = mask_from {
            let mut on = true;
            for (i, reach) in mask_reaches.iter_mut().enumerate().skip(m + 1) {
                *reach = on;
                on = on && layers[i].propagates_mask();
            }
        }
        // Layer `i + 1` runs fused with layer `i` (forward_then,
        // backward_after) when it is sample-local and sees no mask or state.
        let fuse_next: Vec<bool> = (0..layers.len())
            .map(|i| {
                layers.get(i + 1).is_some_and(|next| {
                    next.is_sample_local()
                        && mask_from != Some(i + 1)
                        && !mask_reaches[i + 1]
                        && needs[i + 1].state == 0
                })
            })
            .collect();
        let fused_width = (0..layers.len())
            .filter(|&i| fuse_next[i])
            .map(|i| widths[i + 1])
            .max()
            .unwrap_or(0);
        let name = |i: usize| names.get(i).map_or("?", String::as_str);
        let mut budget = Budget::new(context)?;
        let mut acts = Vec::with_capacity(widths.len());
        for (i, &w) in widths.iter().enumerate() {
            acts.push(budget.rows(cap, w, 0.0, || match i {
                0 => "the model's input".to_string(),
                _ => format!("the output of layer `{}`", name(i - 1)),
            })?);
        }
        let mut aux = Vec::with_capacity(layers.len());
        for (i, &w) in aux_widths.iter().enumerate() {
            aux.push(budget.rows(cap, w, 0.0, || {
                format!("the values layer `{}` keeps", name(i))
            })?);
        }
        let mut state = Vec::with_capacity(layers.len());
        for (i, b) in needs.iter().enumerate() {
            state
                .push(budget.values(b.state, 0.0, || format!("the state of layer `{}`", name(i)))?);
        }
        let scratch = shared_scratch(&mut budget, &needs, cap, |i| names.get(i))?;
        let max_w = widths.iter().copied().max().unwrap_or(0);
        let trainable: Vec<Vec<bool>> = layers
            .iter()
            .map(|l| l.params().iter().map(|p| p.trainable).collect())
            .collect();
        let rows = |budget: &mut Budget, w: usize, what: &str| {
            let n = if training { cap } else { 0 };
            budget.rows(n, w, 0.0, || what.to_string())
        };
        let grad_a = rows(&mut budget, max_w, "the gradients")?;
        let grad_b = rows(&mut budget, max_w, "the gradients")?;
        let grad_c = rows(&mut budget, fused_width, "the gradients")?;
        let mut param_grads = Vec::new();
        if training {
            for (i, l) in layers.iter().enumerate() {
                let mut grads = Vec::new();
                for p in l.params().iter().filter(|p| p.trainable) {
                    grads.push(budget.values(p.values.len(), 0.0, || {
                        format!("the gradient of `{}/{}`", name(i), p.name)
                    })?);
                }
                param_grads.push(grads);
            }
        }
        Ok(Workspace {
            names: (0..layers.len()).map(|i| name(i).to_string()).collect(),
            widths,
            aux_widths,
            acts,
            aux,
            state,
            scratch,
            grad_a,
            grad_b,
            grad_c,
            fuse_next,
            param_grads,
            trainable,
            targets: rows(&mut budget, target_cols, "the targets")?,
            target_cols,
            sample_weights: rows(&mut budget, 1, "the sample weights")?,
            losses: budget.rows(cap, 1, 0.0, || "the losses".into())?,
            mask_from,
            mask_steps,
            mask_reaches,
            mask: budget.rows(cap, mask_steps, 0.0, || "the mask".into())?,
            regularize: true,
        })
    }

    /// The first `n` rows of the input buffer, to gather a batch into.
    pub fn input_mut(&mut self, n: usize) -> &mut [f32] {
        let w = self.widths[0];
        &mut self.acts[0][..n * w]
    }

    /// The model's output for the first `n` rows.
    pub fn output(&self, n: usize) -> ArrayView2<'_, f32> {
        let l = self.widths.len() - 1;
        view(&self.acts[l], n, self.widths[l])
    }

    /// Runs every layer forward on the first `n` rows of the input buffer.
    /// The input of every layer after the first (whose input the model
    /// checks with the data) goes through [`Layer::check_input`] first: an
    /// Embedding fed by another layer refuses an id out of range instead of
    /// giving NaN.
    pub fn forward(
        &mut self,
        layers: &[Box<dyn Layer>],
        n: usize,
        training: bool,
        rng: &mut StdRng,
    ) -> Result<()> {
        self.run_layers(layers, 0, n, training, rng, |ws, i, x| {
            let layer = &layers[i];
            if i == 0 || layer.check_input(x, "").is_ok() {
                return Ok(());
            }
            layer.check_input(x, &format!("the input of layer `{}`", ws.names[i]))
        })
    }

    /// Runs layers `start..` forward on the first `n` rows of `acts[start]`
    /// (layer `start - 1`'s output, filled by the caller when `start > 0`),
    /// without [`Workspace::forward`]'s checks: a data-parallel rank, which
    /// must not stop while the others wait for it (an Embedding's id out of
    /// range gives NaN there, which makes the loss NaN on every rank).
    #[cfg_attr(not(feature = "distribute"), allow(dead_code))]
    pub fn forward_from(
        &mut self,
        layers: &[Box<dyn Layer>],
        start: usize,
        n: usize,
        training: bool,
        rng: &mut StdRng,
    ) {
        let unchecked = |_: &Self, _, _: ArrayView2<f32>| Ok::<(), Infallible>(());
        match self.run_layers(layers, start, n, training, rng, unchecked) {
            Ok(()) => {}
            Err(never) => match never {},
        }
    }

    /// The loop of both: `check(self, i, x)` sees layer `i`'s input before
    /// the layer runs.
    fn run_layers<E>(
        &mut self,
        layers: &[Box<dyn Layer>],
        start: usize,
        n: usize,
        training: bool,
        rng: &mut StdRng,
        check: impl Fn(&Self, usize, ArrayView2<f32>) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let ms = self.mask_steps;
        let mut i = start;
        while i < layers.len() {
            let layer = &layers[i];
            check(self, i, view(&self.acts[i], n, self.widths[i]))?;
            let (before, after) = self.acts.split_at_mut(i + 1);
            let x = view(&before[i], n, self.widths[i]);
            if self.mask_from == Some(i) {
                layer.compute_mask(x, &mut self.mask[..n * ms]);
            }
            // A sample-local next layer (pooling after a convolution) may run
            // on each block of this layer's output while it is in cache.
            let fusable = layers.get(i + 1).filter(|_| self.fuse_next[i]);
            let (out, later) = after.split_at_mut(1);
            let y = view_mut(&mut out[0], n, self.widths[i + 1]);
            let (aux_i, aux_later) = self.aux[i..].split_at_mut(1);
            let aux = view_mut(&mut aux_i[0], n, self.aux_widths[i]);
            let mut ctx = ForwardContext {
                training,
                rng: &mut *rng,
                scratch: &mut self.scratch,
                state: &mut self.state[i],
                mask: self.mask_reaches[i].then(|| &self.mask[..n * ms]),
            };
            if let Some(next_layer) = fusable {
                let next = NextLayer {
                    layer: next_layer.as_ref(),
                    y: view_mut(&mut later[0], n, self.widths[i + 2]),
                    aux: view_mut(&mut aux_later[0], n, self.aux_widths[i + 1]),
                    training,
                };
                layer.forward_then(x, y, aux, &mut ctx, next);
                i += 2;
                continue;
            }
            layer.forward(x, y, aux, &mut ctx);
            i += 1;
        }
        Ok(())
    }

    /// The last layer's pre-activation values, when it keeps them.
    pub fn logits<'a>(
        &'a self,
        layers: &[Box<dyn Layer>],
        n: usize,
    ) -> Option<ArrayView2<'a, f32>> {
        let l = layers.len() - 1;
        let x = view(&self.acts[l], n, self.widths[l]);
        let aux = view(&self.aux[l], n, self.aux_widths[l]);
        layers[l].preactivation(x, aux)
    }

    /// Back-propagates `grad_a` (the loss gradient for the first `n` rows) through
    /// every layer, filling `param_grads`. A sample-local layer after a
    /// layer goes back fused with it ([`Layer::backward_after`]).
    pub fn backward(&mut self, layers: &[Box<dyn Layer>], n: usize, fused: bool) {
        self.backward_until(layers, 0, n, fused);
    }

    /// [`Workspace::backward`] through layers `stop..` only: with `stop > 0`
    /// it ends with `grad_a` holding the gradient of layer `stop - 1`'s
    /// output, and fills no gradient of the layers before `stop`.
    pub fn backward_until(
        &mut self,
        layers: &[Box<dyn Layer>],
        stop: usize,
        n: usize,
        fused: bool,
    ) {
        let last = layers.len() - 1;
        let mut j = last + 1;
        while j > stop {
            // Layer `i`, or the pair `i`, `i + 1` fused.
            let mut i = j - 1;
            let pair = i > stop && self.fuse_next[i - 1] && !(fused && i == last);
            if pair {
                i -= 1;
            }
            let layer = &layers[i];
            let x = view(&self.acts[i], n, self.widths[i]);
            let y = view(&self.acts[i + 1], n, self.widths[i + 1]);
            let aux = view(&self.aux[i], n, self.aux_widths[i]);
            let dx = (i > 0).then(|| view_mut(&mut self.grad_b, n, self.widths[i]));
            let mut ctx = BackwardContext {
                dy_is_preactivation: fused && i == last,
                scratch: &mut self.scratch,
                state: &self.state[i],
                mask: self.mask_reaches[i].then(|| &self.mask[..n * self.mask_steps]),
            };
            if pair {
                let next = NextLayerGrad {
                    layer: layers[i + 1].as_ref(),
                    y: view(&self.acts[i + 2], n, self.widths[i + 2]),
                    aux: view(&self.aux[i + 1], n, self.aux_widths[i + 1]),
                    dy: view_mut(&mut self.grad_a, n, self.widths[i + 2]),
                };
                let dy = view_mut(&mut self.grad_c, n, self.widths[i + 1]);
                let grads = &mut self.param_grads[i];
                layer.backward_after(x, y, aux, dy, dx, grads, &mut ctx, next);
            } else {
                let dy = view_mut(&mut self.grad_a, n, self.widths[i + 1]);
                layer.backward(x, y, aux, dy, dx, &mut self.param_grads[i], &mut ctx);
            }
            if self.regularize {
                layer.add_regularization_gradient(&mut self.param_grads[i]);
            }
            std::mem::swap(&mut self.grad_a, &mut self.grad_b);
            j = i;
        }
    }
}
