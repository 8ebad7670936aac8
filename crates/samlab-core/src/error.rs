//! Error types of samlab-core. Both kinds are the user's input being wrong: the CLI exits with status 2 on them.

use std::path::PathBuf;

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
