#!/usr/bin/env python3
"""Independent, vectorized NumPy reference of samlab's one-hidden-layer ReLU engine (samlab-analytic relu).

Model: f(x) = sum_j a_j relu(w_j . x + b_j), W of shape (width, d), no output bias.
Per-example loss l_i = (f(x_i) - y_i)^2 / 2, reduced by "sum" (the 1D notebook's 0.5 * MSELoss(sum)) or "mean".

Every update (batch = all examples in order, or `batch` draws with RandomState(seed).randint(n), one by one):
  rho == 0 : w <- w - lr * red(B) * sum_i grad l_i(w)
  rho  > 0 : the batch is split into consecutive groups of m; each group G gets its own perturbation from
             `steps` ascent steps of size eta = rho * mult on red(|G|) * sum_{i in G} l_i, normalized
             (h / (||h|| + 1e-12)), unnormalized (h) or clipped (h, then projected); normalized and clipped
             perturbations are projected onto the rho-ball. The descent adds each example's gradient at its
             group's perturbed point.
Learning rate at update t of T: base * warmup(t) * shape(t/T) (constant, linear decay 1 - t/T, steps).

Initialization "blanc" (SPEC section 3) from RandomState(seed): W = 2.5 * (2 round(U) - 1) * s (random_sample,
shape (width, d)), b = randn(width) * 2.5 * s, a = randn(width) * 4 * s.

Run as a script to print the values pinned in crates/samlab-analytic/src/relu/train/tests.rs (JSON).
"""
import json
import sys

import numpy as np

X12 = (np.array([-5.5, -4.5, -3.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 4.5, 5.5]) / 4 + 0.07).reshape(-1, 1)
Y12 = 0.345 + np.array([-2, 1.5, 0, 0, 2, 1, 0, -1, 0, 1, 2, -1], dtype=float)


def init_blanc(width, d, seed, scale=1.0):
    rs = np.random.RandomState(seed)
    W = 2.5 * (-1 + 2 * np.round(rs.random_sample((width, d)))) * scale
    b = rs.randn(width) * 2.5 * scale
    a = rs.randn(width) * 4.0 * scale
    return W, b, a


def init_gaussian(width, d, seed, w_scale, a_scale):
    rs = np.random.RandomState(seed)
    W = w_scale * rs.randn(width, d)
    a = a_scale * rs.randn(width)
    return W, np.zeros(width), a


def teacher_student(n, d, teacher_width, n_test, seed):
    rs = np.random.RandomState(seed)

    def unit_rows(rows):
        Z = rs.randn(rows, d)
        return Z / np.sqrt((Z ** 2).sum(1, keepdims=True))

    X, X_test, W = unit_rows(n), unit_rows(n_test), unit_rows(teacher_width)
    a = np.sign(rs.randn(teacher_width))
    f = lambda Z: np.maximum(Z @ W.T, 0) @ a
    return X, f(X), X_test, f(X_test)


def predict(params, X):
    W, b, a = params
    return np.maximum(X @ W.T + b, 0.0) @ a


def losses(params, X, y):
    r = predict(params, X) - y
    return 0.5 * r * r


def grad_sum(params, X, y, c, bias=True):
    """c * sum_i grad l_i and sum_i l_i over the rows of X."""
    W, b, a = params
    pre = X @ W.T + b                       # (k, width)
    act = np.maximum(pre, 0.0)
    r = act @ a - y                          # (k,)
    g = c * r
    gA = g @ act
    T = (g[:, None] * a[None, :]) * (pre > 0)
    gW = T.T @ X
    gb = T.sum(0) if bias else np.zeros_like(b)
    return (gW, gb, gA), float(0.5 * (r @ r))


def add(p, q, s=1.0):
    return tuple(x + s * y for x, y in zip(p, q))


def norm(p):
    return float(np.sqrt(sum((x ** 2).sum() for x in p)))


def lr_at(t, T, base, shape="constant", at=(), factors=(), warmup=0):
    f = t / T
    if shape == "constant":
        s = 1.0
    elif shape == "linear_decay":
        s = 1.0 - f
    elif shape == "step":
        s = 1.0
        for a_, k in zip(at, factors):
            if f >= a_:
                s *= k
    else:
        raise ValueError(shape)
    w = min(1.0, (t + 1) / warmup) if warmup else 1.0
    return base * s * w


def train(X, y, params, iters, lr, rho=0.0, m=None, batch=None, seed=0, reduction="sum", normalization="normalized",
          steps=1, mult=1.0, bias=True, lr_kw=None, stop=None):
    """Returns (params, final train loss (reduced), updates done). stop = (threshold, "clean" | "descent")."""
    n = X.shape[0]
    rs = np.random.RandomState(seed)
    red = (lambda k: 1.0) if reduction == "sum" else (lambda k: 1.0 / k)
    lr_kw = lr_kw or {}
    for t in range(iters):
        rows = np.arange(n) if batch is None else np.array([rs.randint(n) for _ in range(batch)])
        B = len(rows)
        step = lr_at(t, iters, lr, **lr_kw)
        Xb, yb = X[rows], y[rows]
        if rho == 0.0:
            acc, descent_loss = grad_sum(params, Xb, yb, 1.0, bias)
        else:
            mm = B if m is None else m
            acc = tuple(np.zeros_like(p) for p in params)
            descent_loss = 0.0
            for s0 in range(0, B, mm):
                Xg, yg = Xb[s0:s0 + mm], yb[s0:s0 + mm]
                delta = tuple(np.zeros_like(p) for p in params)
                for _ in range(steps):
                    h, _ = grad_sum(add(params, delta), Xg, yg, red(len(yg)), bias)
                    scale = norm(h) + 1e-12 if normalization == "normalized" else 1.0
                    delta = add(delta, h, rho * mult / scale)
                    if normalization != "unnormalized" and norm(delta) > rho:
                        delta = tuple(x * (rho / norm(delta)) for x in delta)
                g, l_ = grad_sum(add(params, delta), Xg, yg, 1.0, bias)
                acc = add(acc, g)
                descent_loss += l_
        new = add(params, acc, -step * red(B))
        if stop is not None:
            threshold, on = stop
            loss = descent_loss if (on == "descent" or rho == 0.0) else float(losses(params, Xb, yb).sum())
            params = new
            if red(B) * loss <= threshold:
                return params, red(n) * float(losses(params, X, y).sum()), t + 1
        params = new
    return params, red(n) * float(losses(params, X, y).sum()), iters


def kinks(params, lo, hi, merge=0.02, min_change=1.0):
    W, b, a = params
    w = W[:, 0]
    keep = w != 0
    t = -b[keep] / w[keep]
    ch = (a * np.abs(w))[keep]
    inside = (t >= lo) & (t <= hi)
    t, ch = t[inside], ch[inside]
    order = np.argsort(t, kind="stable")
    t, ch = t[order], ch[order]
    sums, last = [], -np.inf
    for ti, ci in zip(t, ch):
        if sums and ti - last < merge:
            sums[-1] += ci
        else:
            sums.append(ci)
        last = ti
    return int(sum(abs(s) > min_change for s in sums))


def cases():
    """The runs pinned in the Rust tests: name -> (final train loss, sum of all parameters, updates, kinks)."""
    out = {}
    p0 = init_blanc(100, 1, 0)

    def record(name, params, loss, its, kink=True):
        out[name] = {"train_loss": loss, "param_sum": float(sum(x.sum() for x in params)), "iterations": its,
                     "kinks": kinks(params, X12.min(), X12.max()) if kink else None}

    p, l_, its = train(X12, Y12, p0, 2000, 5e-5)
    record("gd", p, l_, its)
    p, l_, its = train(X12, Y12, p0, 2000, 5e-5, rho=0.3, lr_kw={"shape": "linear_decay"})
    record("nsam_normalized", p, l_, its)
    p, l_, its = train(X12, Y12, p0, 2000, 5e-5, rho=1e-3, m=1, normalization="unnormalized")
    record("1sam_unnormalized", p, l_, its)
    p, l_, its = train(X12, Y12, p0, 1000, 5e-5, rho=0.05, m=4, normalization="clipped", steps=3, mult=0.5)
    record("msam4_clipped_3steps", p, l_, its)
    p, l_, its = train(X12, Y12, p0, 3000, 4e-4, batch=2, seed=1, reduction="mean",
                       lr_kw={"shape": "step", "at": (0.3,), "factors": (0.25,), "warmup": 100})
    record("sgd2_mean_warmup_step", p, l_, its)
    p, l_, its = train(X12, Y12, p0, 1_000_000, 5e-5, stop=(0.5, "clean"))
    record("gd_stop_clean", p, l_, its)
    p, l_, its = train(X12, Y12, p0, 1_000_000, 5e-5, rho=0.3, stop=(2.0, "descent"))
    record("nsam_stop_descent", p, l_, its)
    X, y, _, _ = teacher_student(15, 2, 3, 1000, 0)
    out["teacher_student_y"] = [float(v) for v in y[:3]]
    q0 = init_gaussian(20, 2, 0, 0.5, 0.0)
    p, l_, its = train(X, y, q0, 3000, 0.26, batch=1, seed=0, reduction="mean", bias=False)
    record("teacher_student_sgd", p, l_, its, kink=False)
    return out


def main():
    json.dump(cases(), sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
