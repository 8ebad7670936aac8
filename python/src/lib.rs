//! The native module `samlab._samlab`: the samlab-core engines behind NumPy arrays and Python callables.
//!
//! The Python package (`samlab/`) wraps these functions in typed results; everything numeric happens in
//! samlab-core. Errors: a samlab-core [`ConfigError`] or [`DataError`] becomes a `ValueError` with its message,
//! a Python callable's own exception passes through untouched, and no Rust panic reaches Python.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use samlab_core::{ConfigError, DataError};

mod analytic;
mod checkpoint;
mod conformance;
mod curvature;
mod model;
mod runs;
mod sharpness;
mod sweep;
mod theory;

/// The error of bad input: a `ValueError` with samlab-core's message.
pub(crate) trait IntoPyResult<T> {
    fn or_value_error(self) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for Result<T, ConfigError> {
    fn or_value_error(self) -> PyResult<T> {
        self.map_err(|e| PyValueError::new_err(e.to_string()))
    }
}

impl<T> IntoPyResult<T> for Result<T, DataError> {
    fn or_value_error(self) -> PyResult<T> {
        self.map_err(|e| PyValueError::new_err(e.to_string()))
    }
}

#[pymodule]
fn _samlab(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    curvature::register(m)?;
    analytic::register(m)?;
    theory::register(m)?;
    conformance::register(m)?;
    sweep::register(m)?;
    runs::register(m)?;
    checkpoint::register(m)?;
    sharpness::register(m)?;
    Ok(())
}
