"""The paper's model family: fully connected networks in three parameterizations.

Structure (other modules recognise it by these attribute names, e.g. the
structured empirical NTK and the Taylor-mode correlation path):

* :class:`ScaledLinear` — parameters ``weight`` [out, in] and ``bias`` [out]
  (or ``None``), float attributes ``weight_multiplier`` and ``bias_multiplier``;
  ``forward(h) = weight_multiplier · h @ weightᵀ + bias_multiplier · bias``.
* :class:`MLP` — ``linears`` (an ``nn.ModuleList`` of ScaledLinear: hidden layers
  then the output layer), ``activation_name``, ``output_scale``, ``act(z)``
  (elementwise) and ``widths``; ``forward``: ``h = x``; for every hidden layer
  ``h = act(linear(h))``; return ``output_scale · linears[-1](h)``.

Parameter names are therefore ``linears.0.weight``, ``linears.0.bias``, ...
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from enum import StrEnum

import torch
from torch import Tensor, nn

from ._mlp import PHI

__all__ = ["MLP", "Activation", "Parameterization", "ScaledLinear", "mlp"]


class Activation(StrEnum):
    """Hidden-layer activations φ (GELU is the exact form z·Φ(z), not the tanh approximation)."""

    RELU = "relu"
    GELU = "gelu"
    ERF = "erf"
    SIGMOID = "sigmoid"
    TANH = "tanh"


class Parameterization(StrEnum):
    """Initialisations and multipliers; the formulas are in :func:`mlp`."""

    STANDARD = "standard"
    NTK = "ntk"
    MUP = "mup"


# φ of each activation: the one activation table (weakcorr._mlp), which also holds the closed
# forms of φ' the hand-written training passes use.
_ACTIVATIONS: dict[Activation, Callable[[Tensor], Tensor]] = {a: PHI[a.value] for a in Activation}


class ScaledLinear(nn.Module):
    """``weight_multiplier · h @ weightᵀ + bias_multiplier · bias``."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool = True,
        weight_multiplier: float = 1.0,
        bias_multiplier: float = 1.0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight_multiplier = float(weight_multiplier)
        self.bias_multiplier = float(bias_multiplier)
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(out_features, dtype=dtype)) if bias else None

    def forward(self, h: Tensor) -> Tensor:
        z = h @ self.weight.T
        if self.weight_multiplier != 1.0:
            z = self.weight_multiplier * z
        if self.bias is not None:
            z = z + (self.bias_multiplier * self.bias if self.bias_multiplier != 1.0 else self.bias)
        return z

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, weight_multiplier={self.weight_multiplier:.4g}, "
            f"bias_multiplier={self.bias_multiplier:.4g}"
        )


class MLP(nn.Module):
    """A fully connected network ``d_in → hidden… → d_out`` (see the module docstring).

    Args:
        linears: the hidden layers, then the output layer.
        activation: the hidden-layer activation.
        output_scale: constant multiplying the output.
        parameterization: recorded for ``repr`` (the multipliers live in ``linears``).

    Attributes:
        widths: ``[d_in, n_1, …, n_L, d_out]``.
    """

    def __init__(
        self,
        linears: Sequence[ScaledLinear],
        activation: Activation | str,
        *,
        output_scale: float = 1.0,
        parameterization: Parameterization = Parameterization.STANDARD,
    ) -> None:
        super().__init__()
        if len(linears) == 0:
            raise ValueError("`linears` must hold at least the output layer, got none.")
        activation = _check_choice(str(activation), Activation, "activation")
        self.linears = nn.ModuleList(linears)
        self.activation_name = str(activation)
        self.parameterization = str(parameterization)
        self.output_scale = float(output_scale)
        self._act = _ACTIVATIONS[activation]
        self.widths = [linears[0].in_features, *(lin.out_features for lin in linears)]

    def act(self, z: Tensor) -> Tensor:
        """The elementwise activation."""
        return self._act(z)

    def forward(self, x: Tensor) -> Tensor:
        h = x
        for lin in self.linears[:-1]:
            h = self._act(lin(h))
        out = self.linears[-1](h)
        return self.output_scale * out if self.output_scale != 1.0 else out

    def extra_repr(self) -> str:
        return (
            f"widths={self.widths}, activation={self.activation_name}, "
            f"parameterization={self.parameterization}, output_scale={self.output_scale:.4g}"
        )


def _check_choice(value: str, enum: type[StrEnum], arg: str) -> StrEnum:
    allowed = [e.value for e in enum]
    if value not in allowed:
        raise ValueError(f"`{arg}` must be one of {allowed}, got {value!r}.")
    return enum(value)


def mlp(
    d_in: int,
    hidden: int | Sequence[int],
    d_out: int,
    *,
    activation: str,
    parameterization: str = "standard",
    bias: bool = True,
    sigma_w: float = 1.0,
    sigma_b: float = 0.05,
    output_scale: float = 1.0,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> MLP:
    """Build a fully connected network in one of the paper's parameterizations.

    Layer ``l = 1 … L+1`` (L hidden layers, widths ``n_0 = d_in, n_1 … n_L,
    n_{L+1} = d_out``) computes the pre-activation

    .. math::

        z_l = a_l\\, W_l h_{l-1} + c_l\\, b_l, \\qquad h_l = \\phi(z_l),
        \\qquad f(x) = \\text{output\\_scale} \\cdot z_{L+1},

    with stored parameters ``W_l`` [n_l, n_{l-1}], ``b_l`` [n_l] and constant
    multipliers ``a_l`` (``weight_multiplier``) and ``c_l`` (``bias_multiplier``):

    * ``"standard"`` — exactly PyTorch's ``nn.Linear`` default (the paper's A.2
      setting): ``W_l ~ U(-1/√n_{l-1}, 1/√n_{l-1})`` (``kaiming_uniform_(a=√5)``),
      ``b_l ~ U(-1/√n_{l-1}, 1/√n_{l-1})``, ``a_l = c_l = 1``; ``sigma_w`` and
      ``sigma_b`` are ignored. The draws are those of ``nn.Linear.reset_parameters``,
      layer by layer (weight then bias), from: the global RNG seeded with ``seed``
      (the global RNG state is restored afterwards), or ``generator``, or the
      global RNG as it stands. So ``mlp(..., seed=s)`` equals ``nn.Linear`` layers
      created in order after ``torch.manual_seed(s)``, and so does
      ``generator=torch.Generator().manual_seed(s)`` (same CPU stream).
    * ``"ntk"`` — the NTK parameterization (paper's A.1; neural-tangents
      ``stax.Dense(parameterization="ntk")``): ``W_l ~ N(0, 1)``, ``b_l ~ N(0, 1)``,
      ``a_l = σ_w/√n_{l-1}``, ``c_l = σ_b``, for every layer.
    * ``"mup"`` — maximal-update parameterization for SGD (Yang & Hu 2020,
      Tensor Programs IV; Tensor Programs V, Table 3: init variance 1/fan_in for
      input weights, hidden weights and biases, 1/fan_in² for output weights; SGD
      learning rate ∝ fan_out for input weights and biases, 1 for hidden weights,
      1/fan_in for output weights). It is written with multipliers so that plain
      SGD with one global, width-independent learning rate η is μP: a multiplier
      ``a`` on a stored weight ``W ~ N(0, s²)`` gives an effective weight ``a·W``
      of std ``a·s`` and an effective learning rate ``a²·η``. Per layer:

      - input layer (l = 1): ``a_1 = √n_1``, ``W_1 ~ N(0, σ_w²/(n_0 n_1))``
        (effective std σ_w/√n_0, effective lr η·n_1);
      - hidden layers (2 ≤ l ≤ L): ``a_l = 1``, ``W_l ~ N(0, σ_w²/n_{l-1})``
        (effective lr η);
      - output layer (l = L+1): ``a = 1/√n_L``, ``W ~ N(0, σ_w²/n_L)``
        (effective std σ_w/n_L, effective lr η/n_L);
      - hidden biases: ``c_l = √n_l``, ``b_l ~ N(0, σ_b²/n_l)`` (effective std
        σ_b, effective lr η·n_l); output bias ``c = 1``, ``b ~ N(0, σ_b²)``.

      At initialisation the hidden pre-activations are Θ(1) and the output is
      Θ(1/√n) (variance ∝ 1/n_L, plus σ_b² from the output bias).

    ``ntk`` and ``mup`` draw from ``generator``, or a fresh generator seeded with
    ``seed``, or (both None) a generator seeded from the global RNG.

    Args:
        d_in: input dimension n_0.
        hidden: width of the single hidden layer, or one width per hidden layer.
        d_out: output dimension d_y.
        activation: one of ``relu``, ``gelu`` (exact erf form), ``erf``, ``sigmoid``, ``tanh``.
        parameterization: ``standard``, ``ntk`` or ``mup``.
        bias: whether layers have biases.
        sigma_w: weight scale σ_w > 0 (ntk and mup).
        sigma_b: bias scale σ_b >= 0 (ntk and mup).
        output_scale: the output is multiplied by this constant > 0 (Chizat-style lazy scaling).
        generator: the random source of the initialisation.
        seed: an integer seed instead of ``generator`` (see above).
        dtype: floating parameter dtype. The initial values are drawn in float32 and then cast,
            so that one seed gives one network in every dtype: a float64 run differs from the
            float32 run of its seed in rounding only (comparable run by run).

    Returns:
        An :class:`MLP` with parameters ``linears.{k}.weight`` / ``linears.{k}.bias``.

    Raises:
        ValueError: unknown activation or parameterization, non-positive widths,
            empty ``hidden``, bad scales, non-float dtype, or both ``seed`` and ``generator``.

    Example:
        >>> net = mlp(4, [8, 8], 3, activation="gelu", seed=0)
        >>> net(torch.zeros(2, 4)).shape
        torch.Size([2, 3])
        >>> net.widths
        [4, 8, 8, 3]
    """
    act = _check_choice(activation, Activation, "activation")
    param = _check_choice(parameterization, Parameterization, "parameterization")
    widths_hidden = _hidden_widths(hidden)
    for name, value in [("d_in", d_in), ("d_out", d_out)] + [
        (f"hidden[{i}]", w) for i, w in enumerate(widths_hidden)
    ]:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    for name, value in [("sigma_w", sigma_w), ("sigma_b", sigma_b), ("output_scale", output_scale)]:
        lowest_ok = 0.0 if name == "sigma_b" else math.nextafter(0.0, 1.0)
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < lowest_ok:
            kind = "non-negative" if name == "sigma_b" else "positive"
            raise ValueError(f"`{name}` must be a finite {kind} number, got {value!r}.")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(
            f"`dtype` must be a floating-point torch.dtype (e.g. torch.float32), got {dtype!r}."
        )
    if generator is not None and seed is not None:
        raise ValueError(
            "Pass at most one of `generator` and `seed`, got both; drop one of them."
        )
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ValueError(f"`seed` must be an integer or None, got {seed!r}.")
    widths = [d_in, *widths_hidden, d_out]

    if param is Parameterization.STANDARD:
        linears = _standard_layers(widths, bias, dtype, generator, seed)
    else:
        gen = generator if generator is not None else torch.Generator()
        if generator is None:
            if seed is not None:
                gen.manual_seed(seed)
            else:
                gen.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        linears = []
        n_layers = len(widths) - 1
        for l_idx in range(n_layers):
            fan_in, fan_out = widths[l_idx], widths[l_idx + 1]
            last = l_idx == n_layers - 1
            if param is Parameterization.NTK:
                w_std, a, b_std, c = 1.0, sigma_w / math.sqrt(fan_in), 1.0, sigma_b
            elif l_idx == 0 and not last:  # mup input layer
                w_std, a = sigma_w / math.sqrt(fan_in * fan_out), math.sqrt(fan_out)
                b_std, c = sigma_b / math.sqrt(fan_out), math.sqrt(fan_out)
            elif not last:  # mup hidden layer
                w_std, a = sigma_w / math.sqrt(fan_in), 1.0
                b_std, c = sigma_b / math.sqrt(fan_out), math.sqrt(fan_out)
            else:  # mup output layer
                w_std, a, b_std, c = sigma_w / math.sqrt(fan_in), 1.0 / math.sqrt(fan_in), sigma_b, 1.0
            lin = ScaledLinear(fan_in, fan_out, bias=bias, weight_multiplier=a,
                               bias_multiplier=c, dtype=dtype)
            with torch.no_grad():
                draw = torch.randn(lin.weight.shape, generator=gen, dtype=_DRAW_DTYPE)
                lin.weight.copy_(w_std * draw.to(dtype))
                if lin.bias is not None:
                    draw = torch.randn(lin.bias.shape, generator=gen, dtype=_DRAW_DTYPE)
                    lin.bias.copy_(b_std * draw.to(dtype))
            linears.append(lin)
    return MLP(linears, act, output_scale=output_scale, parameterization=param)


def _hidden_widths(hidden: int | Sequence[int]) -> list[int]:
    if isinstance(hidden, int) and not isinstance(hidden, bool):
        return [hidden]
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
        raise ValueError(
            f"`hidden` must be an int or a sequence of ints (one width per hidden layer), "
            f"got {hidden!r}."
        )
    if len(hidden) == 0:
        raise ValueError(
            "`hidden` must name at least one hidden layer, got an empty sequence; "
            "pass e.g. hidden=[64]."
        )
    return list(hidden)


# Initial values are drawn in this dtype and cast to the model's (see mlp's ``dtype``).
_DRAW_DTYPE = torch.float32


def _standard_layers(
    widths: list[int], bias: bool, dtype: torch.dtype, generator: torch.Generator | None,
    seed: int | None,
) -> list[ScaledLinear]:
    """nn.Linear's default init (kaiming_uniform(a=√5) ≡ U(±1/√fan_in), bias U(±1/√fan_in))."""
    state = torch.random.get_rng_state() if seed is not None else None
    if seed is not None:
        torch.manual_seed(seed)
    try:
        layers = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
            lin = ScaledLinear(fan_in, fan_out, bias=bias, dtype=_DRAW_DTYPE)
            bound = 1.0 / math.sqrt(fan_in)
            with torch.no_grad():
                # Same draws, in the same order, as nn.Linear.reset_parameters (in float32).
                nn.init.kaiming_uniform_(lin.weight, a=math.sqrt(5), generator=generator)
                if lin.bias is not None:
                    nn.init.uniform_(lin.bias, -bound, bound, generator=generator)
            layers.append(lin.to(dtype))
        return layers
    finally:
        if state is not None:
            torch.random.set_rng_state(state)
