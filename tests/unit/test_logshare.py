"""Sharing tuning logs without TVM: provenance, merge, prune, export/import and hostile archives.

Records here are fake ({"fake": n}): nothing in these paths loads a trace (check and replay
are tests/e2e/test_logs.py).
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from dlc.errors import InputError, LogImportError, LogStoreError
from dlc.logarchive import export_store, import_archive
from dlc.logfiles import identity, read_jsonl
from dlc.logshare import find_stores, list_stores, merge, prune, resolve_store, select_records
from dlc.logstore import DEFAULT, Trial, open_folder, open_store
from dlc.provenance import Provenance, tvm_version
from dlc.schedule import RULES_VERSION
from dlc.target import parse_target
from tests.conftest import assert_fails, run_dlc

SKYLAKE = parse_target("skylake")
ZNVER3 = parse_target("znver3")


def _store(root: Path, *, model: str = "a.onnx", target=SKYLAKE, kernels=("w1",), trials=4, fast=1e-5, prefix="c"):
    """A store with `trials` fake candidates per kernel (the i-th takes fast * (i + 1) s) and a
    default timing, written by a 'tuning run' of `model`."""
    store = open_store(root, target)
    store.begin_contribution(Provenance.collect("tune", model_name=model, model_sha256=model * 8))
    for kernel in kernels:
        store.add_workload(kernel, [kernel, "payload"])
        store.add_trial(Trial(kernel, DEFAULT, {"fake": "default"}, (fast * 2.5,), None, RULES_VERSION), task_name="conv")
        for i in range(trials):
            store.add_trial(Trial(kernel, f"{prefix}{i}", {"fake": i}, (fast * (i + 1),), None), task_name="conv")
        store.add_trial(Trial(kernel, f"{prefix}-broken", {"fake": "x"}, None, "build: boom"), task_name="conv")
    return store


def _records(folder: Path) -> set[bytes]:
    return {identity(line) for _, _, line in read_jsonl(folder / "records.jsonl")}


def test_provenance_and_versions_on_every_line(tmp_path):
    _store(tmp_path, model="yolo.onnx")
    folder = tmp_path / SKYLAKE.key
    header = json.loads((folder / "target.json").read_text())
    assert header["dlc"] and header["tvm"] == tvm_version()
    (run,) = [line for _, _, line in read_jsonl(folder / "contributions.jsonl")]
    assert run["kind"] == "tune" and run["model"] == {"name": "yolo.onnx", "sha256": "yolo.onnx" * 8}
    assert run["host"] and run["user"] and run["cpu"]["model"] and run["cpu"]["cores"] >= 1 and run["time"]
    for name in ("workloads.jsonl", "records.jsonl", "contributions.jsonl"):
        assert all(line["dlc"] and line["tvm"] for _, _, line in read_jsonl(folder / name))
    assert all(line["run"] == run["id"] for _, _, line in read_jsonl(folder / "records.jsonl"))
    store = open_folder(folder)
    assert store.model_of(store.searched("w1")[0]) == ("yolo.onnx", "yolo.onnx" * 8)
    assert store.trials_from_other_models("w1", "b" * 64) == 5 and store.trials_from_other_models("w1", "yolo.onnx" * 8) == 0


def test_select_keeps_each_candidate_once_at_its_fastest_and_the_best_n():
    line = lambda cand, secs, **kw: {"hash": "w", "candidate": cand, "run_secs": secs, **kw}  # noqa: E731
    records = [line("a", [3.0]), line("b", None, error="run: x"), line("a", [2.0]), line("b", [5.0]),
               line(DEFAULT, [4.0], rules="5"), line(DEFAULT, [3.5], rules="5"), line("c", [1.0]), line("c", [1.0])]
    assert select_records(records) == [2, 3, 4, 5, 6]  # a at 2 s, b as it ran, c once, both defaults
    assert select_records(records, keep=2) == [2, 5, 6]  # c and a, and the faster default


def test_merge_is_a_deduplicated_union_and_keeps_the_best(tmp_path):
    _store(tmp_path / "a", model="a.onnx", kernels=("w1",))
    _store(tmp_path / "b", model="b.onnx", kernels=("w1", "w2"), prefix="d")
    _store(tmp_path / "c", model="c.onnx", kernels=("w1",))  # the same candidates as a: kept once
    result = merge([tmp_path / "a", tmp_path / "b", tmp_path / "c"], tmp_path / "m")
    store = open_folder(result.folder)
    assert result.folder == tmp_path / "m" / SKYLAKE.key and result.records_before == 0
    assert {t.candidate_hash for t in store.searched("w1")} == {f"{p}{i}" for p in "cd" for i in range(4)} | {"c-broken", "d-broken"}
    assert store.trial_count("w2") == 5 and set(store.workloads) == {"w1", "w2"}
    models = {store.model_of(t)[0] for t in store.searched("w1")}
    assert models == {"a.onnx", "b.onnx"}  # provenance travels with the records
    assert {c["kind"] for c in store.contributions.values()} == {"tune", "merge"}

    again = merge([tmp_path / "a"], tmp_path / "m")  # merging what is there adds nothing
    assert again.records_after == again.records_before
    pruned = merge([tmp_path / "b"], tmp_path / "m", keep=2)
    assert pruned.records_after < pruned.records_before
    store = open_folder(pruned.folder)
    assert sorted(t.run_secs[0] for t in store.searched("w1")) == [1e-5, 1e-5]  # c0 and d0
    assert store.default_seconds("w1") == pytest.approx(2.5e-5)


def test_merge_refuses_to_mix_target_keys_unless_told_which(tmp_path):
    _store(tmp_path / "a", target=SKYLAKE)
    _store(tmp_path / "b", target=ZNVER3)
    with pytest.raises(InputError) as err:
        merge([tmp_path / "a", tmp_path / "b"], tmp_path / "m")
    assert "2 target keys" in err.value.message and "--key" in err.value.hint
    assert not (tmp_path / "m").exists()
    result = merge([tmp_path / "a", tmp_path / "b"], tmp_path / "m", key="znver3")
    assert result.key == ZNVER3.key and result.left_out == (f"{SKYLAKE.key} (1 folder)",)
    assert [p.name for p in find_stores(tmp_path / "m")] == [ZNVER3.key]
    with pytest.raises(LogStoreError) as err:
        merge([tmp_path / "a"], tmp_path / "m" / ZNVER3.key)  # into another target's folder
    assert f"holds logs for target key '{ZNVER3.key}', the sources for {SKYLAKE.key}" in err.value.message


def test_prune_keeps_the_fastest_n_per_kernel(tmp_path):
    _store(tmp_path, kernels=("w1", "w2"), trials=6)
    (tmp_path / SKYLAKE.key / "records.jsonl").open("ab").write(b'{"hash": "w1", "cand')
    result = prune(tmp_path / SKYLAKE.key, keep=3)
    assert (result.records_before, result.records_after, result.unreadable_dropped) == (2 * 8 + 1, 2 * 4, 1)
    store = open_folder(tmp_path / SKYLAKE.key)
    assert [t.candidate_hash for t in store.searched("w1")] == ["c0", "c1", "c2"] and store.skipped_lines == 0
    assert store.default_seconds("w2") is not None


def test_list_and_resolve(tmp_path):
    _store(tmp_path, model="a.onnx")
    _store(tmp_path, model="b.onnx", target=ZNVER3)
    (tmp_path / "notes").mkdir()
    listing = list_stores(tmp_path)
    assert [(s.key, s.target, s.records, s.workloads, s.models) for s in listing.stores] == [
        (SKYLAKE.key, "llvm -mcpu=skylake", 6, 1, 1), (ZNVER3.key, "llvm -mcpu=znver3", 6, 1, 1)]
    assert resolve_store(tmp_path, "skylake") == resolve_store(tmp_path, SKYLAKE.key) == tmp_path / SKYLAKE.key
    with pytest.raises(InputError, match="no tuning logs for 'cortex-a72'"):
        resolve_store(tmp_path, "cortex-a72")


# ---------------------------------------------------------------------- export and import


def test_export_then_import_into_an_empty_store_gives_the_same_records(tmp_path):
    _store(tmp_path / "a", kernels=("w1", "w2"))
    folder = tmp_path / "a" / SKYLAKE.key
    exported = export_store(folder, output=tmp_path / "a.tar.gz")
    assert exported.records == 12 and exported.workloads == 2
    result = import_archive(tmp_path / "a.tar.gz", tmp_path / "b")
    assert (result.records_added, result.records_known, result.workloads_added) == (12, 0, 2)
    assert _records(result.folder) == _records(folder)
    store = open_folder(result.folder)
    assert store.model_of(store.searched("w2")[0])[0] == "a.onnx"
    assert [c["kind"] for c in store.contributions.values()] == ["tune", "import"]
    assert "a.tar.gz (sha256 " in list(store.contributions.values())[1]["source"]
    again = import_archive(tmp_path / "a.tar.gz", tmp_path / "b")
    assert (again.records_added, again.records_known) == (0, 12)

    small = export_store(folder, output=tmp_path / "small.tar.gz", keep=1)
    assert small.records == 2 * 2  # per kernel its fastest candidate and its default


def _archive(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _member(name: str, data: bytes | None = b"", kind=tarfile.REGTYPE, link: str = "") -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info, data


def _good_members(key: str = SKYLAKE.key, header: dict | None = None, records: bytes = b"") -> list:
    header = header or {"format": "dlc-tuning-log", "format_version": 1, "key": key, "target": SKYLAKE.key_config}
    return [_member(f"{key}/target.json", json.dumps(header).encode()),
            _member(f"{key}/workloads.jsonl", b'{"hash": "w1", "workload": ["w1"]}\n'),
            _member(f"{key}/records.jsonl", records or b'{"hash": "w1", "candidate": "c1", "record": null}\n')]


K = SKYLAKE.key
HOSTILE = {
    "path escape": ([*_good_members(), _member("../evil.txt", b"pwned")], "points outside the store"),
    "nested escape": ([*_good_members(), _member(f"{K}/../../evil.txt", b"pwned")], "points outside the store"),
    "absolute path": ([_member("/tmp/evil.txt", b"pwned")], "points outside the store"),
    "symlink": ([*_good_members()[:2], _member(f"{K}/records.jsonl", None, tarfile.SYMTYPE, "/etc/passwd")], "is a link"),
    "hard link": ([*_good_members(), _member(f"{K}/contributions.jsonl", None, tarfile.LNKTYPE, f"{K}/target.json")],
                  "is a link"),
    "device": ([*_good_members()[:2], _member(f"{K}/records.jsonl", None, tarfile.CHRTYPE)], "not a regular file"),
    "fifo": ([*_good_members()[:2], _member(f"{K}/records.jsonl", None, tarfile.FIFOTYPE)], "not a regular file"),
    "unexpected file": ([*_good_members(), _member(f"{K}/run.sh", b"rm -rf /")], "unexpected member"),
    "two stores": ([*_good_members(), _member("llvm-znver3-00000000/records.jsonl", b"")], "unexpected member"),
    "oversize": ([*_good_members(records=b'{"hash": "w1", "candidate": "c", "pad": "' + b"x" * 5000 + b'"}\n')],
                 "over 4,096 bytes"),
    "foreign schema": (_good_members(header={"format": "tophub", "key": K}), "foreign schema"),
    "newer format": (_good_members(header={"format": "dlc-tuning-log", "format_version": 2, "key": K,
                                           "target": SKYLAKE.key_config}), "format version 2"),
    "key not its target": (_good_members(header={"format": "dlc-tuning-log", "format_version": 1, "key": K,
                                                 "target": ZNVER3.key_config}), "does not match its target"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archives_are_refused_and_nothing_is_written(tmp_path, case):
    members, message = HOSTILE[case]
    (tmp_path / "in").mkdir()
    archive = _archive(tmp_path / "in" / "logs.tar.gz", members)
    with pytest.raises(LogImportError) as err:
        import_archive(archive, tmp_path / "logs", max_bytes=4096)
    assert message in err.value.message and err.value.hint and err.value.exit_code == 8
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["in", "logs.tar.gz"]  # nothing written anywhere
    assert not Path("/tmp/evil.txt").exists()


def test_long_lines_and_other_targets_are_refused(tmp_path):
    archive = _archive(tmp_path / "a.tar.gz", _good_members())
    with pytest.raises(LogImportError, match="line 1 of workloads.jsonl is 34 bytes, over the 20-byte cap"):
        import_archive(archive, tmp_path / "logs", max_line_bytes=20)
    with pytest.raises(LogImportError, match=f"holds logs for target key '{K}', not '{ZNVER3.key}'"):
        import_archive(archive, tmp_path / "logs", target_key=ZNVER3.key)
    (tmp_path / "junk.tar.gz").write_bytes(b"not gzip at all")
    with pytest.raises(LogImportError, match="not a readable .tar.gz"):
        import_archive(tmp_path / "junk.tar.gz", tmp_path / "logs")
    assert not (tmp_path / "logs").exists()
    result = import_archive(archive, tmp_path / "logs", target_key=K)  # the same archive, for its own target
    assert result.records_added == 1


# ---------------------------------------------------------------------- the CLI

LOGS_COMMANDS = ["list", "show", "merge", "prune", "export", "import", "check"]


@pytest.mark.parametrize("command", [[], *[[c] for c in LOGS_COMMANDS]])
def test_logs_help(command):
    result = run_dlc("logs", *command, "--help")
    assert result.returncode == 0 and "Usage: dlc logs" in result.stdout, result.stderr


def test_logs_cli_errors(tmp_path):
    _store(tmp_path / "a", target=SKYLAKE)
    _store(tmp_path / "b", target=ZNVER3)
    assert_fails(run_dlc("logs", "merge", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "m")),
                 2, "the sources hold logs for 2 target keys", "--key KEY")
    archive = _archive(tmp_path / "evil.tar.gz", [*_good_members(), _member("../evil.txt", b"pwned")])
    assert_fails(run_dlc("logs", "import", str(archive), "--logs", str(tmp_path / "c")),
                 8, "member '../evil.txt' points outside the store", "only import dlc exports")
    assert_fails(run_dlc("logs", "import", str(archive), "--logs", str(tmp_path / "c"), "--max-size", "lots"),
                 2, "bad size 'lots'", "256M")
    assert_fails(run_dlc("logs", "show", "znver3", "--logs", str(tmp_path / "a")), 2,
                 "no tuning logs for 'znver3'", SKYLAKE.key)
    assert_fails(run_dlc("logs", "list", str(tmp_path / "none")), 2, "tuning-log directory", "dlc tune")
    assert not (tmp_path / "c").exists() and not (tmp_path / "m").exists()

    listed = run_dlc("logs", "list", str(tmp_path / "a"))
    assert listed.returncode == 0 and SKYLAKE.key in listed.stdout and "llvm -mcpu=skylake" in listed.stdout
    shown = run_dlc("logs", "show", "skylake", "--logs", str(tmp_path / "a"))
    assert shown.returncode == 0 and "a.onnx" in shown.stdout and "tune" in shown.stdout, shown.stderr
    pruned = run_dlc("logs", "prune", str(tmp_path / "a"), "--keep", "1")
    assert pruned.returncode == 0 and f"{SKYLAKE.key}: 6 -> 2 record lines" in pruned.stdout


def test_gains_only_keeps_the_kernels_whose_records_beat_their_default():
    from dlc.logshare import gaining_kernels

    def line(h, candidate, secs):
        return {"hash": h, "candidate": candidate, "run_secs": [secs]}

    records = [line("w1", DEFAULT, 10.0), line("w1", "a", 9.0),  # 10% faster: a build applies it
               line("w2", DEFAULT, 10.0), line("w2", "b", 9.9),  # within noise
               line("w3", "c", 1.0)]  # no default timing to compare with
    assert gaining_kernels(records) == {"w1"}


def test_shipped_tuning_logs_replay_with_the_pinned_tvm():
    """tuning_logs/ in the repo (README: pre-tuned logs): every line parses and replays."""
    repo_logs = Path(__file__).resolve().parents[2] / "tuning_logs"
    result = run_dlc("logs", "check", str(repo_logs))
    assert result.returncode == 0, result.stdout + result.stderr
