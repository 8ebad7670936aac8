#!/usr/bin/env python3
"""Independent NumPy (float64) reference of one training step of several SAM variants.

Model (the diagonal linear network): data X (n x d), y (n); parameters u, v (length d each); beta = u * v;
prediction X @ beta.  Loss on a set S of examples

    L_S(u, v) = (1 / (2 |S|)) * sum_{i in S} (x_i . beta - y_i)^2,

with gradient r = X_S @ beta - y_S, g_beta = X_S^T r / |S|, grad_u = g_beta * v, grad_v = g_beta * u.
The parameter vector is w = concat(u, v) (length 2d); every norm and dot product below is over that
concatenated vector.  S is the full batch (all n examples, ascending index order) unless a variant says
otherwise.  Plain SAM (normalized): g = grad L(w); delta = rho g / ||g||; w_new = w - lr grad L(w + delta).
Unnormalized SAM: delta = rho g.

Every variant is one function below whose docstring states the exact rule, its paper, and what was checked
against the authors' code.  None of them adds the small epsilons the reference codes add to norms
(1e-12, 1e-16, 1e-7): the fixtures keep every norm well away from zero, so the rule is the exact formula.
Weight decay is 0 and the base optimizer is plain gradient descent (w - lr * direction) except for MSAM,
whose momentum is part of the method.

Run as a script: checks the gradient against finite differences, that every variant's reduction case
equals plain normalized SAM to 1e-15 (and that every other case differs from it by more than 1e-6), and
that every float64 result agrees with an np.longdouble recomputation to 1e-14 (the fixtures are well
conditioned, far inside the 1e-12 the Rust tests allow); only if all pass does it write
bench/variants_reference.json, the fixtures Rust tests compare against, and read it back.

Not implemented: SAM-ON (Mueller et al., NeurIPS 2023, "Normalization Layers Are All That SAM Needs")
perturbs only the normalization layers' affine parameters; the diagonal network has none, so SAM-ON would
perturb nothing (it would be plain gradient descent).  It is listed under "skipped" in the fixtures.
"""
import inspect
import json
import os
import sys

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "variants_reference.json")
REDUCTION_TOL = 1e-15


# --------------------------------------------------------------------------------------------------------
# The model


class Problem:
    """Data of one regression problem; w = concat(u, v)."""

    def __init__(self, X, y, dtype=np.float64):
        self.X, self.y = np.asarray(X, dtype), np.asarray(y, dtype)
        self.n, self.d = self.X.shape

    def split(self, w):
        return w[: self.d], w[self.d:]

    def grad(self, w, idx=None):
        """grad L_S(w) for S = idx (ascending example indices; None = all n examples)."""
        u, v = self.split(w)
        X, y = (self.X, self.y) if idx is None else (self.X[idx], self.y[idx])
        r = X @ (u * v) - y
        g_beta = X.T @ r / len(y)
        return np.concatenate([g_beta * v, g_beta * u])

    def loss(self, w, idx=None):
        u, v = self.split(w)
        X, y = (self.X, self.y) if idx is None else (self.X[idx], self.y[idx])
        r = X @ (u * v) - y
        return float(r @ r / (2 * len(y)))

    def example_losses(self, w):
        """Per-example losses l_i(w) = (x_i . beta - y_i)^2 / 2."""
        u, v = self.split(w)
        r = self.X @ (u * v) - self.y
        return 0.5 * r * r


def norm(x):
    return np.sqrt(x @ x)  # a NumPy scalar of x's dtype (float64, or longdouble in the precision check)


# --------------------------------------------------------------------------------------------------------
# Plain SAM


def sam_step(P, w, rho, lr, normalize=True):
    """Plain SAM (Foret et al., ICLR 2021), one step, two gradient evaluations.

    g = grad L(w); delta = rho g / ||g|| (normalize=True) or delta = rho g (normalize=False);
    w_new = w - lr grad L(w + delta).
    """
    g = P.grad(w)
    delta = rho * g / norm(g) if normalize else rho * g
    g_p = P.grad(w + delta)
    return w - lr * g_p, dict(delta=delta, grad_evals=2)


# --------------------------------------------------------------------------------------------------------
# The variants


def asam_step(P, w, rho, lr, eta=0.01, adaptive=True):
    """ASAM (Kwon et al., ICML 2021, "ASAM: Adaptive Sharpness-Aware Minimization for Scale-Invariant
    Learning of Deep Neural Networks", arXiv 2102.11600), one step, two gradient evaluations.

    Rule: T_w = |w| + eta (elementwise); delta = rho T_w^2 g / ||T_w g||; w_new = w - lr grad L(w + delta).
    adaptive=False sets T_w = 1, which is plain normalized SAM (the reduction case).

    Checked against the official code, SamsungLabs/ASAM asam.py (ASAM.ascent_step): for parameters whose
    name contains 'weight' it multiplies p.grad by t_w = |p| + eta, takes the norm of all (scaled) gradients
    (+1e-16), multiplies p.grad by t_w again and sets eps = rho * p.grad / norm; parameters without
    'weight' in their name (biases, BatchNorm) keep T = 1.  descent_step subtracts eps and runs the base
    optimizer with the gradient taken at w + eps.  This agrees with the paper's
    eps = rho T_w^2 grad / ||T_w grad||, T_w = diag(|w|) + eta.  In the diagonal network u and v are both
    weights, so every coordinate is scaled.
    """
    g = P.grad(w)
    t = np.abs(w) + eta if adaptive else np.ones_like(w)
    delta = rho * (t * t * g) / norm(t * g)
    g_p = P.grad(w + delta)
    return w - lr * g_p, dict(delta=delta, grad_evals=2)


def gsam_step(P, w, rho, lr, alpha):
    """GSAM (Zhuang et al., ICLR 2022, "Surrogate Gap Guided Sharpness-Aware Minimization",
    arXiv 2203.08065), one step, two gradient evaluations.

    Rule: g = grad L(w); delta = rho g / ||g||; g_p = grad L(w + delta);
    g_perp = g - (g . g_p / ||g_p||^2) g_p  (the part of the ORIGINAL gradient orthogonal to g_p);
    d = g_p - alpha g_perp; w_new = w - lr d.  alpha = 0 is plain normalized SAM.

    Sign convention checked in both official codes:
    * juntang-zhuang/GSAM gsam/gsam.py, gradient_decompose: vertical = old_g - cosine * ||old_g|| *
      p.grad / ||p.grad|| (old_g = g, p.grad = g_p), then p.grad.add_(vertical, alpha=-alpha), i.e.
      d = g_p - alpha * g_perp;
    * google-research/big_vision trainers/proj/gsam/gsam.py (minimize_fp=True, the default):
      g_clean_residual = g_clean - (g_clean . g_robust_hat) g_robust_hat, g_gsam = g_robust - alpha *
      residual.  Same rule.  This matches the paper (descend f_p, ascend the surrogate gap h = f_p - f
      along the direction orthogonal to grad f_p, whose component there is -g_perp).
    Both official codes schedule rho_t with the learning rate (rho_min..rho_max); here rho is the value for
    this step (big_vision's lr_max == lr_min case).  Their 1e-12 epsilons are omitted.
    """
    g = P.grad(w)
    delta = rho * g / norm(g)
    g_p = P.grad(w + delta)
    g_perp = g - (g @ g_p) / (g_p @ g_p) * g_p
    d = g_p - alpha * g_perp
    return w - lr * d, dict(delta=delta, grad_evals=2, g_perp=g_perp)


def fisher_sam_step(P, w, rho, lr, eta):
    """Fisher SAM (Kim, Li, Hu & Hospedales, ICML 2022, "Fisher SAM: Information Geometry and Sharpness
    Aware Minimisation", arXiv 2206.04920), one step, two gradient evaluations.

    Rule: F = 1 + eta g^2 (diagonal Fisher approximation from the batch gradient g, elementwise);
    delta = rho (g / F) / sqrt(g . (g / F)); w_new = w - lr grad L(w + delta).  (The paper's radius gamma
    is rho here.)  eta = 0 gives F = 1, plain normalized SAM.

    Checked: the search corpus holds no code by the authors (davda54/sam issue #71 asks for an
    implementation; none is linked).  The rule is the paper's closed-form ellipsoid solution
    eps* = gamma f^-1 g / sqrt(g^T f^-1 g), f = 1 + eta g^2, as stated in the brief; a third-party PyTorch
    FisherSAM (gamma = radius, inv_fisher = 1 / (1 + eta * grad^2), e_w = gamma * inv_fisher * grad /
    sqrt(sum(grad * inv_fisher * grad))) computes the same.  The paper's own text was not available in the
    corpus, so whether its Fisher uses the squared batch-mean gradient (used here) or a mean of squared
    per-example gradients is not verified there.
    """
    g = P.grad(w)
    f = 1.0 + eta * g * g
    g_over_f = g / f
    delta = rho * g_over_f / np.sqrt(g @ g_over_f)
    g_p = P.grad(w + delta)
    return w - lr * g_p, dict(delta=delta, grad_evals=2)


def fsam_step(P, w, state, rho, lr, sigma, lam, paper_order=False):
    """F-SAM (Li, Zhou, He, Cheng & Huang, CVPR 2024, "Friendly Sharpness-Aware Minimization",
    arXiv 2403.12350), one step, two gradient evaluations.  State: m (EMA of gradients), None before
    the first step.

    Rule (official code, the default):
      first step (m is None): d = g; m_1 = g;
      later steps:            d = g - sigma m_{t-1};  m_t = lam m_{t-1} + (1 - lam) g   (m updated AFTER d);
      delta = rho d / ||d||; w_new = w - lr grad L(w + delta).
    paper_order=True follows the paper's Algorithm instead: m_t = lam m_{t-1} + (1 - lam) g first
    (m_0 = 0 when m is None), then d = g - sigma m_t.
    sigma = 0 gives d = g, plain normalized SAM, in both orders.

    Checked against the official code, nblt/F-SAM utils.py (class FriendlySAM.first_step): if no
    "momentum" state yet, momentum = grad and p.grad is left as g; otherwise p.grad -= momentum * sigma
    (the OLD momentum) and then momentum = momentum * lmbda + grad * (1 - lmbda).  The paper (and the brief)
    state d_t = g_t - sigma m_t with m_t already including g_t, and an m_0 = 0 start; the official code
    differs in both points, and this function follows the official code by default.
    """
    g = P.grad(w)
    m = state["m"]
    if paper_order:
        m_new = (1 - lam) * g if m is None else lam * m + (1 - lam) * g
        d = g - sigma * m_new
    elif m is None:
        d, m_new = g, g.copy()
    else:
        d = g - sigma * m
        m_new = lam * m + (1 - lam) * g
    delta = rho * d / norm(d)
    g_p = P.grad(w + delta)
    return w - lr * g_p, dict(m=m_new), dict(delta=delta, grad_evals=2)


def vasso_step(P, w, state, rho, lr, theta):
    """VaSSO (Li & Giannakis, NeurIPS 2023, "Enhancing Sharpness-Aware Optimization Through Variance
    Suppression", arXiv 2309.15639), one step, two gradient evaluations.  State: d, None before the first
    step.

    Rule: d_t = g_t on the first step (d is None), otherwise d_t = (1 - theta) d_{t-1} + theta g_t;
    delta = rho d_t / ||d_t||; w_new = w - lr grad L(w + delta).  theta = 1 gives d_t = g_t, plain SAM.

    Checked against the official code, BingcongLi/VaSSO solver/vasso.py (VASSO.first_step): if 'ema' is not
    in the state it is set to a copy of p.grad (so the first step is a plain SAM step, not an EMA from
    zero), else ema = ema * (1 - theta) + grad * theta; e_w = ema * rho / (||ema|| + 1e-7); second_step
    restores w and runs the base optimizer with the gradient at w + e_w.  The paper text available in the
    corpus (abstract only) does not show the initial d; the official code's d_0 = g_0 is followed.
    """
    g = P.grad(w)
    d = g.copy() if state["d"] is None else (1 - theta) * state["d"] + theta * g
    delta = rho * d / norm(d)
    g_p = P.grad(w + delta)
    return w - lr * g_p, dict(d=d), dict(delta=delta, grad_evals=2)


def looksam_step(P, w, state, rho, lr, k, alpha):
    """LookSAM (Liu, Mai, Chen, Hsieh & You, CVPR 2022, "Towards Efficient and Scalable Sharpness-Aware
    Minimization", arXiv 2203.02714, Algorithm 1), one step.  State: t (step counter, starts at 0) and
    g_v (None until the first SAM step).

    Rule: g = grad L(w).
      if t % k == 0 (two gradient evaluations): g_s = grad L(w + rho g / ||g||);
          g_v = g_s - ||g_s|| cos(theta) g / ||g|| = g_s - (g . g_s / ||g||^2) g   (cos = angle(g, g_s)),
          i.e. the component of g_s orthogonal to g; store g_v; direction = g_s;
      else (one gradient evaluation): direction = g + alpha (||g|| / ||g_v||) g_v (current g, stored g_v);
      w_new = w - lr direction; t <- t + 1.
    k = 1 makes every step a SAM step (the reduction case).

    Checked: no code by the authors is in the corpus.  Two independent third-party implementations agree
    with the paper's formulas: MarlonBecker/MSAM optimizer/looksam.py (first step is a SAM step;
    normalized_orthogonal_gradient = (g_s - (g . g_s) / (||g||^2) g) / ||.||; in between
    p.grad += alpha * ||g|| * normalized g_v) and Leminhbinh0209/LookSAM looksam.py (SAM step when
    batch_idx % k == 0; vertical_grad = g_s - ||g_s|| cos g / ||g||; in between
    g += alpha * ||g|| / ||g_v|| * g_v).  The layer-wise Look-LayerSAM variant is not implemented.
    """
    g = P.grad(w)
    t, g_v = state["t"], state["g_v"]
    if t % k == 0:
        g_s = P.grad(w + rho * g / norm(g))
        g_v = g_s - (g @ g_s) / (g @ g) * g
        direction, evals = g_s, 2
    else:
        if g_v is None:
            raise ValueError("LookSAM: an in-between step needs g_v from an earlier SAM step")
        direction, evals = g + alpha * (norm(g) / norm(g_v)) * g_v, 1
    return w - lr * direction, dict(t=t + 1, g_v=g_v), dict(grad_evals=evals)


def esam_step(P, w, rho, lr, beta, gamma, mask, swp_norm="masked", sds_rule="official"):
    """ESAM (Du, Yan, Feng, Zhou, Zhen, Goh & Tan, ICLR 2022, "Efficient Sharpness-aware Minimization for
    Improved Training of Neural Networks", arXiv 2110.03141), one step, two gradient evaluations plus one
    forward pass of per-example losses.  mask (bool, length 2d) is the Stochastic Weight Perturbation
    draw, an explicit input (m_i ~ Bernoulli(beta) in the method).

    Rule (defaults = official code):
      SWP: g = grad L(w); delta = (rho / beta) (m * g) / ||m * g||     (swp_norm="masked", official)
                       or delta = (rho / beta) (m * g) / ||g||          (swp_norm="full", as the paper
                                                                         is usually written);
      SDS: s_i = l_i(w + delta) - l_i(w) for every example i;
           sds_rule="official": if gamma >= 0.99 keep all; else c = the int(n * gamma)-th largest s_i and
                                keep {i : s_i > c} (strictly: int(n * gamma) - 1 examples when no ties);
           sds_rule="paper":    keep the int(n * gamma) examples with the largest s_i (ties: lower index);
      g_p = grad L_S(w + delta) on the kept set S (mean over S, ascending index order), all coordinates;
      w_new = w - lr g_p.
    beta = gamma = 1 (mask all true) is plain normalized SAM.

    Checked against the official code, dydjw9/Efficient_SAM utils/Esam.py: first_step scale =
    rho / (||grad|| + 1e-7) / beta, e_w = grad * scale for every parameter that HAS a gradient, and sets
    requires_grad = True everywhere; second_step restores w and, per parameter tensor, sets
    requires_grad = False with probability 1 - beta for the NEXT step's first backward, so the masked
    tensors get no gradient there: they are not perturbed and are left out of the norm, hence
    ||m * g||, not ||g||.  SDS: instance_sharpness = l_after - l_before, "if prob >= 0.99: all", else
    cutoff = topk(sharpness, int(n * gamma))[-1] and indices = sharpness > cutoff (strict).  The second
    backward uses the mean loss over the kept examples.  The official code differs from the paper's text
    (normalization by ||m * g||; the strict cut that keeps one example fewer than int(n * gamma)); the
    defaults follow the official code.  The official mask is drawn per parameter tensor; this function
    takes a per-coordinate mask, of which per-tensor masks are the special case.
    """
    mask = np.asarray(mask, bool)
    g = P.grad(w)
    m = mask.astype(float)
    mg = m * g
    if swp_norm == "masked":
        delta = (rho / beta) * mg / norm(mg)
    elif swp_norm == "full":
        delta = (rho / beta) * mg / norm(g)
    else:
        raise ValueError(swp_norm)
    sharpness = P.example_losses(w + delta) - P.example_losses(w)
    n = P.n
    if sds_rule == "official":
        if gamma >= 0.99:
            keep = np.arange(n)
        else:
            position = int(n * gamma)
            if position < 1:
                raise ValueError("ESAM: int(n * gamma) must be at least 1")
            cutoff = np.sort(sharpness)[::-1][position - 1]
            keep = np.flatnonzero(sharpness > cutoff)
    elif sds_rule == "paper":
        count = int(n * gamma)
        order = np.argsort(-sharpness, kind="stable")
        keep = np.sort(order[:count])
    else:
        raise ValueError(sds_rule)
    if len(keep) == 0:
        raise ValueError("ESAM: no example selected")
    g_p = P.grad(w + delta, keep)
    return w - lr * g_p, dict(delta=delta, grad_evals=2, loss_evals=1, sharpness=sharpness,
                              selected=keep)


def msam_step(P, w, state, rho, lr, mu):
    """MSAM (Becker, Altrock & Risse, 2024, "Momentum-SAM: Sharpness Aware Minimization without
    Computational Overhead", arXiv 2401.12033), one step, ONE gradient evaluation.  State: buf, the SGD
    heavy-ball momentum buffer (PyTorch convention, zeros before the first step).  w is the unperturbed
    point.

    Rule: delta = -rho buf / ||buf|| (delta = 0 when buf = 0); g = grad L(w + delta);
          buf_new = mu buf + g; w_new = w - lr buf_new.
    The official code keeps the model at the perturbed point between steps; that stored point,
    w_new - rho buf_new / ||buf_new||, is returned too (info "w_stored").

    Checked against the official code, MarlonBecker/MSAM optimizer/msam.py (MSAM.step): the buffer starts
    at zeros and inverse_norm_buffer at 0 (so the first gradient is taken at the unperturbed w); each step
    first moves back, p += rho * buf / ||buf|| (undoing the previous perturbation), then buf = momentum *
    buf + d_p (d_p = gradient at the perturbed point, + weight_decay * p, 0 here), p -= lr * buf, and finally
    moves to the new perturbed point p -= rho * buf_new / (||buf_new|| + 1e-12).  So the unperturbed
    iterates follow exactly the rule above; move_back_from_momentumAscent recovers w at the end of
    training.  Nesterov (off by default) is not implemented.
    """
    buf = state["buf"]
    nb = norm(buf)
    delta = -rho * buf / nb if nb > 0 else np.zeros_like(w)
    g = P.grad(w + delta)
    buf_new = mu * buf + g
    w_new = w - lr * buf_new
    w_stored = w_new - rho * buf_new / norm(buf_new)
    return w_new, dict(buf=buf_new), dict(delta=delta, grad_evals=1, w_stored=w_stored)


# --------------------------------------------------------------------------------------------------------
# Fixtures


def make_problem():
    """n = 8, d = 5 from RandomState(0): X, noise, u0, v0, then an MSAM buffer, drawn in that order."""
    rs = np.random.RandomState(0)
    n, d = 8, 5
    X = rs.randn(n, d)
    beta_star = np.array([1.0, 0.0, -0.5, 0.0, 0.0])
    y = X @ beta_star + 0.1 * rs.randn(n)
    u0 = 0.3 + 0.1 * rs.randn(d)
    v0 = 0.1 * rs.randn(d)
    msam_buf0 = 0.05 * rs.randn(2 * d)
    mask = np.array([True, False, True, True, False, True, True, False, True, True])
    return Problem(X, y), beta_star, u0, v0, msam_buf0, mask


def uv(P, w):
    u, v = P.split(w)
    return {"u": u.tolist(), "v": v.tolist()}


def state_json(P, state):
    out = {}
    for key, val in state.items():
        if val is None:
            out[key] = None
        elif isinstance(val, np.ndarray):
            out[key] = uv(P, val)
        else:
            out[key] = int(val)
    return out


def info_json(P, info):
    out = {}
    for key, val in info.items():
        if key in ("delta", "g_perp", "w_stored"):
            out[key] = uv(P, val)
        elif key == "sharpness":
            out[key] = val.tolist()
        elif key == "selected":
            out[key] = [int(i) for i in val]
        else:
            out[key] = val
    return out


def run_case(P, name, variant, fn, options, w0, state0=None, steps=1, reduces_to_sam=False,
             extra_inputs=None):
    """Runs `steps` consecutive steps of fn; returns (fixture record, list of w after each step)."""
    w, state = w0.copy(), state0
    records, ws = [], []
    for _ in range(steps):
        rec = {"u_in": uv(P, w)["u"], "v_in": uv(P, w)["v"]}
        if state is not None:
            rec["state_in"] = state_json(P, state)
            w_new, state, info = fn(P, w, state, **options)
            rec["state_out"] = state_json(P, state)
        else:
            w_new, info = fn(P, w, **options)
        rec["u_out"], rec["v_out"] = uv(P, w_new)["u"], uv(P, w_new)["v"]
        info = info_json(P, info)
        rec["grad_evals"] = info.pop("grad_evals")
        if info:
            rec["diagnostics"] = info
        records.append(rec)
        ws.append(w_new)
        w = w_new
    defaults = {k: prm.default for k, prm in inspect.signature(fn).parameters.items()
                if prm.default is not inspect.Parameter.empty}
    json_opts = {k: v for k, v in {**defaults, **options}.items() if k != "mask"}  # mask: in "inputs"
    case = {"name": name, "variant": variant, "options": json_opts, "stateful": state0 is not None,
            "reduces_to_sam": reduces_to_sam, "steps": records}
    if extra_inputs:
        case["inputs"] = extra_inputs
    return case, ws


def trajectory(P, fn, options, w0, state0, steps):
    """The iterates w_1..w_steps of fn from (w0, state0)."""
    w, state, out = w0, state0, []
    for _ in range(steps):
        if state is None:
            w, _ = fn(P, w, **options)
        else:
            w, state, _ = fn(P, w, state, **options)
        out.append(w)
    return out


def extended_precision_error(P, fn, options, w0, state0, steps):
    """Max |float64 result - np.longdouble recomputation| over the iterates: the rounding error of this
    reference itself, which must stay far below the 1e-12 the Rust tests allow.  None where longdouble is
    no wider than float64 (e.g. on ARM macOS)."""
    ld = np.longdouble
    if np.finfo(ld).eps >= np.finfo(np.float64).eps:
        return None
    P_ld = Problem(P.X, P.y, dtype=ld)
    state_ld = None if state0 is None else {
        k: (v.astype(ld) if isinstance(v, np.ndarray) else v) for k, v in state0.items()}
    exact = trajectory(P_ld, fn, options, w0.astype(ld), state_ld, steps)
    ws = trajectory(P, fn, options, w0, state0, steps)
    return float(max(np.max(np.abs(a.astype(ld) - b)) for a, b in zip(ws, exact)))


def sam_trajectory(P, w0, rho, lr, steps):
    w, out = w0.copy(), []
    for _ in range(steps):
        w, _ = sam_step(P, w, rho, lr)
        out.append(w)
    return out


def max_diff(ws_a, ws_b):
    return max(float(np.max(np.abs(a - b))) for a, b in zip(ws_a, ws_b))


def check_gradient(P, w):
    """Central finite differences of P.loss against P.grad (full batch and a subset)."""
    worst = 0.0
    for idx in (None, np.array([1, 4, 6])):
        g = P.grad(w, idx)
        h = 1e-6
        for j in range(len(w)):
            e = np.zeros_like(w)
            e[j] = h
            fd = (P.loss(w + e, idx) - P.loss(w - e, idx)) / (2 * h)
            worst = max(worst, abs(fd - g[j]))
    return worst


def main():
    P, beta_star, u0, v0, msam_buf0, mask = make_problem()
    w0 = np.concatenate([u0, v0])
    checks = []

    def check(what, ok):
        checks.append((what, bool(ok)))

    fd_err = check_gradient(P, w0)
    check(f"gradient matches central finite differences (max err {fd_err:.1e} <= 1e-8)", fd_err <= 1e-8)

    cases, precision_skipped = [], []
    RHO, LR = 0.1, 0.1

    def add(name, variant, fn, options, state0=None, steps=1, reduces_to_sam=False, extra_inputs=None,
            differs_from_sam=True):
        case, ws = run_case(P, name, variant, fn, options, w0, state0, steps, reduces_to_sam, extra_inputs)
        sam_ws = sam_trajectory(P, w0, options["rho"], options["lr"], steps)
        diff = max_diff(ws, sam_ws)
        if reduces_to_sam:
            check(f"{name}: equals plain normalized SAM over {steps} step(s) (max diff {diff:.1e} "
                  f"<= {REDUCTION_TOL:.0e})", diff <= REDUCTION_TOL)
        elif differs_from_sam:
            check(f"{name}: differs from plain SAM (max diff {diff:.1e} > 1e-6)", diff > 1e-6)
        err = extended_precision_error(P, fn, options, w0, state0, steps)
        if err is None:
            precision_skipped.append(name)
        else:
            check(f"{name}: float64 agrees with a longdouble recomputation ({err:.1e} <= 1e-14)",
                  err <= 1e-14)
        for a, b in zip(case["steps"], case["steps"][1:]):     # consecutive steps chain
            assert a["u_out"] == b["u_in"] and a["v_out"] == b["v_in"]
            if "state_out" in a:
                assert a["state_out"] == b["state_in"]
        cases.append(case)
        return case, ws

    # Plain SAM, normalized and unnormalized.
    add("sam", "sam", sam_step, dict(rho=RHO, lr=LR), differs_from_sam=False)
    add("sam_unnormalized", "sam", sam_step, dict(rho=RHO, lr=LR, normalize=False))

    # 1. ASAM (rho = 0.5, the official example's default).
    add("asam", "asam", asam_step, dict(rho=0.5, lr=LR, eta=0.01, adaptive=True))
    add("asam_reduction_T1", "asam", asam_step, dict(rho=0.5, lr=LR, eta=0.01, adaptive=False),
        reduces_to_sam=True)

    # 2. GSAM.
    case, _ = add("gsam", "gsam", gsam_step, dict(rho=RHO, lr=LR, alpha=0.3))
    g_p_check = P.grad(w0 + RHO * P.grad(w0) / norm(P.grad(w0)))
    g_perp = np.concatenate([case["steps"][0]["diagnostics"]["g_perp"]["u"],
                             case["steps"][0]["diagnostics"]["g_perp"]["v"]])
    check("gsam: g_perp is orthogonal to g_p (|cos| <= 1e-14)",
          abs(g_perp @ g_p_check) / (norm(g_perp) * norm(g_p_check)) <= 1e-14)
    add("gsam_reduction_alpha0", "gsam", gsam_step, dict(rho=RHO, lr=LR, alpha=0.0), reduces_to_sam=True)

    # 3. Fisher SAM (eta large enough that F differs visibly from 1 at this gradient scale).
    add("fisher_sam", "fisher_sam", fisher_sam_step, dict(rho=RHO, lr=LR, eta=50.0))
    add("fisher_sam_reduction_eta0", "fisher_sam", fisher_sam_step, dict(rho=RHO, lr=LR, eta=0.0),
        reduces_to_sam=True)

    # 4. F-SAM, 3 steps from the official initial state (no EMA yet).
    add("fsam", "fsam", fsam_step, dict(rho=RHO, lr=LR, sigma=1.0, lam=0.6), state0=dict(m=None), steps=3)
    add("fsam_paper_order", "fsam", fsam_step, dict(rho=RHO, lr=LR, sigma=1.0, lam=0.6, paper_order=True),
        state0=dict(m=None), steps=3)
    add("fsam_reduction_sigma0", "fsam", fsam_step, dict(rho=RHO, lr=LR, sigma=0.0, lam=0.6),
        state0=dict(m=None), steps=3, reduces_to_sam=True)

    # 5. VaSSO, 3 steps from the official initial state (d = None: d_1 = g_1).
    add("vasso", "vasso", vasso_step, dict(rho=RHO, lr=LR, theta=0.4), state0=dict(d=None), steps=3)
    add("vasso_reduction_theta1", "vasso", vasso_step, dict(rho=RHO, lr=LR, theta=1.0),
        state0=dict(d=None), steps=3, reduces_to_sam=True)

    # 6. LookSAM, 3 steps from t = 0: k = 2 (SAM, approx, SAM) and k = 3 (SAM, approx, approx).
    for k in (2, 3):
        case, _ = add(f"looksam_k{k}", "looksam", looksam_step, dict(rho=RHO, lr=LR, k=k, alpha=0.7),
                      state0=dict(t=0, g_v=None), steps=3)
        gv = case["steps"][0]["state_out"]["g_v"]
        gv = np.concatenate([gv["u"], gv["v"]])
        g = P.grad(w0)
        check(f"looksam_k{k}: g_v is orthogonal to g (|cos| <= 1e-14)",
              abs(gv @ g) / (norm(gv) * norm(g)) <= 1e-14)
        check(f"looksam_k{k}: grad_evals per step", [s["grad_evals"] for s in case["steps"]]
              == [2 if t % k == 0 else 1 for t in range(3)])
    add("looksam_reduction_k1", "looksam", looksam_step, dict(rho=RHO, lr=LR, k=1, alpha=0.7),
        state0=dict(t=0, g_v=None), steps=3, reduces_to_sam=True)

    # 7. ESAM with an explicit SWP mask.
    mask_in = {"mask": {"u": mask[:P.d].tolist(), "v": mask[P.d:].tolist()}}
    case, _ = add("esam", "esam", esam_step, dict(rho=RHO, lr=LR, beta=0.6, gamma=0.5, mask=mask),
                  extra_inputs=mask_in)
    check("esam (official SDS): keeps int(8 * 0.5) - 1 = 3 examples",
          len(case["steps"][0]["diagnostics"]["selected"]) == 3)
    gaps = np.diff(np.sort(case["steps"][0]["diagnostics"]["sharpness"]))
    check(f"esam: per-example sharpness values are well separated (min gap {gaps.min():.1e} >= 1e-4), "
          "so the selection cannot flip on rounding", gaps.min() >= 1e-4)
    case, _ = add("esam_paper_rules", "esam", esam_step,
                  dict(rho=RHO, lr=LR, beta=0.6, gamma=0.5, mask=mask, swp_norm="full", sds_rule="paper"),
                  extra_inputs=mask_in)
    check("esam_paper_rules: keeps int(8 * 0.5) = 4 examples",
          len(case["steps"][0]["diagnostics"]["selected"]) == 4)
    # samlab's ESAM: the official code's perturbation (normalized over the kept coordinates) with the paper's
    # selection (the top int(n * gamma) examples; the official strict ">" keeps one fewer).
    case, _ = add("esam_samlab", "esam", esam_step,
                  dict(rho=RHO, lr=LR, beta=0.6, gamma=0.5, mask=mask, swp_norm="masked", sds_rule="paper"),
                  extra_inputs=mask_in)
    check("esam_samlab: keeps int(8 * 0.5) = 4 examples",
          len(case["steps"][0]["diagnostics"]["selected"]) == 4)
    all_true = np.ones(2 * P.d, bool)
    for rule in ("official", "paper"):
        add(f"esam_reduction_beta1_gamma1_{rule}", "esam", esam_step,
            dict(rho=RHO, lr=LR, beta=1.0, gamma=1.0, mask=all_true, sds_rule=rule,
                 swp_norm="masked" if rule == "official" else "full"),
            extra_inputs={"mask": {"u": all_true[:P.d].tolist(), "v": all_true[P.d:].tolist()}},
            reduces_to_sam=True)

    # 8. MSAM, 3 steps from a zero buffer (the official start) and from a given buffer.
    zero = np.zeros(2 * P.d)
    add("msam_from_zero", "msam", msam_step, dict(rho=0.3, lr=LR, mu=0.9), state0=dict(buf=zero), steps=3)
    add("msam", "msam", msam_step, dict(rho=0.3, lr=LR, mu=0.9), state0=dict(buf=msam_buf0), steps=3)
    w_hb, b_hb = w0.copy(), msam_buf0.copy()        # rho = 0 must be plain heavy ball
    w_ms, st = w0.copy(), dict(buf=msam_buf0.copy())
    for _ in range(3):
        b_hb = 0.9 * b_hb + P.grad(w_hb)
        w_hb = w_hb - LR * b_hb
        w_ms, st, _ = msam_step(P, w_ms, st, rho=0.0, lr=LR, mu=0.9)
    check("msam: rho = 0 equals heavy-ball SGD over 3 steps (max diff <= 1e-15)",
          np.max(np.abs(w_ms - w_hb)) <= 1e-15)

    fixtures = {
        "description": "One-step (and 3-step, for stateful variants) fixtures of SAM variants on the "
                       "diagonal linear network, written by bench/variants_reference.py (NumPy float64). "
                       "Compare to 1e-12.",
        "generator": "bench/variants_reference.py",
        "format_version": 1,
        "model": {
            "loss": "L_S(u, v) = (1 / (2 |S|)) * sum_{i in S} (x_i . (u * v) - y_i)^2",
            "gradient": "r = X_S (u * v) - y_S; g_beta = X_S^T r / |S|; grad_u = g_beta * v; "
                        "grad_v = g_beta * u",
            "parameters": "w = concat(u, v); norms and dot products over w",
            "batch": "S = all n examples unless a variant selects a subset (ESAM)",
            "sam": "delta = rho g / ||g|| (unnormalized: rho g); w_new = w - lr grad L(w + delta)",
            "epsilons": "none: no 1e-12 / 1e-16 / 1e-7 is added to any norm",
        },
        "problem": {
            "n": P.n, "d": P.d, "rng": "numpy.random.RandomState(0): X, noise, u0, v0, msam_buf0",
            "X": P.X.tolist(), "y": P.y.tolist(), "beta_star": beta_star.tolist(),
            "u0": u0.tolist(), "v0": v0.tolist(),
        },
        "step_record": "steps[i] = {u_in, v_in, state_in?, u_out, v_out, state_out?, grad_evals, "
                       "diagnostics?}; steps are consecutive (step i+1's inputs are step i's outputs); "
                       "every case starts at (u0, v0). Vectors over w are {u: [...], v: [...]}. "
                       "ESAM cases carry inputs.mask (true = coordinate perturbed). Options list every "
                       "argument of the variant's function, defaults included.",
        "cases": cases,
        "skipped": [{"variant": "sam_on",
                     "reason": "SAM-ON (Mueller et al., NeurIPS 2023) perturbs only normalization-layer "
                               "parameters; the diagonal linear network has none."}],
    }

    def report():
        for what, ok in checks:
            print(f"{'OK  ' if ok else 'FAIL'} {what}")
        if precision_skipped:
            print(f"SKIP longdouble precision check (longdouble is float64 here): "
                  f"{len(precision_skipped)} cases")
        return all(ok for _, ok in checks)

    if not all(ok for _, ok in checks):
        report()
        print(f"SOME CHECKS FAILED: {OUT} not written")
        return 1
    with open(OUT, "w") as f:
        json.dump(fixtures, f, indent=1)
        f.write("\n")
    with open(OUT) as f:
        back = json.load(f)
    check("the JSON reads back equal to what was written (floats round-trip)", back == fixtures)
    first = back["cases"][0]["steps"][0]
    w_back = np.concatenate([first["u_out"], first["v_out"]])
    check("the JSON's SAM step equals a fresh SAM step bit for bit",
          np.array_equal(w_back, sam_step(P, w0, RHO, LR)[0]))
    all_ok = report()
    print(f"wrote {OUT}: {len(cases)} cases")
    print("ALL CHECKS PASSED" if all_ok else "SOME CHECKS FAILED")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
