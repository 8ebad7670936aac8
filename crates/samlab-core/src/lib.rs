//! # samlab-core
//!
//! The engine-independent heart of samlab:
//!
//! - [`sam::SamConfig`]: the one definition of the SAM family (ERM, n-SAM, m-SAM, 1-SAM; normalized or not;
//!   multi-step ascent; random perturbations; active windows) that every engine reads;
//! - [`ascent`]: each SAM step's rule, written once against an oracle that any engine provides;
//! - [`data`]: the paper's sparse regression generator (bit-exact with NumPy's `RandomState`) and `.npy` I/O;
//! - [`spectral`]: Lanczos eigenpairs with residuals, Hutchinson traces and spectral densities of operators known
//!   through their products (the deep nets' Hessians);
//! - [`run`]: the run contract every engine keeps (config, check, execute, load) and the records runs share;
//!   [`run_dir`]: the run directory every engine writes and the report reads;
//! - [`sharpness`]: worst-case and average-case m-sharpness of any model given through an oracle;
//! - [`features`], [`linalg`], [`stats`]: measures and the small dense linear algebra the engines share.
//!
//! No engine is here: the analytic engines are `samlab-analytic`, the deep one `samlab-deep`. This crate builds in
//! seconds.
#![deny(missing_docs)]

pub mod ascent;
pub mod batches;
pub mod checkpoint_file;
pub mod data;
mod error;
pub mod features;
pub mod limits;
pub mod linalg;
pub mod numpy_rng;
pub mod param_space;
pub mod rank;
pub mod run;
pub mod run_dir;
pub mod sam;
pub mod schedule;
pub mod sharpness;
pub mod spectral;
pub mod stats;

pub use error::{is_bad_input, BadInput, ConfigError, DataError};
