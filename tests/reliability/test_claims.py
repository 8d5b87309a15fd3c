"""The claim protocol of weakcorr._claims: exclusive O_EXCL claims, stale claims retaken by
exactly one retaker, claims released after the atomic write, and run_sweep using it."""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import random
import socket
import subprocess
import sys
import threading
import time

import pytest

from weakcorr import _claims, config, sweep
from weakcorr._claims import ClaimingRunStore, _read_claim, pid_alive
from weakcorr.results import run_id

from ..sweep._fake import CountingRunner, fake_record, fake_runner
from ._runners import leftovers

RID = "0123456789abcdef"


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(proc.stdout)


def _plant(store: ClaimingRunStore, rid: str, *, host: str | None = None, pid: int = 1,
           sweep_token: str = "other-sweep", age_s: float = 0.0, text: str | None = None) -> None:
    """Write a claim file as another process would have."""
    path = store.claim_path(rid)
    path.parent.mkdir(parents=True, exist_ok=True)
    if text is None:
        text = json.dumps({"host": host or socket.gethostname(), "pid": pid, "pid_start": None,
                           "sweep": sweep_token, "started": time.time() - age_s})
    path.write_text(text)
    if age_s:
        os.utime(path, (time.time() - age_s, time.time() - age_s))


def _owner(store: ClaimingRunStore, rid: str) -> str | None:
    seen = _read_claim(store.claim_path(rid))
    return None if seen is None or seen.claim is None else seen.claim.sweep


def test_claim_is_exclusive_reentrant_and_released_by_its_owner_only(tmp_path):
    a, b = ClaimingRunStore(tmp_path), ClaimingRunStore(tmp_path)
    assert a.claim(RID) and a.claim(RID)
    assert not b.claim(RID)
    content = json.loads(a.claim_path(RID).read_text())
    assert content["host"] == socket.gethostname() and content["pid"] == os.getpid()
    assert content["sweep"] == a.sweep_token and abs(content["started"] - time.time()) < 60
    b.release(RID)  # not b's: left alone
    assert a.claim_path(RID).exists()
    a.release(RID)
    assert not a.claim_path(RID).exists() and b.claim(RID)


def test_a_claim_is_never_visible_without_its_content(tmp_path, monkeypatch):
    """A sweep killed mid-claim must not leave an empty claim: in CI one did, and the resumed
    sweep skipped that run as 'claimed elsewhere' for the 10 s grace of unreadable claims."""
    store = ClaimingRunStore(tmp_path)
    real_link = os.link
    seen = []

    def checking_link(src, dst):
        assert not os.path.exists(dst)
        seen.append(_claims.Claim.from_json(pathlib.Path(src).read_text()))
        return real_link(src, dst)

    monkeypatch.setattr(os, "link", checking_link)
    assert store.claim(RID)
    assert seen and seen[0] is not None and seen[0].sweep == store.sweep_token

    def killed(src, dst):  # the process dies after writing the pending file, before linking
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "link", killed)
    with pytest.raises(KeyboardInterrupt):
        store.claim("fedcba9876543210")
    monkeypatch.setattr(os, "link", real_link)
    assert not store.claim_path("fedcba9876543210").exists()
    assert not list(store.runs_dir.glob(".*.tmp"))
    assert ClaimingRunStore(tmp_path).claim("fedcba9876543210")  # free at once
    # A pending file of a writer killed before its cleanup is removed at the next sweep start.
    dead = store.runs_dir / f".{RID}.claim.{'0' * 32}.{_dead_pid()}.tmp"
    dead.write_text("{}")
    ClaimingRunStore(tmp_path).remove_stale_temp()
    assert not dead.exists()


def test_claims_work_without_hard_links(tmp_path, monkeypatch):
    import errno

    def no_links(src, dst):
        raise OSError(errno.EPERM, "hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    a, b = ClaimingRunStore(tmp_path), ClaimingRunStore(tmp_path)
    assert a.claim(RID) and not b.claim(RID)
    assert json.loads(a.claim_path(RID).read_text())["sweep"] == a.sweep_token
    a.release(RID)
    assert b.claim(RID) and not list(a.runs_dir.glob(".*.tmp"))


def test_write_is_atomic_and_releases_the_claim_and_a_finished_run_is_not_claimed_again(tmp_path):
    a, b = ClaimingRunStore(tmp_path), ClaimingRunStore(tmp_path)
    assert a.claim(RID)
    a.write(RID, {"status": "ok", "metrics": {}})
    assert not a.claim_path(RID).exists() and leftovers(tmp_path) == []
    assert not b.claim(RID) and not b.claim_path(RID).exists()


def test_failed_record_of_a_concurrent_sweep_is_not_redone_but_an_older_one_is(tmp_path):
    b = ClaimingRunStore(tmp_path)  # started before a wrote
    a = ClaimingRunStore(tmp_path)
    assert a.claim(RID)
    a.write(RID, {"status": "failed", "error": "boom"})
    assert not b.claim(RID)
    later = ClaimingRunStore(tmp_path)  # a later sweep (e.g. --retry-failed) may redo it
    assert later.claim(RID)


@pytest.mark.parametrize("planted,retaken", [
    ({"pid": "dead"}, True),
    ({"pid": "self-reused"}, True),
    ({"pid": "live"}, False),
    ({"pid": 1, "host": "elsewhere"}, False),
    ({"pid": 1, "host": "elsewhere", "age_s": 700}, True),
    ({"pid": 1, "host": "elsewhere", "sweep_token": "same"}, True),
    ({"text": ""}, False),
    ({"text": "", "age_s": 60}, True),
], ids=["dead-pid", "reused-pid", "live-pid", "other-host-fresh", "other-host-no-heartbeat",
        "lost-attempt-of-this-sweep", "half-written-fresh", "half-written-old"])
def test_stale_claims_are_retaken_live_ones_respected(tmp_path, planted, retaken):
    store = ClaimingRunStore(tmp_path)
    planted = dict(planted)
    if planted.get("pid") == "dead":
        planted["pid"] = _dead_pid()
    elif planted.get("pid") == "live":
        planted["pid"] = os.getppid()
    if planted.get("sweep_token") == "same":
        planted["sweep_token"] = store.sweep_token
    if planted.get("pid") == "self-reused":  # our pid, but a different process start time
        planted["pid"] = os.getpid()
        path = store.claim_path(RID)
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                    "pid_start": "1", "sweep": "x", "started": time.time()}))
    else:
        _plant(store, RID, **planted)
    assert store.claim(RID) is retaken
    assert (_owner(store, RID) == store.sweep_token) is retaken


def test_zombie_counts_as_dead():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    stat = f"/proc/{proc.pid}/stat"
    try:
        if not os.path.exists(stat):
            pytest.skip("no /proc here")
        deadline = time.monotonic() + 30
        while pathlib.Path(stat).read_text().rsplit(")", 1)[1].split()[0] != "Z":  # not reaped
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(proc.pid, 0)  # a zombie still answers kill(0) ...
        assert not pid_alive(proc.pid)  # ... but runs nothing
    finally:
        proc.wait()
    assert pid_alive(os.getpid()) and not pid_alive(proc.pid) and not pid_alive(0)


def test_retaker_with_a_stale_view_leaves_the_winners_claim(tmp_path):
    """Two retakers read the same stale claim; the first takes over and claims; the second's
    takeover then finds the claim replaced and leaves it alone."""
    _plant(ClaimingRunStore(tmp_path), RID, pid=_dead_pid())
    first, second = ClaimingRunStore(tmp_path), ClaimingRunStore(tmp_path)
    stale_view = _read_claim(second.claim_path(RID))
    assert second._is_stale(stale_view)
    assert first.claim(RID)
    assert second._take_over(second.claim_path(RID), stale_view) is False
    assert _owner(first, RID) == first.sweep_token
    assert not second.claim(RID)
    assert leftovers(tmp_path) == [f"{RID}.claim"]


def test_claim_replaced_between_check_and_rename_is_put_back(tmp_path, monkeypatch):
    """The rename moved a newer claim than the one judged stale: it is linked back."""
    _plant(ClaimingRunStore(tmp_path), RID, pid=_dead_pid())
    second = ClaimingRunStore(tmp_path)
    path = second.claim_path(RID)
    stale_view = _read_claim(path)
    path.unlink()
    first = ClaimingRunStore(tmp_path)
    assert first.claim(RID)
    inode = path.stat().st_ino
    real = _claims._read_claim
    calls = []

    def check_sees_the_old_file(p):  # the check step reads before the claim is replaced
        calls.append(p)
        return stale_view if len(calls) == 1 else real(p)

    monkeypatch.setattr(_claims, "_read_claim", check_sees_the_old_file)
    assert second._take_over(path, stale_view) is False
    monkeypatch.undo()
    assert path.stat().st_ino == inode and _owner(first, RID) == first.sweep_token
    assert leftovers(tmp_path) == [f"{RID}.claim"]


def test_takeover_marker_serialises_retakers_and_ages_out(tmp_path):
    _plant(ClaimingRunStore(tmp_path), RID, pid=_dead_pid())
    store = ClaimingRunStore(tmp_path)
    path = store.claim_path(RID)
    marker = path.with_name(f".{path.name}.{_read_claim(path).key}.takeover")
    marker.write_text("")
    assert not store.claim(RID)  # another retaker is on it
    os.utime(marker, (time.time() - 120, time.time() - 120))
    assert store.claim(RID)  # that retaker died mid-takeover
    assert leftovers(tmp_path) == [f"{RID}.claim"]


@pytest.mark.parametrize("round_", range(6))
def test_many_retakers_of_one_stale_claim_exactly_one_wins(tmp_path, round_):
    _plant(ClaimingRunStore(tmp_path), RID, pid=_dead_pid())
    stores = [ClaimingRunStore(tmp_path) for _ in range(8)]
    rng = random.Random(round_)
    delays = [rng.random() * 1e-3 for _ in stores]
    barrier = threading.Barrier(len(stores))
    won = [False] * len(stores)

    def go(i):
        barrier.wait()
        time.sleep(delays[i])
        won[i] = stores[i].claim(RID)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(won) == 1
    assert _owner(stores[0], RID) == stores[won.index(True)].sweep_token
    assert [n for n in leftovers(tmp_path) if n.endswith(".stale")] == []


def test_concurrent_claimers_run_every_run_exactly_once(tmp_path):
    rids = [f"{i:016x}" for i in range(40)]
    runs: list[str] = []
    lock = threading.Lock()

    def sweep_(seed):
        store = ClaimingRunStore(tmp_path)
        order = rids[:]
        random.Random(seed).shuffle(order)
        for rid in order:
            if store.claim(rid):
                with lock:
                    runs.append(rid)
                store.write(rid, {"status": "ok"})

    threads = [threading.Thread(target=sweep_, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(runs) == rids
    assert leftovers(tmp_path) == []


def test_heartbeat_keeps_a_claim_fresh_until_released(tmp_path):
    store = ClaimingRunStore(tmp_path, stale_after_s=0.4)  # heartbeat every 0.1 s
    assert store.claim(RID)
    path = store.claim_path(RID)
    os.utime(path, (time.time() - 100, time.time() - 100))
    time.sleep(0.35)
    assert time.time() - path.stat().st_mtime < 0.3
    assert not ClaimingRunStore(tmp_path, stale_after_s=0.4).claim(RID)
    store.release(RID)
    _plant(store, RID, sweep_token="x", pid=os.getppid(), age_s=100)
    time.sleep(0.25)
    assert time.time() - path.stat().st_mtime > 50  # nobody beats a released claim


def test_pickled_copies_act_as_one_sweep(tmp_path):
    store = ClaimingRunStore(tmp_path, stale_after_s=123.0)
    copy = pickle.loads(pickle.dumps(store))
    assert (copy.sweep_token, copy.since, copy.stale_after_s) == (
        store.sweep_token, store.since, 123.0)
    assert store.claim(RID) and copy.claim(RID)  # same process and sweep: re-entrant


def test_remove_stale_temp_clears_dead_claims_and_keeps_live_ones(tmp_path):
    store = ClaimingRunStore(tmp_path)
    _plant(store, "a" * 16, pid=_dead_pid())
    _plant(store, "b" * 16, pid=1, host="elsewhere")
    for junk in (f".{'c' * 16}.claim.dead.stale", f".{'d' * 16}.claim.0123.takeover"):
        (store.runs_dir / junk).write_text("")
        os.utime(store.runs_dir / junk, (time.time() - 120, time.time() - 120))
    assert store.remove_stale_temp() == 3
    assert store.claims() == ["b" * 16] and leftovers(tmp_path) == [f"{'b' * 16}.claim"]


def test_bad_timeout_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="`stale_after_s` must be > 0, got 0"):
        ClaimingRunStore(tmp_path, stale_after_s=0)


SMALL = {
    "model": {"widths": [8, 16], "depth": 2},
    "data": {"name": "teacher", "n_train": 64, "n_test": 32},
    "training": {"steps": 20, "batch_size": 16, "lr0": 0.1, "alphas": [0, -1]},
    "seeds": 2, "logging": {"every": 5},
}


def test_run_sweep_claims_by_default_and_skips_runs_claimed_by_a_live_sweep(tmp_path):
    cfg = config.load(SMALL)
    rids = [run_id(c) for c in config.expand(cfg)]
    other = ClaimingRunStore(tmp_path)
    _plant(other, rids[0], pid=1, host="elsewhere")  # a live sweep on another machine
    runner = CountingRunner(str(tmp_path / "calls.txt"))
    summary = sweep.run_sweep(cfg, str(tmp_path), runner=runner, check_data=False)
    assert summary.counts["claimed-elsewhere"] == 1 and summary.counts["ok"] == len(rids) - 1
    assert len(runner.calls()) == len(rids) - 1
    assert leftovers(tmp_path) == [f"{rids[0]}.claim"]
    other.claim_path(rids[0]).unlink()  # that sweep is gone without a trace: resume runs it
    summary = sweep.run_sweep(cfg, str(tmp_path), runner=fake_runner, check_data=False)
    assert (summary.ran, summary.counts["ok"]) == (1, 1) and leftovers(tmp_path) == []


def test_fake_record_round_trip_through_the_store(tmp_path):
    cfg = config.expand(config.load(SMALL))[0]
    store = ClaimingRunStore(tmp_path)
    assert store.claim(run_id(cfg))
    store.write(run_id(cfg), {**fake_record(cfg), "config": cfg})
    assert store.state(run_id(cfg)) == "ok" and store.claims() == []
