//! The paper's theory, computed: the implicit bias of SAM on diagonal networks (Theorem 1) and the convergence of
//! stochastic unnormalized SAM (Theorem 2).
//!
//! - [`entropy`]: the hyperbolic entropy $\phi_a$ (talk form and $u \odot v$ form);
//! - [`interpolators`]: minimum-$\ell_1$, minimum-$\ell_2$ and minimum-$\phi_a$ interpolators;
//! - [`effective_init`]: $\alpha_{\mathrm{eff}}$, the $\Delta$ integrals and the exact discrete identities;
//! - [`convergence`]: least-squares problems with known constants, stochastic SAM, and the theorem's bounds;
//! - [`implicit_bias`]: Theorem 1's quantities for a finished diagonal-net run (`samlab theory implicit-bias`).

pub mod convergence;
pub mod effective_init;
pub mod entropy;
pub mod implicit_bias;
pub mod interpolators;
