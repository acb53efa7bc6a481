//! Merge layers: several tensors in, one out (Keras `keras.layers.merging`).
//!
//! They only make sense in a functional [`Model`](crate::Model), where a
//! layer can have several inputs: `g.call(Concatenate::new(), [a, b])`.
//! None has weights. Each is a small struct with Keras' name and options
//! that turns into one [`MergeOp`], which the graph engine runs: forward on
//! rows of every input at once, backward one input at a time (the engine adds
//! the result into that input's gradient).
//!
//! Keras' merge layers also broadcast shapes that differ by ones; horn asks
//! for equal shapes (a clear error names both) since broadcasting hides more
//! mistakes than it serves in these models.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::shape::Shape;

/// What a merge layer computes; the serialisable form of the merge layers
/// in model files.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "class_name")]
pub enum MergeOp {
    /// [`Concatenate`].
    Concatenate {
        /// Keras axis, counting the batch axis (`-1`: the last).
        axis: i32,
    },
    /// [`Add`].
    Add,
    /// [`Subtract`].
    Subtract,
    /// [`Multiply`].
    Multiply,
    /// [`Average`].
    Average,
    /// [`Maximum`].
    Maximum,
    /// [`Minimum`].
    Minimum,
    /// [`Dot`].
    Dot {
        /// Keras axes of the two inputs, counting the batch axis.
        axes: [i32; 2],
        /// L2-normalise both inputs along those axes first (cosine
        /// similarity).
        normalize: bool,
    },
}

/// Keras' `l2_normalize` epsilon in `Dot(normalize=True)`.
const NORM_EPSILON: f32 = 1e-12;

macro_rules! merge_layer {
    ($(#[$doc:meta])* $name:ident, $op:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq)]
        pub struct $name;

        impl $name {
            /// The layer (it has no options).
            pub fn new() -> Self {
                $name
            }
        }

        impl From<$name> for MergeOp {
            fn from(_: $name) -> MergeOp {
                MergeOp::$op
            }
        }
    };
}

merge_layer!(
    /// Keras `Add()`: the element-wise sum of two or more tensors of one
    /// shape.
    ///
    /// ```
    /// use horn::prelude::*;
    /// let mut g = Graph::new();
    /// let a = g.input("a", &[4]);
    /// let b = g.input("b", &[4]);
    /// let s = g.call(Add::new(), [a, b]);
    /// assert_eq!(g.shape(s).unwrap().dims(), &[4]);
    /// ```
    Add,
    Add
);
merge_layer!(
    /// Keras `Subtract()`: the first of exactly two tensors minus the
    /// second.
    Subtract,
    Subtract
);
merge_layer!(
    /// Keras `Multiply()`: the element-wise product of two or more tensors.
    Multiply,
    Multiply
);
merge_layer!(
    /// Keras `Average()`: the element-wise mean of two or more tensors.
    Average,
    Average
);
merge_layer!(
    /// Keras `Maximum()`: the element-wise maximum of two or more tensors
    /// (on ties the gradient goes to the first input holding the maximum).
    Maximum,
    Maximum
);
merge_layer!(
    /// Keras `Minimum()`: the element-wise minimum of two or more tensors.
    Minimum,
    Minimum
);

/// Keras `Concatenate(axis=-1)`: joins tensors along one axis; every other
/// axis must match.
///
/// ```
/// use horn::prelude::*;
/// let mut g = Graph::new();
/// let a = g.input("a", &[3, 4]);
/// let b = g.input("b", &[3, 2]);
/// let c = g.call(Concatenate::new(), [a, b]);
/// assert_eq!(g.shape(c).unwrap().dims(), &[3, 6]);
/// let d = g.call(Concatenate::new().axis(1), [a, a]);
/// assert_eq!(g.shape(d).unwrap().dims(), &[6, 4]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Concatenate {
    axis: i32,
}

impl Default for Concatenate {
    fn default() -> Self {
        Concatenate { axis: -1 }
    }
}

impl Concatenate {
    /// Along the last axis (Keras' default `axis=-1`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Along `axis`, counted as Keras counts it: with the batch axis, so `1`
    /// is a sample's first axis and `-1` its last.
    pub fn axis(mut self, axis: i32) -> Self {
        self.axis = axis;
        self
    }
}

impl From<Concatenate> for MergeOp {
    fn from(c: Concatenate) -> MergeOp {
        MergeOp::Concatenate { axis: c.axis }
    }
}

/// Keras `Dot(axes, normalize=False)`: the dot product of two tensors
/// along one axis each, per sample. Samples may be vectors or matrices:
/// `(None, d)·(None, d)` with `axes=1` gives `(None, 1)`, `(None, n, d)` and
/// `(None, m, d)` with `axes=2` give `(None, n, m)`. With `normalize` both
/// are L2-normalised along those axes first, so the result is the cosine
/// similarity.
///
/// ```
/// use horn::prelude::*;
/// let mut g = Graph::new();
/// let a = g.input("a", &[8]);
/// let b = g.input("b", &[8]);
/// let cos = g.call(Dot::new(1).normalize(true), [a, b]);
/// assert_eq!(g.shape(cos).unwrap().dims(), &[1]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dot {
    axes: [i32; 2],
    normalize: bool,
}

impl Dot {
    /// The same axis of both inputs (Keras `Dot(axes=axis)`), counting the
    /// batch axis.
    pub fn new(axis: i32) -> Self {
        Dot {
            axes: [axis, axis],
            normalize: false,
        }
    }

    /// One axis per input (Keras `Dot(axes=(a, b))`).
    pub fn axes(a: i32, b: i32) -> Self {
        Dot {
            axes: [a, b],
            normalize: false,
        }
    }

    /// Normalise both inputs first (Keras default false).
    pub fn normalize(mut self, normalize: bool) -> Self {
        self.normalize = normalize;
        self
    }
}

impl From<Dot> for MergeOp {
    fn from(d: Dot) -> MergeOp {
        MergeOp::Dot {
            axes: d.axes,
            normalize: d.normalize,
        }
    }
}

/// The per-sample axis of a Keras axis (which counts the batch axis).
fn sample_axis(axis: i32, rank: usize, what: &str) -> Result<usize> {
    let r = rank as i64;
    let a = axis as i64;
    let k = if a < 0 { r + 1 + a } else { a };
    if k < 1 || k > r {
        return Err(Error::arg(
            what,
            format!("an axis of the inputs other than the batch axis (1..={r}, or -{r}..=-1)"),
            axis,
        ));
    }
    Ok((k - 1) as usize)
}

/// The geometry of a `Dot` per sample: `out[i, j] = sum_c a(i, c) b(j, c)`.
#[derive(Debug, Clone, Copy)]
struct DotPlan {
    /// Free size of `a` (1 for a vector), free size of `b`, contracted size.
    p: usize,
    q: usize,
    k: usize,
    /// Whether the contracted axis of `a` / `b` is their first of two.
    a_first: bool,
    b_first: bool,
}

impl DotPlan {
    fn new(axes: [i32; 2], a: &Shape, b: &Shape) -> Result<Self> {
        for s in [a, b] {
            if s.rank() > 2 {
                return Err(Error::shape(
                    "Dot",
                    "samples that are vectors or matrices (rank 1 or 2)",
                    s.to_string(),
                ));
            }
        }
        let ka = sample_axis(axes[0], a.rank(), "Dot axes[0]")?;
        let kb = sample_axis(axes[1], b.rank(), "Dot axes[1]")?;
        let (da, db) = (a.dims(), b.dims());
        if da[ka] != db[kb] {
            return Err(Error::shape(
                "Dot",
                format!("axes of equal length (axis {} of {a})", axes[0]),
                format!("axis {} of {b} has {}", axes[1], db[kb]),
            ));
        }
        let free = |d: &[usize], k: usize| if d.len() == 2 { d[1 - k] } else { 1 };
        Ok(DotPlan {
            p: free(da, ka),
            q: free(db, kb),
            k: da[ka],
            a_first: da.len() == 2 && ka == 0,
            b_first: db.len() == 2 && kb == 0,
        })
    }

    fn output_shape(&self, a: &Shape, b: &Shape) -> Shape {
        let mut dims = Vec::new();
        if a.rank() == 2 {
            dims.push(self.p);
        }
        if b.rank() == 2 {
            dims.push(self.q);
        }
        if dims.is_empty() {
            dims.push(1);
        }
        Shape::new(&dims)
    }

    /// Index of element `(i, c)` of `a` in its row.
    fn ia(&self, i: usize, c: usize) -> usize {
        if self.a_first {
            c * self.p + i
        } else {
            i * self.k + c
        }
    }

    fn ib(&self, j: usize, c: usize) -> usize {
        if self.b_first {
            c * self.q + j
        } else {
            j * self.k + c
        }
    }
}

/// L2-normalises every fibre of `v` along the contracted axis (fibre `i` is
/// the elements `idx(i, c)`), writing into `out`, and returns nothing; the
/// norms are recomputed in backward (cheap next to storing them).
fn normalize_fibres(
    v: &[f32],
    out: &mut [f32],
    n: usize,
    k: usize,
    idx: impl Fn(usize, usize) -> usize,
) {
    for i in 0..n {
        let s: f32 = (0..k).map(|c| v[idx(i, c)] * v[idx(i, c)]).sum();
        let inv = 1.0 / s.max(NORM_EPSILON).sqrt();
        for c in 0..k {
            out[idx(i, c)] = v[idx(i, c)] * inv;
        }
    }
}

/// Turns the gradient `du` with respect to the normalised fibres of `v` into
/// the gradient with respect to `v`, in place.
fn normalize_backward(
    v: &[f32],
    du: &mut [f32],
    n: usize,
    k: usize,
    idx: impl Fn(usize, usize) -> usize,
) {
    for i in 0..n {
        let s: f32 = (0..k).map(|c| v[idx(i, c)] * v[idx(i, c)]).sum();
        let norm = s.max(NORM_EPSILON).sqrt();
        let inv = 1.0 / norm;
        if s > NORM_EPSILON {
            let dot: f32 = (0..k).map(|c| v[idx(i, c)] * inv * du[idx(i, c)]).sum();
            for c in 0..k {
                let u = v[idx(i, c)] * inv;
                du[idx(i, c)] = (du[idx(i, c)] - u * dot) * inv;
            }
        } else {
            for c in 0..k {
                du[idx(i, c)] *= inv;
            }
        }
    }
}

impl MergeOp {
    /// Keras' class name.
    pub fn class_name(&self) -> &'static str {
        match self {
            MergeOp::Concatenate { .. } => "Concatenate",
            MergeOp::Add => "Add",
            MergeOp::Subtract => "Subtract",
            MergeOp::Multiply => "Multiply",
            MergeOp::Average => "Average",
            MergeOp::Maximum => "Maximum",
            MergeOp::Minimum => "Minimum",
            MergeOp::Dot { .. } => "Dot",
        }
    }

    /// Scratch values a pass needs (the normalised rows of a `Dot`).
    pub(crate) fn scratch_len(&self, shapes: &[Shape]) -> usize {
        match self {
            MergeOp::Dot {
                normalize: true, ..
            } => shapes.iter().map(Shape::size).sum(),
            _ => 0,
        }
    }

    /// The output shape for these input shapes, or an error naming them.
    pub(crate) fn output_shape(&self, inputs: &[Shape]) -> Result<Shape> {
        let list = || crate::model::functional::graph::shape_list(inputs);
        let name = self.class_name();
        let want = match self {
            MergeOp::Subtract | MergeOp::Dot { .. } => (2, 2),
            _ => (2, usize::MAX),
        };
        if inputs.len() < want.0 || inputs.len() > want.1 {
            let expected = if want.1 == 2 {
                "exactly 2 inputs".to_string()
            } else {
                "at least 2 inputs".to_string()
            };
            return Err(Error::arg(
                format!("inputs of {name}"),
                expected,
                inputs.len(),
            ));
        }
        match *self {
            MergeOp::Concatenate { axis } => {
                let rank = inputs[0].rank();
                let ax = sample_axis(axis, rank, "Concatenate axis")?;
                let mut dims = inputs[0].dims().to_vec();
                for s in &inputs[1..] {
                    let same = s.rank() == rank
                        && s.dims()
                            .iter()
                            .zip(inputs[0].dims())
                            .enumerate()
                            .all(|(i, (a, b))| i == ax || a == b);
                    if !same {
                        return Err(Error::shape(
                            format!("{name}(axis={axis})"),
                            "inputs whose shapes match except along the concatenation axis",
                            list(),
                        ));
                    }
                    dims[ax] = dims[ax].checked_add(s.dims()[ax]).ok_or_else(|| {
                        Error::shape(
                            format!("{name}(axis={axis})"),
                            "inputs whose joined axis has at most 2^64 - 1 values",
                            list(),
                        )
                    })?;
                }
                Ok(Shape::new(&dims))
            }
            MergeOp::Dot { axes, .. } => {
                let plan = DotPlan::new(axes, &inputs[0], &inputs[1]).map_err(|e| match e {
                    Error::Shape { expected, .. } => Error::shape(name, expected, list()),
                    other => other,
                })?;
                Ok(plan.output_shape(&inputs[0], &inputs[1]))
            }
            _ => {
                if inputs.iter().any(|s| s != &inputs[0]) {
                    return Err(Error::shape(name, "inputs of one shape", list()));
                }
                Ok(inputs[0].clone())
            }
        }
    }

    /// Computes `y` (`rows x out.size()`) from the inputs (`rows x
    /// shapes[i].size()` each).
    pub(crate) fn forward(
        &self,
        xs: &[&[f32]],
        shapes: &[Shape],
        out: &Shape,
        rows: usize,
        y: &mut [f32],
        scratch: &mut [f32],
    ) {
        let ow = out.size();
        let y = &mut y[..rows * ow];
        match *self {
            MergeOp::Concatenate { axis } => {
                let (outer, ax) = concat_geometry(axis, shapes);
                for r in 0..rows {
                    let mut o = r * ow;
                    for b in 0..outer {
                        for (x, s) in xs.iter().zip(shapes) {
                            let w = run_after(s, ax);
                            let src = &x[r * outer * w + b * w..][..w];
                            y[o..o + w].copy_from_slice(src);
                            o += w;
                        }
                    }
                }
            }
            MergeOp::Dot { axes, normalize } => {
                let plan = dot_plan(axes, shapes);
                let (wa, wb) = (shapes[0].size(), shapes[1].size());
                let (na, rest) = scratch.split_at_mut(if normalize { wa } else { 0 });
                let nb = &mut rest[..if normalize { wb } else { 0 }];
                for r in 0..rows {
                    let mut a = &xs[0][r * wa..][..wa];
                    let mut b = &xs[1][r * wb..][..wb];
                    if normalize {
                        normalize_fibres(a, na, plan.p, plan.k, |i, c| plan.ia(i, c));
                        normalize_fibres(b, nb, plan.q, plan.k, |j, c| plan.ib(j, c));
                        a = na;
                        b = nb;
                    }
                    let yr = &mut y[r * ow..][..ow];
                    for i in 0..plan.p {
                        for j in 0..plan.q {
                            yr[i * plan.q + j] = (0..plan.k)
                                .map(|c| a[plan.ia(i, c)] * b[plan.ib(j, c)])
                                .sum();
                        }
                    }
                }
            }
            MergeOp::Subtract => {
                for ((o, &a), &b) in y.iter_mut().zip(xs[0]).zip(xs[1]) {
                    *o = a - b;
                }
            }
            op => {
                y.copy_from_slice(&xs[0][..rows * ow]);
                for x in &xs[1..] {
                    for (o, &v) in y.iter_mut().zip(x.iter()) {
                        *o = match op {
                            MergeOp::Add | MergeOp::Average => *o + v,
                            MergeOp::Multiply => *o * v,
                            MergeOp::Maximum => o.max(v),
                            _ => o.min(v),
                        };
                    }
                }
                if op == MergeOp::Average {
                    let inv = 1.0 / xs.len() as f32;
                    y.iter_mut().for_each(|o| *o *= inv);
                }
            }
        }
    }

    /// Writes the gradient with respect to input `k` (`rows x
    /// shapes[k].size()`) into `dx` (overwritten), from `dy`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward(
        &self,
        k: usize,
        xs: &[&[f32]],
        shapes: &[Shape],
        out: &Shape,
        rows: usize,
        dy: &[f32],
        dx: &mut [f32],
        scratch: &mut [f32],
    ) {
        let ow = out.size();
        let wk = shapes[k].size();
        let dx = &mut dx[..rows * wk];
        let dy = &dy[..rows * ow];
        match *self {
            MergeOp::Concatenate { axis } => {
                let (outer, ax) = concat_geometry(axis, shapes);
                let before: usize = shapes[..k].iter().map(|s| run_after(s, ax)).sum();
                let total: usize = shapes.iter().map(|s| run_after(s, ax)).sum();
                let w = run_after(&shapes[k], ax);
                for r in 0..rows {
                    for b in 0..outer {
                        let src = &dy[r * ow + b * total + before..][..w];
                        dx[r * outer * w + b * w..][..w].copy_from_slice(src);
                    }
                }
            }
            MergeOp::Dot { axes, normalize } => {
                let plan = dot_plan(axes, shapes);
                let (wa, wb) = (shapes[0].size(), shapes[1].size());
                let (na, rest) = scratch.split_at_mut(if normalize { wa } else { 0 });
                let nb = &mut rest[..if normalize { wb } else { 0 }];
                for r in 0..rows {
                    let a = &xs[0][r * wa..][..wa];
                    let b = &xs[1][r * wb..][..wb];
                    let (a, b) = if normalize {
                        normalize_fibres(a, na, plan.p, plan.k, |i, c| plan.ia(i, c));
                        normalize_fibres(b, nb, plan.q, plan.k, |j, c| plan.ib(j, c));
                        (&na[..], &nb[..])
                    } else {
                        (a, b)
                    };
                    let g = &dy[r * ow..][..ow];
                    let d = &mut dx[r * wk..][..wk];
                    if k == 0 {
                        for i in 0..plan.p {
                            for c in 0..plan.k {
                                d[plan.ia(i, c)] = (0..plan.q)
                                    .map(|j| g[i * plan.q + j] * b[plan.ib(j, c)])
                                    .sum();
                            }
                        }
                        if normalize {
                            normalize_backward(
                                &xs[0][r * wa..][..wa],
                                d,
                                plan.p,
                                plan.k,
                                |i, c| plan.ia(i, c),
                            );
                        }
                    } else {
                        for j in 0..plan.q {
                            for c in 0..plan.k {
                                d[plan.ib(j, c)] = (0..plan.p)
                                    .map(|i| g[i * plan.q + j] * a[plan.ia(i, c)])
                                    .sum();
                            }
                        }
                        if normalize {
                            normalize_backward(
                                &xs[1][r * wb..][..wb],
                                d,
                                plan.q,
                                plan.k,
                                |j, c| plan.ib(j, c),
                            );
                        }
                    }
                }
            }
            MergeOp::Add => dx.copy_from_slice(dy),
            MergeOp::Subtract => {
                let s = if k == 0 { 1.0 } else { -1.0 };
                for (d, &g) in dx.iter_mut().zip(dy) {
                    *d = s * g;
                }
            }
            MergeOp::Average => {
                let inv = 1.0 / xs.len() as f32;
                for (d, &g) in dx.iter_mut().zip(dy) {
                    *d = g * inv;
                }
            }
            MergeOp::Multiply => {
                dx.copy_from_slice(dy);
                for (j, x) in xs.iter().enumerate() {
                    if j != k {
                        for (d, &v) in dx.iter_mut().zip(x.iter()) {
                            *d *= v;
                        }
                    }
                }
            }
            MergeOp::Maximum | MergeOp::Minimum => {
                let max = *self == MergeOp::Maximum;
                for (e, (d, &g)) in dx.iter_mut().zip(dy).enumerate() {
                    // The first input holding the extremum takes the gradient.
                    let mut best = 0;
                    for j in 1..xs.len() {
                        let (v, b) = (xs[j][e], xs[best][e]);
                        if (max && v > b) || (!max && v < b) {
                            best = j;
                        }
                    }
                    *d = if best == k { g } else { 0.0 };
                }
            }
        }
    }
}

/// The number of blocks before the concatenation axis, and the axis.
fn concat_geometry(axis: i32, shapes: &[Shape]) -> (usize, usize) {
    let rank = shapes[0].rank();
    // Checked when the graph was built.
    let ax = sample_axis(axis, rank, "axis").unwrap_or(rank.saturating_sub(1));
    (shapes[0].dims()[..ax].iter().product(), ax)
}

/// The values of one block of `s` from axis `ax` on (one input's run in
/// each block of a concatenation).
fn run_after(s: &Shape, ax: usize) -> usize {
    s.dims()[ax..].iter().product()
}

fn dot_plan(axes: [i32; 2], shapes: &[Shape]) -> DotPlan {
    // Checked when the graph was built; the fallback is never taken.
    DotPlan::new(axes, &shapes[0], &shapes[1]).unwrap_or(DotPlan {
        p: 0,
        q: 0,
        k: 0,
        a_first: false,
        b_first: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_follow_keras() {
        let s = |d: &[usize]| Shape::new(d);
        let cat = MergeOp::Concatenate { axis: -1 };
        assert_eq!(cat.output_shape(&[s(&[3]), s(&[4])]).unwrap(), s(&[7]));
        assert!(cat.output_shape(&[s(&[3, 2]), s(&[4, 2])]).is_err());
        let cat1 = MergeOp::Concatenate { axis: 1 };
        assert_eq!(
            cat1.output_shape(&[s(&[3, 2]), s(&[4, 2])]).unwrap(),
            s(&[7, 2])
        );
        assert!(MergeOp::Concatenate { axis: 0 }
            .output_shape(&[s(&[3]), s(&[3])])
            .is_err());
        let err = MergeOp::Add
            .output_shape(&[s(&[4]), s(&[5])])
            .unwrap_err()
            .to_string();
        assert!(err.contains("(None, 4) and (None, 5)"), "{err}");
        assert!(MergeOp::Subtract
            .output_shape(&[s(&[4]), s(&[4]), s(&[4])])
            .is_err());
        let dot = MergeOp::Dot {
            axes: [2, 2],
            normalize: false,
        };
        assert_eq!(
            dot.output_shape(&[s(&[3, 5]), s(&[4, 5])]).unwrap(),
            s(&[3, 4])
        );
        let dot1 = MergeOp::Dot {
            axes: [1, 1],
            normalize: false,
        };
        assert_eq!(dot1.output_shape(&[s(&[5]), s(&[5])]).unwrap(), s(&[1]));
        assert!(dot1.output_shape(&[s(&[5]), s(&[6])]).is_err());
    }

    #[test]
    fn concatenate_interleaves_along_the_axis() {
        let shapes = [Shape::new(&[2, 1]), Shape::new(&[2, 2])];
        let out = Shape::new(&[2, 3]);
        let a = [1.0, 2.0];
        let b = [3.0, 4.0, 5.0, 6.0];
        let mut y = [0.0; 6];
        let op = MergeOp::Concatenate { axis: -1 };
        op.forward(&[&a, &b], &shapes, &out, 1, &mut y, &mut []);
        assert_eq!(y, [1.0, 3.0, 4.0, 2.0, 5.0, 6.0]);
        let mut db = [0.0; 4];
        op.backward(1, &[&a, &b], &shapes, &out, 1, &y, &mut db, &mut []);
        assert_eq!(db, b);
    }

    #[test]
    fn dot_of_matrices_contracts_the_named_axes() {
        // a: (2, 3), b: (3, 2) contracted over a's axis 2 and b's axis 1:
        // out = a @ b.
        let shapes = [Shape::new(&[2, 3]), Shape::new(&[3, 2])];
        let op = MergeOp::Dot {
            axes: [2, 1],
            normalize: false,
        };
        let out = op.output_shape(&shapes).unwrap();
        assert_eq!(out, Shape::new(&[2, 2]));
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let mut y = [0.0; 4];
        op.forward(&[&a, &b], &shapes, &out, 1, &mut y, &mut []);
        assert_eq!(y, [4.0, 5.0, 10.0, 11.0]);
    }
}

#[cfg(test)]
mod gradient_tests {
    use super::*;

    /// Every op's backward against central differences of `sum(y * u)`.
    #[test]
    fn every_op_matches_finite_differences() {
        let shapes2 = [Shape::new(&[2, 3]), Shape::new(&[2, 3])];
        let ops = [
            MergeOp::Concatenate { axis: 1 },
            MergeOp::Add,
            MergeOp::Subtract,
            MergeOp::Multiply,
            MergeOp::Average,
            MergeOp::Maximum,
            MergeOp::Minimum,
            MergeOp::Dot {
                axes: [2, 2],
                normalize: false,
            },
            MergeOp::Dot {
                axes: [1, 1],
                normalize: true,
            },
        ];
        let rows = 2;
        for op in ops {
            let out = op.output_shape(&shapes2).unwrap();
            let a: Vec<f32> = (0..12).map(|i| ((i * 7 % 11) as f32 - 5.0) / 4.0).collect();
            let b: Vec<f32> = (0..12).map(|i| ((i * 5 % 13) as f32 - 6.0) / 5.0).collect();
            let u: Vec<f32> = (0..rows * out.size())
                .map(|i| ((i * 3 % 7) as f32 - 3.0) / 3.0)
                .collect();
            let mut scratch = vec![0.0; op.scratch_len(&shapes2)];
            let f = |a: &[f32], b: &[f32], scratch: &mut [f32]| -> f32 {
                let mut y = vec![0.0; rows * out.size()];
                op.forward(&[a, b], &shapes2, &out, rows, &mut y, scratch);
                y.iter().zip(&u).map(|(y, u)| y * u).sum()
            };
            for k in 0..2 {
                let mut dx = vec![0.0; 12];
                op.backward(
                    k,
                    &[&a, &b],
                    &shapes2,
                    &out,
                    rows,
                    &u,
                    &mut dx,
                    &mut scratch,
                );
                for i in 0..12 {
                    let eps = 1e-3;
                    let (mut ap, mut bp) = (a.clone(), b.clone());
                    let (mut am, mut bm) = (a.clone(), b.clone());
                    if k == 0 {
                        ap[i] += eps;
                        am[i] -= eps;
                    } else {
                        bp[i] += eps;
                        bm[i] -= eps;
                    }
                    let num = (f(&ap, &bp, &mut scratch) - f(&am, &bm, &mut scratch)) / (2.0 * eps);
                    assert!(
                        (num - dx[i]).abs() < 1e-2,
                        "{op:?} input {k}[{i}]: analytic {} numeric {num}",
                        dx[i]
                    );
                }
            }
        }
    }
}
