//! Bad input, the user's input being wrong rather than the machine: its kinds and the one test for it, on which the
//! CLI exits with status 2.

use std::error::Error;
use std::path::PathBuf;

use crate::run_dir::RunDirError;

/// Whether `err` is bad input: a value, file, flag or request that cannot be used as given, rather than a failing
/// machine. The CLI exits with status 2 when an error's chain holds one, 1 otherwise.
///
/// Bad input is reported as one of core's kinds: [`BadInput`], [`ConfigError`], [`DataError`], or a [`RunDirError`]
/// other than a failed file-system operation. A library has no bad-input error type of its own, so this test needs
/// no list of them; only an error enum that mixes bad input with failures of the machine answers for itself
/// (`is_bad_input`, as [`RunDirError::is_bad_input`]), and its caller asks it.
pub fn is_bad_input(err: &(dyn Error + 'static)) -> bool {
    err.is::<BadInput>()
        || err.is::<ConfigError>()
        || err.is::<DataError>()
        || err
            .downcast_ref::<RunDirError>()
            .is_some_and(RunDirError::is_bad_input)
}

/// Bad input of no more specific kind: a flag, request, file or run that cannot be used as given. The message names
/// the offending value.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct BadInput(pub String);

/// A configuration value that makes no sense.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    /// A field has a value outside its domain.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The offending field, as named in config.toml or on the command line.
        field: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
}

/// A data or parameter file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file is missing, unreadable, not .npy, of the wrong dtype or dimensionality.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        reason: String,
    },
    /// Arrays whose shapes do not fit together.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// NaN or infinite values in input data.
    #[error("{what} holds a non-finite value at index {index}")]
    NonFinite {
        /// Which array.
        what: String,
        /// Flat index of the first bad value.
        index: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_bad_input_knows_cores_kinds_and_nothing_else() {
        let bad: [Box<dyn Error>; 4] = [
            Box::new(BadInput("--jobs must be at least 1".into())),
            Box::new(ConfigError::Invalid {
                field: "rho",
                reason: "must be positive".into(),
            }),
            Box::new(DataError::Shape("3 != 4".into())),
            Box::new(RunDirError::Exists("out".into())),
        ];
        for e in &bad {
            assert!(is_bad_input(e.as_ref()), "{e}");
        }
        let io = || std::io::Error::other("disk full");
        let machine: [Box<dyn Error>; 2] = [
            Box::new(io()),
            Box::new(RunDirError::Io {
                path: "out".into(),
                source: io(),
            }),
        ];
        for e in &machine {
            assert!(!is_bad_input(e.as_ref()), "{e}");
        }
        assert_eq!(BadInput("x: y".into()).to_string(), "x: y");
    }
}
