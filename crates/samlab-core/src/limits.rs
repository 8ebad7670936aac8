//! Upper bounds on sizes that come from flags, configs or file headers, checked with overflow-safe arithmetic
//! before anything is allocated from them: a careless flag or a damaged file gets an error naming it, never an
//! allocation failure.

use crate::error::ConfigError;

/// Most scalars one array built from a flag may hold: 2^30 (8 GiB of f64), far above any experiment here.
pub const MAX_ELEMENTS: usize = 1 << 30;

/// Most points of a grid (function plots, interpolation paths).
pub const MAX_GRID_POINTS: usize = 1_000_000;

/// The product of `dims`, failing with an error naming `field` when it overflows or exceeds `max`.
pub fn product(field: &'static str, dims: &[usize], max: usize) -> Result<usize, ConfigError> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&p| p <= max)
        .ok_or_else(|| ConfigError::Invalid {
            field,
            reason: format!(
                "{} would make arrays of more than {max} values",
                dims.iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(" x ")
            ),
        })
}

/// The number of points `lo, lo + step, ...` below `hi` (NumPy's `arange`; 0 when `hi <= lo`), failing with an
/// error naming `field` unless `step` is finite and positive and the count is at most `max`.
pub fn grid_len(
    field: &'static str,
    lo: f64,
    hi: f64,
    step: f64,
    max: usize,
) -> Result<usize, ConfigError> {
    let bad = |reason: String| ConfigError::Invalid { field, reason };
    if !(step.is_finite() && step > 0.0) {
        return Err(bad(format!("the step must be finite and > 0, got {step}")));
    }
    if !(lo.is_finite() && hi.is_finite()) {
        return Err(bad(format!("the range must be finite, got [{lo}, {hi}]")));
    }
    let count = ((hi - lo) / step).ceil().max(0.0);
    if count > max as f64 {
        return Err(bad(format!(
            "step {step} over [{lo}, {hi}] makes {count:.3e} points, at most {max} are allowed"
        )));
    }
    Ok(count as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_overflow_and_bounds_are_errors() {
        assert_eq!(product("n", &[20, 30], MAX_ELEMENTS), Ok(600));
        let err = product("n", &[1 << 32, 30], MAX_ELEMENTS).unwrap_err();
        assert!(
            err.to_string().contains("invalid n: 4294967296 x 30"),
            "{err}"
        );
        assert!(product("n", &[usize::MAX, 3], usize::MAX).is_err());
    }

    #[test]
    fn grid_lengths_follow_arange_and_are_bounded() {
        assert_eq!(grid_len("step", 0.0, 1.0, 0.25, 10), Ok(4));
        assert_eq!(grid_len("step", 0.0, 1.01, 0.25, 10), Ok(5));
        assert_eq!(grid_len("step", 1.0, 0.0, 0.1, 10), Ok(0));
        assert!(grid_len("step", 0.0, 1.0, 1e-300, MAX_GRID_POINTS).is_err());
        assert!(grid_len("step", 0.0, 1.0, f64::NAN, 10).is_err());
        assert!(grid_len("step", 0.0, f64::INFINITY, 1.0, 10).is_err());
    }
}
