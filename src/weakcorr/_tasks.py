"""The task and outcome types of a sweep and the executor protocol, below both the sweep
(:mod:`weakcorr.sweep`, which plans and runs tasks) and the executors that run them
(:mod:`weakcorr._executors`), so that neither imports the other (hydra's pattern: the
``Launcher`` interface sits below its implementations). :mod:`weakcorr.sweep` re-exports them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from .results import RunStore

__all__ = ["Executor", "InProcessExecutor", "PerRun", "RunOutcome", "RunTask", "Runner"]

T = TypeVar("T")
R = TypeVar("R")


class Runner(Protocol):
    """Trains runs that differ only in their seed; returns one record per config, in order.

    A record is a :meth:`weakcorr.train.RunResult.to_dict` mapping (``status``, ``metrics``,
    ``logs``, ...). A runner must be picklable (a module-level function or class instance) to
    run on a process pool.
    """

    def __call__(self, configs: Sequence[Mapping[str, Any]], *, device: str | None
                 ) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class PerRun:
    """Adapts ``fn(config, *, device) -> record`` (one run at a time) to :class:`Runner`."""

    fn: Callable[..., dict[str, Any]]

    def __call__(self, configs: Sequence[Mapping[str, Any]], *, device: str | None
                 ) -> list[dict[str, Any]]:
        return [self.fn(c, device=device) for c in configs]


class Executor(Protocol):
    """Runs ``fn`` on every task and yields the results as they complete (any order)."""

    def map_unordered(self, fn: Callable[[T], R], tasks: Sequence[T]) -> Iterator[R]: ...

    def shutdown(self) -> None: ...


class InProcessExecutor:
    """Runs tasks one after another in this process."""

    def map_unordered(self, fn: Callable[[T], R], tasks: Sequence[T]) -> Iterator[R]:
        """Yield ``fn(task)`` for each task, in order."""
        for task in tasks:
            yield fn(task)

    def shutdown(self) -> None:
        """Nothing to release."""


@dataclass(frozen=True)
class RunTask:
    """Runs that execute together: one run, or several seeds of one (width, α).

    ``batch``: every config the runner trains together, when that is more than the runs to
    write (``run_ids``/``configs``): a seed batch is fixed by the grid (:func:`seed_batches`),
    so a run keeps its batch partners when they are done already or claimed by another
    sweep; their records are computed again and dropped. Empty: the runner trains ``configs``.
    """

    store: RunStore
    run_ids: tuple[str, ...]
    configs: tuple[dict[str, Any], ...]
    runner: Runner
    device: str | None = None
    batch: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class RunOutcome:
    """What happened to one run of a task."""

    run_id: str
    status: str  # "ok" | "diverged" | "failed" | "claimed-elsewhere"
    wall_time_s: float | None = None
    error: str | None = None


def _failed_record(cfg: Mapping[str, Any], error: str, wall: float, device: str | None
                   ) -> dict[str, Any]:
    return {"status": "failed", "error": error, "diverged_step": None, "metrics": {}, "logs": [],
            "seed": cfg.get("seed"), "wall_time_s": wall, "device": device,
            "dtype": (cfg.get("training") or {}).get("dtype")}  # A.1: training may be None
