//! The reusable buffers of a functional model's passes, and the passes.
//!
//! Sized once per `fit`/`evaluate`/`predict` for `cap` rows: one activation
//! buffer per tensor, auxiliary values and state per node, one scratch
//! buffer for all, and in training one gradient buffer per computed tensor,
//! a temporary for gradients that add into an already written one, and
//! the weight gradients per layer (a second set for layers called more
//! than once). A partial batch uses the first rows. Nothing is allocated
//! per batch.

use ndarray::ArrayView2;
use rand::rngs::StdRng;

use super::graph::{LayerKind, MAX_MERGE_INPUTS};
use super::Model;
use crate::error::Result;
use crate::kernels::{matrix as view, matrix_mut as view_mut};
use crate::layers::{BackwardContext, Buffers, ForwardContext};
use crate::memory::Budget;
use crate::model::workspace::shared_scratch;
use crate::shape::Shape;

pub(crate) struct GraphWorkspace {
    pub widths: Vec<usize>,
    pub acts: Vec<Vec<f32>>,
    aux_widths: Vec<usize>,
    aux: Vec<Vec<f32>>,
    pub state: Vec<Vec<f32>>,
    scratch: Vec<f32>,
    /// Each node's input shapes (merges need them).
    in_shapes: Vec<Vec<Shape>>,
    /// Masks: the values per row of each, the mask each node makes (from
    /// its input), and the mask each tensor carries.
    mask_steps: Vec<usize>,
    masks: Vec<Vec<f32>>,
    node_mask: Vec<Option<usize>>,
    tensor_mask: Vec<Option<usize>>,
    /// Training: per tensor, its gradient and whether this step wrote it.
    pub grads: Vec<Vec<f32>>,
    pub written: Vec<bool>,
    pub tmp: Vec<f32>,
    /// Per layer, one buffer per trainable weight tensor (empty for merges).
    pub param_grads: Vec<Vec<Vec<f32>>>,
    extra_grads: Vec<Vec<Vec<f32>>>,
    layer_seen: Vec<bool>,
    pub trainable: Vec<Vec<bool>>,
    /// Per node: its `dy` is the gradient of the pre-activation (a loss
    /// fused with its softmax or sigmoid).
    pub fused_node: Vec<bool>,
    /// Per output: targets gathered for the batch, and their columns.
    pub targets: Vec<Vec<f32>>,
    pub target_cols: Vec<usize>,
    pub sample_weights: Vec<f32>,
    pub losses: Vec<f32>,
}

impl GraphWorkspace {
    /// Buffers for `cap` rows; `training` adds the gradients and targets
    /// (`target_cols` per output). Every buffer is taken from one
    /// [`Budget`] for `context`, so a model too large for memory is an
    /// error.
    pub fn new(
        model: &Model,
        cap: usize,
        training: bool,
        target_cols: &[usize],
        context: &'static str,
    ) -> Result<Self> {
        let widths: Vec<usize> = model.shapes.iter().map(Shape::size).collect();
        let n_in = model.inputs.len();
        let in_shapes: Vec<Vec<Shape>> = model
            .nodes
            .iter()
            .map(|n| n.inputs.iter().map(|&i| model.shapes[i].clone()).collect())
            .collect();
        let needs: Vec<Buffers> = model
            .nodes
            .iter()
            .zip(&in_shapes)
            .map(|(n, s)| match &model.layers[n.layer].kind {
                LayerKind::Layer(l) => l.buffers(&s[0], training),
                LayerKind::Merge(m) => Buffers {
                    scratch: m.scratch_len(s),
                    ..Buffers::default()
                },
            })
            .collect();
        // Masks follow the tensors.
        let mut mask_steps = Vec::new();
        let mut node_mask = vec![None; model.nodes.len()];
        let mut tensor_mask: Vec<Option<usize>> = vec![None; model.shapes.len()];
        for (k, node) in model.nodes.iter().enumerate() {
            let out = match &model.layers[node.layer].kind {
                LayerKind::Layer(l) => {
                    let steps = l.mask_steps(&in_shapes[k][0]);
                    if steps > 0 {
                        node_mask[k] = Some(mask_steps.len());
                        mask_steps.push(steps);
                        node_mask[k]
                    } else if l.propagates_mask() {
                        tensor_mask[node.inputs[0]]
                    } else {
                        None
                    }
                }
                LayerKind::Merge(_) => {
                    // A merge keeps a mask that all its inputs share.
                    let first = tensor_mask[node.inputs[0]];
                    node.inputs
                        .iter()
                        .all(|&i| tensor_mask[i] == first)
                        .then_some(first)
                        .flatten()
                }
            };
            tensor_mask[node.output] = out;
        }
        let layer_calls = {
            let mut c = vec![0usize; model.layers.len()];
            for n in &model.nodes {
                c[n.layer] += 1;
            }
            c
        };
        let grad_buffers = |budget: &mut Budget, ml: &super::ModelLayer| -> Result<Vec<Vec<f32>>> {
            let mut out = Vec::new();
            if let LayerKind::Layer(l) = &ml.kind {
                for p in l.params().iter().filter(|p| p.trainable) {
                    out.push(budget.values(p.values.len(), 0.0, || {
                        format!("the gradient of `{}/{}`", ml.name, p.name)
                    })?);
                }
            }
            Ok(out)
        };
        let trainable: Vec<Vec<bool>> = model
            .layers
            .iter()
            .map(|l| match &l.kind {
                LayerKind::Layer(l) => l.params().iter().map(|p| p.trainable).collect(),
                LayerKind::Merge(_) => Vec::new(),
            })
            .collect();
        // What each tensor is, for errors: an input or a layer's output.
        let mut producer: Vec<Option<usize>> = vec![None; widths.len()];
        for (k, node) in model.nodes.iter().enumerate() {
            producer[node.output] = Some(k);
        }
        let layer_name = |k: usize| model.layers[model.nodes[k].layer].name.as_str();
        let tensor_name = |t: usize| match producer[t] {
            Some(k) => format!("the output of layer `{}`", layer_name(k)),
            None => format!("input {t} of the model"),
        };
        let mut budget = Budget::new(context)?;
        let rows_if = |budget: &mut Budget, on: bool, w: usize, what: &dyn Fn() -> String| {
            budget.rows(if on { cap } else { 0 }, w, 0.0, what)
        };
        let mut acts = Vec::with_capacity(widths.len());
        for (t, &w) in widths.iter().enumerate() {
            acts.push(budget.rows(cap, w, 0.0, || tensor_name(t))?);
        }
        let mut aux = Vec::with_capacity(needs.len());
        let mut state = Vec::with_capacity(needs.len());
        for (k, b) in needs.iter().enumerate() {
            aux.push(budget.rows(cap, b.aux, 0.0, || {
                format!("the values layer `{}` keeps", layer_name(k))
            })?);
            state.push(budget.values(b.state, 0.0, || {
                format!("the state of layer `{}`", layer_name(k))
            })?);
        }
        let scratch = shared_scratch(&mut budget, &needs, cap, |k| {
            model.nodes.get(k).map(|n| &model.layers[n.layer].name)
        })?;
        let mut masks = Vec::with_capacity(mask_steps.len());
        for &steps in &mask_steps {
            masks.push(budget.rows(cap, steps, 0.0, || "a mask".into())?);
        }
        let mut grads = Vec::new();
        if training {
            for (t, &w) in widths.iter().enumerate() {
                grads.push(rows_if(&mut budget, t >= n_in, w, &|| {
                    format!("the gradient of {}", tensor_name(t))
                })?);
            }
        }
        let max_w = widths.iter().copied().max().unwrap_or(0);
        let tmp = rows_if(&mut budget, training, max_w, &|| "the gradients".into())?;
        let mut param_grads = Vec::new();
        let mut extra_grads = Vec::new();
        if training {
            for (ml, &calls) in model.layers.iter().zip(&layer_calls) {
                param_grads.push(grad_buffers(&mut budget, ml)?);
                extra_grads.push(if calls > 1 {
                    grad_buffers(&mut budget, ml)?
                } else {
                    Vec::new()
                });
            }
        }
        let mut targets = Vec::with_capacity(target_cols.len());
        for &c in target_cols {
            targets.push(rows_if(&mut budget, training, c, &|| "the targets".into())?);
        }
        Ok(GraphWorkspace {
            acts,
            aux_widths: needs.iter().map(|b| b.aux).collect(),
            aux,
            state,
            scratch,
            in_shapes,
            masks,
            mask_steps,
            node_mask,
            tensor_mask,
            grads,
            written: vec![false; widths.len()],
            tmp,
            param_grads,
            extra_grads,
            layer_seen: vec![false; model.layers.len()],
            trainable,
            fused_node: vec![false; model.nodes.len()],
            targets,
            target_cols: target_cols.to_vec(),
            sample_weights: budget.rows(cap, 1, 0.0, || "the sample weights".into())?,
            losses: budget.rows(cap, 1, 0.0, || "the losses".into())?,
            widths,
        })
    }

    /// The first `n` rows of tensor `t`.
    pub fn tensor(&self, t: usize, n: usize) -> ArrayView2<'_, f32> {
        view(&self.acts[t], n, self.widths[t])
    }

    /// The pre-activation values of the layer that produced output tensor
    /// `t` (node `k`), when it keeps them.
    pub fn logits<'a>(
        &'a self,
        model: &'a Model,
        k: usize,
        n: usize,
    ) -> Option<ArrayView2<'a, f32>> {
        let node = &model.nodes[k];
        match &model.layers[node.layer].kind {
            LayerKind::Layer(l) => {
                let i = node.inputs[0];
                let x = view(&self.acts[i], n, self.widths[i]);
                let aux = view(&self.aux[k], n, self.aux_widths[k]);
                l.preactivation(x, aux)
            }
            LayerKind::Merge(_) => None,
        }
    }

    /// Runs every node forward on the first `n` rows of the input tensors.
    /// A layer that reads another layer's output (not a model input, which
    /// is checked with the data) checks it first ([`Layer::check_input`]:
    /// an Embedding's ids).
    ///
    /// [`Layer::check_input`]: crate::layers::Layer::check_input
    pub fn forward(
        &mut self,
        model: &Model,
        n: usize,
        training: bool,
        rng: &mut StdRng,
    ) -> Result<()> {
        let n_in = model.inputs.len();
        for (k, node) in model.nodes.iter().enumerate() {
            let out = node.output;
            let (before, after) = self.acts.split_at_mut(out);
            let y = &mut after[0];
            match &model.layers[node.layer].kind {
                LayerKind::Layer(layer) => {
                    let i = node.inputs[0];
                    let x = view(&before[i], n, self.widths[i]);
                    if i >= n_in && layer.check_input(x, "").is_err() {
                        let name = &model.layers[node.layer].name;
                        return layer.check_input(x, &format!("the input of layer `{name}`"));
                    }
                    if let Some(m) = self.node_mask[k] {
                        let steps = self.mask_steps[m];
                        layer.compute_mask(x, &mut self.masks[m][..n * steps]);
                    }
                    let mask =
                        self.tensor_mask[i].map(|m| &self.masks[m][..n * self.mask_steps[m]]);
                    let mut ctx = ForwardContext {
                        training,
                        rng: &mut *rng,
                        scratch: &mut self.scratch,
                        state: &mut self.state[k],
                        mask,
                    };
                    layer.forward(
                        x,
                        view_mut(y, n, self.widths[out]),
                        view_mut(&mut self.aux[k], n, self.aux_widths[k]),
                        &mut ctx,
                    );
                }
                LayerKind::Merge(op) => {
                    let mut xs: [&[f32]; MAX_MERGE_INPUTS] = [&[]; MAX_MERGE_INPUTS];
                    for (slot, &i) in xs.iter_mut().zip(&node.inputs) {
                        *slot = &before[i][..n * self.widths[i]];
                    }
                    op.forward(
                        &xs[..node.inputs.len()],
                        &self.in_shapes[k],
                        &model.shapes[out],
                        n,
                        y,
                        &mut self.scratch,
                    );
                }
            }
        }
        Ok(())
    }

    /// Back-propagates from the output gradients the loss wrote (marked in
    /// `written`) through every node, filling `param_grads`.
    pub fn backward(&mut self, model: &Model, n: usize) {
        let n_in = model.inputs.len();
        self.layer_seen.iter_mut().for_each(|s| *s = false);
        for (k, node) in model.nodes.iter().enumerate().rev() {
            let out = node.output;
            if !self.written[out] {
                continue;
            }
            let mut dy = std::mem::take(&mut self.grads[out]);
            match &model.layers[node.layer].kind {
                LayerKind::Layer(layer) => {
                    let l = node.layer;
                    let i = node.inputs[0];
                    let needs_dx = i >= n_in;
                    if needs_dx || !self.param_grads[l].is_empty() {
                        let direct = needs_dx && !self.written[i];
                        let first = !self.layer_seen[l];
                        let wi = self.widths[i];
                        let dx = if !needs_dx {
                            None
                        } else if direct {
                            Some(view_mut(&mut self.grads[i], n, wi))
                        } else {
                            Some(view_mut(&mut self.tmp, n, wi))
                        };
                        let pg = if first {
                            &mut self.param_grads[l]
                        } else {
                            &mut self.extra_grads[l]
                        };
                        let mut ctx = BackwardContext {
                            dy_is_preactivation: self.fused_node[k],
                            scratch: &mut self.scratch,
                            state: &self.state[k],
                            mask: self.tensor_mask[i]
                                .map(|m| &self.masks[m][..n * self.mask_steps[m]]),
                        };
                        layer.backward(
                            view(&self.acts[i], n, wi),
                            view(&self.acts[out], n, self.widths[out]),
                            view(&self.aux[k], n, self.aux_widths[k]),
                            view_mut(&mut dy, n, self.widths[out]),
                            dx,
                            pg,
                            &mut ctx,
                        );
                        if needs_dx {
                            if direct {
                                self.written[i] = true;
                            } else {
                                add_into(&mut self.grads[i][..n * wi], &self.tmp[..n * wi]);
                            }
                        }
                        if !first {
                            let (pg, extra) = (&mut self.param_grads[l], &self.extra_grads[l]);
                            for (g, e) in pg.iter_mut().zip(extra) {
                                add_into(g, e);
                            }
                        }
                        self.layer_seen[l] = true;
                    }
                }
                LayerKind::Merge(op) => {
                    let mut xs: [&[f32]; MAX_MERGE_INPUTS] = [&[]; MAX_MERGE_INPUTS];
                    for (slot, &i) in xs.iter_mut().zip(&node.inputs) {
                        *slot = &self.acts[i][..n * self.widths[i]];
                    }
                    let xs = &xs[..node.inputs.len()];
                    for (j, &i) in node.inputs.iter().enumerate() {
                        if i < n_in {
                            continue;
                        }
                        let wi = self.widths[i];
                        let shapes = &self.in_shapes[k];
                        let out_shape = &model.shapes[out];
                        if !self.written[i] {
                            op.backward(
                                j,
                                xs,
                                shapes,
                                out_shape,
                                n,
                                &dy,
                                &mut self.grads[i],
                                &mut self.scratch,
                            );
                            self.written[i] = true;
                        } else {
                            op.backward(
                                j,
                                xs,
                                shapes,
                                out_shape,
                                n,
                                &dy,
                                &mut self.tmp,
                                &mut self.scratch,
                            );
                            add_into(&mut self.grads[i][..n * wi], &self.tmp[..n * wi]);
                        }
                    }
                }
            }
            self.grads[out] = dy;
        }
        // Penalties once per layer, after all its calls.
        for (l, ml) in model.layers.iter().enumerate() {
            if let LayerKind::Layer(layer) = &ml.kind {
                if self.layer_seen[l] {
                    layer.add_regularization_gradient(&mut self.param_grads[l]);
                }
            }
        }
    }
}

/// `dst += src`, element by element (a fixed order).
fn add_into(dst: &mut [f32], src: &[f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}
