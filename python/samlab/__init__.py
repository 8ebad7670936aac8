"""samlab: Sharpness-Aware Minimization research from Python.

Submodules:

- :mod:`samlab.curvature`: Lanczos eigenpairs, traces (Hutchinson, Hutch++), spectral densities (SLQ) and
  diagonals of any symmetric operator given as a callable ``matvec(v) -> A @ v``;
- :mod:`samlab.analytic`: the diagonal linear network and ReLU network engines with every SAM method and variant,
  and the paper's data;
- :mod:`samlab.theory`: the hyperbolic entropy, alpha_eff, the Delta integrals and the implicit-bias interpolators
  (Theorem 1);
- :mod:`samlab.runs`: samlab run directories as dicts and tables;
- :mod:`samlab.sharpness`: worst-case and average-case m-sharpness of any model given as callables, by samlab's
  Rust ascent;
- :mod:`samlab.torch` (needs PyTorch; not imported by ``import samlab``): Hessian, GGN and residual operators of a
  PyTorch model for :mod:`samlab.curvature`, and worst-case / average-case m-sharpness; ``samlab.torch.SAM``
  (:mod:`samlab.sam`), the SAM family as a PyTorch optimizer;
- :mod:`samlab.conformance` (not imported by ``import samlab``): conformance vectors of the SAM family written by
  samlab's engine, and a checker of any PyTorch implementation against them.

The numerical work happens in samlab's Rust crates (the same code as the ``samlab`` command line).
"""

from . import analytic, curvature, runs, sharpness, theory
from ._samlab import __version__

__all__ = ["__version__", "analytic", "curvature", "runs", "sharpness", "theory"]
