"""Concurrent writers on one store: four tuners, one killed mid-run, and merges rewriting the
file meanwhile lose no record, tear no line and write none twice."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from collections import Counter

from dlc.logfiles import locked, rewrite_lines
from dlc.logshare import merge
from dlc.logstore import Trial, open_folder, open_store
from dlc.provenance import Provenance
from dlc.target import parse_target

SKYLAKE = parse_target("skylake")
PAD = "x" * 300  # lines of ~0.5 KB, as short records are


def _writer(root: str, name: str, count: int) -> None:
    """A tuner: appends `count` trials through the store's API, a little apart."""
    store = open_store(root, SKYLAKE)
    store.begin_contribution(Provenance.collect("tune", model_name=name, model_sha256=name * 8))
    for i in range(count):
        store.add_trial(Trial(f"w{i % 3}", f"{name}-{i}", {"fake": i, "pad": PAD}, (1e-5 + i * 1e-9,), None),
                        task_name="conv")
        time.sleep(0.0005)


def _candidates(lines: list[bytes]) -> Counter:
    return Counter(json.loads(line)["candidate"] for line in lines)


def test_four_writers_a_killed_one_and_concurrent_merges(tmp_path):
    root = tmp_path / "logs"
    other = tmp_path / "other"
    store = open_store(other, SKYLAKE)
    for i in range(5):
        store.add_trial(Trial("w0", f"merged-{i}", {"fake": i}, (1e-5,), None), task_name="conv")
    open_store(root, SKYLAKE)
    records = root / SKYLAKE.key / "records.jsonl"

    spawn = multiprocessing.get_context("spawn")
    writers = [spawn.Process(target=_writer, args=(str(root), f"t{n}", 1500)) for n in range(4)]
    victim = spawn.Process(target=_writer, args=(str(root), "killed", 10**9))
    for process in [*writers, victim]:
        process.start()
    merges = 0
    killed = False
    deadline = time.monotonic() + 120
    while any(p.is_alive() for p in writers) and time.monotonic() < deadline:
        merge([other], root)  # rewrites records.jsonl under the lock while all five append
        merges += 1
        if not killed and records.exists() and records.read_bytes().count(b'"killed-') >= 200:
            os.kill(victim.pid, signal.SIGKILL)
            killed = True
    for process in writers:
        process.join(30)
    if not killed:
        os.kill(victim.pid, signal.SIGKILL)
    victim.join(30)
    assert all(p.exitcode == 0 for p in writers) and victim.exitcode == -signal.SIGKILL
    assert merges >= 5, "the merges did not overlap the writers"

    lines = records.read_bytes().split(b"\n")
    assert lines.pop() == b""
    parsed, torn = [], []
    for line in lines:
        if not line:  # an appender's guard against gluing onto a half-visible line (read_jsonl)
            continue
        try:
            parsed.append(json.loads(line))
        except ValueError:
            torn.append(line)
    # A kill can at worst tear the victim's own last line (skipped on load); nobody else's.
    assert len(torn) <= 1 and all(b'"killed-' in line for line in torn)
    counts = Counter(line["candidate"] for line in parsed)
    assert max(counts.values()) == 1  # no line written twice
    for n in range(4):
        assert {f"t{n}-{i}" for i in range(1500)} <= set(counts)  # none lost
    victim_lines = sorted(int(c.split("-")[1]) for c in counts if c.startswith("killed-"))
    assert victim_lines == list(range(len(victim_lines))) and len(victim_lines) >= 200  # no gap
    assert {f"merged-{i}" for i in range(5)} <= set(counts)
    store = open_folder(root / SKYLAKE.key)
    assert store.skipped_lines == len(torn)
    assert sum(map(len, store.trials.values())) == len(parsed)
    runs = {line["run"] for line in parsed if line["candidate"].startswith("t")}
    assert len(runs) == 4 and runs <= set(store.contributions)


def test_a_rewrite_keeps_lines_appended_after_its_read(tmp_path):
    """What the concurrent test exercises by chance, forced: an append lands in the old file
    between the rewriter's read and its rename."""
    store = open_store(tmp_path, SKYLAKE)
    store.add_trial(Trial("w0", "a", {}, (1e-5,), None), task_name="conv")
    records = tmp_path / SKYLAKE.key / "records.jsonl"

    def drop_nothing_but_append_meanwhile(lines):
        open_store(tmp_path, SKYLAKE).add_trial(Trial("w0", "b", {}, (1e-5,), None), task_name="conv")
        return lines

    with locked(records.parent):
        rewrite_lines(records, drop_nothing_but_append_meanwhile)
    assert sorted(_candidates(records.read_bytes().splitlines()).elements()) == ["a", "b"]
