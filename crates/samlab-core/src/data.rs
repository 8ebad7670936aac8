//! Regression data sets: the paper's sparse regression generator and `.npy` loading/saving.

use std::borrow::Cow;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use ndarray::{Array1, Array2};
use ndarray_npy::npy::header::Header;
use ndarray_npy::{write_npy, ReadNpyExt};
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

/// The values of `a` in row-major order: borrowed when `a` is stored that way (arrays read from C-order `.npy`
/// files and generated data), copied only for other layouts.
pub fn row_major(a: &Array2<f64>) -> Cow<'_, [f64]> {
    match a.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(a.as_standard_layout().iter().copied().collect()),
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

/// Reads one f64 array from a `.npy` file, naming the file in the error. The header is checked against the
/// file's length first, so a header that claims more values than the file holds is rejected before anything is
/// allocated from it.
pub fn read_array<D: ndarray::Dimension>(path: &Path) -> Result<ndarray::Array<f64, D>, DataError> {
    let bad = |reason: String| DataError::Read {
        path: path.to_path_buf(),
        reason,
    };
    let file = File::open(path).map_err(|e| bad(e.to_string()))?;
    let len = file.metadata().map_err(|e| bad(e.to_string()))?.len();
    read_array_from(std::io::BufReader::new(file), len).map_err(bad)
}

/// [`read_array`] of the bytes of a `.npy` file already in memory; `path` only names it in the error.
pub fn parse_array<D: ndarray::Dimension>(
    bytes: &[u8],
    path: &Path,
) -> Result<ndarray::Array<f64, D>, DataError> {
    read_array_from(std::io::Cursor::new(bytes), bytes.len() as u64).map_err(|reason| {
        DataError::Read {
            path: path.to_path_buf(),
            reason,
        }
    })
}

/// Reads one f64 array from `r`, a `.npy` stream of `len` bytes, after checking its header against `len`.
fn read_array_from<D: ndarray::Dimension>(
    mut r: impl Read + Seek,
    len: u64,
) -> Result<ndarray::Array<f64, D>, String> {
    check_npy_size(&mut r, len)?;
    r.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    ndarray::Array::<f64, D>::read_npy(r).map_err(|e| e.to_string())
}

/// Deepest nesting of brackets a `.npy` header may have (an f64 array's has 2).
const MAX_NPY_HEADER_NESTING: usize = 4;

/// Fails unless the `.npy` stream `r` of `len` bytes holds an f64 array of exactly the size its header declares.
fn check_npy_size(mut r: impl Read + Seek, len: u64) -> Result<(), String> {
    let mut preamble = Vec::new();
    r.by_ref()
        .take(12)
        .read_to_end(&mut preamble)
        .map_err(|e| e.to_string())?;
    if preamble.len() < 10 || !preamble.starts_with(b"\x93NUMPY") {
        return Err("not a .npy file (no NumPy magic string)".into());
    }
    let (header_len, prefix) = match (preamble[6], preamble.get(8..12)) {
        (1, _) => (
            u64::from(u16::from_le_bytes([preamble[8], preamble[9]])),
            10,
        ),
        (2 | 3, Some(b)) => (u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])), 12),
        (v, _) => return Err(format!("unsupported .npy format version {v}")),
    };
    let data_start = prefix + header_len;
    if data_start > len {
        return Err(format!(
            "its header announces {header_len} bytes but the file has only {len}; truncated?"
        ));
    }
    // ndarray-npy's header parser takes time exponential in the nesting of brackets: a 158-byte file opening 30
    // brackets kept it busy for minutes (found by fuzzing, fuzz/ `npy` target). An f64 array's header nests two
    // levels (the dict, the shape tuple), so more than MAX_NPY_HEADER_NESTING is refused before it is parsed.
    r.seek(SeekFrom::Start(prefix)).map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    r.by_ref()
        .take(header_len)
        .read_to_end(&mut head)
        .map_err(|e| e.to_string())?;
    let mut depth = 0usize;
    for byte in head {
        match byte {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > MAX_NPY_HEADER_NESTING {
            return Err(format!(
                "its header nests brackets more than {MAX_NPY_HEADER_NESTING} deep; not a NumPy array header"
            ));
        }
    }
    r.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    let header = Header::from_reader(&mut r).map_err(|e| e.to_string())?;
    let dtype = header.type_descriptor.to_string();
    if !dtype.contains("f8") {
        return Err(format!("dtype {dtype}, expected float64 ('<f8')"));
    }
    let bytes = header
        .shape
        .iter()
        .try_fold(8usize, |acc, &d| acc.checked_mul(d))
        .map(|b| b as u64);
    if bytes != Some(len - data_start) {
        return Err(format!(
            "its header declares shape {:?} of float64, but the file holds {} bytes of data; truncated or corrupt?",
            header.shape,
            len - data_start
        ));
    }
    Ok(())
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
        crate::limits::product("n", &[self.n, self.d], crate::limits::MAX_ELEMENTS)?;
        crate::limits::product(
            "n_test",
            &[self.n_test, self.d],
            crate::limits::MAX_ELEMENTS,
        )?;
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

    /// A version-1.0 `.npy` file of `values` zeros whose header declares `shape` (f64, C order).
    fn npy_v1(shape: &str, values: usize) -> Vec<u8> {
        let mut dict = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + dict.len() + 1) % 64 != 0 {
            dict.push(' ');
        }
        dict.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        out.extend_from_slice(dict.as_bytes());
        out.extend(std::iter::repeat_n(0u8, values * 8));
        out
    }

    #[test]
    fn npy_headers_cannot_claim_more_than_the_file_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.npy");
        write_array(&path, &Array2::<f64>::zeros((3, 5))).unwrap();
        let good = std::fs::read(&path).unwrap();
        let read = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            read_array::<ndarray::Ix2>(&path)
                .map(|a| a.dim())
                .map_err(|e| e.to_string())
        };
        assert_eq!(read(&good), Ok((3, 5)));
        assert_eq!(read(&npy_v1("(3, 5)", 15)), Ok((3, 5)));
        // A shape of 2^40 x 5, or one whose product overflows, over 15 values: refused before any allocation.
        for shape in ["(1099511627776, 5)", "(18446744073709551615, 3)"] {
            let err = read(&npy_v1(shape, 15)).unwrap_err();
            assert!(
                err.contains("declares shape") && err.contains("a.npy"),
                "{err}"
            );
        }
        // Truncated data and a header length beyond the end of the file.
        assert!(read(&good[..good.len() - 8])
            .unwrap_err()
            .contains("truncated"));
        let mut long = good[..20].to_vec();
        long[8] = 0xff;
        long[9] = 0xff;
        assert!(read(&long).unwrap_err().contains("announces 65535 bytes"));
        assert!(read(b"hello").unwrap_err().contains("not a .npy file"));
        // Found by fuzzing (fuzz/ `npy` target, a 10 s timeout): a header opening 30 brackets, which took
        // ndarray-npy's parser exponential time; refused before it is parsed.
        let mut nested = b"\x93NUMPY\x01\x00v\x00{ [      [  ".to_vec();
        nested.extend([b'['; 25]);
        nested.extend([b' '; 25]);
        nested.extend(b"\n\n\n\n\n          ");
        nested.extend([b'\n'; 21]);
        nested.push(b'v');
        nested.extend([b'\n'; 32]);
        nested.extend(b"v\n\n\n\n\n\n\n\x0b\n\n\n    \n");
        assert_eq!(nested.len(), 158);
        let t = std::time::Instant::now();
        let err = read(&nested).unwrap_err();
        assert!(err.contains("nests brackets more than 4 deep"), "{err}");
        assert!(t.elapsed().as_secs() < 1);
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
