"""Fault-injecting runners (picklable, for worker processes) and helpers for sweep folders."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..sweep._fake import fake_record


def run_key(cfg: Mapping[str, Any]) -> str:
    """``"width alpha seed"`` of a run config."""
    return f"{cfg['model']['width']} {cfg['training']['alpha']} {cfg['seed']}"


def _append(log: str, line: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def executions(log: str | os.PathLike[str]) -> list[str]:
    """The run keys appended to ``log``, one per execution."""
    p = pathlib.Path(log)
    return [" ".join(line.split()[:3]) for line in p.read_text().splitlines()] if p.exists() else []


@dataclass(frozen=True)
class SelfKillRunner:
    """Appends each run to ``log`` (O_APPEND), then SIGKILLs its own process for the runs in
    ``kill_always`` and, on their first execution only, for those in ``kill_once``."""

    log: str
    kill_always: tuple[str, ...] = ()
    kill_once: tuple[str, ...] = ()

    def __call__(self, configs: Sequence[Mapping[str, Any]], *, device: str | None
                 ) -> list[dict[str, Any]]:
        out = []
        for c in configs:
            key = run_key(c)
            before = executions(self.log).count(key)
            _append(self.log, f"{key} {os.getpid()}")
            if key in self.kill_always or (key in self.kill_once and before == 0):
                os.kill(os.getpid(), signal.SIGKILL)
            out.append(fake_record(c))
        return out


def leftovers(out: str | os.PathLike[str]) -> list[str]:
    """Temp files, claim files and takeover leftovers in a sweep folder."""
    runs = pathlib.Path(out) / "runs"
    if not runs.is_dir():
        return []
    return sorted(p.name for p in runs.iterdir()
                  if p.name.startswith(".") or p.suffix != ".json")


def unparsable(out: str | os.PathLike[str]) -> list[str]:
    """JSON files in a sweep folder that do not parse."""
    bad = []
    for p in pathlib.Path(out).rglob("*.json"):
        try:
            json.loads(p.read_text())
        except ValueError:
            bad.append(p.name)
    return bad


@dataclass(frozen=True)
class StartLogRunner:
    """Appends each run to ``log`` (O_APPEND) when it *starts*, then takes ``delay_s``: a run
    killed in flight shows up in the log, and again when it is rerun."""

    log: str
    delay_s: float = 0.15

    def __call__(self, configs: Sequence[Mapping[str, Any]], *, device: str | None
                 ) -> list[dict[str, Any]]:
        out = []
        for c in configs:
            _append(self.log, f"{run_key(c)} {os.getpid()}")
            time.sleep(self.delay_s)
            out.append(fake_record(c))
        return out
