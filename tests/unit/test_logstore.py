from __future__ import annotations

import json

import pytest

from dlc.errors import LogStoreError
from dlc.logstore import DEFAULT, Trial, open_store
from dlc.schedule import RULES_VERSION
from dlc.target import parse_target

SKYLAKE = parse_target("skylake")


def _trial(n: int, *, secs=(1e-5,), error=None, candidate=None) -> Trial:
    rules = RULES_VERSION if candidate == DEFAULT else None
    return Trial("w1", candidate or f"c{n}", {"fake": n}, secs, error, rules)


def test_appends_and_reloads(tmp_path):
    store = open_store(tmp_path, SKYLAKE)
    store.add_workload("w1", ["w1", "payload"])
    store.add_trial(_trial(1, secs=(2e-5, 4e-5)), task_name="conv")
    store.add_trial(_trial(2, secs=None, error="build: boom"), task_name="conv")
    store.add_trial(_trial(3, secs=(9e-6,), candidate=DEFAULT), task_name="conv")
    again = open_store(tmp_path, SKYLAKE)
    assert again.trial_count("w1") == 2  # the default-schedule baseline is not a trial
    assert again.best_seconds("w1") == pytest.approx(3e-5)
    assert again.default_seconds("w1") == pytest.approx(9e-6)
    assert set(again.measured_candidates("w1")) == {"c1", "c2"}
    assert (tmp_path / SKYLAKE.key / "target.json").exists()


def test_torn_line_is_skipped_and_never_glued_to_the_next(tmp_path):
    store = open_store(tmp_path, SKYLAKE)
    store.add_trial(_trial(1), task_name="conv")
    records = tmp_path / SKYLAKE.key / "records.jsonl"
    with records.open("ab") as f:
        f.write(b'{"hash": "w1", "candid')  # a crash in the middle of a line
    store = open_store(tmp_path, SKYLAKE)
    assert store.skipped_lines == 1 and store.trial_count("w1") == 1
    store.add_trial(_trial(2), task_name="conv")
    store = open_store(tmp_path, SKYLAKE)
    assert store.skipped_lines == 1 and store.trial_count("w1") == 2
    assert all(json.loads(line) for line in records.read_text().splitlines()[:1])


def test_foreign_target_folder_is_refused(tmp_path):
    open_store(tmp_path, SKYLAKE)
    header = tmp_path / SKYLAKE.key / "target.json"
    data = json.loads(header.read_text())
    data["target"] = {"kind": "llvm", "mcpu": "znver3"}
    header.write_text(json.dumps(data))
    with pytest.raises(LogStoreError) as err:
        open_store(tmp_path, SKYLAKE)
    assert "belongs to target" in err.value.message and err.value.exit_code == 7


def test_not_a_log_folder(tmp_path):
    (tmp_path / SKYLAKE.key).mkdir()
    (tmp_path / SKYLAKE.key / "target.json").write_text("[1, 2]")
    with pytest.raises(LogStoreError, match="not a dlc tuning-log folder"):
        open_store(tmp_path, SKYLAKE)


def test_missing_folder_is_not_created_when_reading(tmp_path):
    store = open_store(tmp_path, SKYLAKE, create=False)
    assert store.trial_count("w1") == 0 and not (tmp_path / SKYLAKE.key).exists()

