//! Tabular data and preprocessing: CSV tables with `NA`, stratified splits, a
//! standard scaler, a one-hot encoder and `to_categorical`, the pieces of a
//! tidymodels-style recipe.

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::{Array1, Array2, ArrayView2, Axis};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::error::{Error, Result};

/// The most classes [`to_categorical`] encodes: 2^24, beyond which f32 class
/// indices are no longer exact.
pub const MAX_CLASSES: usize = 1 << 24;

/// One-hot rows from 0-based class indices (Keras `to_categorical`). With
/// `num_classes = None` the count is `max + 1`; at most [`MAX_CLASSES`].
///
/// ```
/// use horn::preprocessing::to_categorical;
/// let y = to_categorical(&[0, 2, 1], None).unwrap();
/// assert_eq!(y.row(1).to_vec(), vec![0.0, 0.0, 1.0]);
/// assert!(to_categorical(&[3], Some(3)).is_err());
/// ```
pub fn to_categorical(labels: &[usize], num_classes: Option<usize>) -> Result<Array2<f32>> {
    let k = match num_classes {
        Some(0) => return Err(Error::arg("num_classes", "a positive integer", 0)),
        Some(k) => k,
        None => labels.iter().max().map_or(0, |m| m.saturating_add(1)),
    };
    // Class indices are exact in f32 only below 2^24, and a label of 2^40
    // would ask for terabytes: refuse before allocating.
    if k > MAX_CLASSES {
        return Err(Error::arg(
            "num_classes",
            format!("at most {MAX_CLASSES} classes"),
            k,
        ));
    }
    let len = labels
        .len()
        .checked_mul(k)
        .filter(|&n| n <= isize::MAX as usize / 4)
        .ok_or_else(|| {
            Error::arg(
                "labels",
                "a one-hot matrix that fits in memory",
                labels.len(),
            )
        })?;
    let mut data = Vec::<f32>::new();
    data.try_reserve_exact(len).map_err(|_| {
        Error::arg(
            "labels",
            "a one-hot matrix that fits in memory",
            format!("{} rows x {k} classes", labels.len()),
        )
    })?;
    data.resize(len, 0.0);
    let mut out = Array2::from_shape_vec((labels.len(), k), data).map_err(|e| {
        Error::shape(
            "to_categorical",
            format!("({}, {k})", labels.len()),
            e.to_string(),
        )
    })?;
    for (i, &l) in labels.iter().enumerate() {
        if l >= k {
            return Err(Error::arg(
                format!("labels[{i}]"),
                format!("a class index in 0..{k}"),
                l,
            ));
        }
        out[[i, l]] = 1.0;
    }
    Ok(out)
}

/// A column of a [`Table`]: numbers or strings, `None` for missing values.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// Every present value parsed as a number.
    Numeric(Vec<Option<f64>>),
    /// Text values.
    Categorical(Vec<Option<String>>),
}

impl Column {
    fn len(&self) -> usize {
        match self {
            Column::Numeric(v) => v.len(),
            Column::Categorical(v) => v.len(),
        }
    }
    fn is_missing(&self, i: usize) -> bool {
        match self {
            Column::Numeric(v) => v[i].is_none(),
            Column::Categorical(v) => v[i].is_none(),
        }
    }
    fn select(&self, rows: &[usize]) -> Column {
        match self {
            Column::Numeric(v) => Column::Numeric(rows.iter().map(|&r| v[r]).collect()),
            Column::Categorical(v) => {
                Column::Categorical(rows.iter().map(|&r| v[r].clone()).collect())
            }
        }
    }
}

/// A table read from CSV, with typed columns (R's `read.csv` with `na = "NA"`).
///
/// ```
/// use horn::preprocessing::Table;
/// let t = Table::from_csv_str("a,b\n1,x\nNA,y\n3,x\n").unwrap();
/// assert_eq!(t.nrows(), 3);
/// let t = t.drop_na();
/// assert_eq!(t.numeric("a").unwrap(), vec![1.0, 3.0]);
/// assert_eq!(t.categorical("b").unwrap(), vec!["x", "x"]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    names: Vec<String>,
    columns: Vec<Column>,
}

impl Table {
    /// Reads a CSV file with a header row; `NA`, `NaN` and empty fields are
    /// missing (see [`Table::from_csv_str`]).
    pub fn read_csv(path: impl AsRef<Path>) -> Result<Table> {
        let path = path.as_ref();
        let bytes = crate::files::read_file(path)?;
        let text = String::from_utf8(bytes)
            .map_err(|e| Error::format(path, format!("not UTF-8 text: {e}")))?;
        Self::from_csv_str(&text).map_err(|e| match e {
            Error::Data(m) => Error::format(path, m),
            other => other,
        })
    }

    /// Parses CSV text with a header row.
    ///
    /// Missing values: empty fields, `NA` (R) and `NaN`/`nan` (pandas). A
    /// column whose present values all parse as numbers is numeric; an
    /// infinite number (`inf`, `-Infinity`) is an error naming its row and
    /// column, as are duplicate column names.
    pub fn from_csv_str(text: &str) -> Result<Table> {
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(text.as_bytes());
        let names: Vec<String> = rdr
            .headers()
            .map_err(|e| Error::Data(format!("bad CSV header: {e}")))?
            .iter()
            .map(|s| s.trim().to_string())
            .collect();
        if names.is_empty() || names.iter().all(|n| n.is_empty()) {
            return Err(Error::Data("the CSV has no header".into()));
        }
        for (j, n) in names.iter().enumerate() {
            if let Some(i) = names[..j].iter().position(|m| m == n) {
                return Err(Error::Data(format!(
                    "duplicate column name `{n}` (columns {} and {}); every column needs its own name",
                    i + 1,
                    j + 1
                )));
            }
        }
        let mut raw: Vec<Vec<Option<String>>> = vec![Vec::new(); names.len()];
        for (line, rec) in rdr.records().enumerate() {
            let rec = rec.map_err(|e| Error::Data(format!("bad CSV record {}: {e}", line + 2)))?;
            if rec.len() != names.len() {
                return Err(Error::Data(format!(
                    "CSV row {} has {} fields, the header has {}",
                    line + 2,
                    rec.len(),
                    names.len()
                )));
            }
            for (c, field) in rec.iter().enumerate() {
                let f = field.trim();
                raw[c].push(
                    if f.is_empty() || f == "NA" || f.eq_ignore_ascii_case("nan") {
                        None
                    } else {
                        Some(f.to_string())
                    },
                );
            }
        }
        let columns = raw
            .into_iter()
            .zip(&names)
            .map(|(vals, name)| {
                let numeric: Option<Vec<Option<f64>>> = vals
                    .iter()
                    .map(|v| match v {
                        None => Some(None),
                        Some(s) => s.parse::<f64>().ok().map(Some),
                    })
                    .collect();
                match numeric {
                    Some(n) if vals.iter().any(|v| v.is_some()) => {
                        if let Some(i) = n.iter().position(|v| v.is_some_and(f64::is_infinite)) {
                            return Err(Error::Data(format!(
                                "column `{name}` line {} holds an infinite number ({}); clean the data or mark it NA",
                                i + 2,
                                vals[i].as_deref().unwrap_or("")
                            )));
                        }
                        Ok(Column::Numeric(n))
                    }
                    _ => Ok(Column::Categorical(vals)),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Table { names, columns })
    }

    /// Number of rows.
    pub fn nrows(&self) -> usize {
        self.columns.first().map_or(0, |c| c.len())
    }

    /// Column names.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// A column by name.
    pub fn column(&self, name: &str) -> Result<&Column> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| &self.columns[i])
            .ok_or_else(|| {
                Error::Data(format!(
                    "no column `{name}`; columns: {}",
                    self.names.join(", ")
                ))
            })
    }

    /// The rows without any missing value (R's `drop_na()`).
    pub fn drop_na(&self) -> Table {
        let keep: Vec<usize> = (0..self.nrows())
            .filter(|&i| self.columns.iter().all(|c| !c.is_missing(i)))
            .collect();
        Table {
            names: self.names.clone(),
            columns: self.columns.iter().map(|c| c.select(&keep)).collect(),
        }
    }

    /// The given rows, in that order (a row may repeat). An index past the
    /// last row is an error, not a panic.
    ///
    /// ```
    /// use horn::preprocessing::Table;
    /// let t = Table::from_csv_str("a\n1\n2\n3\n").unwrap();
    /// assert_eq!(t.select_rows(&[2, 0]).unwrap().numeric("a").unwrap(), vec![3.0, 1.0]);
    /// assert!(t.select_rows(&[3]).is_err());
    /// ```
    pub fn select_rows(&self, rows: &[usize]) -> Result<Table> {
        let n = self.nrows();
        if let Some(&bad) = rows.iter().find(|&&r| r >= n) {
            return Err(Error::arg(
                "rows",
                format!("row indices below the table's {n} rows"),
                bad,
            ));
        }
        Ok(Table {
            names: self.names.clone(),
            columns: self.columns.iter().map(|c| c.select(rows)).collect(),
        })
    }

    /// A numeric column with no missing values.
    pub fn numeric(&self, name: &str) -> Result<Vec<f64>> {
        match self.column(name)? {
            Column::Numeric(v) => v
                .iter()
                .enumerate()
                .map(|(i, x)| {
                    x.ok_or_else(|| {
                        Error::Data(format!(
                            "column `{name}` is missing a value in row {i}; drop_na() first"
                        ))
                    })
                })
                .collect(),
            Column::Categorical(v) if v.iter().all(Option::is_none) => Err(Error::Data(format!(
                "column `{name}` has no values (every row is missing)"
            ))),
            Column::Categorical(v) => {
                // Show the first value that is not a number, and where it is.
                let (row, value) = v
                    .iter()
                    .enumerate()
                    .find_map(|(i, x)| {
                        x.as_deref()
                            .filter(|s| s.parse::<f64>().is_err())
                            .map(|s| (i, s))
                    })
                    .unwrap_or((0, ""));
                Err(Error::Data(format!(
                    "column `{name}` is not numeric: line {} holds `{value}`",
                    row + 2
                )))
            }
        }
    }

    /// A text column with no missing values (numbers are given as text too).
    pub fn categorical(&self, name: &str) -> Result<Vec<String>> {
        let missing = |i| {
            Error::Data(format!(
                "column `{name}` is missing a value in row {i}; drop_na() first"
            ))
        };
        match self.column(name)? {
            Column::Categorical(v) => v
                .iter()
                .enumerate()
                .map(|(i, x)| x.clone().ok_or_else(|| missing(i)))
                .collect(),
            Column::Numeric(v) => v
                .iter()
                .enumerate()
                .map(|(i, x)| x.map(|f| f.to_string()).ok_or_else(|| missing(i)))
                .collect(),
        }
    }

    /// Numeric columns side by side as an f32 matrix (rows x columns). A value
    /// beyond f32's range (`1e300`) is an error, not a silent infinity.
    pub fn numeric_matrix(&self, names: &[&str]) -> Result<Array2<f32>> {
        let cols: Vec<Vec<f64>> = names
            .iter()
            .map(|n| self.numeric(n))
            .collect::<Result<_>>()?;
        for (c, name) in cols.iter().zip(names) {
            if let Some(i) = c.iter().position(|v| v.abs() > f32::MAX as f64) {
                return Err(Error::Data(format!(
                    "column `{name}` row {i} holds {}, beyond the range of f32 (about 3.4e38)",
                    c[i]
                )));
            }
        }
        Ok(Array2::from_shape_fn(
            (self.nrows(), names.len()),
            |(i, j)| cols[j][i] as f32,
        ))
    }
}

/// Train and test row indices with each class in the same proportion as in the
/// whole data (rsample's `initial_split(strata = )`): per class,
/// `round(n_c * test_fraction)` rows go to the test set, chosen at random with
/// the seed. Both index lists are shuffled.
///
/// ```
/// use horn::preprocessing::stratified_split;
/// let labels = [0, 0, 0, 0, 1, 1, 1, 1];
/// let (train, test) = stratified_split(&labels, 0.25, 7).unwrap();
/// assert_eq!((train.len(), test.len()), (6, 2));
/// assert_eq!(test.iter().filter(|&&i| labels[i] == 0).count(), 1);
/// ```
pub fn stratified_split(
    labels: &[usize],
    test_fraction: f64,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>)> {
    if !(test_fraction > 0.0 && test_fraction < 1.0) {
        return Err(Error::arg(
            "test_fraction",
            "a number in (0, 1)",
            test_fraction,
        ));
    }
    if labels.is_empty() {
        return Err(Error::Empty {
            name: "labels".into(),
        });
    }
    let mut by_class: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, &l) in labels.iter().enumerate() {
        by_class.entry(l).or_default().push(i);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (_, mut idx) in by_class {
        idx.shuffle(&mut rng);
        let k = ((idx.len() as f64) * test_fraction).round() as usize;
        test.extend_from_slice(&idx[..k]);
        train.extend_from_slice(&idx[k..]);
    }
    if train.is_empty() || test.is_empty() {
        return Err(Error::arg(
            "test_fraction",
            format!(
                "a fraction that leaves rows on both sides ({} rows)",
                labels.len()
            ),
            test_fraction,
        ));
    }
    train.shuffle(&mut rng);
    test.shuffle(&mut rng);
    Ok((train, test))
}

/// Centers and scales columns to mean 0 and *sample* standard deviation 1
/// (n - 1 in the denominator, as R's recipes `step_normalize`). Fit it on the
/// training rows only, then transform both sets.
///
/// ```
/// use horn::preprocessing::StandardScaler;
/// use ndarray::array;
/// let train = array![[1.0f32, 10.0], [3.0, 30.0]];
/// let s = StandardScaler::fit(train.view()).unwrap();
/// let z = s.transform(train.view()).unwrap();
/// assert!((z[[0, 0]] + 0.70710677).abs() < 1e-6);
/// let back = s.inverse_transform(z.view()).unwrap();
/// assert!((back[[1, 1]] - 30.0).abs() < 1e-4);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct StandardScaler {
    /// Column means of the training rows.
    pub mean: Array1<f32>,
    /// Column sample standard deviations (1 where a column is constant).
    pub std: Array1<f32>,
}

impl StandardScaler {
    /// Learns the means and standard deviations.
    pub fn fit(x: ArrayView2<f32>) -> Result<Self> {
        if x.nrows() < 2 {
            return Err(Error::arg(
                "x",
                "at least 2 rows to estimate a standard deviation",
                x.nrows(),
            ));
        }
        crate::model::validate::check_finite(x, "x")?;
        let n = x.nrows() as f64;
        let mut mean = Array1::zeros(x.ncols());
        let mut std = Array1::zeros(x.ncols());
        for (j, col) in x.axis_iter(Axis(1)).enumerate() {
            // In f64 a sum of f32 values cannot overflow, and a mean of f32
            // values fits back into f32; the standard deviation may not (up to
            // sqrt(2) times the largest value).
            let m = col.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = col.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / (n - 1.0);
            let s = var.sqrt() as f32;
            if !s.is_finite() {
                return Err(Error::Data(format!(
                    "the standard deviation of column {j} is {:e}, beyond the largest f32 \
                     ({:e}); rescale that column first",
                    var.sqrt(),
                    f32::MAX
                )));
            }
            mean[j] = m as f32;
            // A spread below f32's resolution (0 after rounding) is a constant column.
            std[j] = if s > 0.0 { s } else { 1.0 };
        }
        Ok(StandardScaler { mean, std })
    }

    /// `f(x, mean, std)` per column, in f64 so that no intermediate overflows;
    /// a result beyond f32's range is an error rather than an infinity.
    fn map(
        &self,
        x: ArrayView2<f32>,
        what: &str,
        f: impl Fn(f64, f64, f64) -> f64,
    ) -> Result<Array2<f32>> {
        self.check(x)?;
        let mut out = Array2::zeros(x.raw_dim());
        for ((i, j), &v) in x.indexed_iter() {
            let r = f(v as f64, self.mean[j] as f64, self.std[j] as f64) as f32;
            if !r.is_finite() {
                return Err(Error::Data(format!(
                    "StandardScaler::{what}: row {i}, column {j} ({v:e}) maps to {r}, \
                     outside f32's range (mean {:e}, std {:e})",
                    self.mean[j], self.std[j]
                )));
            }
            out[[i, j]] = r;
        }
        Ok(out)
    }

    fn check(&self, x: ArrayView2<f32>) -> Result<()> {
        if x.ncols() != self.mean.len() {
            return Err(Error::shape(
                "StandardScaler",
                format!("{} columns", self.mean.len()),
                format!("{} columns", x.ncols()),
            ));
        }
        Ok(())
    }

    /// `(x - mean) / std`. A value whose result is not a finite f32 is an error.
    pub fn transform(&self, x: ArrayView2<f32>) -> Result<Array2<f32>> {
        self.map(x, "transform", |v, m, s| (v - m) / s)
    }

    /// `z * std + mean`. A value whose result is not a finite f32 is an error.
    pub fn inverse_transform(&self, z: ArrayView2<f32>) -> Result<Array2<f32>> {
        self.map(z, "inverse_transform", |v, m, s| v * s + m)
    }
}

/// One column per category seen at fit time (sorted), 1 where a row has it.
/// A category not seen at fit time is an error, not a silent all-zero row.
///
/// ```
/// use horn::preprocessing::OneHotEncoder;
/// let enc = OneHotEncoder::fit(&["b", "a", "b"]);
/// assert_eq!(enc.categories(), &["a", "b"]);
/// let m = enc.transform(&["b"]).unwrap();
/// assert_eq!(m.row(0).to_vec(), vec![0.0, 1.0]);
/// assert!(enc.transform(&["c"]).is_err());
/// assert_eq!(enc.inverse_transform(m.view()).unwrap(), vec!["b"]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct OneHotEncoder {
    categories: Vec<String>,
}

impl OneHotEncoder {
    /// Learns the categories (sorted, unique).
    pub fn fit<S: AsRef<str>>(values: &[S]) -> Self {
        let mut categories: Vec<String> = values.iter().map(|v| v.as_ref().to_string()).collect();
        categories.sort();
        categories.dedup();
        OneHotEncoder { categories }
    }

    /// The learned categories, in column order.
    pub fn categories(&self) -> &[String] {
        &self.categories
    }

    /// Index of each value's category.
    pub fn indices<S: AsRef<str>>(&self, values: &[S]) -> Result<Vec<usize>> {
        values
            .iter()
            .map(|v| {
                let v = v.as_ref();
                self.categories
                    .binary_search_by(|c| c.as_str().cmp(v))
                    .map_err(|_| {
                        Error::Data(format!(
                            "category `{v}` was not seen when the encoder was fitted (known: {})",
                            self.categories.join(", ")
                        ))
                    })
            })
            .collect()
    }

    /// One-hot rows.
    pub fn transform<S: AsRef<str>>(&self, values: &[S]) -> Result<Array2<f32>> {
        to_categorical(&self.indices(values)?, Some(self.categories.len().max(1)))
    }

    /// The category of each row's largest entry. `rows` must have one column
    /// per category (a wider row would point past the known categories) and
    /// hold no NaN (which has no largest entry).
    ///
    /// ```
    /// use horn::preprocessing::OneHotEncoder;
    /// use ndarray::array;
    /// let enc = OneHotEncoder::fit(&["a", "b"]);
    /// assert_eq!(enc.inverse_transform(array![[0.2f32, 0.8]].view()).unwrap(), ["b"]);
    /// assert!(enc.inverse_transform(array![[0.1f32, 0.2, 0.7]].view()).is_err());
    /// ```
    pub fn inverse_transform(&self, rows: ArrayView2<f32>) -> Result<Vec<String>> {
        if self.categories.is_empty() {
            return Err(Error::Data(
                "OneHotEncoder::inverse_transform: the encoder was fitted on no values, \
                 so it has no category to return"
                    .into(),
            ));
        }
        if rows.ncols() != self.categories.len() {
            return Err(Error::shape(
                "OneHotEncoder::inverse_transform",
                format!("{} columns, one per category", self.categories.len()),
                format!("{} columns", rows.ncols()),
            ));
        }
        crate::model::validate::check_finite(rows, "rows")?;
        Ok(rows
            .axis_iter(Axis(0))
            .map(|r| {
                let best = r
                    .iter()
                    .enumerate()
                    .fold(0, |b, (i, &v)| if v > r[b] { i } else { b });
                self.categories[best].clone()
            })
            .collect())
    }
}

/// A preprocessing recipe in the tidymodels style: declare the steps, `prep`
/// them on the training rows (means, standard deviations and categories are
/// learned there only), then `bake` any table into a model matrix with named
/// columns. Numeric predictors come first, in the order given, then one
/// indicator column per category of each nominal predictor, named
/// `{column}_{category}` (categories sorted, as [`OneHotEncoder`]).
///
/// ```
/// use horn::preprocessing::{Recipe, Table};
/// let t = Table::from_csv_str("size,colour\n1,red\n3,blue\n5,red\n").unwrap();
/// let prepped = Recipe::new().normalize(&["size"]).dummy(&["colour"]).prep(&t).unwrap();
/// let baked = prepped.bake(&t).unwrap();
/// assert_eq!(baked.columns, ["size", "colour_blue", "colour_red"]);
/// assert_eq!(baked.x.row(1).to_vec(), vec![0.0, 1.0, 0.0]);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recipe {
    normalize: Vec<String>,
    dummy: Vec<String>,
}

/// A [`Recipe`] whose steps have learned their parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct PreppedRecipe {
    normalize: Vec<String>,
    scaler: Option<StandardScaler>,
    dummy: Vec<(String, OneHotEncoder)>,
}

/// The model matrix a recipe bakes, with one name per column.
#[derive(Debug, Clone, PartialEq)]
pub struct Baked {
    /// Rows of predictors, f32.
    pub x: Array2<f32>,
    /// Column names, in order.
    pub columns: Vec<String>,
}

impl Recipe {
    /// An empty recipe.
    pub fn new() -> Self {
        Self::default()
    }

    /// Centres and scales these numeric columns to mean 0 and standard
    /// deviation 1 (`step_normalize`).
    pub fn normalize<S: AsRef<str>>(mut self, columns: &[S]) -> Self {
        self.normalize
            .extend(columns.iter().map(|c| c.as_ref().to_string()));
        self
    }

    /// One indicator column per category of these nominal columns
    /// (`step_dummy(one_hot = TRUE)`).
    pub fn dummy<S: AsRef<str>>(mut self, columns: &[S]) -> Self {
        self.dummy
            .extend(columns.iter().map(|c| c.as_ref().to_string()));
        self
    }

    /// Learns every step's parameters from `train` (the training rows only, so
    /// nothing leaks from the test rows). Fails on a missing column, a missing
    /// value, or a column named twice.
    pub fn prep(&self, train: &Table) -> Result<PreppedRecipe> {
        if train.nrows() == 0 {
            return Err(Error::Empty {
                name: "train".into(),
            });
        }
        let all: Vec<&String> = self.normalize.iter().chain(&self.dummy).collect();
        for (i, c) in all.iter().enumerate() {
            if all[..i].contains(c) {
                return Err(Error::Data(format!(
                    "column `{c}` appears twice in the recipe"
                )));
            }
        }
        let names: Vec<&str> = self.normalize.iter().map(String::as_str).collect();
        let scaler = if names.is_empty() {
            None
        } else {
            Some(StandardScaler::fit(train.numeric_matrix(&names)?.view())?)
        };
        let dummy = self
            .dummy
            .iter()
            .map(|c| Ok((c.clone(), OneHotEncoder::fit(&train.categorical(c)?))))
            .collect::<Result<Vec<_>>>()?;
        Ok(PreppedRecipe {
            normalize: self.normalize.clone(),
            scaler,
            dummy,
        })
    }
}

impl PreppedRecipe {
    /// Applies the learned steps to any table with the same columns (training,
    /// test or new rows). A category not seen in training is an error.
    pub fn bake(&self, table: &Table) -> Result<Baked> {
        let mut blocks: Vec<Array2<f32>> = Vec::new();
        let mut columns: Vec<String> = Vec::new();
        if let Some(scaler) = &self.scaler {
            let names: Vec<&str> = self.normalize.iter().map(String::as_str).collect();
            blocks.push(scaler.transform(table.numeric_matrix(&names)?.view())?);
            columns.extend(self.normalize.iter().cloned());
        }
        for (c, enc) in &self.dummy {
            blocks.push(enc.transform(&table.categorical(c)?)?);
            columns.extend(enc.categories().iter().map(|k| format!("{c}_{k}")));
        }
        let views: Vec<_> = blocks.iter().map(|b| b.view()).collect();
        let x = if views.is_empty() {
            Array2::zeros((table.nrows(), 0))
        } else {
            ndarray::concatenate(Axis(1), &views).map_err(|e| {
                Error::shape("Recipe::bake", "blocks with equal rows", e.to_string())
            })?
        };
        Ok(Baked { x, columns })
    }
}
