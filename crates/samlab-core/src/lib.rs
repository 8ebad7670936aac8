//! # samlab-core
//!
//! The engine-independent heart of samlab:
//!
//! - [`sam::SamConfig`]: the one definition of the SAM family (ERM, n-SAM, m-SAM, 1-SAM; normalized or not;
//!   multi-step ascent; random perturbations; active windows) that every engine reads;
//! - [`diag_net`]: the analytic engine for diagonal linear networks, in f64;
//! - [`relu_net`]: the analytic engine for one-hidden-layer ReLU networks, in f64 (kinks, feature sparsity);
//! - [`theory`]: Theorem 1 (hyperbolic entropy, implicit-bias solver, effective initialization) and Theorem 2
//!   (convergence bounds on least squares);
//! - [`data`]: the paper's sparse regression generator (bit-exact with NumPy's `RandomState`) and `.npy` I/O;
//! - [`spectral`]: Lanczos eigenpairs with residuals, Hutchinson traces and spectral densities of operators known
//!   through their products (the deep nets' Hessians);
//! - [`run_dir`]: the run directory every engine writes and the report reads.
//!
//! No deep-learning engine is linked here, so this crate builds in seconds.
#![deny(missing_docs)]

pub mod ascent;
pub mod batches;
pub mod checkpoint_file;
pub mod data;
pub mod diag_curvature;
pub mod diag_net;
mod error;
pub mod limits;
pub mod numpy_rng;
pub mod param_space;
pub mod rank;
pub mod relu_net;
pub mod run_dir;
pub mod sam;
pub mod schedule;
pub mod spectral;
pub mod stats;
pub mod theory;

pub use error::{is_bad_input, BadInput, ConfigError, DataError};
