# The native module (src/*.rs). Its public face is samlab.curvature, samlab.analytic and samlab.theory, which
# give these functions their defaults, checks and result types.
from typing import Any, Callable

import numpy as np

__version__: str

def asymmetry(matvec: Callable[[np.ndarray], np.ndarray], dim: int, seed: int) -> float: ...
def lanczos(
    matvec: Callable[[np.ndarray], np.ndarray], dim: int, k: int, which: str, tol: float, max_iter: int, seed: int
) -> dict[str, Any]: ...
def trace(
    matvec: Callable[[np.ndarray], np.ndarray], dim: int, probes: int, method: str, seed: int
) -> dict[str, Any]: ...
def density(
    matvec: Callable[[np.ndarray], np.ndarray],
    dim: int,
    probes: int,
    steps: int,
    points: int,
    sigma_rel: float,
    seed: int,
) -> dict[str, Any]: ...
def diagonal(matvec: Callable[[np.ndarray], np.ndarray], dim: int, probes: int, seed: int) -> dict[str, Any]: ...
def variant_defaults() -> dict[str, str]: ...
def sparse_regression(
    n: int, d: int, r: int, n_test: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]: ...
def twelve_points() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]: ...
def teacher_student(
    n: int, d: int, teacher_width: int, n_test: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]: ...
def diag_train(
    x: np.ndarray,
    y: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    alpha: float,
    config: str,
    accounting: bool = False,
) -> dict[str, Any]: ...
def relu_train(
    x: np.ndarray,
    y: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    width: int,
    bias: bool,
    init: str,
    init_seed: int,
    config: str,
) -> dict[str, Any]: ...
def hyperbolic_entropy(beta: np.ndarray, a: np.ndarray) -> float: ...
def alpha_eff(u: np.ndarray, v: np.ndarray) -> np.ndarray: ...
def min_l2(x: np.ndarray, y: np.ndarray) -> np.ndarray: ...
def min_l1(x: np.ndarray, y: np.ndarray) -> np.ndarray: ...
def min_entropy(x: np.ndarray, y: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, str, int]: ...
def least_squares(
    n: int, d: int, noise: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float, float, float]: ...
def nonconvex_bound(beta: float, initial_gap: float, sigma2: float, batch: int, steps: int) -> float: ...
def pl_bound(beta: float, mu: float, initial_gap: float, sigma2: float, batch: int, steps: int) -> float: ...
def implicit_bias(dir: str) -> str: ...
def sam_step(
    config: str,
    w: np.ndarray,
    batch: int,
    loss_and_grad: Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]],
    losses: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    direction: np.ndarray | None = None,
    steps: int = 0,
    momentum: np.ndarray | None = None,
    norm_mask: np.ndarray | None = None,
    asam_mask: np.ndarray | None = None,
    normals: np.ndarray | None = None,
    keeps: np.ndarray | None = None,
    lr: float = 1.0,
) -> dict[str, Any]: ...
def sweep_runs(dir: str) -> tuple[list[str], list[tuple[int, str, str, str, str, str]]]: ...
def sweep_table(
    dir: str, metrics: list[str]
) -> tuple[list[str], list[tuple[str, int, int, list[tuple[float, float, int]]]], list[tuple[int, str]]]: ...
def read_checkpoint(path: str) -> tuple[dict[str, str], list[tuple[str, np.ndarray]]]: ...
def config_toml(json: str) -> str: ...
def config_engine(text: str, source: str) -> str: ...
def run_config(
    text: str,
    source: str,
    out: str,
    force: bool = False,
    progress: Callable[[int, int, str], object] | None = None,
) -> int: ...
def sharpness_worst_case(
    loss_and_grad: Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]],
    w: np.ndarray,
    n: int,
    rho: float,
    m: int,
    steps: int,
    restarts: int,
    norm: str,
    adaptive: bool,
    step_size_mult: float,
    normalize: bool,
    random_init: bool,
    seed: int,
) -> dict[str, Any]: ...
def sharpness_average_case(
    loss_fn: Callable[[np.ndarray, np.ndarray], float],
    w: np.ndarray,
    n: int,
    rho: float,
    m: int,
    samples: int,
    seed: int,
) -> dict[str, Any]: ...
