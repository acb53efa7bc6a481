//! [`IntoInput`]: what `fit`, `evaluate` and `predict` accept as data.

use ndarray::{Array, ArrayBase, ArrayD, ArrayView, CowArray, Data, Dimension, IxDyn};

/// An array `fit`, `evaluate` and `predict` accept: an `ndarray` array or
/// view of `f32` or `f64` values (or integers: token ids), of any rank,
/// samples on the first axis.
///
/// `f32` arrays are used in place (no copy); `f64` arrays (ndarray's usual
/// float, what `Array::from_shape_fn` gives for `1.0` literals) are converted
/// to `f32` once per call, which costs one copy of the data: for repeated
/// calls on large data, convert once with `x.mapv(|v| v as f32)`.
///
/// ```
/// use horn::prelude::*;
/// let x = ndarray::Array2::<f64>::from_elem((4, 3), 0.5); // f64
/// let y = ndarray::Array2::<f32>::from_elem((4, 1), 1.0);
/// let mut model = Sequential::new().seed(1).input(3).dense(1, Linear);
/// model.compile("sgd", "mse", Metric::NONE).unwrap();
/// model.fit(&x, &y, FitOptions { epochs: 1, verbose: 0, ..Default::default() }).unwrap();
/// assert_eq!(model.predict(&x).unwrap().dim(), (4, 1));
/// ```
///
/// Anything else is a compile error that says what is expected (a `Vec`, a
/// slice):
///
/// ```compile_fail
/// use horn::prelude::*;
/// let model = Sequential::new().input(3).dense(1, Linear);
/// model.predict(&vec![1.0f32, 2.0, 3.0]); // not an ndarray array
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not data horn can use",
    label = "expected a reference to an ndarray array (or a view) of f32, f64 or integers",
    note = "fit, evaluate and predict take `&Array2<f32>`, `&Array4<f64>`, `x.view()`, `x.slice(s![..])` and the like: any rank, samples first"
)]
pub trait IntoInput<'a> {
    /// The values as `f32`, borrowed when they already are.
    fn into_input(self) -> CowArray<'a, f32, IxDyn>;
}

impl<'a, S, D> IntoInput<'a> for &'a ArrayBase<S, D>
where
    S: Data,
    S::Elem: InputElement,
    D: Dimension,
{
    fn into_input(self) -> CowArray<'a, f32, IxDyn> {
        S::Elem::to_f32(self.view().into_dyn())
    }
}

impl<'a, A: InputElement, D: Dimension> IntoInput<'a> for ArrayView<'a, A, D> {
    fn into_input(self) -> CowArray<'a, f32, IxDyn> {
        A::to_f32(self.into_dyn())
    }
}

/// The element types of [`IntoInput`] arrays: `f32` (used as it is), `f64`
/// and the integer types (converted). Sealed: horn computes in `f32`.
pub trait InputElement: Copy + sealed::Sealed {
    /// The values as `f32`.
    fn to_f32(a: ArrayView<'_, Self, IxDyn>) -> CowArray<'_, f32, IxDyn>;

    /// The values of an owned array as `f32` (an `f32` array moves in
    /// without a copy).
    fn owned_to_f32(a: ArrayD<Self>) -> CowArray<'static, f32, IxDyn> {
        CowArray::from(Self::to_f32(a.view()).into_owned())
    }
}

impl InputElement for f32 {
    fn to_f32(a: ArrayView<'_, f32, IxDyn>) -> CowArray<'_, f32, IxDyn> {
        CowArray::from(a)
    }

    fn owned_to_f32(a: ArrayD<f32>) -> CowArray<'static, f32, IxDyn> {
        CowArray::from(a)
    }
}

impl InputElement for f64 {
    fn to_f32(a: ArrayView<'_, f64, IxDyn>) -> CowArray<'_, f32, IxDyn> {
        CowArray::from(a.mapv(|v| v as f32))
    }
}

/// Owned arrays are accepted too (moved in; an `f32` array is not copied),
/// so a `Vec` of arrays built in a loop can be passed as it is.
///
/// ```
/// use horn::prelude::*;
/// let model = Sequential::new().seed(1).input(3).dense(2, Linear);
/// let p = model.predict(ndarray::Array2::<f32>::zeros((4, 3))).unwrap();
/// assert_eq!(p.dim(), (4, 2));
/// ```
impl<A: InputElement, D: Dimension> IntoInput<'static> for Array<A, D> {
    fn into_input(self) -> CowArray<'static, f32, IxDyn> {
        A::owned_to_f32(self.into_dyn())
    }
}

/// Integer arrays (token ids for an [`Embedding`](crate::layers::Embedding),
/// counts, codes) are converted to `f32` once per call; values beyond 2^24
/// in magnitude round to the nearest `f32`.
macro_rules! integer_input {
    ($($t:ty),*) => {$(
        impl InputElement for $t {
            fn to_f32(a: ArrayView<'_, $t, IxDyn>) -> CowArray<'_, f32, IxDyn> {
                CowArray::from(a.mapv(|v| v as f32))
            }
        }
        impl sealed::Sealed for $t {}
    )*};
}
integer_input!(i8, i16, i32, i64, u8, u16, u32, u64, usize);

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}
