//! Argument checks shared by `fit`, `evaluate`, `predict` and the losses.

use ndarray::{ArrayView, ArrayView2, Axis, CowArray, Dimension, Ix2};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::losses::Loss;
use crate::shape::Shape;

/// Fails on the first NaN or infinity, naming its row and column.
pub(crate) fn check_finite(a: ArrayView2<f32>, name: &str) -> Result<()> {
    let first_bad = |(r, row): (usize, ndarray::ArrayView1<f32>)| {
        if let Some(values) = row.as_slice() {
            // Branch-free (vectorized) test first: a finite row, the usual
            // case, costs one pass at memory speed.
            if values.iter().fold(true, |ok, v| ok & v.is_finite()) {
                return None;
            }
        }
        row.iter()
            .enumerate()
            .find(|(_, v)| !v.is_finite())
            .map(|(c, &v)| (r, c, v))
    };
    // Small inputs (a single-sample predict) are checked without waking rayon.
    let bad = if a.len() < 1 << 15 {
        a.axis_iter(Axis(0)).enumerate().find_map(first_bad)
    } else {
        a.axis_iter(Axis(0))
            .into_par_iter()
            .enumerate()
            .find_map_first(first_bad)
    };
    if let Some((row, col, value)) = bad {
        return Err(Error::NonFinite {
            name: name.into(),
            row,
            col,
            value,
        });
    }
    Ok(())
}

/// An array of any rank as rows, one per sample (its first axis): a 2-D array
/// as it is (strided views stay views), a higher-rank one flattened to
/// `(n, rest)` (a view when contiguous, else one copy), a 1-D one as one
/// column. With `expected`, a rank-3+ array must have exactly that sample
/// shape; a 2-D array of flattened rows only its size.
pub(crate) fn as_rows<'a, D: Dimension>(
    x: ArrayView<'a, f32, D>,
    expected: Option<&Shape>,
    name: &str,
) -> Result<CowArray<'a, f32, Ix2>> {
    let shape = x.shape().to_vec();
    if shape.is_empty() {
        return Err(Error::shape(
            format!("`{name}`"),
            "an array with a first axis of samples",
            "a 0-D scalar",
        ));
    }
    if let Some(want) = expected {
        if shape.len() >= 3 && &shape[1..] != want.dims() {
            let mut full = vec![shape[0]];
            full.extend_from_slice(want.dims());
            return Err(Error::shape(
                format!("`{name}`"),
                format!("{full:?} (samples first, then the model's input shape {want})"),
                format!("{shape:?}"),
            ));
        }
    }
    let n = shape[0];
    let width = shape[1..].iter().product::<usize>();
    if shape.len() == 2 {
        // A 2-D array stays as it is, strided views included (the gather
        // copies its rows); `into_dimensionality` of 2 axes to Ix2 cannot fail.
        return Ok(CowArray::from(
            x.into_dimensionality::<Ix2>().expect("2 axes"),
        ));
    }
    // Standard layout (borrowed when it already is, else one copy) always
    // reshapes to (n, product of the rest): the `expect` cannot fail.
    let x = x.into_dyn();
    let x = if x.is_standard_layout() {
        CowArray::from(x)
    } else {
        CowArray::from(x.as_standard_layout().into_owned())
    };
    Ok(x.into_shape_with_order((n, width))
        .expect("standard layout, same number of values"))
}

/// Inputs: at least one row, the model's width, finite.
pub(crate) fn check_inputs(x: ArrayView2<f32>, input_dim: usize, name: &str) -> Result<()> {
    if x.nrows() == 0 {
        return Err(Error::Empty { name: name.into() });
    }
    if x.ncols() != input_dim {
        return Err(Error::shape(
            format!("`{name}`"),
            format!("(n, {input_dim}) to match the model's input width"),
            format!("{:?}", x.shape()),
        ));
    }
    check_finite(x, name)
}

/// Targets: the model's output width (for the sparse loss, one class index
/// per output position, each an integer in range), finite. `positions` is
/// the number of positions per sample (1 for a vector output; `steps` for a
/// `(steps, classes)` output).
pub(crate) fn check_targets(
    loss: &Loss,
    y: ArrayView2<f32>,
    out_dim: usize,
    positions: usize,
    name: &str,
) -> Result<()> {
    if loss.is_sparse() {
        let positions = positions.max(1);
        let out_dim = out_dim / positions;
        if y.ncols() != positions {
            let want = if positions == 1 {
                "(n, 1): one class index per row".to_string()
            } else {
                format!("{positions} class indices per sample, one per output position")
            };
            return Err(Error::shape(
                format!("`{name}` for sparse_categorical_crossentropy"),
                want,
                format!("{:?}", y.shape()),
            ));
        }
        for (i, &v) in y.iter().enumerate() {
            if !(v.is_finite() && v >= 0.0 && v.fract() == 0.0 && (v as usize) < out_dim) {
                // R users count classes from 1: a label equal to the class
                // count is the usual sign.
                let hint = if v == out_dim as f32 {
                    " (class indices start at 0; labels counted from 1 need `y - 1`)"
                } else {
                    ""
                };
                return Err(Error::arg(
                    format!("{name}[{i}]"),
                    format!("a class index in 0..{out_dim}{hint}"),
                    v,
                ));
            }
        }
        Ok(())
    } else {
        if y.ncols() != out_dim {
            // One column of whole numbers for a categorical loss: class indices
            // where one-hot rows were expected.
            let hint = if y.ncols() == 1
                && out_dim > 1
                && matches!(loss, Loss::CategoricalCrossentropy { .. })
                && y.iter().all(|v| v.fract() == 0.0 && *v >= 0.0)
            {
                ". These look like class indices: one-hot encode them with                  `horn::preprocessing::to_categorical(&labels, Some(n_classes))`,                  or use the loss `sparse_categorical_crossentropy`"
            } else {
                ""
            };
            return Err(Error::shape(
                format!("`{name}`"),
                format!("(n, {out_dim}) to match the model's output width"),
                format!("{:?}{hint}", y.shape()),
            ));
        }
        check_finite(y, name)
    }
}

/// `x` and `y` have the same number of rows.
pub(crate) fn check_rows(x: ArrayView2<f32>, y: ArrayView2<f32>, xn: &str, yn: &str) -> Result<()> {
    if x.nrows() != y.nrows() {
        return Err(Error::shape(
            format!("`{xn}` and `{yn}`"),
            format!("the same number of rows ({} in `{xn}`)", x.nrows()),
            format!("{} rows in `{yn}`", y.nrows()),
        ));
    }
    Ok(())
}

/// A batch size of at least one.
pub(crate) fn check_batch_size(b: usize) -> Result<()> {
    if b == 0 {
        return Err(Error::arg("batch_size", "a positive integer", 0));
    }
    Ok(())
}
