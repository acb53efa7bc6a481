//! Hostile data and arguments (issue 29): data loaders, preprocessing and
//! optimizers answer with an error, never a panic, a hang, runaway memory or
//! a silently wrong value.

use horn::preprocessing::{OneHotEncoder, StandardScaler, Table};
use ndarray::array;

#[test]
fn one_hot_inverse_transform_refuses_a_column_past_the_categories() {
    let enc = OneHotEncoder::fit(&["a", "b"]);
    // The largest entry sits in column 2, which no category owns.
    let err = enc
        .inverse_transform(array![[0.1f32, 0.2, 0.7]].view())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("2 columns") && err.contains("3 columns"),
        "{err}"
    );
    let err = enc
        .inverse_transform(array![[f32::NAN, 0.2]].view())
        .unwrap_err()
        .to_string();
    assert!(err.contains("NaN"), "{err}");
    let empty = OneHotEncoder::fit::<&str>(&[]);
    let err = empty
        .inverse_transform(ndarray::Array2::<f32>::zeros((1, 0)).view())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no category"), "{err}");
    assert_eq!(
        enc.inverse_transform(array![[0.9f32, 0.1], [0.3, 0.7]].view())
            .unwrap(),
        ["a", "b"]
    );
}

#[test]
fn standard_scaler_on_values_near_f32_max_is_finite_or_refused() {
    // Two rows at +-3e38: the sample std is 4.2e38, past f32::MAX.
    let x = array![[3e38f32], [-3e38]];
    let err = StandardScaler::fit(x.view()).unwrap_err().to_string();
    assert!(err.contains("standard deviation of column 0"), "{err}");
    // Three rows: std 3e38 fits, and (x - mean) must not overflow on the way.
    let x = array![[3e38f32], [-3e38], [0.0]];
    let s = StandardScaler::fit(x.view()).unwrap();
    assert!(s.std[0].is_finite() && s.std[0] > 1e38, "{:?}", s.std);
    let z = s.transform(x.view()).unwrap();
    assert!(
        (z[[0, 0]] - 1.0).abs() < 1e-6 && (z[[1, 0]] + 1.0).abs() < 1e-6,
        "{z}"
    );
    let back = s.inverse_transform(z.view()).unwrap();
    assert!(((back[[0, 0]] - 3e38) / 3e38).abs() < 1e-6, "{back}");
    // A transform whose result leaves f32's range is an error, not inf.
    let tight = StandardScaler::fit(array![[0.0f32], [1e-30]].view()).unwrap();
    let err = tight
        .transform(array![[3e38f32]].view())
        .unwrap_err()
        .to_string();
    assert!(err.contains("outside f32's range"), "{err}");
}

#[test]
fn select_rows_refuses_an_index_past_the_last_row() {
    let t = Table::from_csv_str("a,b\n1,x\n2,y\n").unwrap();
    let err = t.select_rows(&[0, 2]).unwrap_err().to_string();
    assert!(
        err.contains("rows") && err.contains("2 rows") && err.contains("=2"),
        "{err}"
    );
    let picked = t.select_rows(&[1, 1]).unwrap();
    assert_eq!(picked.numeric("a").unwrap(), vec![2.0, 2.0]);
    assert_eq!(picked.categorical("b").unwrap(), vec!["y", "y"]);
}
