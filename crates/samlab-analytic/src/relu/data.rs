//! Data sets of the ReLU-network experiments: the 12-point 1D regression (SPEC §3) and teacher-student data
//! (SPEC §9). Any other data comes from `.npy` files through [`Dataset::load_dir`](samlab_core::data::Dataset::load_dir).

use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use super::model::ReluNet;
use samlab_core::data::Dataset;
use samlab_core::numpy_rng::NumpyRandomState;
use samlab_core::ConfigError;

/// The 12 inputs of SPEC §3 (Maennel et al.; Blanc et al.): $(-5.5, -4.5, \dots, 5.5)/4 + 0.07$.
pub fn twelve_point_inputs() -> Vec<f64> {
    (0..12).map(|k| (k as f64 - 5.5) / 4.0 + 0.07).collect()
}

/// The 12 targets of SPEC §3: $0.345 + (-2, 1.5, 0, 0, 2, 1, 0, -1, 0, 1, 2, -1)$.
pub fn twelve_point_targets() -> Vec<f64> {
    [
        -2.0, 1.5, 0.0, 0.0, 2.0, 1.0, 0.0, -1.0, 0.0, 1.0, 2.0, -1.0,
    ]
    .iter()
    .map(|v| 0.345 + v)
    .collect()
}

/// The 12-point 1D regression problem as a [`Dataset`]. It has no held-out data: the test set is the training
/// set, so test losses equal training losses.
pub fn twelve_points() -> Dataset {
    let x = Array2::from_shape_vec((12, 1), twelve_point_inputs()).expect("12 x 1");
    let y = Array1::from(twelve_point_targets());
    Dataset {
        x_train: x.clone(),
        y_train: y.clone(),
        x_test: x,
        y_test: y,
    }
}

/// Teacher-student regression (SPEC §9, `get_data_two_layer_relu_net`): inputs drawn from $\mathcal N(0, I_d)$ and
/// scaled to unit norm; labels from a bias-free teacher ReLU net whose hidden weights are Gaussian rows scaled to
/// unit norm and whose output weights are the signs of Gaussians.
///
/// Draw order from `RandomState(seed)`: `X` (`n x d`), `X_test` (`n_test x d`), teacher hidden weights
/// (`teacher_width x d`), teacher output signs (`teacher_width`), all `randn` row-major. (The authors draw the
/// teacher with torch, so their exact data cannot be regenerated; the distribution is the same.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeacherStudent {
    /// Training examples.
    pub n: usize,
    /// Input dimension.
    pub d: usize,
    /// Hidden neurons of the teacher.
    pub teacher_width: usize,
    /// Test examples.
    pub n_test: usize,
    /// NumPy `RandomState` seed.
    pub seed: u32,
}

impl TeacherStudent {
    /// SPEC §9's problem: n = 15, d = 2, 3 teacher neurons, 1000 test points.
    pub const PAPER: TeacherStudent = TeacherStudent {
        n: 15,
        d: 2,
        teacher_width: 3,
        n_test: 1000,
        seed: 0,
    };

    /// Draws the data set and returns it with the teacher.
    pub fn generate(&self) -> Result<(Dataset, ReluNet), ConfigError> {
        if self.n == 0 || self.d == 0 || self.teacher_width == 0 || self.n_test == 0 {
            return Err(ConfigError::Invalid {
                field: "n, d, teacher_width, n_test",
                reason: format!(
                    "all must be >= 1, got n={}, d={}, teacher_width={}, n_test={}",
                    self.n, self.d, self.teacher_width, self.n_test
                ),
            });
        }
        // Each of these is a rows x d array: bounded before anything is drawn.
        for (field, rows) in [
            ("n", self.n),
            ("n_test", self.n_test),
            ("teacher_width", self.teacher_width),
        ] {
            samlab_core::limits::product(
                field,
                &[rows, self.d],
                samlab_core::limits::MAX_ELEMENTS,
            )?;
        }
        let mut rng = NumpyRandomState::new(self.seed);
        let mut unit_rows = |rows: usize| {
            let mut values = vec![0.0; rows * self.d];
            rng.fill_standard_normal(&mut values);
            for row in values.chunks_exact_mut(self.d) {
                let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
                row.iter_mut().for_each(|v| *v /= norm);
            }
            Array2::from_shape_vec((rows, self.d), values).expect("rows x d")
        };
        let x_train = unit_rows(self.n);
        let x_test = unit_rows(self.n_test);
        let w = unit_rows(self.teacher_width);
        let mut a = vec![0.0; self.teacher_width];
        rng.fill_standard_normal(&mut a);
        let a: Vec<f64> = a.iter().map(|v| v.signum()).collect();
        let teacher = ReluNet::from_parts(&w, &vec![0.0; self.teacher_width], &a, false)?;
        let data = Dataset {
            y_train: teacher.predict_rows(&x_train),
            y_test: teacher.predict_rows(&x_test),
            x_train,
            x_test,
        };
        Ok((data, teacher))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twelve_points_match_the_notebook() {
        let data = twelve_points();
        data.validate().unwrap();
        assert!((data.x_train[[0, 0]] - (-5.5 / 4.0 + 0.07)).abs() < 1e-15);
        assert!((data.x_train[[11, 0]] - (5.5 / 4.0 + 0.07)).abs() < 1e-15);
        assert_eq!(data.y_train[1], 1.845);
        assert_eq!(data.x_test, data.x_train);
    }

    #[test]
    fn teacher_student_inputs_are_unit_norm_and_labels_come_from_the_teacher() {
        let (data, teacher) = TeacherStudent::PAPER.generate().unwrap();
        data.validate().unwrap();
        assert_eq!(data.x_train.dim(), (15, 2));
        assert_eq!(data.x_test.dim(), (1000, 2));
        for row in data.x_train.rows() {
            assert!((row.dot(&row) - 1.0).abs() < 1e-14);
        }
        assert!(teacher.output_weights().iter().all(|a| a.abs() == 1.0));
        assert_eq!(teacher.predict_rows(&data.x_test), data.y_test);
        assert!(TeacherStudent {
            n: 0,
            ..TeacherStudent::PAPER
        }
        .generate()
        .is_err());
    }
}
