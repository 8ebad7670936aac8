//! # samlab-analytic
//!
//! The analytic engines of samlab, in f64 and without a deep-learning framework, each with its runs beside it:
//!
//! - [`diag`]: diagonal linear networks (the paper's Section 3 and Theorem 1), their exact curvature and runs;
//! - [`relu`]: one-hidden-layer ReLU networks (kinks, feature sparsity, large-step SGD) and runs;
//! - [`theory`]: Theorem 1 (hyperbolic entropy, implicit-bias solver, effective initialization, and its quantities
//!   on a finished run) and Theorem 2 (convergence bounds on least squares).
//!
//! Every run here keeps `samlab_core::run::RunConfig`, the contract the deep engine keeps too.
#![deny(missing_docs)]

pub mod diag;
pub mod relu;
pub mod theory;

/// The gradient of `f` at `w` by central differences of step `h` (the tests' independent reference).
#[cfg(test)]
pub(crate) fn central_difference(f: impl Fn(&[f64]) -> f64, w: &[f64], h: f64) -> Vec<f64> {
    (0..w.len())
        .map(|k| {
            let (mut a, mut b) = (w.to_vec(), w.to_vec());
            a[k] += h;
            b[k] -= h;
            (f(&a) - f(&b)) / (2.0 * h)
        })
        .collect()
}
