//! Regression data sets: the paper's sparse regression generator and `.npy` loading/saving.

use std::path::Path;

use ndarray::{Array1, Array2};
use ndarray_npy::{read_npy, write_npy};
use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, DataError};
use crate::numpy_rng::NumpyRandomState;

/// A regression problem: training and test inputs (rows are examples) with their targets, all in f64.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Training inputs, `n x d`.
    pub x_train: Array2<f64>,
    /// Training targets, `n`.
    pub y_train: Array1<f64>,
    /// Test inputs, `n_test x d`.
    pub x_test: Array2<f64>,
    /// Test targets, `n_test`.
    pub y_test: Array1<f64>,
}

/// The file names a data directory holds.
pub const DATA_FILES: [&str; 4] = ["X_train.npy", "y_train.npy", "X_test.npy", "y_test.npy"];

impl Dataset {
    /// Number of training examples.
    pub fn n(&self) -> usize {
        self.x_train.nrows()
    }

    /// Input dimension.
    pub fn d(&self) -> usize {
        self.x_train.ncols()
    }

    /// Checks that the shapes agree, there is at least one example of each, and every value is finite.
    pub fn validate(&self) -> Result<(), DataError> {
        let (n, d) = self.x_train.dim();
        let (n_test, d_test) = self.x_test.dim();
        if n == 0 || d == 0 || n_test == 0 {
            return Err(DataError::Shape(format!(
                "need at least one training example, one test example and one feature, got X_train {n}x{d}, X_test {n_test}x{d_test}"
            )));
        }
        if d_test != d {
            return Err(DataError::Shape(format!(
                "X_train has {d} columns but X_test has {d_test}"
            )));
        }
        if self.y_train.len() != n || self.y_test.len() != n_test {
            return Err(DataError::Shape(format!(
                "y_train has {} entries for {n} training rows, y_test {} for {n_test} test rows",
                self.y_train.len(),
                self.y_test.len()
            )));
        }
        let arrays = [
            ("X_train", self.x_train.iter()),
            ("X_test", self.x_test.iter()),
        ];
        for (what, values) in arrays {
            check_finite(what, values)?;
        }
        check_finite("y_train", self.y_train.iter())?;
        check_finite("y_test", self.y_test.iter())
    }

    /// Reads `X_train.npy`, `y_train.npy`, `X_test.npy`, `y_test.npy` (f64, C or Fortran order) and validates them.
    pub fn load_dir(dir: &Path) -> Result<Self, DataError> {
        let data = Dataset {
            x_train: read_array(&dir.join(DATA_FILES[0]))?,
            y_train: read_array(&dir.join(DATA_FILES[1]))?,
            x_test: read_array(&dir.join(DATA_FILES[2]))?,
            y_test: read_array(&dir.join(DATA_FILES[3]))?,
        };
        data.validate()?;
        Ok(data)
    }

    /// Writes the four arrays into `dir` under [`DATA_FILES`].
    pub fn save_dir(&self, dir: &Path) -> std::io::Result<()> {
        write_array(&dir.join(DATA_FILES[0]), &self.x_train)?;
        write_array(&dir.join(DATA_FILES[1]), &self.y_train)?;
        write_array(&dir.join(DATA_FILES[2]), &self.x_test)?;
        write_array(&dir.join(DATA_FILES[3]), &self.y_test)
    }
}

fn check_finite<'a>(what: &str, values: impl Iterator<Item = &'a f64>) -> Result<(), DataError> {
    match values.enumerate().find(|(_, v)| !v.is_finite()) {
        Some((index, _)) => Err(DataError::NonFinite {
            what: what.to_string(),
            index,
        }),
        None => Ok(()),
    }
}

/// Reads one f64 array from a `.npy` file, naming the file in the error.
pub fn read_array<D: ndarray::Dimension>(path: &Path) -> Result<ndarray::Array<f64, D>, DataError> {
    read_npy(path).map_err(|e| DataError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Writes one f64 array as `.npy`.
pub fn write_array<D: ndarray::Dimension>(
    path: &Path,
    array: &ndarray::Array<f64, D>,
) -> std::io::Result<()> {
    write_npy(path, array).map_err(std::io::Error::other)
}

/// The paper's sparse regression problem (SPEC §2.1): Gaussian inputs, an `r`-sparse, positive, unit-norm
/// target vector, noiseless labels.
///
/// The draws follow NumPy's legacy `RandomState(seed)` stream exactly (`X`, then `X_test`, then `theta*`, each
/// `randn` row-major), so `seed = 0`, `n = 20`, `d = 30`, `r = 3`, `n_test = 1000` is the authors' notebook data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparseRegression {
    /// Training examples.
    pub n: usize,
    /// Input dimension.
    pub d: usize,
    /// Non-zero entries of the target vector.
    pub r: usize,
    /// Test examples.
    pub n_test: usize,
    /// NumPy `RandomState` seed.
    pub seed: u32,
}

impl SparseRegression {
    /// The notebook's problem: n = 20, d = 30, r = 3, 1000 test points, seed 0.
    pub const NOTEBOOK: SparseRegression = SparseRegression {
        n: 20,
        d: 30,
        r: 3,
        n_test: 1000,
        seed: 0,
    };

    /// Draws the data set and returns it with the target vector `theta*`.
    pub fn generate(&self) -> Result<(Dataset, Array1<f64>), ConfigError> {
        if self.n == 0 || self.d == 0 || self.n_test == 0 || self.r == 0 || self.r > self.d {
            return Err(ConfigError::Invalid {
                field: "n, d, r, n_test",
                reason: format!(
                    "need n, d, n_test >= 1 and 1 <= r <= d, got n={}, d={}, r={}, n_test={}",
                    self.n, self.d, self.r, self.n_test
                ),
            });
        }
        let mut rng = NumpyRandomState::new(self.seed);
        let mut gaussian = |rows: usize, cols: usize| {
            let mut values = vec![0.0; rows * cols];
            rng.fill_standard_normal(&mut values);
            Array2::from_shape_vec((rows, cols), values).expect("shape matches length")
        };
        let x_train = gaussian(self.n, self.d);
        let x_test = gaussian(self.n_test, self.d);
        let mut theta = gaussian(1, self.d)
            .into_shape_with_order(self.d)
            .expect("1 x d");
        theta.slice_mut(ndarray::s![self.r..]).fill(0.0);
        theta.mapv_inplace(f64::abs);
        let norm = theta.dot(&theta).sqrt();
        theta /= norm;
        let data = Dataset {
            y_train: x_train.dot(&theta),
            y_test: x_test.dot(&theta),
            x_train,
            x_test,
        };
        Ok((data, theta))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notebook_data_matches_numpy_check_values() {
        let (data, theta) = SparseRegression::NOTEBOOK.generate().unwrap();
        let close = |a: f64, b: f64| assert!((a - b).abs() < 5e-9, "{a} vs {b}");
        close(data.x_train[[0, 0]], 1.76405235);
        close(data.x_train[[0, 2]], 0.97873798);
        close(data.x_test[[0, 0]], -1.55042935);
        close(data.x_test[[0, 1]], 0.41731882);
        close(theta[0], 0.86573371);
        close(theta[2], 0.47491259);
        assert_eq!(theta.iter().filter(|t| **t != 0.0).count(), 3);
        close(theta.dot(&theta), 1.0);
    }

    #[test]
    fn save_then_load_round_trips_and_rejects_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let (data, _) = SparseRegression {
            n: 4,
            d: 3,
            r: 1,
            n_test: 5,
            seed: 1,
        }
        .generate()
        .unwrap();
        data.save_dir(dir.path()).unwrap();
        assert_eq!(Dataset::load_dir(dir.path()).unwrap(), data);

        // A 1-D array where a matrix is expected.
        write_array(&dir.path().join("X_test.npy"), &data.y_test).unwrap();
        let err = Dataset::load_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("X_test.npy"), "{err}");

        // Wrong number of columns.
        write_array(
            &dir.path().join("X_test.npy"),
            &Array2::<f64>::zeros((5, 2)),
        )
        .unwrap();
        let err = Dataset::load_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("3 columns"), "{err}");

        // f32 instead of f64.
        let f32s = ndarray::Array2::<f32>::zeros((5, 3));
        write_npy(dir.path().join("X_test.npy"), &f32s).unwrap();
        assert!(Dataset::load_dir(dir.path()).is_err());

        // Non-finite data.
        let mut x = data.x_test.clone();
        x[[1, 2]] = f64::NAN;
        write_array(&dir.path().join("X_test.npy"), &x).unwrap();
        let err = Dataset::load_dir(dir.path()).unwrap_err().to_string();
        assert_eq!(err, "X_test holds a non-finite value at index 5");
    }

    #[test]
    fn generator_rejects_r_above_d() {
        let spec = SparseRegression {
            r: 31,
            ..SparseRegression::NOTEBOOK
        };
        assert!(spec.generate().is_err());
    }
}
