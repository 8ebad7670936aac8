"""The SAM family as a PyTorch optimizer: :class:`SAM` (also ``samlab.torch.SAM``).

Every rule is samlab's (``samlab_core::ascent``, explained in docs/VARIANTS.md), written here over lists of tensors
in the same order of operations and with the same ``||x|| + 1e-12`` norms, and checked against samlab's engine by
the conformance vectors (:mod:`samlab.conformance`) to 1e-10 in float64. docs/TORCH.md states the semantics.

PyTorch is an optional dependency of samlab: this module needs it, ``import samlab`` does not.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import warnings
from collections.abc import Callable, Iterable
from typing import Any

try:
    import torch
except ImportError as e:  # pragma: no cover - exercised only without torch
    raise ImportError("samlab.sam needs PyTorch, which is not installed: pip install torch") from e

__all__ = ["SAM", "VARIANTS"]

#: The variants by their command-line names, with their options at samlab's defaults (``sam::VARIANTS``).
VARIANTS: dict[str, dict[str, float]] = {
    "sam": {},
    "asam": {"eta": 0.01},
    "gsam": {"alpha": 0.1},
    "fisher-sam": {"eta": 1.0},
    "fsam": {"sigma": 1.0, "lam": 0.6},
    "vasso": {"theta": 0.4},
    "looksam": {"k": 5, "alpha": 0.7},
    "esam": {"beta": 0.6, "gamma": 0.5},
    "msam": {},
    "sam-on": {},
}
_STATEFUL = ("fsam", "vasso", "looksam")
_NORMALIZATIONS = ("normalized", "unnormalized", "clipped")
_BN_POLICIES = ("both", "clean", "frozen")
#: samlab's largest radius (``MAX_RHO``): beyond it the perturbation's squared norm overflows f32.
MAX_RHO = 1.844_674_3e19
_EPS = 1e-12
_NORM_LAYERS = (
    torch.nn.modules.batchnorm._BatchNorm,
    torch.nn.GroupNorm,
    torch.nn.LayerNorm,
    torch.nn.modules.instancenorm._InstanceNorm,
)

Tensors = list[torch.Tensor]
Closure = Callable[..., Any]


# --- vector operations over lists of tensors (samlab_core::param_space::Space) ---------------------------------


def _flat(a: Tensors, dtype: torch.dtype) -> torch.Tensor:
    return torch.cat([t.reshape(-1).to(dtype) for t in a])


def _acc(a: Tensors) -> torch.dtype:
    return torch.float64 if a[0].dtype == torch.float64 else torch.float32


def _dot(a: Tensors, b: Tensors) -> torch.Tensor:
    """``a . b`` as a 0-d tensor (float64 when the tensors are, float32 otherwise): one kernel over the whole
    vector, not one per tensor."""
    acc = _acc(a)
    return torch.dot(_flat(a, acc), _flat(b, acc))


def _norm(a: Tensors) -> torch.Tensor:
    return _dot(a, a).sqrt()


def _scaled(c: Any, x: Tensors) -> Tensors:
    """``c * x`` (``c`` a number or a 0-d tensor)."""
    return list(torch._foreach_mul(x, c))


def _scaled_unit(r: float, x: Tensors) -> Tensors:
    """``r x / (||x|| + 1e-12)`` (samlab's ``scaled_unit``)."""
    return _scaled(r / (_norm(x) + _EPS), x)


def _axpy(y: Tensors, a: Any, x: Tensors) -> Tensors:
    """``y + a * x``."""
    return list(torch._foreach_add(y, torch._foreach_mul(x, a)))


def _finite(x: Tensors) -> bool:
    return bool(torch.isfinite(torch.cat([t.reshape(-1) for t in x])).all())


# --- checks -------------------------------------------------------------------------------------------------------


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    return v


def _check_options(variant: str, options: dict[str, Any]) -> dict[str, Any]:
    """The variant's options at their defaults, updated by ``options``, checked as ``Variant::check`` does."""
    options = dict(options)
    if "lambda" in options:
        options["lam"] = options.pop("lambda")
    own = VARIANTS[variant]
    for key in options:
        if key not in own:
            owners = [name for name, opts in VARIANTS.items() if key in opts]
            if owners:
                raise ValueError(
                    f"{key} is an option of {' and '.join(owners)}, not of variant {variant!r} "
                    f"(whose options are {sorted(own) or 'none'})"
                )
            raise TypeError(f"SAM got an unexpected keyword argument {key!r}")
    out = {**own, **options}
    for key, value in out.items():
        if key == "k":
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"LookSAM's k must be an integer of at least 1, got {value!r}")
            out[key] = int(value)
            continue
        out[key] = _number(key, value)
    unit = ("theta", "beta", "gamma")
    for key in unit:
        if key in out and not 0.0 < out[key] <= 1.0:
            raise ValueError(f"{key} must be in (0, 1], got {out[key]}")
    if variant in ("asam", "fisher-sam") and out["eta"] < 0.0:
        raise ValueError(f"eta must be >= 0, got {out['eta']}")
    if variant == "fsam" and not 0.0 <= out["lam"] < 1.0:
        raise ValueError(f"lam (F-SAM's lambda) must be in [0, 1), got {out['lam']}")
    return out


def _as_optimizer(base_optimizer: Any, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    if isinstance(base_optimizer, torch.optim.Optimizer):
        return base_optimizer
    if isinstance(base_optimizer, type) and issubclass(base_optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"base_optimizer is the class {base_optimizer.__name__}: give an instance over the same parameters "
            f"(e.g. {base_optimizer.__name__}(params, lr=0.1)) or a function params -> optimizer"
        )
    if callable(base_optimizer):
        opt = base_optimizer(params)
        if isinstance(opt, torch.optim.Optimizer):
            return opt
        raise TypeError(f"base_optimizer(params) returned a {type(opt).__name__}, not a torch.optim.Optimizer")
    raise TypeError(f"base_optimizer must be a torch.optim.Optimizer, got {type(base_optimizer).__name__}")


class _BatchNorms:
    """The BatchNorm layers of ``model`` under a policy: ``frozen`` puts them in eval mode during the step's passes;
    ``clean`` keeps their running statistics from any pass that is not at the unperturbed weights."""

    def __init__(self, model: torch.nn.Module | None, policy: str):
        self.policy = policy
        self.layers = (
            [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
            if model is not None
            else []
        )

    def __bool__(self) -> bool:
        return bool(self.layers)

    def snapshot(self) -> list[tuple[Any, Any, Any]]:
        return [
            (
                None if m.running_mean is None else m.running_mean.clone(),
                None if m.running_var is None else m.running_var.clone(),
                None if m.num_batches_tracked is None else m.num_batches_tracked.clone(),
            )
            for m in self.layers
        ]

    def restore(self, saved: list[tuple[Any, Any, Any]]) -> None:
        with torch.no_grad():
            for m, (mean, var, count) in zip(self.layers, saved):
                for buf, value in ((m.running_mean, mean), (m.running_var, var), (m.num_batches_tracked, count)):
                    if buf is not None:
                        buf.copy_(value)

    def freeze(self) -> list[bool]:
        modes = [m.training for m in self.layers]
        for m in self.layers:
            m.eval()
        return modes

    def unfreeze(self, modes: list[bool]) -> None:
        for m, mode in zip(self.layers, modes):
            m.train(mode)


class SAM(torch.optim.Optimizer):
    """Sharpness-Aware Minimization (and its variants) around a base optimizer.

    ``params``: the parameters (tensors, or ``(name, tensor)`` pairs as ``model.named_parameters()`` gives: ASAM
    scales the parameters whose name contains ``weight``, as the official code and samlab's deep engine; without
    names it scales every parameter). ``base_optimizer``: a ``torch.optim.Optimizer`` over the same parameters (or a
    function ``params -> optimizer``); SAM shares its ``param_groups``, so learning-rate schedulers attach to either.

    ``rho``: the radius (0 with ``variant="sam"`` is the base optimizer, bit for bit). ``variant``: one of
    :data:`VARIANTS`, with its options as keywords (``eta``, ``alpha``, ``sigma``, ``lam``, ``theta``, ``k``,
    ``beta``, ``gamma``; samlab's defaults when left out). ``m``: group size of m-SAM (each group of ``m`` examples of
    the batch gets its own perturbation; ``None`` is one group). ``normalization``, ``ascent_steps``,
    ``ascent_step_mult``, ``random_init`` and ``random_perturbation`` shape plain SAM's ascent as samlab's
    ``SamConfig``. ``bn_policy``: ``"both"`` (every pass updates BatchNorm's running statistics, the authors' code),
    ``"clean"`` (only passes at the unperturbed weights do) or ``"frozen"`` (BatchNorm in eval mode during the step);
    the last two need ``model``. SAM-ON perturbs ``norm_params`` (default: the affine parameters of ``model``'s
    normalization layers). ``noise(kind, like)``: the randomness (``kind`` "normal": standard normal tensors shaped
    like ``like``; "keep": 0/1 tensors, 1 with probability ``beta``, for ESAM); default ``torch.randn``/``torch.rand``
    with ``generator``.

    ``step(closure)``: ``closure()`` (or ``closure(rows)`` when the step needs part of the batch: m-SAM's groups,
    ESAM's selection; ``rows`` indexes the batch's first dimension) evaluates the loss at the current parameters and
    returns it; it may call ``backward`` itself or leave it to SAM (which backpropagates the mean of what it
    returned). ESAM with ``gamma < 0.99`` needs per-example losses (``reduction="none"``) and no ``backward`` in the
    closure. ``step(closure, batch_size=B, micro_batch=b)`` accumulates every pass over micro-batches of ``b``
    examples (``closure(rows)`` per micro-batch): the same step as the whole batch (or group) at once, in less memory.
    ``first_step()``/``second_step()``: the two-call API for the variants with one ascent gradient at ``w``.
    ``step_vmap(model, loss_fn, x, y)``: m-SAM's groups at once through ``torch.func.vmap`` (models without BatchNorm).

    ``accumulate=k``: gradient accumulation across calls, one call (``step(closure)``, or ``first_step`` and
    ``second_step``) per micro-batch; the base optimizer steps on every k-th. Each micro-batch is perturbed with its
    own gradient: m-SAM with m = the micro-batch. ``sync_perturbation=True``: SAM on the k micro-batches together,
    through the two-call API in two loops over them (``first_step`` k times: the last perturbs along the mean
    gradient; then ``second_step`` k times: the last steps along the mean gradient at ``w + delta``).
    ``accumulated`` counts the micro-batches taken since the last base step.

    ``scaler``: a ``torch.amp.GradScaler`` for float16: every pass is scaled and unscaled by SAM, an overflow in any
    pass skips the step and backs the scale off. ``distributed``: ``"per_worker"`` (each worker's own perturbation:
    m-SAM with m = the per-worker batch) or ``"synchronized"`` (every pass all-reduced: SAM on the global batch) under
    ``torch.distributed``, with ``model`` the ``DistributedDataParallel`` module (whose ``broadcast_buffers`` SAM keeps:
    every worker takes rank 0's BatchNorm running statistics after each step). docs/TORCH.md has the details.
    """

    def __init__(
        self,
        params: Iterable[Any],
        base_optimizer: Any,
        rho: float = 0.05,
        variant: str = "sam",
        m: int | None = None,
        normalization: str = "normalized",
        ascent_steps: int = 1,
        random_perturbation: bool = False,
        bn_policy: str = "both",
        *,
        ascent_step_mult: float = 1.0,
        random_init: bool = False,
        model: torch.nn.Module | None = None,
        norm_params: Iterable[torch.Tensor] | None = None,
        noise: Callable[[str, Tensors], Tensors] | None = None,
        generator: torch.Generator | None = None,
        scaler: Any = None,
        distributed: str | None = None,
        process_group: Any = None,
        accumulate: int = 1,
        sync_perturbation: bool = False,
        **variant_options: Any,
    ):
        if isinstance(params, torch.Tensor):
            raise TypeError("params must be an iterable of tensors or (name, tensor) pairs, not one tensor")
        items = list(params)
        if not items:
            raise ValueError("SAM got an empty parameter list")
        if all(isinstance(p, tuple) and len(p) == 2 for p in items):
            names: list[str] | None = [str(n) for n, _ in items]
            tensors = [p for _, p in items]
        else:
            names, tensors = None, items
        for i, p in enumerate(tensors):
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"parameter {i} is a {type(p).__name__}, not a tensor")
            if not p.requires_grad:
                raise ValueError(f"parameter {names[i] if names else i} does not require grad: SAM cannot perturb it")
        if not isinstance(variant, str) or variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        rho = _number("rho", rho)
        if not 0.0 <= rho <= MAX_RHO:
            raise ValueError(f"rho must be in [0, {MAX_RHO:.2e}], got {rho}")
        options = _check_options(variant, variant_options)
        if normalization not in _NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {', '.join(_NORMALIZATIONS)}, got {normalization!r}")
        if isinstance(ascent_steps, bool) or not isinstance(ascent_steps, numbers.Integral) or ascent_steps < 1:
            raise ValueError(f"ascent_steps must be an integer of at least 1, got {ascent_steps!r}")
        ascent_step_mult = _number("ascent_step_mult", ascent_step_mult)
        if ascent_step_mult <= 0.0:
            raise ValueError(f"ascent_step_mult must be > 0, got {ascent_step_mult}")
        if m is not None and (isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 1):
            raise ValueError(f"m must be a positive integer or None, got {m!r}")
        if bn_policy not in _BN_POLICIES:
            raise ValueError(f"bn_policy must be one of {', '.join(_BN_POLICIES)}, got {bn_policy!r}")
        if bn_policy != "both" and model is None:
            raise ValueError(f"bn_policy={bn_policy!r} needs model= (the module whose BatchNorm layers it governs)")
        if rho == 0.0:
            dropped = (
                f"the variant {variant}"
                if variant != "sam"
                else "ascent_steps > 1"
                if ascent_steps != 1 or ascent_step_mult != 1.0
                else "random_init"
                if random_init
                else "random_perturbation"
                if random_perturbation
                else None
            )
            if dropped:
                raise ValueError(f"{dropped} needs a radius, but rho = 0 is the base optimizer (no perturbation)")
        if variant != "sam":
            if ascent_steps != 1 or ascent_step_mult != 1.0:
                raise ValueError(f"{variant} defines its own ascent: ascent_steps must be 1 and ascent_step_mult 1")
            if random_init or random_perturbation:
                raise ValueError(f"{variant} defines its own ascent: no random_init or random_perturbation")
            if normalization != "normalized":
                raise ValueError(f"{variant} defines its own (normalized) ascent: normalization must be 'normalized'")
        if variant in _STATEFUL and m is not None:
            raise ValueError(f"{variant} keeps one direction for the whole batch: m must be None")
        if isinstance(accumulate, bool) or not isinstance(accumulate, numbers.Integral) or accumulate < 1:
            raise ValueError(f"accumulate must be a positive integer, got {accumulate!r}")
        if sync_perturbation and accumulate == 1:
            raise ValueError(
                "sync_perturbation=True needs accumulate > 1 (the micro-batches that share the perturbation)"
            )
        if accumulate > 1 and not sync_perturbation and variant in _STATEFUL:
            raise ValueError(
                f"{variant} keeps one direction for the whole batch: accumulate needs sync_perturbation=True "
                "(one perturbation per micro-batch is m-SAM)"
            )
        if accumulate > 1 and bn_policy == "clean" and (variant == "msam" or random_perturbation):
            raise ValueError(
                "bn_policy='clean' with accumulate needs a pass at w: msam and random_perturbation have none, and "
                "an extra one per micro-batch would update BatchNorm's running statistics once per micro-batch"
            )
        base = _as_optimizer(base_optimizer, tensors)
        base_params = {id(p) for g in base.param_groups for p in g["params"]}
        for i, p in enumerate(tensors):
            if id(p) not in base_params:
                raise ValueError(f"parameter {names[i] if names else i} is not one of the base optimizer's")
        if names is None:
            group_names = [g.get("param_names") for g in base.param_groups]
            if all(n is not None for n in group_names):
                by_id = {id(p): n for g, ns in zip(base.param_groups, group_names) for p, n in zip(g["params"], ns)}
                names = [by_id[id(p)] for p in tensors]
        if variant == "msam":
            momenta = [g.get("momentum", 0.0) for g in base.param_groups]
            if not isinstance(base, torch.optim.SGD) or not all(mo > 0 for mo in momenta):
                raise ValueError(
                    "msam perturbs along the momentum buffer: the base optimizer must be SGD with momentum > 0"
                )
        mask = None
        if variant == "sam-on":
            if norm_params is None and model is not None:
                norm_params = [
                    p for mod in model.modules() if isinstance(mod, _NORM_LAYERS) for p in mod.parameters(False)
                ]
            chosen = {id(p) for p in norm_params or []}
            if not chosen & {id(p) for p in tensors}:
                raise ValueError(
                    "sam-on perturbs the normalization layers' parameters: give model= with normalization layers "
                    "or norm_params= (none of the parameters is one)"
                )
            mask = [id(p) in chosen for p in tensors]
        if distributed is not None:
            if distributed not in ("per_worker", "synchronized"):
                raise ValueError(f"distributed must be None, 'per_worker' or 'synchronized', got {distributed!r}")
            if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
                raise ValueError(f"distributed={distributed!r} needs an initialized torch.distributed process group")
            if distributed == "per_worker" and variant in _STATEFUL:
                raise ValueError(
                    f"{variant} keeps one direction for the whole batch: distributed must be 'synchronized'"
                )
            if distributed == "synchronized" and variant == "esam" and options["gamma"] < 0.99:
                raise ValueError("ESAM's data selection ranks each worker's examples: use distributed='per_worker'")
        if scaler is not None and not all(hasattr(scaler, a) for a in ("scale", "step", "update", "get_scale")):
            raise TypeError(f"scaler must be a torch.amp.GradScaler, got {type(scaler).__name__}")
        if noise is not None and not callable(noise):
            raise TypeError("noise must be a callable noise(kind, like) -> list of tensors")
        # torch.optim.Optimizer's own constructor: SAM's param_groups are then replaced by the base optimizer's.
        super().__init__(tensors, {"rho": rho})
        self.param_groups = base.param_groups
        self.defaults.update(base.defaults)
        self.base_optimizer = base
        self.params = tensors
        self.names = names
        self.rho = rho
        self.variant = variant
        self.options = options
        self.m = None if m is None else int(m)
        self.normalization = normalization
        self.ascent_steps = int(ascent_steps)
        self.ascent_step_mult = ascent_step_mult
        self.random_init = bool(random_init)
        self.random_perturbation = bool(random_perturbation)
        self.bn_policy = bn_policy
        self._bn = _BatchNorms(model, bn_policy)
        self._norm_mask = mask
        self._noise = noise
        self.generator = generator
        self.scaler = scaler
        self.distributed = distributed
        self.process_group = process_group
        self._ddp = model if model is not None and hasattr(model, "no_sync") else None
        #: Why the pending step is skipped ("loss" or "gradients": not finite), None while it is not.
        self._bad: str | None = None
        #: Gradient evaluations (one per pass that computes gradients), as samlab counts them.
        self.gradient_evals = 0
        #: Steps taken by the variant (LookSAM's period).
        self.variant_steps = 0
        #: F-SAM's average, VaSSO's direction or LookSAM's g_v (None before the first step).
        self.direction: Tensors | None = None
        #: Whether the last step was skipped because of non-finite gradients.
        self.skipped = False
        #: The last step's perturbation of each group (for inspection).
        self.last_deltas: list[Tensors | None] = []
        self._first: dict[str, Any] | None = None
        self._clean_seen = False
        self._micro: int | None = None
        self.accumulate = int(accumulate)
        self.sync_perturbation = bool(sync_perturbation)
        #: Micro-batches accumulated since the last base step (with sync_perturbation, in the current phase: the
        #: first_step calls, then the second_step calls).
        self.accumulated = 0
        self._sum: Tensors | None = None
        self._acc_from: tuple[str, Any] = ("", None)
        self._saved: tuple[Tensors | None, int] = (None, 0)
        if self.sync_perturbation and (why := self._two_call_refusal()):
            raise ValueError(
                f"sync_perturbation=True accumulates through first_step/second_step, but {why}; accumulate within "
                "one call instead: step(closure, batch_size=B, micro_batch=b)"
            )

    # --- the passes -----------------------------------------------------------------------------------------------

    def _params_to(self, w: Tensors, delta: Tensors | None) -> None:
        with torch.no_grad():
            torch._foreach_copy_(self.params, w)
            if delta is not None:
                torch._foreach_add_(self.params, delta)

    def _call(self, closure: Closure, rows: Any) -> Any:
        for p in self.params:
            p.grad = None
        loss = closure() if rows is None else closure(rows)
        if loss is None:
            raise TypeError("the closure returned no loss: it must return the loss tensor")
        if not isinstance(loss, torch.Tensor):
            if isinstance(loss, numbers.Real):
                loss = torch.tensor(float(loss))
            else:
                raise TypeError(f"the closure returned a {type(loss).__name__}, not a loss tensor")
        return loss

    def _chunks(self, rows: Any) -> list[tuple[Any, float]]:
        """``rows`` split into micro-batches of ``micro_batch`` examples, with their shares of the mean."""
        mb = self._micro
        if mb is None or rows is None:
            return [(rows, 1.0)]
        if isinstance(rows, slice):
            start, stop = rows.start, rows.stop
            return [
                (slice(a, min(a + mb, stop)), (min(a + mb, stop) - a) / (stop - start)) for a in range(start, stop, mb)
            ]
        return [(c, c.numel() / rows.numel()) for c in torch.split(rows, mb)]

    def _backward(self, closure: Closure, rows: Any) -> tuple[Tensors, torch.Tensor]:
        """One closure call with its backward: the (unscaled) gradients and the mean loss."""
        # Under DDP, SAM reduces the gradients itself (per pass or once per step): DDP's own all-reduce is off.
        with self._ddp.no_sync() if self._ddp is not None and self.distributed else contextlib.nullcontext():
            loss = self._call(closure, rows)
            if all(p.grad is None for p in self.params):
                if not loss.requires_grad:
                    raise ValueError(
                        "no parameter has a gradient after the closure, and its loss does not require grad: "
                        "the closure must compute the loss of the model at its current parameters"
                    )
                scaled = loss.mean() if self.scaler is None else self.scaler.scale(loss.mean())
                scaled.backward()
        value = loss.detach().float().mean() if loss.dtype != torch.float64 else loss.detach().mean()
        if not bool(torch.isfinite(value)):
            if self.distributed == "per_worker" and self.scaler is not None:
                self._bad = "loss"  # every worker must reach the step's one all-reduce: skipped there
            elif self.scaler is not None:
                raise _NonFiniteError("loss")
            else:
                raise ValueError(
                    f"the closure returned a non-finite loss ({value.item()}); the parameters are unchanged"
                )
        missing = [i for i, p in enumerate(self.params) if p.grad is None]
        if missing:
            which = ", ".join(self.names[i] if self.names else str(i) for i in missing[:5])
            raise ValueError(
                f"parameters without gradients after the closure ({which}): every parameter given to SAM must "
                "take part in the loss (or leave it out of SAM's parameters)"
            )
        if self.scaler is None:
            # The closure's backward made fresh gradient tensors (SAM set .grad to None before it): kept as they are.
            return [p.grad.detach() for p in self.params], value
        # Unscaled here, in the gradients' precision (f32 master weights), never by the scaler's unscale_: the
        # scaler unscales once, the final direction, in step().
        inv = 1.0 / self.scaler.get_scale()
        return [p.grad.detach() * inv for p in self.params], value

    def _pass(self, closure: Closure, w: Tensors, delta: Tensors | None, rows: Any, at_w: bool) -> tuple:
        """The mean gradient and mean loss at ``w + delta`` (``w`` for None) over ``rows`` (accumulated over
        micro-batches when the step has them)."""
        self._params_to(w, delta)
        saved = self._bn.snapshot() if self.bn_policy == "clean" and self._bn and not at_w else None
        modes = self._bn.freeze() if self.bn_policy == "frozen" and self._bn else None
        try:
            chunks = self._chunks(rows)
            if len(chunks) == 1:
                grads, value = self._backward(closure, rows)
            else:
                grads, value = None, None
                for sub, share in chunks:
                    g, v = self._backward(closure, sub)
                    grads = _scaled(share, g) if grads is None else _axpy(grads, share, g)
                    value = share * v if value is None else value + share * v
        finally:
            if saved is not None:
                self._bn.restore(saved)
            if modes is not None:
                self._bn.unfreeze(modes)
        self.gradient_evals += 1
        self._clean_seen = self._clean_seen or at_w
        if self.distributed == "synchronized":
            grads = self._all_mean(grads)
        if not _finite(grads):
            if self.distributed != "per_worker":
                raise _NonFiniteError("gradients")
            self._bad = self._bad or "gradients"
        return grads, value

    def _all_mean(self, x: Tensors) -> Tensors:
        """The mean of ``x`` over the workers."""
        world = torch.distributed.get_world_size(self.process_group)
        flat = torch.cat([t.reshape(-1) for t in x])
        torch.distributed.all_reduce(flat, group=self.process_group)
        flat = flat / world
        out, at = [], 0
        for t in x:
            out.append(flat[at : at + t.numel()].reshape(t.shape))
            at += t.numel()
        return out

    def _losses(self, closure: Closure, w: Tensors, delta: Tensors | None, rows: Any) -> torch.Tensor:
        """Per-example losses at ``w + delta`` (ESAM's selection), without gradients."""
        self._params_to(w, delta)
        saved = self._bn.snapshot() if self._bn else None
        modes = self._bn.freeze() if self.bn_policy == "frozen" and self._bn else None
        try:
            with torch.no_grad():
                loss = self._call(closure, rows)
        finally:
            if saved is not None:
                self._bn.restore(saved)
            if modes is not None:
                self._bn.unfreeze(modes)
        if loss.dim() != 1:
            raise ValueError(
                "ESAM's data selection (gamma < 0.99) needs per-example losses: the closure must return a 1-D tensor "
                f"(reduction='none'), got shape {tuple(loss.shape)}"
            )
        return loss.detach().to(torch.float64)

    def _draw(self, kind: str, like: Tensors) -> Tensors:
        if self._noise is not None:
            out = list(self._noise(kind, like))
            if len(out) != len(like) or any(o.shape != t.shape for o, t in zip(out, like)):
                raise ValueError(f"noise({kind!r}, like) must return tensors shaped like the parameters")
            return [o.to(t.dtype).to(t.device) for o, t in zip(out, like)]
        g = self.generator
        if kind == "normal":
            return [torch.randn(t.shape, dtype=t.dtype, device=t.device, generator=g) for t in like]
        beta = self.options["beta"]
        return [(torch.rand(t.shape, device=t.device, generator=g) < beta).to(t.dtype) for t in like]

    # --- the rules (samlab_core::ascent) ----------------------------------------------------------------------------

    def _sam_delta(self, grad: Callable, w: Tensors) -> Tensors | None:
        """Plain SAM's perturbation (``Ascent::sam_delta``); ``grad(delta)`` is the mean gradient at ``w + delta``."""
        rho = self.rho
        delta: Tensors | None = None
        if self.random_perturbation or self.random_init:
            delta = self._draw("normal", w)
            if self.random_perturbation:
                count = sum(t.numel() for t in w)
                return _scaled(rho / math.sqrt(count), delta)
            delta = _scaled(rho / _norm(delta), delta)
        project = self.normalization == "clipped" or (
            self.normalization == "normalized" and (self.ascent_steps > 1 or self.random_init)
        )
        eta = rho * self.ascent_step_mult
        for _ in range(self.ascent_steps):
            g = grad(delta)
            c = eta / (_norm(g) + _EPS) if self.normalization == "normalized" else eta
            delta = _scaled(c, g) if delta is None else _axpy(delta, c, g)
            if project:
                n = _norm(delta)
                delta = _scaled(torch.where(n > rho, rho / n, torch.ones_like(n)), delta)
        return delta

    def _perturb(self, grad: Callable, w: Tensors) -> Tensors | None:
        """The perturbation of the variants that only perturb (their descent is the plain one at ``w + delta``)."""
        rho, v, opt = self.rho, self.variant, self.options
        if v == "sam":
            return self._sam_delta(grad, w)
        if v == "msam":
            state = self.base_optimizer.state
            buf = [state.get(p, {}).get("momentum_buffer") for p in self.params]
            if all(b is not None for b in buf):
                n = _norm(buf)
                if bool(n > 0):
                    return _scaled(-rho / (n + _EPS), buf)
            return None
        g = grad(None)
        if v == "asam":
            scaled = [self.names is None or "weight" in self.names[i] for i in range(len(w))]
            t = [wi.abs() + opt["eta"] if s else torch.ones_like(wi) for wi, s in zip(w, scaled)]
            tg = [gi * ti for gi, ti in zip(g, t)]
            return [di * ti for di, ti in zip(_scaled_unit(rho, tg), t)]
        if v == "fisher-sam":
            f = [gi / (1.0 + opt["eta"] * gi * gi) for gi in g]
            return _scaled(rho / (_dot(g, f).sqrt() + _EPS), f)
        if v == "fsam":
            if self.direction is None:
                self.direction = [gi.clone() for gi in g]
                return _scaled_unit(rho, g)
            d = _axpy(g, -opt["sigma"], self.direction)
            lam = opt["lam"]
            self.direction = [lam * mi + (1.0 - lam) * gi for mi, gi in zip(self.direction, g)]
            return _scaled_unit(rho, d)
        if v == "vasso":
            if self.direction is None:
                self.direction = [gi.clone() for gi in g]
            else:
                th = opt["theta"]
                self.direction = [(1.0 - th) * di + th * gi for di, gi in zip(self.direction, g)]
            return _scaled_unit(rho, self.direction)
        if v == "sam-on":
            kept = [gi if keep else torch.zeros_like(gi) for gi, keep in zip(g, self._norm_mask)]
            return _scaled_unit(rho, kept)
        if v == "esam":
            beta = opt["beta"]
            kept = g if beta >= 1.0 else [gi * mi for gi, mi in zip(g, self._draw("keep", g))]
            return _scaled_unit(rho / beta, kept)
        raise AssertionError(v)

    def _group(self, closure: Closure, w: Tensors, rows: Any, size: int, offset: int, first: list) -> tuple:
        """One group's descent direction (in mean-gradient units) and perturbation (``Ascent::group``)."""
        rho, v, opt = self.rho, self.variant, self.options

        def grad(delta: Tensors | None, sub: Any = rows) -> Tensors:
            g, loss = self._pass(closure, w, delta, sub, at_w=delta is None)
            if delta is None or not first:
                first.append(loss)
            return g

        if rho == 0.0:
            return grad(None), None
        delta: Tensors | None = None
        if v == "gsam":
            g = grad(None)
            delta = _scaled_unit(rho, g)
            gp = grad(delta)
            along = _dot(g, gp) / _dot(gp, gp)
            direction = _axpy(gp, -opt["alpha"], _axpy(g, -along, gp))
        elif v == "looksam":
            g = grad(None)
            if self.variant_steps % opt["k"] == 0 or self.direction is None:
                delta = _scaled_unit(rho, g)
                gp = grad(delta)
                along = _dot(g, gp) / _dot(g, g)
                self.direction = _axpy(gp, -along, g)
                direction = gp
            else:
                gv = self.direction
                direction = _axpy(g, opt["alpha"] * _norm(g) / (_norm(gv) + _EPS), gv)
        elif v == "esam":
            gamma = opt["gamma"]
            delta = self._perturb(grad, w)
            sub = rows
            if gamma < 0.99:
                before = self._losses(closure, w, None, rows)
                after = self._losses(closure, w, delta, rows)
                if before.numel() != size or after.numel() != size:
                    raise ValueError(f"the closure returned {before.numel()} per-example losses for {size} examples")
                rise = (after - before).tolist()
                keep = max(int(size * gamma), 1)
                order = sorted(range(size), key=lambda i: -rise[i])
                sub = torch.tensor(sorted(order[:keep]), dtype=torch.long) + offset
            direction = grad(delta, sub)
        else:
            delta = self._perturb(grad, w)
            direction = grad(delta)
        self.variant_steps += 1
        return direction, delta

    # --- the API -----------------------------------------------------------------------------------------------------

    def _needs_rows(self) -> bool:
        return self.m is not None or (self.variant == "esam" and self.options["gamma"] < 0.99 and self.rho > 0)

    @torch.no_grad()
    def step(
        self, closure: Closure | None = None, batch_size: int | None = None, micro_batch: int | None = None
    ) -> torch.Tensor | None:
        """One SAM step: the closure evaluates the loss (see the class); returns the loss at the unperturbed
        weights (the first pass's; the descent pass's where a step has none). ``batch_size`` is needed when the
        closure receives ``rows`` (m-SAM, ESAM's selection). Non-finite gradients skip the step (the parameters and
        the variant state stay as they were, ``self.skipped`` is True and a RuntimeWarning says so). With
        ``accumulate``, the closure evaluates one micro-batch and the base optimizer steps on every
        ``accumulate``-th call."""
        if closure is None:
            raise TypeError(
                "SAM.step needs a closure (it evaluates the loss at the perturbed weights); "
                "or use first_step() and second_step()"
            )
        if not callable(closure):
            raise TypeError(f"closure must be callable, got {type(closure).__name__}")
        if self.sync_perturbation:
            raise ValueError(
                "with sync_perturbation=True the perturbation needs every micro-batch's gradient before any "
                "perturbed pass: call first_step/second_step per micro-batch (two loops over them), or "
                "step(closure, batch_size=B, micro_batch=b) once per batch"
            )
        if micro_batch is not None:
            if isinstance(micro_batch, bool) or not isinstance(micro_batch, numbers.Integral) or micro_batch < 1:
                raise ValueError(f"micro_batch must be a positive integer, got {micro_batch!r}")
            if batch_size is None:
                raise ValueError("micro_batch needs batch_size: pass step(closure, batch_size=B, micro_batch=b)")
            if (self.m or batch_size) % micro_batch:
                raise ValueError(f"micro_batch = {micro_batch} must divide the group size {self.m or batch_size}")
        rows_needed = self._needs_rows() or micro_batch is not None
        if rows_needed:
            if batch_size is None:
                raise ValueError(
                    "this step calls closure(rows) on parts of the batch (m-SAM or ESAM's selection): "
                    "pass step(closure, batch_size=B)"
                )
            if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
                raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
            m = self.m or int(batch_size)
            if batch_size % m:
                raise ValueError(f"m = {m} must divide the batch size {batch_size}")
        self._continues("step(closure)", batch_size)
        if not self.accumulated:
            self._begin()
        w = [p.detach().clone() for p in self.params]
        first: list = []
        deltas = []
        direction: Tensors | None = None
        self._clean_seen = False
        self._micro = None if micro_batch is None else int(micro_batch)
        with torch.enable_grad():
            try:
                if rows_needed:
                    m = self.m or int(batch_size)
                    acc: Tensors | None = None
                    groups = int(batch_size) // m
                    for start in range(0, int(batch_size), m):
                        d, delta = self._group(closure, w, slice(start, start + m), m, start, first)
                        acc = d if acc is None else [a + di for a, di in zip(acc, d)]
                        deltas.append(delta)
                    direction = acc if groups == 1 else [a / groups for a in acc]
                else:
                    direction, delta = self._group(closure, w, None, 0, 0, first)
                    deltas.append(delta)
                self._micro = None
                if self.bn_policy == "clean" and self._bn and not self._clean_seen:
                    # No pass at w: one more (its gradients unused) updates the running statistics, as samlab's
                    # extra clean pass.
                    self._params_to(w, None)
                    self._call(closure, None if not rows_needed else slice(0, int(batch_size)))
            except _NonFiniteError as e:
                self._bad = str(e)  # the step (with accumulate: the accumulated one) is skipped below
            except BaseException:
                self._params_to(w, None)
                self._abandon()
                raise
            finally:
                self._micro = None
        self._params_to(w, None)
        self.last_deltas = deltas
        loss = first[0] if first else None
        done, direction = self._gather(direction)
        if not done:
            return loss
        if self.distributed == "per_worker":
            # Each worker's direction is its groups' (m-SAM with m = its batch); their mean is the step's.
            bad = torch.tensor([1.0 if self._bad else 0.0], dtype=direction[0].dtype, device=direction[0].device)
            *direction, bad = self._all_mean([*direction, bad])
            if bool(bad > 0):
                self._bad = self._bad or "gradients"
        if self._bad or direction is None or not _finite(direction):
            self.direction, self.variant_steps = self._saved
            self._skip(self._bad or "gradients")
        else:
            self._apply(direction)
        self._bad = None
        self._share_bn_statistics()
        return loss

    # --- accumulation across calls ------------------------------------------------------------------------------

    def _begin(self) -> None:
        """Starts a step (with accumulate: an accumulation): the variant state to restore if it is skipped."""
        self._saved = (None if self.direction is None else [d.clone() for d in self.direction], self.variant_steps)
        self._bad = None

    def _continues(self, api: str, batch_size: Any = None) -> None:
        """Refuses a call that does not continue the pending accumulation (another API, another batch size)."""
        if self._first is not None and api == "step(closure)":
            raise ValueError("step(closure) between first_step and second_step: call second_step first")
        if not self.accumulated:
            self._acc_from = (api, batch_size)
            return
        was, size = self._acc_from
        if was != api:
            raise ValueError(
                f"{api} after {self.accumulated} of the {self.accumulate} micro-batches were accumulated by {was}: "
                f"finish the accumulation with {was}"
            )
        if size != batch_size:
            raise ValueError(
                f"batch_size {batch_size} differs from this accumulation's {size}: the step is the mean over "
                "micro-batches of one size"
            )

    def _gather(self, x: Tensors | None) -> tuple[bool, Tensors | None]:
        """Adds one micro-batch's ``x`` (None: nothing) to the accumulation: ``(True, the mean)`` on the
        ``accumulate``-th micro-batch, ``(False, None)`` before it."""
        if self.accumulate == 1:
            return True, x
        if x is not None:
            self._sum = x if self._sum is None else list(torch._foreach_add(self._sum, x))
        self.accumulated += 1
        if self.accumulated < self.accumulate:
            return False, None
        total, self._sum, self.accumulated = self._sum, None, 0
        return True, None if total is None else _scaled(1.0 / self.accumulate, total)

    def _abandon(self) -> None:
        """Drops the pending step or accumulation (after an error): the variant state is the one before it."""
        self.direction, self.variant_steps = self._saved
        self._sum, self.accumulated, self._first, self._bad = None, 0, None, None

    def _share_bn_statistics(self) -> None:
        """Under DDP with ``broadcast_buffers`` (its default), every worker takes rank 0's BatchNorm running
        statistics after the step, as DDP's own forward does outside ``no_sync`` (SAM's passes are all inside)."""
        if not (self.distributed and self._bn and self.bn_policy != "frozen"):
            return
        if not getattr(self._ddp, "broadcast_buffers", False):
            return
        stats = [b for m in self._bn.layers for b in (m.running_mean, m.running_var) if b is not None]
        if not stats:
            return
        group = self.process_group
        src = 0 if group is None else torch.distributed.get_global_rank(group, 0)
        flat = torch.cat([b.reshape(-1) for b in stats])
        torch.distributed.broadcast(flat, src=src, group=group)
        at = 0
        for b in stats:
            b.copy_(flat[at : at + b.numel()].view_as(b))
            at += b.numel()

    def _apply(self, direction: Tensors) -> None:
        """Steps the base optimizer along ``direction`` (through the scaler, which unscales it once)."""
        self.skipped = False
        if self.scaler is None:
            for p, d in zip(self.params, direction):
                p.grad = d
            self.base_optimizer.step()
            return
        s = self.scaler.get_scale()
        for p, d in zip(self.params, direction):
            p.grad = d * s
        self.scaler.step(self.base_optimizer)
        self.scaler.update()

    def _skip(self, what: str) -> None:
        """A step with non-finite ``what``: nothing changes; with a scaler its scale is lowered (an overflow of
        either pass, the scaler's ordinary signal), without one a RuntimeWarning says so."""
        self.skipped = True
        if self.scaler is not None:
            # The scaler sees an inf, skips the base optimizer's step and backs its scale off, as on any overflow.
            for i, p in enumerate(self.params):
                p.grad = torch.full_like(p, math.inf) if i == 0 else torch.zeros_like(p)
            self.scaler.step(self.base_optimizer)
            self.scaler.update()
            for p in self.params:
                p.grad = None
            return
        for p in self.params:
            p.grad = None
        warnings.warn(
            f"SAM step skipped: non-finite {what} (the parameters are unchanged)", RuntimeWarning, stacklevel=3
        )

    @torch.no_grad()
    def step_vmap(self, model: torch.nn.Module, loss_fn: Callable, inputs: Any, targets: Any) -> torch.Tensor:
        """m-SAM with every group at once: ``torch.func.vmap`` over the ``B / m`` groups of ``inputs``/``targets``
        (``loss_fn(model(x), y)`` the mean loss of a group) instead of a loop of closure calls. The same step as
        ``step(closure, batch_size=B)`` (plain SAM: normalized, unnormalized or clipped, multi-step; tested to 1e-12
        in float64), for models without BatchNorm (whose batch statistics would mix the groups under vmap). Returns
        the mean loss of the groups at the unperturbed weights."""
        from torch.func import functional_call, grad_and_value, vmap

        if self.variant != "sam" or self.random_init or self.random_perturbation:
            raise ValueError("step_vmap runs plain SAM's ascent (no variant, random start or random perturbation)")
        if self.scaler is not None or self.distributed or self.accumulate > 1:
            raise ValueError("step_vmap takes no scaler, distributed mode or accumulate: use step(closure)")
        if any(isinstance(mod, torch.nn.modules.batchnorm._BatchNorm) for mod in model.modules()):
            raise ValueError(
                "step_vmap needs a model without BatchNorm (vmap would share its statistics across groups)"
            )
        named = dict(model.named_parameters())
        by_id = {id(p): n for n, p in named.items()}
        missing = [i for i, p in enumerate(self.params) if id(p) not in by_id]
        if missing:
            raise ValueError(f"parameters {missing[:5]} of SAM are not parameters of model")
        names = [by_id[id(p)] for p in self.params]
        batch = len(inputs)
        m = self.m or batch
        if len(targets) != batch or batch % m:
            raise ValueError(f"m = {m} must divide the batch size {batch} (inputs and targets of the same length)")
        groups = batch // m
        xg = inputs.reshape(groups, m, *inputs.shape[1:])
        yg = targets.reshape(groups, m, *targets.shape[1:])
        w = [p.detach() for p in self.params]
        others = {n: p.detach() for n, p in named.items() if n not in set(names)}

        def loss(params: tuple, x: Any, y: Any) -> torch.Tensor:
            out = functional_call(model, {**others, **dict(zip(names, params))}, (x,))
            return loss_fn(out, y)

        def per_group(delta: Tensors | None) -> tuple[Tensors, torch.Tensor]:
            # At w the groups share the weights (in_dims None): one convolution over the whole batch instead of a
            # batched-weight one per group (1.5x faster on the CPU, measured on a 2-conv CNN, m = 16, batch 128).
            ps, dims = (w, None) if delta is None else ([wi + d for wi, d in zip(w, delta)], 0)
            with torch.enable_grad():
                g, value = vmap(grad_and_value(loss), in_dims=(dims, 0, 0))(tuple(ps), xg, yg)
            self.gradient_evals += groups
            return list(g), value

        def norms(x: Tensors) -> torch.Tensor:
            acc = _acc(x)
            return torch.stack([(t.to(acc).reshape(groups, -1) ** 2).sum(1) for t in x]).sum(0).sqrt()

        def bcast(c: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return c.to(t.dtype).reshape(groups, *([1] * (t.dim() - 1)))

        rho = self.rho
        delta: Tensors | None = None
        first = None
        if rho > 0:
            project = self.normalization == "clipped" or (self.normalization == "normalized" and self.ascent_steps > 1)
            eta = rho * self.ascent_step_mult
            for _ in range(self.ascent_steps):
                g, value = per_group(delta)
                first = value if first is None else first
                if self.normalization == "normalized":
                    c = eta / (norms(g) + _EPS)
                    step = [bcast(c, gi) * gi for gi in g]
                else:
                    step = [eta * gi for gi in g]
                delta = step if delta is None else [d + s for d, s in zip(delta, step)]
                if project:
                    n = norms(delta)
                    f = torch.where(n > rho, rho / n, torch.ones_like(n))
                    delta = [bcast(f, d) * d for d in delta]
        gp, value = per_group(delta)
        first = value if first is None else first
        direction = [t.mean(0) if groups > 1 else t[0] for t in gp]
        self.last_deltas = [None if delta is None else [d[i] for d in delta] for i in range(groups)]
        if not _finite(direction):
            self._skip("gradients")
            return first.mean()
        self._apply(direction)
        return first.mean()

    def _two_call_refusal(self) -> str | None:
        """Why first_step/second_step cannot run this SAM (None: they can)."""
        v = self.variant
        if (
            self.m is not None
            or self.ascent_steps != 1
            or self.random_init
            or v == "looksam"
            or (v == "esam" and self.options["gamma"] < 0.99)
        ):
            return (
                "first_step/second_step take one ascent gradient at w: m-SAM, multi-step or random-start ascents, "
                "LookSAM and ESAM's data selection need step(closure)"
            )
        if self.distributed:
            return "with distributed=, use step(closure): SAM reduces the gradients itself"
        if self.scaler is not None:
            return "with a scaler, use step(closure): it scales, unscales and checks both passes"
        if self.bn_policy == "frozen" and self._bn:
            return (
                "bn_policy='frozen' needs step(closure): the pass at w runs before first_step, with BatchNorm in "
                "training mode"
            )
        return None

    @torch.no_grad()
    def first_step(self, zero_grad: bool = True) -> None:
        """Perturbs the parameters, from the gradients at ``w`` that your ``backward`` left in ``.grad``. With
        ``sync_perturbation=True`` it is called once per micro-batch: the ``accumulate``-th call perturbs along the
        mean of their gradients."""
        if why := self._two_call_refusal():
            raise ValueError(why)
        if self._first is not None:
            if self.sync_perturbation:
                raise ValueError(
                    f"first_step after the perturbation: sync_perturbation=True now takes the {self.accumulate} "
                    f"micro-batches' second_step ({self.accumulated} done)"
                )
            raise RuntimeError("first_step was called twice without second_step")
        self._continues("first_step/second_step")
        needs_grad = self.rho > 0 and not (self.variant == "msam" or self.random_perturbation)
        g = None
        if needs_grad:
            missing = [i for i, p in enumerate(self.params) if p.grad is None]
            if missing:
                which = ", ".join(self.names[i] if self.names else str(i) for i in missing[:5])
                raise ValueError(f"parameters without gradients before first_step ({which}): call backward first")
            g = [p.grad.detach().clone() for p in self.params]
        if not self.accumulated:
            self._begin()
        if self.sync_perturbation:
            done, g = self._gather(g)
            if not done:
                if zero_grad:
                    self.zero_grad()
                return
        if needs_grad:
            self.gradient_evals += 1
        w = [p.detach().clone() for p in self.params]
        delta = None
        if self.rho > 0:
            delta = _scaled_unit(self.rho, g) if self.variant == "gsam" else self._perturb(lambda _: g, w)
            self.variant_steps += 1
        # bn_policy "clean": the pass at w + delta must not move the running statistics (restored in second_step).
        bn = self._bn.snapshot() if self.bn_policy == "clean" and self._bn else None
        self._first = {"w": w, "g": g, "bn": bn}
        self.last_deltas = [delta]
        self._params_to(w, delta)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = True) -> None:
        """Restores ``w`` and steps the base optimizer with the gradients at ``w + delta`` now in ``.grad``. With
        ``accumulate`` the base optimizer steps on every ``accumulate``-th call, along the mean of the
        micro-batches' directions (``sync_perturbation=True``: of their gradients at the one perturbation)."""
        if self._first is None:
            if self.sync_perturbation and self.accumulated:
                raise ValueError(
                    f"second_step after {self.accumulated} of the {self.accumulate} micro-batches' first_step: "
                    f"sync_perturbation=True perturbs from all {self.accumulate} first"
                )
            raise RuntimeError("second_step needs first_step first")
        first = self._first
        gp = [p.grad for p in self.params]
        missing = [i for i, gr in enumerate(gp) if gr is None]
        if missing:
            self._restore(first)
            self._abandon()
            raise ValueError(f"parameters without gradients before second_step: {missing[:5]} (parameters restored)")
        gp = [gr.detach().clone() for gr in gp]
        if self.sync_perturbation:
            done, gp = self._gather(gp)
            if not done:
                if zero_grad:
                    self.zero_grad()
                return
        self._first = None
        self._restore(first)
        self.gradient_evals += 1
        if self.rho > 0 and self.variant == "gsam":
            g = first["g"]
            along = _dot(g, gp) / _dot(gp, gp)
            direction = _axpy(gp, -self.options["alpha"], _axpy(g, -along, gp))
        else:
            direction = gp
        if not self.sync_perturbation:
            done, direction = self._gather(direction)
            if not done:
                if zero_grad:
                    self.zero_grad()
                return
        if not _finite(direction):
            self.direction, self.variant_steps = self._saved
            self._skip("gradients")
            return
        self._apply(direction)
        if zero_grad:
            self.zero_grad()

    def _restore(self, first: dict[str, Any]) -> None:
        """Back to ``w`` after the two-call API's pass at ``w + delta`` (and, under ``clean``, to the running
        statistics before it)."""
        self._params_to(first["w"], None)
        if first["bn"] is not None:
            self._bn.restore(first["bn"])

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base_optimizer.zero_grad(set_to_none)

    # --- state ----------------------------------------------------------------------------------------------------

    def _identity(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "options": dict(self.options),
            "m": self.m,
            "normalization": self.normalization,
            "ascent_steps": self.ascent_steps,
        }

    def _between_steps(self, what: str) -> None:
        """Refuses ``what`` while a step is half done (its pending perturbation or micro-batches are not state)."""
        if self.accumulated or self._first is not None:
            raise ValueError(
                f"{what} in the middle of a step ({self.accumulated} of {self.accumulate} micro-batches accumulated"
                f"{', first_step taken' if self._first is not None else ''}): call it after the step"
            )

    def state_dict(self) -> dict[str, Any]:
        self._between_steps("state_dict")
        return {
            "base": self.base_optimizer.state_dict(),
            "sam": {
                **self._identity(),
                "rho": self.rho,
                "variant_steps": self.variant_steps,
                "gradient_evals": self.gradient_evals,
                "direction": None if self.direction is None else [d.clone() for d in self.direction],
            },
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._between_steps("load_state_dict")
        if not isinstance(state_dict, dict) or "sam" not in state_dict or "base" not in state_dict:
            raise ValueError("not a samlab SAM state_dict (it needs the keys 'base' and 'sam')")
        sam = state_dict["sam"]
        mine = self._identity()
        for key, value in mine.items():
            if sam.get(key) != value:
                raise ValueError(
                    f"the state_dict is from another SAM: its {key} is {sam.get(key)!r}, this one's {value!r}"
                )
        direction = sam.get("direction")
        if direction is not None:
            if len(direction) != len(self.params) or any(d.shape != p.shape for d, p in zip(direction, self.params)):
                raise ValueError("the state_dict's variant direction does not match the parameters' shapes")
            direction = [d.to(p.device, p.dtype).clone() for d, p in zip(direction, self.params)]
        self.base_optimizer.load_state_dict(state_dict["base"])
        self.param_groups = self.base_optimizer.param_groups
        self.rho = float(sam.get("rho", self.rho))
        self.variant_steps = int(sam["variant_steps"])
        self.gradient_evals = int(sam["gradient_evals"])
        self.direction = direction


class _NonFiniteError(Exception):
    """A pass's loss or gradients are not finite: the step is skipped."""
