//! Summary statistics over repeated runs (seeds), shared by the sweep report and the experiments.

/// The mean and the sample standard deviation (denominator n − 1) of `v`.
///
/// One value has standard deviation 0 (no spread seen; the count tells one value from several), no values give
/// NaN for both, and a NaN in `v` makes both NaN (callers that want the finite values only filter first).
///
/// ```
/// use samlab_core::stats::mean_std;
/// assert_eq!(mean_std(&[1.0, 3.0]), (2.0, 2f64.sqrt()));
/// assert_eq!(mean_std(&[5.0]), (5.0, 0.0));
/// ```
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() == 1 {
        return (mean, 0.0 * mean); // NaN stays NaN
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_value_has_no_spread_and_none_has_no_mean() {
        assert_eq!(mean_std(&[5.0]), (5.0, 0.0));
        let (m, s) = mean_std(&[1.0, 2.0, 4.0]);
        assert_eq!(m, 7.0 / 3.0);
        assert!((s - (7.0f64 / 3.0).sqrt()).abs() < 1e-15);
        let (m, s) = mean_std(&[]);
        assert!(m.is_nan() && s.is_nan());
        let (m, s) = mean_std(&[1.0, f64::NAN]);
        assert!(m.is_nan() && s.is_nan());
        assert!(mean_std(&[f64::NAN]).1.is_nan());
    }
}
