"""Several seeds of one MLP configuration trained together, each beside its linearization.

:func:`paired_sgd_seeds` is :func:`weakcorr.train.paired_sgd` for K models of identical
structure (K seeds of one width and learning rate), with the K weight matrices of each layer
stacked into ``[K, out, in]`` and every pass — the network's forward and backward pass at θ,
the linearization's forward pass at θ0 carrying the tangent J(θ0)Δ, and its pullback
J(θ0)ᵀr — written out by hand with batched matmuls (``torch.baddbmm``/``torch.bmm``), with
closed-form activation derivatives (ATen's fused GELU kernels), θ0's activations on the
training set computed once and gathered per batch with ``index_select``, the first layer's θ and Δ
weights side by side so that their products with the (784-wide) input are one matmul each, and
input features that are zero on the whole training set left out of training (their weights
cannot move; 132 of MNIST's 784 pixels). Each seed keeps its own initialisation and its own
batch order (``_train._batch_order``), so each result equals ``paired_sgd`` on that seed to
float round-off; the final metrics are computed as ``paired_sgd`` computes them, per seed.

Only weakcorr MLPs are supported, as :func:`weakcorr._mlp.training_layers` recognises them
(the one recogniser the structured NTK and Taylor-mode correlations share), with φ and φ' from
its activation table; :func:`supports` says whether a list of models is (:func:`refusal` says
why not), and callers fall back to ``paired_sgd`` one seed at a time otherwise. Not supported
here: ``probe_ntk``, ``linearized=False``.

With one seed this is also ``paired_sgd``'s default implementation on CPU (``"mlp"``).

Throughput of K seeds together over ``paired_sgd`` one seed after another
(benchmarks/bench_vmap_seeds.py; figures in benchmarks/RESULTS.md, "Seeds trained together"):
the gain is largest at small widths; from a width where a step's products (x·Wᵀ, x·ΔWᵀ, both
weight gradients, the hidden layers) run at the machine's peak one seed at a time, stacking
seeds saves little more than Python and dispatch.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from . import __version__, _mlp, _precision, _train
from .functional import functional

__all__ = ["paired_sgd_seeds", "supports"]


def _signature(model: nn.Module) -> tuple[Any, ...] | None:
    """Structure of an MLP the hand-written passes take (None if they do not take it)."""
    params = dict(model.named_parameters())
    spec = _mlp.training_layers(model)
    if isinstance(spec, str) or _train.fused_refusal(model, params) is not None:
        return None
    return spec.signature(params)


def refusal(models: Sequence[nn.Module]) -> str | None:
    """Why the models cannot be trained together here (None: they can)."""
    if not models:
        return "no models"
    params = dict(models[0].named_parameters())
    why = _train.fused_refusal(models[0], params)
    if why is not None:
        return why
    first = _signature(models[0])
    if any(_signature(m) != first for m in models[1:]):
        return "the models differ in shapes, multipliers, dtypes or activations"
    return None


def supports(models: Sequence[nn.Module]) -> bool:
    """True if the models are MLP-shaped and share structure, activation and multipliers."""
    return refusal(models) is None


def _layer(h: Tensor, w: Tensor, b: Tensor | None, a: float, c: float) -> Tensor:
    """a · h @ wᵀ + c · b for stacked h [K, B, in], w [K, out, in], b [K, 1, out].

    A narrow layer (the 10 outputs) is computed as (w @ hᵀ)ᵀ, a transposed view: MKL's batched
    product is faster that way round (benchmarks/RESULTS.md, "Narrow layer").
    """
    if _narrow(w):
        if b is None:
            return _scaled(torch.bmm(w, h.transpose(1, 2)), a).transpose(1, 2)
        return torch.baddbmm(b.transpose(1, 2), w, h.transpose(1, 2), beta=c,
                             alpha=a).transpose(1, 2)
    if b is None:
        return _scaled(torch.bmm(h, w.transpose(1, 2)), a)
    return torch.baddbmm(b, h, w.transpose(1, 2), beta=c, alpha=a)


def _narrow(w: Tensor) -> bool:
    return w.shape[1] <= 32


def _scaled(z: Tensor, a: float) -> Tensor:
    return z.mul_(a) if a != 1.0 else z


def _add_layer_(z: Tensor, h: Tensor, w: Tensor, a: float) -> Tensor:
    """z += a · h @ wᵀ in place, for z from :func:`_layer` with the same w (same orientation)."""
    if _narrow(w):
        z.transpose(1, 2).baddbmm_(w, h.transpose(1, 2), alpha=a)
    else:
        z.baddbmm_(h, w.transpose(1, 2), alpha=a)
    return z


def _sgd_step_(w: Tensor, g: Tensor, h: Tensor, step: float) -> None:
    """w -= step · gᵀh for stacked w [K, out, in], g [K, B, out], h [K, B, in]: the gradient
    is computed first, then subtracted, as torch's SGD does.

    Not ``w.baddbmm_(gᵀ, h, alpha=-step)``: that in-place form (the sum over the batch added
    into w inside the matmul) rounds to 5-100 ulp of w instead of 1 with more than one MKL
    thread: with one seed on 2 threads (13x at [10, 256] with B = 128, 70x with a 4,000-example
    full batch), with any K on 4 or 8 threads at B = 4,000. θ's weights are large next to their
    updates and the error adds up over steps: width 256, α = −1, float32, 250 steps, one seed on
    2 threads gave MSE_test = 1.3e-9 against float64's 8.3e-12 (fixed: 8.3e-12). The product in
    a buffer of its own costs a little time (benchmarks/RESULTS.md, "SGD update in its own
    buffer").
    """
    w.sub_(torch.bmm(g.transpose(1, 2), h), alpha=step)


# θ0's activations on the training set are cached (computed once, gathered per batch) up to
# this size in bytes; beyond it, θ0's forward pass is recomputed on every batch.
CACHE_BYTES = 1.5e9


def _act_and_slope(act: _mlp.ActOp, z: Tensor) -> tuple[Tensor, Tensor]:
    """φ(z) and φ'(z): the activation table's closed form, else one jvp of φ."""
    return _mlp.value_and_slope(act.fn, act.name, z)


def _loss_and_grad(kind: _train.Loss, out: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Per-seed mean-reduced loss [K] and its gradient with respect to ``out`` [K, B, d]."""
    if kind is _train.Loss.MSE:
        diff = out - y
        return (diff**2).mean(dim=(1, 2)), diff * (2.0 / (out.shape[1] * out.shape[2]))
    logp = torch.log_softmax(out, dim=-1)
    grad = torch.softmax(out, dim=-1) * y.sum(-1, keepdim=True) - y  # exact, any y
    return -(y * logp).sum(-1).mean(-1), grad / out.shape[1]


def _fitted_features(x_train: Tensor, multiple: int = 16) -> Tensor | None:
    """The input features training must keep: those nonzero on some training example, padded
    with zero ones to a multiple of 16 (64-byte weight rows update faster: benchmarks/RESULTS.md,
    "Padded input features"). None when that is all of them."""
    live = (x_train != 0).any(0)
    n_live = int(live.sum())
    n_fit = min(-(-n_live // multiple) * multiple, len(live))
    if n_live == 0 or n_fit == len(live):
        return None
    live[(~live).nonzero().squeeze(1)[:n_fit - n_live]] = True
    return live.nonzero().squeeze(1)


class _PairedMLPs:
    """K MLPs (θ) and their linearizations (Δ around θ0), stacked per layer, on one device.

    Layer i has θ weights ``w[i]`` [K, out, in] and biases ``b[i]`` [K, 1, out] (or None), Δ in
    ``dw[i]``, ``db[i]``, θ0 in ``w0[i]``, ``b0[i]``. The first layer's θ and Δ weights live in
    one buffer [K, 2·out, L] (θ rows first) over the L input features training keeps
    (:func:`_fitted_features`), so that x·[W; ΔW]ᵀ and both first-layer weight gradients are
    one batched matmul each. θ0's activations on the whole training set are
    computed once (when they fit in :data:`CACHE_BYTES`) and gathered per batch.
    """

    def __init__(self, models: Sequence[nn.Module], x_train: Tensor, device: torch.device,
                 dtype: torch.dtype) -> None:
        spec = _train._spec(models[0])
        lins = spec.linears
        self.names = [(lin.weight, lin.bias) for lin in lins]
        self.n_layers = len(lins)
        self.a = [lin.weight_multiplier for lin in lins]
        self.c = [lin.bias_multiplier for lin in lins]
        self.has_bias = [lin.bias is not None for lin in lins]
        self.scale = spec.scale
        self.acts = list(spec.acts)  # φ and φ' per hidden layer (the activation table)
        # φ alone, for outputs (no φ'): the kernel of the closed form (GELU: ATen's).
        self.phis = [_mlp.fast_value(act.fn, act.name) for act in spec.acts]
        with torch.no_grad():
            params = [dict(m.named_parameters()) for m in models]

            def stack(name: str) -> Tensor:
                return torch.stack([p[name].detach() for p in params]).to(device, dtype)

            self.w0 = [stack(lin.weight) for lin in lins]
            self.b0 = [stack(lin.bias).unsqueeze(1) if lin.bias is not None else None
                       for lin in lins]
        k, n1 = self.w0[0].shape[0], self.w0[0].shape[1]
        self.n1 = n1
        # Input features that are zero on every training example get zero gradient: their
        # first-layer weights stay at θ0 (Δ at 0) exactly, so training leaves them out (132 of
        # MNIST's 784 pixels: -17 % of the first layer's work). The full weights are
        # reassembled for other inputs (:meth:`_first_layer_full`).
        self.live = _fitted_features(x_train)
        self.x_fit = x_train if self.live is None else x_train[:, self.live].contiguous()
        self.w0_fit = self.w0[0] if self.live is None else self.w0[0][..., self.live].contiguous()
        self.w1_pair = torch.cat([self.w0_fit, torch.zeros_like(self.w0_fit)], dim=1)
        self.b1_pair = (torch.cat([self.b0[0], torch.zeros_like(self.b0[0])], dim=2)
                        if self.has_bias[0] else None)
        self.w = [self.w1_pair[:, :n1]] + [w.clone() for w in self.w0[1:]]
        self.dw = [self.w1_pair[:, n1:]] + [torch.zeros_like(w) for w in self.w0[1:]]
        self.b = [None if b is None else b.clone() for b in self.b0]
        self.db = [None if b is None else torch.zeros_like(b) for b in self.b0]
        if self.b1_pair is not None:
            self.b[0], self.db[0] = self.b1_pair[:, :, :n1], self.b1_pair[:, :, n1:]
        self.row_offsets = torch.arange(0, k * len(x_train), len(x_train), device=device)[:, None]
        self.cache = self.theta0_pass(self.x_fit, self.w0_fit)

    def theta0_pass(self, x: Tensor, w_first: Tensor | None = None
                    ) -> tuple[list[Tensor], list[Tensor], Tensor] | None:
        """θ0's pass (:meth:`_theta0_pass`) on x [N, d] shared by the seeds, to keep and reuse
        (``w_first``: θ0's first-layer weights over x's features; default all of them); None
        when its activations would take more than :data:`CACHE_BYTES`."""
        k = self.w0[0].shape[0]
        hidden = sum(w.shape[1] for w in self.w0[:-1])
        if 2 * k * len(x) * hidden * x.element_size() > CACHE_BYTES:
            return None
        return self._theta0_pass(x.expand(k, *x.shape), self.w0[0] if w_first is None else w_first)

    def _first_layer_full(self) -> tuple[Tensor, Tensor]:
        """θ's and Δ's first-layer weights [K, n1, d_in] over all input features."""
        if self.live is None:
            return self.w[0], self.dw[0]
        w, dw = self.w0[0].clone(), torch.zeros_like(self.w0[0])
        w[..., self.live] = self.w[0]
        dw[..., self.live] = self.dw[0]
        return w, dw

    @torch.no_grad()
    def _theta0_pass(self, x: Tensor, w_first: Tensor, chunk: int = 1024
                     ) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """θ0's layer inputs h0_i (i ≥ 1), slopes φ'(z0_i) and outputs f(θ0) on x [K, N, d],
        with θ0's first-layer weights ``w_first`` over x's features."""
        hs: list[list[Tensor]] = [[] for _ in range(self.n_layers - 1)]
        sl: list[list[Tensor]] = [[] for _ in range(self.n_layers - 1)]
        outs = []
        for j in range(0, x.shape[1], chunk):
            h = x[:, j:j + chunk]
            for i in range(self.n_layers - 1):
                w = w_first if i == 0 else self.w0[i]
                h, s = _act_and_slope(self.acts[i], _layer(h, w, self.b0[i], self.a[i], self.c[i]))
                hs[i].append(h)
                sl[i].append(s)
            outs.append(_layer(h, self.w0[-1], self.b0[-1], self.a[-1], self.c[-1]))
        f0 = torch.cat(outs, 1)
        return ([torch.cat(h, 1) for h in hs], [torch.cat(s, 1) for s in sl],
                f0 * self.scale if self.scale != 1.0 else f0)

    @torch.no_grad()
    def forward(self, idx: Tensor, y_train: Tensor, kind: _train.Loss
                ) -> tuple[Tensor, Tensor, Tensor, tuple[Any, ...]]:
        """Both models on batches ``idx`` [K, B] of the training set (targets ``y_train``):
        the losses of f and f_lin and the batch discrepancy mean_b ‖f − f_lin‖² (each [K]),
        and what :meth:`update` needs."""
        k, b = idx.shape
        # index_select on rows, not advanced indexing (benchmarks/RESULTS.md, "Row gathers").
        rows = idx.reshape(-1)
        xb = self.x_fit.index_select(0, rows).view(k, b, -1)
        yb = y_train.index_select(0, rows).view(k, b, -1)
        if self.cache is not None:
            n = len(self.x_fit)
            flat = (idx + self.row_offsets).view(-1)  # rows of the [K·N, ·] cache

            def gather(t: Tensor) -> Tensor:
                return t.view(k * n, -1).index_select(0, flat).view(k, b, -1)

            hs0 = [xb] + [gather(h) for h in self.cache[0]]
            slopes0 = [gather(s) for s in self.cache[1]]
            f0 = gather(self.cache[2])
        else:
            h0s, s0s, f0 = self._theta0_pass(xb, self.w0_fit)
            hs0, slopes0 = [xb, *h0s], s0s
        last = self.n_layers - 1
        # Two matmuls, not one into [K, B, 2·n1]: as fast, and GELU and GELU' run 1.5-2x
        # faster on the contiguous halves than on strided ones.
        z = _layer(xb, self.w[0], self.b[0], self.a[0], self.c[0])
        z_dot = _layer(xb, self.dw[0], self.db[0], self.a[0], self.c[0])
        # The network at θ, keeping each layer's input and φ'.
        hs, slopes = [xb], []
        h = xb
        for i in range(last):
            if i > 0:
                z = _layer(h, self.w[i], self.b[i], self.a[i], self.c[i])
            h, s = _act_and_slope(self.acts[i], z)
            hs.append(h)
            slopes.append(s)
        out = _layer(h, self.w[last], self.b[last], self.a[last], self.c[last])
        z_dot = self._tangent(z_dot, hs0, slopes0)
        if self.scale != 1.0:
            out, z_dot = self.scale * out, self.scale * z_dot
        f_lin = f0 + z_dot
        loss_f, r = _loss_and_grad(kind, out, yb)
        loss_lin, r_lin = _loss_and_grad(kind, f_lin, yb)
        disc = ((out - f_lin) ** 2).sum(-1).mean(-1)
        return loss_f, loss_lin, disc, (xb, r, hs, slopes, r_lin, hs0, slopes0)

    def _tangent(self, z_dot: Tensor, hs0: list[Tensor], slopes0: list[Tensor]) -> Tensor:
        """J(θ0)Δ (before output_scale) from the first layer's tangent pre-activation, along
        θ0's layer inputs ``hs0`` and slopes ``slopes0``."""
        for i in range(1, self.n_layers):
            h_dot = slopes0[i - 1] * z_dot
            z_dot = _layer(hs0[i], self.dw[i], self.db[i], self.a[i], self.c[i])
            _add_layer_(z_dot, h_dot, self.w0[i], self.a[i])
        return z_dot

    @torch.no_grad()
    def update(self, ctx: tuple[Any, ...], lr: float) -> None:
        """One SGD step of every θ (gradient of the loss of f) and Δ (J(θ0)ᵀ r_lin)."""
        xb, r, hs, slopes, r_lin, hs0, slopes0 = ctx
        n1 = self.n1
        g_pair = xb.new_empty(*xb.shape[:2], 2 * n1)  # first-layer gradients of θ and Δ
        self._backward(self.w, self.w, self.b, r, hs, slopes, lr, g_pair[..., :n1])
        self._backward(self.w0, self.dw, self.db, r_lin, hs0, slopes0, lr, g_pair[..., n1:])
        _sgd_step_(self.w1_pair, g_pair, xb, lr * self.a[0])
        if self.b1_pair is not None:
            self.b1_pair.sub_(g_pair.sum(1, keepdim=True), alpha=lr * self.c[0])

    def _backward(self, w: list[Tensor], tw: list[Tensor], tb: list[Tensor | None], r: Tensor,
                  hs: list[Tensor], slopes: list[Tensor], lr: float, out: Tensor) -> None:
        """Backpropagate ``r`` through the layers ≥ 1 of weights ``w``, subtracting ``lr`` times
        each layer's gradient from ``tw``/``tb``; writes the gradient at the first layer's
        pre-activation into ``out``."""
        g = self.scale * r if self.scale != 1.0 else r
        if self.n_layers == 1:
            out.copy_(g)
        for i in range(self.n_layers - 1, 0, -1):
            gw = torch.bmm(g, w[i])  # before w[i] changes (θ updates its own weights)
            s = slopes[i - 1] * self.a[i] if self.a[i] != 1.0 else slopes[i - 1]
            g_next = torch.mul(gw, s, out=out) if i == 1 else gw.mul_(s)
            _sgd_step_(tw[i], g, hs[i], lr * self.a[i])
            bias = tb[i]
            if bias is not None:
                bias.sub_(g.sum(1, keepdim=True), alpha=lr * self.c[i])
            g = g_next

    def _state(self) -> list[Tensor]:
        """The stacks SGD changes: θ's and Δ's weights and biases, per layer."""
        return [t for t in (*self.w, *self.dw, *self.b, *self.db) if t is not None]

    def snapshot(self, k: int) -> list[Tensor]:
        """Copies of seed ``k``'s θ and Δ (for :meth:`restore`)."""
        return [t[k].clone() for t in self._state()]

    @torch.no_grad()
    def restore(self, k: int, snapshot: list[Tensor]) -> None:
        """Put seed ``k``'s θ and Δ back to a :meth:`snapshot` (for a diverged seed)."""
        for t, saved in zip(self._state(), snapshot, strict=True):
            t[k].copy_(saved)

    @torch.no_grad()
    def outputs(self, x: Tensor, *, training_set: bool = False,
                theta0: tuple[list[Tensor], list[Tensor], Tensor] | None = None,
                chunk: int = 1024) -> tuple[Tensor, Tensor]:
        """f(θ)(x) and f_lin(θ0 + Δ)(x) of every seed, [K, N, d_out], for x [N, d_in] shared
        by the seeds (``training_set``: x is the training set, whose θ0 pass is cached;
        ``theta0``: :meth:`theta0_pass` of x, kept by the caller, else computed here)."""
        k = self.w0[0].shape[0]
        if training_set:
            x, (w1, dw1), w01 = self.x_fit, (self.w[0], self.dw[0]), self.w0_fit
            theta0 = self.cache
        else:
            (w1, dw1), w01 = self._first_layer_full(), self.w0[0]
        f_parts, lin_parts = [], []
        for j in range(0, len(x), chunk):
            xc = x[j:j + chunk].expand(k, -1, -1)
            if theta0 is not None:
                slopes0 = [s[:, j:j + chunk] for s in theta0[1]]
                hs0 = [xc] + [h[:, j:j + chunk] for h in theta0[0]]
                f0 = theta0[2][:, j:j + chunk]
            else:
                h0s, slopes0, f0 = self._theta0_pass(xc, w01)
                hs0 = [xc, *h0s]
            h = xc
            for i in range(self.n_layers - 1):
                h = self.phis[i](_layer(h, w1 if i == 0 else self.w[i], self.b[i], self.a[i],
                                    self.c[i]))
            out = _layer(h, self.w[-1], self.b[-1], self.a[-1], self.c[-1])
            z_dot = self._tangent(_layer(xc, dw1, self.db[0], self.a[0], self.c[0]),
                                  hs0, slopes0)
            if self.scale != 1.0:
                out, z_dot = self.scale * out, self.scale * z_dot
            f_parts.append(out)
            lin_parts.append(f0 + z_dot)
        return torch.cat(f_parts, 1), torch.cat(lin_parts, 1)

    @torch.no_grad()
    def params(self, k: int) -> dict[str, dict[str, Tensor] | None]:
        """Seed ``k``'s trained θ and θ0 + Δ, named as the model's parameters
        (``linears.i.weight``, ``linears.i.bias``), as ``paired_sgd(return_params=True)``
        gives them."""
        w1, dw1 = self._first_layer_full()
        w, dw = [w1, *self.w[1:]], [dw1, *self.dw[1:]]
        theta: dict[str, Tensor] = {}
        theta_lin: dict[str, Tensor] = {}
        for i, (w_name, b_name) in enumerate(self.names):
            theta[w_name] = w[i][k].clone()
            theta_lin[w_name] = self.w0[i][k] + dw[i][k]
            b, b0, db = self.b[i], self.b0[i], self.db[i]
            if b is not None and b0 is not None and db is not None and b_name is not None:
                theta[b_name] = b[k, 0].clone()
                theta_lin[b_name] = b0[k, 0] + db[k, 0]
        return {"theta": theta, "theta_lin": theta_lin}

    def sq_distances(self) -> tuple[list[float], list[float]]:
        """Per-seed ‖θ − θ0‖² and ‖Δ‖², accumulated in float64."""
        d_f = d_lin = None
        for i in range(self.n_layers):
            for cur, ref, delta in ((self.w[i], self.w0_fit if i == 0 else self.w0[i],
                                     self.dw[i]),
                                    (self.b[i], self.b0[i], self.db[i])):
                if cur is None:
                    continue
                sf, sl = _sq_norms(cur - ref), _sq_norms(delta)
                d_f = sf if d_f is None else d_f + sf
                d_lin = sl if d_lin is None else d_lin + sl
        assert d_f is not None and d_lin is not None
        return d_f.tolist(), d_lin.tolist()


def _sq_norms(t: Tensor) -> Tensor:
    """Per-seed squared norm of t [K, ...] in float64: each row's norm in t's dtype (a few
    hundred terms), their squares summed in float64: faster than converting t to float64 first
    (benchmarks/RESULTS.md, "Squared norms"), and within 1e-7 relative of it in float32."""
    rows = torch.linalg.vector_norm(t, dim=-1).flatten(1).double()
    return (rows * rows).sum(1)


@_precision.trains_in_full_precision
def paired_sgd_seeds(
    models: Sequence[nn.Module],
    data: _train.DatasetLike,
    *,
    seeds: Sequence[int],
    lr: float,
    steps: int,
    batch_size: int,
    loss: str = "mse",
    log_every: int = 10,
    probe_ntk: bool = False,
    eval_every: int | None = None,
    full_batch: bool = False,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    progress: Callable[[int, int], None] | None = None,
    return_params: bool = False,
) -> list[_train.RunResult]:
    """:func:`weakcorr.train.paired_sgd` for K same-shaped MLPs (one per seed), trained together.

    Args:
        models: K initialised MLPs (θ0 of each seed); :func:`supports` must hold.
        data: the dataset (as for ``paired_sgd``).
        seeds: K batch-order seeds, one per model.
        lr, steps, batch_size, loss, log_every, eval_every, full_batch, device, dtype,
            return_params: as for ``paired_sgd`` (shared by all seeds).
        progress: called as ``progress(step, steps)`` after every step (of all seeds).
        probe_ntk: must be False (not supported here).

    Returns:
        K :class:`weakcorr.train.RunResult`, in order, each equal to ``paired_sgd(models[k],
        data, seed=seeds[k], ...)`` up to float round-off; ``wall_time_s`` is the total wall
        time divided by K.

    Raises:
        ValueError: unsupported models or options, or bad arguments.
    """
    start = time.perf_counter()
    why = refusal(models)
    if why is None and len(models) != len(seeds):
        why = f"{len(models)} models for {len(seeds)} seeds"
    if why is not None:
        raise ValueError(f"`models` must be same-shaped weakcorr MLPs, one per seed in `seeds` "
                         f"({why}); train other models one at a time with train.paired_sgd.")
    if probe_ntk:
        raise ValueError("`probe_ntk` is not supported when training seeds together; use "
                         "train.paired_sgd one seed at a time.")
    allowed = [v.value for v in _train.Loss]
    if loss not in allowed:
        raise ValueError(f"`loss` must be one of {allowed}, got {loss!r}.")
    kind = _train.Loss(loss)
    _train._check_positive("lr", lr)
    _train._check_positive("steps", steps, integer=True)
    _train._check_positive("log_every", log_every, integer=True)
    if eval_every is not None:
        _train._check_positive("eval_every", eval_every, integer=True)
    n_train = len(data.X_train)
    if not full_batch:
        _train._check_positive("batch_size", batch_size, integer=True)
        if batch_size > n_train:
            raise ValueError(f"`batch_size` ({batch_size}) is larger than the training set "
                             f"({n_train}).")
    k_seeds = len(models)
    fm = functional(models[0])
    device = torch.device(device) if device is not None else fm.device
    dtype = dtype or fm.dtype
    x_tr, y_tr = data.X_train.to(device, dtype), data.Y_train.to(device, dtype)
    x_te, y_te = data.X_test.to(device, dtype), data.Y_test.to(device, dtype)
    nets = _PairedMLPs(models, x_tr, device, dtype)
    bs = n_train if full_batch else batch_size
    orders = torch.stack([torch.stack(_train._batch_order(n_train, bs, steps, s, "cpu"))
                          for s in seeds]).to(device)  # [K, steps, B]
    results = []
    for m, s in zip(models, seeds, strict=True):
        config = {"lr": float(lr), "steps": steps, "batch_size": bs, "seed": s,
                  "loss": kind.value, "log_every": log_every, "linearized": True,
                  "probe_ntk": False, "full_batch": full_batch, "eval_every": eval_every,
                  "n_params": fm.n_params, "model": repr(m), "n_train": n_train,
                  "n_test": len(x_te), "seed_batch": k_seeds, "implementation": "mlp"}
        results.append(_train.RunResult(
            config=config, seed=s, device=str(device), dtype=str(dtype).removeprefix("torch."),
            versions={"weakcorr": __version__, "torch": torch.__version__,
                      "python": platform.python_version()}))
    alive = [True] * k_seeds
    first: list[float | None] = [None] * k_seeds
    frozen: dict[int, list[Tensor]] = {}  # diverged seeds' θ and Δ
    # θ0's pass on the test set, once, when the test set is evaluated during training too.
    test0 = nets.theta0_pass(x_te) if eval_every is not None else None
    for step in range(steps):
        idx = orders[:, step]
        loss_f, loss_lin, disc, ctx = nets.forward(idx, y_tr, kind)
        values = torch.stack([loss_f, loss_lin, disc]).tolist()
        last = step == steps - 1
        logging = step % log_every == 0 or last
        for k in range(k_seeds):
            if not alive[k]:
                continue
            entry: dict[str, Any] = {"step": step, "loss_f": values[0][k],
                                     "loss_lin": values[1][k], "discrepancy": values[2][k]}
            if first[k] is None:
                first[k] = max(entry["loss_f"], entry["loss_lin"])
            if _train._diverged(entry, first[k]):
                # As in paired_sgd: the run stops before this step's update.
                alive[k] = False
                results[k].status, results[k].diverged_step = "diverged", step
                results[k].logs.append(_train._json_safe(entry))
                frozen[k] = nets.snapshot(k)
            elif logging:
                results[k].logs.append(entry)
        if not any(alive):
            break
        nets.update(ctx, lr)
        for k, saved in frozen.items():  # dead seeds stay where they stopped
            nets.restore(k, saved)
        if logging:
            d_f, d_lin = nets.sq_distances()
            for k in range(k_seeds):
                if alive[k]:
                    results[k].logs[-1].update(param_distance=math.sqrt(d_f[k]),
                                               param_distance_lin=math.sqrt(d_lin[k]))
        if eval_every is not None and (step % eval_every == 0 or last):
            # Eq. 30 on the test set after this update, as paired_sgd logs it: in the step's
            # entry at a logging step, else in an entry of its own.
            f_te, lin_te = nets.outputs(x_te, theta0=test0)
            mse = ((f_te - lin_te) ** 2).sum(-1).mean(-1).tolist()
            for k in range(k_seeds):
                if not alive[k]:
                    continue
                if logging:
                    results[k].logs[-1]["mse_test"] = mse[k]
                else:
                    results[k].logs.append({"step": step, "mse_test": mse[k]})
        if progress is not None:
            progress(step + 1, steps)
    # Dead seeds were restored after every update: the stacks hold every seed's final state.
    outputs = {"test": (*nets.outputs(x_te, theta0=test0), y_te, data.labels_test),
               "train": (*nets.outputs(x_tr, training_set=True), y_tr, data.labels_train)}
    d_f, d_lin = nets.sq_distances()
    for k in range(k_seeds):
        results[k].logs = [_train._json_safe(e) for e in results[k].logs]
        results[k].metrics = _metrics(kind, outputs, k, d_f[k], d_lin[k])
        if return_params:
            results[k].params = nets.params(k)
    wall = (time.perf_counter() - start) / k_seeds
    for r in results:
        r.wall_time_s = wall
    return results


def _metrics(kind: _train.Loss, outputs: Mapping[str, tuple[Tensor, Tensor, Tensor, Tensor]],
             k: int, sq_distance: float, sq_distance_lin: float) -> dict[str, float | None]:
    """Seed ``k``'s final metrics, defined as in ``train.paired_sgd`` (its test compares them)."""
    metrics: dict[str, float | None] = {"param_distance": math.sqrt(sq_distance)}
    for split in ("test", "train"):
        f_all, lin_all, y, labels = outputs[split]
        if f_all.shape[1] == 0:
            continue
        f, lin = f_all[k], lin_all[k]
        labels = labels.to(f.device)
        diff2 = ((f - lin) ** 2).sum().item()
        metrics.update({
            f"loss_f_{split}": _train._loss_value(kind, f, y).item(),
            f"acc_f_{split}": (f.argmax(-1) == labels).double().mean().item(),
            f"mse_{split}": diff2 / len(f),  # Eq. 30
            f"c_{split}": math.sqrt(diff2) / (f.shape[1] * len(f)),  # Eq. 24
            f"loss_lin_{split}": _train._loss_value(kind, lin, y).item(),
            f"acc_lin_{split}": (lin.argmax(-1) == labels).double().mean().item(),
        })
    metrics["param_distance_lin"] = math.sqrt(sq_distance_lin)
    return _train._json_safe(metrics)
