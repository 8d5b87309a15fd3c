"""Fast, deterministic stand-ins for the training runner (picklable, for process pools).

A fake run's MSE_test follows exp(b + s(α) log n + ε) with known slopes s(α) and noise ε fixed
by (seed, width), so fits can be checked against the truth.
"""

from __future__ import annotations

import hashlib
import math
import os
import pathlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

TRUE_SLOPES = {0.0: -1.0, -0.5: -1.5, -1.0: -2.5}


def _unit(*keys: object) -> float:
    """A deterministic number in (0, 1) from keys."""
    h = hashlib.sha256(repr(keys).encode()).digest()
    return (int.from_bytes(h[:8], "big") + 0.5) / 2**64


def _gauss(*keys: object) -> float:
    u1, u2 = _unit(*keys, 1), _unit(*keys, 2)
    return math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)


def fake_record(cfg: Mapping[str, Any], *, noise: float = 0.1) -> dict[str, Any]:
    """A RunResult-like record with a known power law in width."""
    n, a, seed = cfg["model"]["width"], cfg["training"]["alpha"], cfg["seed"]
    slope = TRUE_SLOPES.get(a, -1.0 + a)
    log_mse = 1.0 + slope * math.log(n) + noise * _gauss(seed, n, a)
    mse = math.exp(log_mse)
    metrics = {"mse_test": mse, "mse_train": 0.9 * mse, "c_test": math.sqrt(mse) / 10,
               "c_train": math.sqrt(mse) / 11, "loss_f_test": 0.5, "loss_lin_test": 0.5 + mse,
               "acc_f_test": 0.8, "acc_lin_test": 0.8, "param_distance": 1.0 / n,
               "param_distance_lin": 1.0 / n}
    logs = [{"step": s, "loss_f": 1.0 / (1 + s), "loss_lin": 1.0 / (1 + s) + mse,
             "discrepancy": mse * s / 10, "param_distance": s / n}
            for s in range(0, cfg["training"]["steps"] + 1, cfg["logging"]["every"])]
    return {"schema_version": 1, "status": "ok", "diverged_step": None, "error": None,
            "metrics": metrics, "logs": logs, "seed": seed, "wall_time_s": 0.01,
            "device": "cpu", "dtype": cfg["training"]["dtype"], "config": {"lr": 0.0}}


def fake_runner(configs: Sequence[Mapping[str, Any]], *, device: str | None
                ) -> list[dict[str, Any]]:
    """Runner protocol: one fake record per config."""
    return [fake_record(c) for c in configs]


@dataclass(frozen=True)
class CountingRunner:
    """Fake runner that appends each run's (width, alpha, seed) to a file, optionally slowly;
    seeds in ``fail_seeds`` raise."""

    log: str
    delay_s: float = 0.0
    fail_seeds: tuple[int, ...] = ()

    def __call__(self, configs: Sequence[Mapping[str, Any]], *, device: str | None
                 ) -> list[dict[str, Any]]:
        out = []
        for c in configs:
            if self.delay_s:
                time.sleep(self.delay_s)
            with open(self.log, "a") as fh:
                fh.write(f"{c['model']['width']} {c['training']['alpha']} {c['seed']} "
                         f"{len(configs)} {os.getpid()}\n")
            if c["seed"] in self.fail_seeds:
                raise RuntimeError(f"boom at seed {c['seed']}")
            out.append(fake_record(c))
        return out

    def calls(self) -> list[str]:
        p = pathlib.Path(self.log)
        return p.read_text().splitlines() if p.exists() else []
