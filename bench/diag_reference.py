#!/usr/bin/env python3
"""Independent, vectorized NumPy reference of samlab's diagonal-linear-network engine.

Model: beta = u * v (elementwise), loss(X, y) = ||X beta - y||^2 / (2 len(y)),
initialised at u0 = alpha * 1, v0 = 0.  Every update is full batch (B = n).

  rho == 0 : plain gradient descent.
  rho  > 0 : m-SAM.  The n examples are split into n/m consecutive groups of size m
             (m = n: n-SAM, m = 1: 1-SAM); each group gets its own perturbation
             (du, dv) from `ascent_steps` ascent steps of size eta = rho * step_mult on
             the group loss (1/m) sum_{i in G} r_i^2 / 2, either unnormalized
             (no projection) or normalized (projected back onto the rho-ball).
             The descent gradient sums r~_i x_i * v~ (resp. * u~) at the perturbed
             point of each example's group; u, v are then updated simultaneously.

Run as a script to print the pinned reference values (JSON) and the checks.
"""
import json
import sys

import numpy as np


def make_data(n, d, r, n_test, seed, return_theta=False):
    rs = np.random.RandomState(seed)
    X = rs.randn(n, d)
    X_test = rs.randn(n_test, d)
    theta = rs.randn(d)
    theta[r:] = 0
    theta = np.abs(theta) / np.linalg.norm(theta)
    y, y_test = X @ theta, X_test @ theta
    return (X, y, X_test, y_test, theta) if return_theta else (X, y, X_test, y_test)


def loss(X, y, u, v):
    res = X @ (u * v) - y
    return float(res @ res / (2 * len(y)))


def _group_grad(Xg, yg, U, V):
    """Per-group gradient of (1/m) sum_{i in G} r_i^2/2 at (U, V), both (k, d).

    Returns (h_u, h_v, s) with s = (1/m) sum_i r_i x_i of shape (k, d)."""
    m = Xg.shape[1]
    r = np.matmul(Xg, (U * V)[:, :, None])[:, :, 0] - yg      # (k, m)
    s = np.matmul(r[:, None, :], Xg)[:, 0, :] / m             # (k, d)
    return s * V, s * U, s


def train(X, y, X_test, y_test, alpha, lr, iters, rho=0.0, m=None,
          normalize=False, ascent_steps=1, step_mult=1.0):
    n, d = X.shape
    u, v = alpha * np.ones(d), np.zeros(d)
    m = n if m is None else m
    if n % m:
        raise ValueError(f"m={m} must divide n={n}")
    k = n // m
    Xg, yg = X.reshape(k, m, d), y.reshape(k, m)
    eta = rho * step_mult
    with np.errstate(all="ignore"):
        for it in range(iters):
            if rho == 0.0:                                    # GD
                s = X.T @ (X @ (u * v) - y) / n
                gu, gv = s * v, s * u
            else:                                             # m-SAM, all groups at once
                U, V = np.broadcast_to(u, (k, d)), np.broadcast_to(v, (k, d))
                du, dv = np.zeros((k, d)), np.zeros((k, d))
                for _ in range(ascent_steps):
                    hu, hv, _ = _group_grad(Xg, yg, U + du, V + dv)
                    if normalize:
                        hn = np.sqrt((hu * hu).sum(1) + (hv * hv).sum(1))[:, None]
                        du, dv = du + eta * hu / (hn + 1e-12), dv + eta * hv / (hn + 1e-12)
                        pn = np.sqrt((du * du).sum(1) + (dv * dv).sum(1))[:, None]
                        scale = np.where(pn > rho, rho / np.where(pn > 0, pn, 1.0), 1.0)
                        du, dv = du * scale, dv * scale
                    else:
                        du, dv = du + eta * hu, dv + eta * hv
                Ut, Vt = U + du, V + dv
                _, _, s = _group_grad(Xg, yg, Ut, Vt)         # s = (1/m) sum_i r~_i x_i
                gu = (m * s * Vt).sum(0) / n                  # acc_u / n
                gv = (m * s * Ut).sum(0) / n
            u, v = u - lr * gu, v - lr * gv
            if it % 1000 == 999 and not np.isfinite(loss(X, y, u, v)):
                return "diverged"
        tr, te = loss(X, y, u, v), loss(X_test, y_test, u, v)
    if not (np.isfinite(tr) and np.isfinite(te)):
        return "diverged"
    return tr, te, u, v


def sgd(X, y, X_test, y_test, alpha, lr, iters, seed):
    """The authors' batch-1 SGD after np.random.seed(seed): i ~ randint(n), step on (x_i.beta - y_i)^2 / 2."""
    np.random.seed(seed)
    u, v = alpha * np.ones(X.shape[1]), np.zeros(X.shape[1])
    for _ in range(iters):
        i = np.random.randint(X.shape[0])
        xe = (X[i] @ (u * v) - y[i]) * X[i]
        u, v = u - lr * xe * v, v - lr * xe * u
    return loss(X, y, u, v), loss(X_test, y_test, u, v)


DATA = dict(n=20, d=30, r=3, n_test=1000, seed=0)
CASES = [  # (name, data, train kwargs)
    ("gd", DATA, dict(alpha=0.1, lr=5 / 30, iters=10001)),
    ("nsam_rho0.1", DATA, dict(alpha=0.1, lr=5 / 30, iters=10001, rho=0.1)),
    ("1sam_rho0.2", DATA, dict(alpha=0.1, lr=10 / 30, iters=10001, rho=0.2, m=1)),
    ("msam5_rho0.1", DATA, dict(alpha=0.1, lr=5 / 30, iters=10001, rho=0.1, m=5)),
    ("norm_1sam_rho0.01", DATA, dict(alpha=0.1, lr=5 / 30, iters=10001, rho=0.01, m=1, normalize=True)),
    # Normalized SAM with constant rho bounces chaotically near the minimum: rounding differences between
    # implementations grow from 1e-16 at 101 iterations to 1e-3 at 501, so these two are pinned early.
    ("norm_nsam_rho0.05", DATA, dict(alpha=0.1, lr=5 / 30, iters=101, rho=0.05, normalize=True)),
    ("norm_msam4_3step_rho0.05", DATA, dict(alpha=0.1, lr=5 / 30, iters=101, rho=0.05, m=4,
                                            normalize=True, ascent_steps=3, step_mult=0.5)),
    ("unnorm_1sam_2step_rho0.1", DATA, dict(alpha=0.1, lr=5 / 30, iters=2001, rho=0.1, m=1,
                                            ascent_steps=2, step_mult=0.5)),
    ("gd_n40_d100", dict(n=40, d=100, r=5, n_test=500, seed=3), dict(alpha=0.1, lr=0.05, iters=3001)),
]


def run_case(name, data, kw):
    out = train(*make_data(**data), **kw)
    rec = dict(name=name, params=dict(data=data, **kw))
    if out == "diverged":
        rec.update(final_train_loss="diverged", final_test_loss="diverged")
    else:
        rec.update(final_train_loss=out[0], final_test_loss=out[1])
    return rec


def close(a, b, rel):
    return isinstance(a, float) and abs(a - b) <= rel * abs(b)


def main():
    results = [run_case(*c) for c in CASES]
    by = {r["name"]: r for r in results}
    X, _, X_test, _, theta = make_data(**DATA, return_theta=True)
    checks = [
        ("X[0,:3]", np.allclose(X[0, :3], [1.76405235, 0.40015721, 0.97873798], rtol=0, atol=5e-9)),
        ("X_test[0,:3]", np.allclose(X_test[0, :3], [-1.55042935, 0.41731882, -0.94436849], rtol=0, atol=5e-9)),
        ("theta[:3]", np.allclose(theta[:3], [0.86573371, 0.15799741, 0.47491259], rtol=0, atol=5e-9)),
        ("gd test loss 0.015056044189449 (1e-9 rel)",
         close(by["gd"]["final_test_loss"], 0.015056044189449, 1e-9)),
        ("n-SAM rho=0.1 test loss 0.015981952251473 (1e-9 rel)",
         close(by["nsam_rho0.1"]["final_test_loss"], 0.015981952251473, 1e-9)),
    ]
    # Notebook convention: its 1-SAM ascended on r^2, so rho_nb corresponds to our m=1 rho = 2*rho_nb.
    conv = [
        ("notebook_1sam_rho_nb0.1_alpha0.02", dict(alpha=0.02, lr=5 / 30, iters=10001, rho=0.2, m=1), 1.540e-5),
        ("notebook_1sam_rho_nb0.3_alpha0.1", dict(alpha=0.1, lr=10 / 30, iters=10001, rho=0.6, m=1), 1.317e-8),
    ]
    for name, kw, target in conv:
        rec = run_case(name, DATA, kw)
        rec["notebook_test_loss"] = target
        results.append(rec)
        checks.append((f"{name}: test loss rounds to {target:.3e}",
                       isinstance(rec["final_test_loss"], float)
                       and f"{rec['final_test_loss']:.3e}" == f"{target:.3e}"))
    data = make_data(**DATA)
    for seed, lr in [(1, 10 / 30 / 3), (1, 10 / 30), (2, 10 / 30)]:
        tr, te = sgd(*data, alpha=0.1, lr=lr, iters=10001, seed=seed)
        results.append(dict(name=f"sgd_seed{seed}_lr{lr:.4f}", params=dict(data=DATA, alpha=0.1, lr=lr, iters=10001,
                                                                          batch_size=1, seed=seed),
                            final_train_loss=tr, final_test_loss=te))
    all_ok = all(ok for _, ok in checks)
    print(json.dumps(dict(
        cases=results,
        data_check={"X[0,:3]": X[0, :3].tolist(), "X_test[0,:3]": X_test[0, :3].tolist(),
                    "theta[:3]": theta[:3].tolist()},
        checks=[dict(check=what, ok=bool(ok)) for what, ok in checks],
        all_checks_passed=bool(all_ok)), indent=1))
    for what, ok in checks:
        print(f"{'OK  ' if ok else 'FAIL'} {what}", file=sys.stderr)
    print("ALL CHECKS PASSED" if all_ok else "SOME CHECKS FAILED", file=sys.stderr)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
