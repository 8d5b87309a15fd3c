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

__all__ = ["MLP", "Activation", "Parameterization", "ScaledLinear", "mlp"]


class Activation(StrEnum):
    RELU = "relu"
    GELU = "gelu"
    ERF = "erf"
    SIGMOID = "sigmoid"
    TANH = "tanh"


class Parameterization(StrEnum):
    STANDARD = "standard"
    NTK = "ntk"
    MUP = "mup"


def _gelu(z: Tensor) -> Tensor:
    # Exact (erf) form: z · Φ(z).
    return 0.5 * z * (1.0 + torch.erf(z / math.sqrt(2.0)))


_ACTIVATIONS: dict[Activation, Callable[[Tensor], Tensor]] = {
    Activation.RELU: torch.relu,
    Activation.GELU: _gelu,
    Activation.ERF: torch.erf,
    Activation.SIGMOID: torch.sigmoid,
    Activation.TANH: torch.tanh,
}


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
    """A fully connected network ``d_in → hidden… → d_out`` (see the module docstring)."""

    def __init__(
        self,
        linears: Sequence[ScaledLinear],
        activation: Activation,
        *,
        output_scale: float = 1.0,
        parameterization: Parameterization = Parameterization.STANDARD,
    ) -> None:
        super().__init__()
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

    With fan-in ``n_{l-1}`` of layer ``l`` and pre-activation
    ``z_l = a_l · W_l h_{l-1} + c_l · b_l``:

    * ``"standard"`` — exactly PyTorch's ``nn.Linear`` default (the paper's A.2
      setting): ``W ~ U(-1/√n_{l-1}, 1/√n_{l-1})``, ``b ~ U(-1/√n_{l-1}, 1/√n_{l-1})``,
      multipliers ``a_l = c_l = 1``. With ``seed=s`` (and no generator) the
      parameters equal those of ``nn.Linear`` layers created in order after
      ``torch.manual_seed(s)``; ``sigma_w``/``sigma_b`` are ignored.
    * ``"ntk"`` — the NTK parameterization (paper's A.1, neural-tangents'
      ``stax.Dense(parameterization="ntk")``): ``W ~ N(0, 1)``, ``b ~ N(0, 1)``,
      ``a_l = σ_w/√n_{l-1}``, ``c_l = σ_b``.
    * ``"mup"`` — maximal-update parameterization for SGD (Yang & Hu 2020;
      Tensor Programs V, Table 3: hidden weights init var 1/fan_in and lr 1,
      input weights and biases lr ∝ fan_out, output weights init var 1/fan_in²
      and lr 1/fan_in), written with multipliers in the forward pass so that one
      global, width-independent SGD learning rate η is μP. A multiplier ``a``
      on a weight ``W ~ N(0, s²)`` gives an effective weight of std ``a·s`` and
      an effective learning rate ``a²·η``. With widths ``n_0 = d_in, n_1 … n_L,
      n_{L+1} = d_out``:

      - input layer: ``a = √n_1``, ``W ~ N(0, σ_w²/(n_0 n_1))`` (effective std
        σ_w/√n_0, effective lr η·n_1);
      - hidden layers: ``a = 1``, ``W ~ N(0, σ_w²/n_{l-1})`` (effective lr η);
      - output layer: ``a = 1/√n_L``, ``W ~ N(0, σ_w²/n_L)`` (effective std
        σ_w/n_L, so outputs are O(1/√n) at initialisation; effective lr η/n_L);
      - hidden biases: ``c = √n_l``, ``b ~ N(0, σ_b²/n_l)`` (effective std σ_b,
        lr η·n_l); output bias ``c = 1``, ``b ~ N(0, σ_b²)``.

    Args:
        d_in: input dimension.
        hidden: width of the single hidden layer, or one width per hidden layer.
        d_out: output dimension d_y.
        activation: one of ``relu``, ``gelu`` (exact erf form), ``erf``, ``sigmoid``, ``tanh``.
        parameterization: ``standard``, ``ntk`` or ``mup``.
        bias: whether layers have biases.
        sigma_w, sigma_b: weight and bias scales (ntk and mup).
        output_scale: the output is multiplied by this constant (Chizat-style lazy scaling).
        generator: the random source of the initialisation.
        seed: shorthand for a fresh generator seeded with ``seed`` (``standard``:
            the global RNG seeded with ``seed``, to match ``nn.Linear`` exactly;
            the global RNG state is restored afterwards).
        dtype: parameter dtype.

    Returns:
        An :class:`MLP`.

    Example:
        >>> net = mlp(4, [8, 8], 3, activation="gelu", seed=0)
        >>> net(torch.zeros(2, 4)).shape
        torch.Size([2, 3])
    """
    act = _check_choice(activation, Activation, "activation")
    param = _check_choice(parameterization, Parameterization, "parameterization")
    widths_hidden = [hidden] if isinstance(hidden, int) else list(hidden)
    for name, value in [("d_in", d_in), ("d_out", d_out)] + [
        (f"hidden[{i}]", w) for i, w in enumerate(widths_hidden)
    ]:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    for name, value in [("sigma_w", sigma_w), ("sigma_b", sigma_b), ("output_scale", output_scale)]:
        if not math.isfinite(value) or (name != "sigma_b" and value <= 0) or value < 0:
            raise ValueError(f"`{name}` must be a finite positive number, got {value!r}.")
    if generator is not None and seed is not None:
        raise ValueError("Pass at most one of `generator` and `seed`.")
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
                lin.weight.copy_(w_std * torch.randn(lin.weight.shape, generator=gen, dtype=dtype))
                if lin.bias is not None:
                    lin.bias.copy_(b_std * torch.randn(lin.bias.shape, generator=gen, dtype=dtype))
            linears.append(lin)
    return MLP(linears, act, output_scale=output_scale, parameterization=param)


def _standard_layers(widths, bias, dtype, generator, seed) -> list[ScaledLinear]:
    """nn.Linear's default init (kaiming_uniform(a=√5) ≡ U(±1/√fan_in), bias U(±1/√fan_in))."""
    state = torch.random.get_rng_state() if seed is not None else None
    if seed is not None:
        torch.manual_seed(seed)
    try:
        layers = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
            lin = ScaledLinear(fan_in, fan_out, bias=bias, dtype=dtype)
            bound = 1.0 / math.sqrt(fan_in)
            with torch.no_grad():
                # Same draws, in the same order, as nn.Linear.reset_parameters.
                nn.init.kaiming_uniform_(lin.weight, a=math.sqrt(5), generator=generator)
                if lin.bias is not None:
                    nn.init.uniform_(lin.bias, -bound, bound, generator=generator)
            layers.append(lin)
        return layers
    finally:
        if state is not None:
            torch.random.set_rng_state(state)
