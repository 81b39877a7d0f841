"""Tuning logs shared by two teams, with real (tiny) tuning runs: merge, build from the merge,
export/import, MetaSchedule's JSONDatabase, check/repair, damaged records, reuse across models."""

from __future__ import annotations

import copy
import json
import shutil
import socket
from pathlib import Path

import pytest

from dlc import build, frontend, pipeline, tuning
from dlc.logarchive import export_store
from dlc.logcheck import check
from dlc.logfiles import identity, read_jsonl
from dlc.logstore import DEFAULT, open_folder
from dlc.target import TargetSpec, parse_target
from dlc.verify import verify
from tests import models
from tests.conftest import run_dlc

HOST = parse_target("host")


def _optimize(model: Path):
    return pipeline.optimize(frontend.import_model(frontend.load_model(model)), HOST)


@pytest.fixture(scope="module")
def teams(tmp_path_factory, tiny):
    """Team a tuned conv_relu_pool into its store, team b matmul_softmax into another."""
    root = tmp_path_factory.mktemp("teams")
    built = {}
    for team, name in (("a", "conv_relu_pool"), ("b", "matmul_softmax")):
        model = tiny(name)
        optimized = _optimize(model)
        result = tuning.tune(optimized, HOST, logs=root / team, trials=4, trials_per_batch=4)
        assert result.trials_run == 4
        built[team] = (model, optimized)
    return root, built


def _lines(folder: Path) -> list[dict]:
    return [line for _, _, line in read_jsonl(folder / "records.jsonl")]


def _write(folder: Path, lines: list[dict]) -> None:
    (folder / "records.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_two_teams_merge_and_both_models_build_from_the_merge(teams, tmp_path):
    root, built = teams
    result = run_dlc("logs", "merge", str(root / "a"), str(root / "b"), "-o", str(tmp_path / "merged"))
    assert result.returncode == 0, result.stderr
    merged = tmp_path / "merged" / HOST.key
    searched = lambda folder: {(l["hash"], l["candidate"]) for l in _lines(folder) if l["candidate"] != DEFAULT}  # noqa: E731
    assert searched(merged) == searched(root / "a" / HOST.key) | searched(root / "b" / HOST.key)
    listed = run_dlc("logs", "list", str(tmp_path / "merged"))
    assert listed.returncode == 0 and HOST.key in listed.stdout

    # The teams share their search records only: each recorded kernel takes its record.
    _write(merged, [line for line in _lines(merged) if line["candidate"] != DEFAULT])
    for team, (model, optimized) in built.items():
        library = build.build(optimized, HOST, output=tmp_path / f"{team}.so", tuning_logs=tmp_path / "merged")
        applied = library.tuning
        assert applied.tasks_with_records >= 1 and applied.unusable_records == 0
        assert [s.model.split(" ")[0] for s in applied.by_source] == [model.name]  # its own team's records
        assert sum(s.kernels for s in applied.by_source) == applied.tasks_with_records
        assert library.manifest["tuning"]["by_source"][0]["model"].startswith(model.name)
        assert verify(model, library.library).passed

    # Another model with the same kernels (other weights) builds with team a's records.
    other = models.conv_relu_pool(tmp_path / "other_weights.onnx", weight_seed=2)
    library = build.build(_optimize(other), HOST, output=tmp_path / "other.so", tuning_logs=tmp_path / "merged")
    assert [s.model.split(" ")[0] for s in library.tuning.by_source] == ["conv_relu_pool.onnx"]
    assert verify(other, library.library).passed


def test_export_then_import_into_an_empty_store_gives_the_same_records(teams, tmp_path):
    root, _ = teams
    archive = tmp_path / "team-a.tar.gz"
    exported = run_dlc("logs", "export", HOST.key, "--logs", str(root / "a"), "-o", str(archive))
    assert exported.returncode == 0, exported.stderr
    imported = run_dlc("logs", "import", str(archive), "--logs", str(tmp_path / "fresh"))
    assert imported.returncode == 0, imported.stderr
    assert {identity(l) for l in _lines(tmp_path / "fresh" / HOST.key)} == {identity(l) for l in _lines(root / "a" / HOST.key)}
    shown = run_dlc("logs", "show", HOST.key, "--logs", str(tmp_path / "fresh"))
    assert shown.returncode == 0, shown.stderr
    for text in ("conv_relu_pool.onnx", socket.gethostname(), "import", "fused_conv2d_add_relu"):
        assert text in shown.stdout


def test_the_json_database_export_loads_in_plain_tvm(teams, tmp_path):
    import tvm
    from tvm.relax.transform import MetaScheduleApplyDatabase
    from tvm.s_tir import meta_schedule as ms

    from dlc.schedule import is_scheduled

    root, built = teams
    result = export_store(root / "a" / HOST.key, json_database=tmp_path / "db")
    assert result.json_records == len([l for l in _lines(root / "a" / HOST.key) if l["run_secs"]])
    database = ms.database.JSONDatabase(work_dir=str(tmp_path / "db"), allow_missing=False)
    optimized = built["a"][1]
    conv = tuning.extract_tasks(optimized, HOST)[0]
    assert database.get_top_k(database.commit_workload(conv.mod), 1)
    with HOST.to_tvm(), tvm.transform.PassContext(opt_level=3), database:
        mod = MetaScheduleApplyDatabase()(optimized.mod)
    assert is_scheduled(mod[conv.name])


def _damaged(line: dict) -> dict:
    """`line` as another TVM might have written it: its trace names a block the kernel lacks."""
    line = copy.deepcopy(line)
    inst = next(inst for inst in line["record"][0][0] if inst[0] == "GetSBlock")
    inst[2][0] = "no_such_block"
    line.update(candidate="damaged", run_secs=[1e-9])  # and it looks fastest
    return line


def test_check_reports_bad_lines_and_repair_drops_them_and_builds_skip_them(teams, tmp_path):
    root, built = teams
    shutil.copytree(root / "a", tmp_path / "logs")
    folder = tmp_path / "logs" / HOST.key
    records = folder / "records.jsonl"
    good = records.read_bytes()
    lines = _lines(folder)
    conv = next(l for l in lines if l["candidate"] != DEFAULT and l["run_secs"])
    n = len(lines)
    orphan = {**conv, "hash": "123", "candidate": "orphan"}
    with records.open("a") as f:
        f.write(json.dumps(_damaged(conv)) + "\n" + json.dumps(orphan) + "\n" + '{"hash": "1", "cand')

    # A build skips the damaged record (it used to fail: "TVM failed to compile") and says so.
    library = build.build(built["a"][1], HOST, output=tmp_path / "a.so", tuning_logs=tmp_path / "logs")
    assert library.tuning.unusable_records == 1 and "no_such_block" in library.tuning.unusable_reason
    assert verify(built["a"][0], library.library).passed

    result = run_dlc("logs", "check", str(tmp_path / "logs"))
    assert result.returncode == 7 and "Traceback" not in result.stderr, result.stderr
    assert (f"{records}:{n + 1}: trace does not replay on its kernel: Error message: Cannot find a block with "
            "the name: no_such_block") in result.stdout
    assert f"{records}:{n + 2}: no loadable kernel 123 in workloads.jsonl" in result.stdout
    assert f"{records}:{n + 3}: not a record line (torn or edited)" in result.stdout
    assert "error: 3 bad line(s)" in result.stderr and "--repair" in result.stderr

    repaired = run_dlc("logs", "check", "--repair", str(tmp_path / "logs"))
    assert repaired.returncode == 0 and "dropped 3 bad line(s)" in repaired.stdout, repaired.stderr
    assert records.read_bytes() == good  # exactly the bad lines went
    again = check(folder)
    assert again.problems == () and again.records_replayed == n


def test_tune_skips_kernels_other_models_tuned_and_survives_a_damaged_record(teams, tmp_path):
    root, _ = teams
    shutil.copytree(root / "a", tmp_path / "logs")
    folder = tmp_path / "logs" / HOST.key
    conv_line = next(l for l in _lines(folder) if l["candidate"] != DEFAULT and l["run_secs"])
    with (folder / "records.jsonl").open("a") as f:
        f.write(json.dumps(_damaged(conv_line)) + "\n")

    other = models.conv_relu_pool(tmp_path / "other_weights.onnx", weight_seed=2)  # same kernels, another model
    result = tuning.tune(_optimize(other), HOST, logs=tmp_path / "logs", trials=4, trials_per_batch=4, enough_trials=4)
    conv = next(o for o in result.tasks if o.task.workload_hash == conv_line["hash"])
    assert result.already_tuned == (conv.task.name,) and conv.trials_run == 0
    assert result.trials_run == 4 and result.unusable_records >= 1
    store = open_folder(folder)
    new = [t for trials in store.trials.values() for t in trials if t.run and store.model_of(t)[0] == "other_weights.onnx"]
    assert len([t for t in new if t.candidate_hash != DEFAULT]) == 4


def test_a_compatible_targets_records_apply_when_accepted_and_warm_start_its_tuning(teams, tmp_path):
    """Team a's records, measured for this CPU, used for a compatible target: the same CPU
    named with an explicit triple (another key, the same kind, arch and vector level)."""
    from tvm.target import codegen

    root, built = teams
    shutil.copytree(root / "a", tmp_path / "logs")
    # Search records only (no default timings), so that whether 4 trials beat the default on
    # a busy machine does not decide what applies.
    folder = tmp_path / "logs" / HOST.key
    _write(folder, [line for line in _lines(folder) if line["candidate"] != DEFAULT])
    other = TargetSpec("explicit-triple", {**HOST.config, "mtriple": str(codegen.llvm_get_system_triple())})
    assert other.key != HOST.key and other.compatible_with(HOST)
    model, _ = built["a"]
    optimized = pipeline.optimize(frontend.import_model(frontend.load_model(model)), other)

    offered = build.build(optimized, other, output=tmp_path / "offered.so", tuning_logs=tmp_path / "logs")
    assert offered.tuning.tasks_with_records == 0 and offered.tuning.compatible_unused >= 1
    accepted = build.build(optimized, other, output=tmp_path / "accepted.so", tuning_logs=tmp_path / "logs",
                           accept_compatible=True)
    assert accepted.tuning.tasks_with_records >= 1
    assert all(s.model.endswith(f"on compatible target {HOST.key}") for s in accepted.tuning.by_source)
    assert verify(model, accepted.library).passed

    # Tuning for the other target measures team a's best records here before it searches,
    # and its cost model starts from them; the new records go to the other target's folder.
    result = tuning.tune(optimized, other, logs=tmp_path / "logs", trials=4, trials_per_batch=4)
    assert result.compatible == (HOST.key,) and 1 <= result.compatible_seeds <= result.trials_run == 4
    assert result.target_key == other.key and (tmp_path / "logs" / other.key / "records.jsonl").exists()
