"""ONNX's node test cases through dlc's own pipeline, with ONNX Runtime's result beside each.

    .venv/bin/python bench/conformance.py [--ops LSTM,Cast] [--cases REGEX] [--jobs 1]
                                          [--timeout 120] [--out bench/conformance] [--merge]

The onnx wheel ships no `backend/test/data/node`: the cases are generated in the parent from
`onnx.backend.test.case.node.collect_testcases` and written, one pickle per case, to a
temporary directory. Long-lived worker processes (`--jobs`, one by default) take case names
on stdin and answer one JSON line per engine on a private pipe; a worker that crashes (a
SIGFPE or SIGSEGV inside TVM) or outlives `--timeout` on one case is killed and replaced,
and the case is recorded as `crash` or `timeout`, so nothing stops the run.

Each case: dlc.frontend.load_model (check, fix shapes, fold) -> import_model ->
pipeline.optimize -> build.build (default schedules, `--target`) -> runtime.load_library ->
run, then the outputs are compared with the ones the case ships (dtype, shape, then the
case's rtol/atol, NaN equal to NaN). ONNX Runtime runs the same model (its IR version
lowered to 10, the newest ORT 1.31 loads; a refusal is recorded as such).

Writes `results.csv` (one row per case) and `summary.md` (totals, then one row per op type
with dlc's most common failure) into `--out`. `--merge` keeps the rows of cases not re-run,
so a subset run (`--ops LSTM`) updates the committed files; each row names the dlc commit
that produced it.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import pickle
import re
import select
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "bench" / "conformance"
ORT_MAX_IR_VERSION = 10
STARTUP_ALLOWANCE = 300.0  # seconds a new worker may take to import TVM and ORT, on top of --timeout

# dlc statuses, in pipeline order; `io`: inputs or outputs that are not plain tensors
# (sequences, optionals, strings, float8_e8m0), which a dlc library cannot take.
DLC_STATUSES = ("pass", "wrong", "run", "compile", "import", "io", "crash", "timeout")
ORT_STATUSES = ("pass", "wrong", "error", "refused")


@dataclass(frozen=True)
class CaseResult:
    case: str
    op: str
    expanded: bool
    dlc: str  # one of DLC_STATUSES
    dlc_reason: str
    dlc_const: str  # the same with attribute-like inputs (axes, sizes, ...) bound as constants
    const_reason: str
    bound: str  # the inputs bound for dlc_const, space-separated; "" when nothing was re-run
    ort: str  # one of ORT_STATUSES, or "" when the worker died before ORT answered
    ort_reason: str
    seconds: float
    commit: str


# ---------------------------------------------------------------- the cases


def collect_cases():
    import numpy as np
    from onnx.backend.test.case import node

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # the reference implementations warn (1/0 etc.)
        return node.collect_testcases(None)


def op_types(cases) -> dict[str, str]:
    """case name -> the op type it tests. An expanded case (a function body) counts for the
    op of its unexpanded sibling; any other multi-node case for its first node's op."""
    single = {c.name: c.model.graph.node[0].op_type for c in cases if len(c.model.graph.node) == 1}
    found = {}
    for case in cases:
        if case.name in single:
            found[case.name] = single[case.name]
            continue
        base = case.name.replace("_expanded", "")
        candidates = [base, re.sub(r"_ver\d+$", "", base)]
        op = next((single[n] for n in candidates if n in single), None)
        nodes = case.model.graph.node
        found[case.name] = op or (nodes[0].op_type if nodes else "?")
    return found


def write_cases(cases, directory: Path) -> None:
    """One pickle per case: the model's bytes, inputs and expected outputs, tolerances."""
    ops = op_types(cases)
    for case in cases:
        inputs, outputs = case.data_sets[0]
        payload = {
            "name": case.name,
            "op": ops[case.name],
            "expanded": "_expanded" in case.name,
            "model": case.model.SerializeToString(),
            "inputs": list(inputs),
            "outputs": list(outputs),
            "rtol": case.rtol,
            "atol": case.atol,
        }
        (directory / f"{case.name}.pkl").write_bytes(pickle.dumps(payload))


# ---------------------------------------------------------------- one case, in a worker


class IOKindError(Exception):
    """An input or expected output that is not a plain numpy tensor."""


def _as_array(value, what: str):
    import numpy as np
    from onnx import TensorProto, numpy_helper

    from dlc.dtypes import NARROW_TYPES

    if isinstance(value, TensorProto):
        value = numpy_helper.to_array(value)  # float8/int4/bfloat16 as ml_dtypes
    if isinstance(value, (list, dict)) or value is None:
        raise IOKindError(f"{what} is a {type(value).__name__} (sequence/map/optional), not a tensor")
    value = np.asarray(value)
    if value.dtype.name not in _NUMPY_NATIVE and value.dtype.name not in NARROW_TYPES:
        raise IOKindError(f"{what} has dtype {value.dtype.name}, which dlc's runtime does not take")
    return value


_NUMPY_NATIVE = {
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "complex64", "complex128",
}


def _ort_value(value):
    """A case's value as onnxruntime takes it: sequences stay lists, TensorProtos become arrays."""
    from onnx import TensorProto, numpy_helper

    if isinstance(value, TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, list):
        return [_ort_value(v) for v in value]
    return value


def _feeds(model, values) -> dict:
    initialized = {init.name for init in model.graph.initializer}
    names = [v.name for v in model.graph.input if v.name not in initialized]
    return {name: value for name, value in zip(names, values)}


def compare(got: dict, expected: dict, rtol: float, atol: float) -> str | None:
    """None when every output matches as ONNX's backend runner checks it, else why not."""
    import numpy as np

    for name, want in expected.items():
        if name not in got:
            return f"output '{name}' missing"
        wrong = _compare_one(name, got[name], want, rtol, atol)
        if wrong:
            return wrong
    return None


def _compare_one(name: str, have, want, rtol: float, atol: float) -> str | None:
    import numpy as np

    from dlc.dtypes import NARROW_TYPES

    if isinstance(want, list) or isinstance(have, list):  # a sequence output (ORT only)
        if not (isinstance(want, list) and isinstance(have, list)) or len(want) != len(have):
            return f"output '{name}' is not the expected sequence"
        return next((w for h, e in zip(have, want) if (w := _compare_one(name, h, e, rtol, atol))), None)
    if want is None or have is None:
        return None if want is None and have is None else f"output '{name}' optional mismatch"
    have, want = np.asarray(have), np.asarray(want)
    if have.dtype != want.dtype:
        return f"output '{name}' is {have.dtype}, expected {want.dtype}"
    if have.shape != want.shape:
        return f"output '{name}' has shape {list(have.shape)}, expected {list(want.shape)}"
    if want.dtype.name in NARROW_TYPES:  # ml_dtypes' types: compared as ONNX's runner does
        if want.dtype.name == "bfloat16":
            rtol = max(rtol, 2**-6)  # two bfloat16 ULPs
        have, want = have.astype(np.float32), want.astype(np.float32)
    if want.dtype.kind not in "fc":
        if not np.array_equal(have, want):
            return f"output '{name}' differs"
        return None
    with np.errstate(all="ignore"):
        close = np.isclose(have.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol, equal_nan=True)
    if not close.all():
        error = np.abs(have.astype(np.float64) - want.astype(np.float64))
        return f"output '{name}' differs at {int((~close).sum())} of {close.size} (max abs error {np.nanmax(error):.3g})"
    return None


def _reason(err: BaseException) -> str:
    from dlc.errors import DlcError

    text = err.message if isinstance(err, DlcError) else f"{type(err).__name__}: {err}"
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return (lines[0] if isinstance(err, DlcError) else (lines[-1] if lines else type(err).__name__))[:300]


def run_ort(model_bytes: bytes, inputs: dict, expected: dict, rtol: float, atol: float) -> tuple[str, str]:
    import onnx
    import onnxruntime as ort

    model = onnx.load_from_string(model_bytes)
    model.ir_version = min(model.ir_version, ORT_MAX_IR_VERSION)
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as err:
        return "refused", _reason(err)
    try:
        values = session.run(None, inputs)
    except Exception as err:
        return "error", _reason(err)
    got = {o.name: v for o, v in zip(session.get_outputs(), values)}
    wrong = compare(got, expected, rtol, atol)
    return ("wrong", wrong) if wrong else ("pass", "")


def run_dlc(path: Path, inputs: dict, expected: dict, rtol: float, atol: float, target) -> tuple[str, str]:
    from dlc import build, frontend, pipeline
    from dlc.runtime import load_library

    stage = "import"
    try:
        imported = frontend.import_model(frontend.load_model(path))
        stage = "compile"
        optimized = pipeline.optimize(imported, target)
        built = build.build(optimized, target, output=path.with_suffix(".so"))
        stage = "run"
        got = load_library(built.library).run(inputs)
    except Exception as err:
        return stage, _reason(err)
    wrong = compare(got, expected, rtol, atol)
    return ("wrong", wrong) if wrong else ("pass", "")


# Inputs that say how to compute rather than what to compute on (axes, shapes, sizes, pads,
# k, ...): (op type, input slot). Exporters write these as initializers or Constants; the node
# cases pass them as graph inputs, which a statically shaped compiler cannot take when the
# output shape depends on them.
ATTRIBUTE_LIKE = {
    "Reshape": (1,), "Resize": (1, 2, 3), "Upsample": (1,), "Slice": (1, 2, 3, 4), "Pad": (1, 2, 3),
    "TopK": (1,), "Split": (1,), "Squeeze": (1,), "Unsqueeze": (1,), "Expand": (1,), "Tile": (1,),
    "ConstantOfShape": (0,), "Range": (0, 1, 2), "OneHot": (1,), "CumSum": (1,), "CumProd": (1,),
    "CenterCropPad": (1, 2), "AffineGrid": (1,), "NonMaxSuppression": (2, 3, 4), "Trilu": (1,),
    "DFT": (1, 2), "STFT": (1, 3), "Col2Im": (1, 2, 3), "HannWindow": (0,), "HammingWindow": (0,),
    "BlackmanWindow": (0,), "MelWeightMatrix": (0, 1, 2, 3, 4), "Dropout": (1, 2),
    "ReduceSum": (1,), "ReduceMean": (1,), "ReduceMax": (1,), "ReduceMin": (1,), "ReduceProd": (1,),
    "ReduceL1": (1,), "ReduceL2": (1,), "ReduceLogSum": (1,), "ReduceLogSumExp": (1,),
    "ReduceSumSquare": (1,), "RandomUniformLike": (), "GridSample": (),
}


def attribute_like_inputs(model) -> list[str]:
    """The graph inputs some node takes in an attribute-like slot (ATTRIBUTE_LIKE)."""
    graph_inputs = {v.name for v in model.graph.input}
    found = []
    for node in model.graph.node:
        for slot in ATTRIBUTE_LIKE.get(node.op_type, ()):
            if slot < len(node.input) and node.input[slot] in graph_inputs and node.input[slot] not in found:
                found.append(node.input[slot])
    return found


def bind_inputs(model, values: dict):
    """A copy of `model` with `values` as initializers instead of graph inputs."""
    import onnx
    from onnx import numpy_helper

    bound = onnx.ModelProto()
    bound.CopyFrom(model)
    kept = [v for v in bound.graph.input if v.name not in values]
    del bound.graph.input[:]
    bound.graph.input.extend(kept)
    bound.graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in values.items())
    return bound


def worker(case_dir: Path, target_name: str) -> None:
    """Answer case names from stdin with JSON lines on the protocol fd; TVM's own prints go
    to stderr (fd 1 is pointed there) so they cannot corrupt the protocol."""
    import logging

    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    logging.basicConfig(level=logging.ERROR)
    warnings.simplefilter("ignore")
    from dlc.target import parse_target

    target = parse_target(target_name)
    import onnxruntime  # noqa: F401  the heavy imports before the first case's clock starts
    import tvm  # noqa: F401

    import dlc.build  # noqa: F401

    protocol.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        name = line.strip()
        if not name:
            continue
        started = time.perf_counter()
        payload = pickle.loads((case_dir / f"{name}.pkl").read_bytes())
        import onnx

        model = onnx.load_from_string(payload["model"])
        raw_inputs = _feeds(model, [_ort_value(v) for v in payload["inputs"]])
        raw_expected = {o.name: _ort_value(v) for o, v in zip(model.graph.output, payload["outputs"])}
        ort_status, ort_reason = run_ort(payload["model"], raw_inputs, raw_expected, payload["rtol"], payload["atol"])
        try:
            inputs = _feeds(model, [_as_array(v, "an input") for v in payload["inputs"]])
            expected = {
                o.name: _as_array(v, "an expected output")
                for o, v in zip(model.graph.output, payload["outputs"])
            }
        except IOKindError as err:
            answer = {"ort": ort_status, "ort_reason": ort_reason, "dlc": "io", "dlc_reason": str(err),
                      "dlc_const": "io", "const_reason": str(err), "bound": ""}
            protocol.write(json.dumps({"case": name, **answer, "seconds": 0.0}) + "\n")
            continue
        protocol.write(json.dumps({"case": name, "ort": ort_status, "ort_reason": ort_reason}) + "\n")
        with tempfile.TemporaryDirectory(prefix="dlc-conf-") as tmp:
            path = Path(tmp) / f"{name}.onnx"
            path.write_bytes(payload["model"])
            status, reason = run_dlc(path, inputs, expected, payload["rtol"], payload["atol"], target)
            const_status, const_reason, bound = status, reason, []
            if status != "pass":
                bound = attribute_like_inputs(model)
            if bound:
                const_path = Path(tmp) / f"{name}.const.onnx"
                onnx.save(bind_inputs(model, {k: inputs[k] for k in bound}), str(const_path))
                rest = {k: v for k, v in inputs.items() if k not in bound}
                const_status, const_reason = run_dlc(const_path, rest, expected, payload["rtol"],
                                                     payload["atol"], target)
        seconds = time.perf_counter() - started
        protocol.write(json.dumps({
            "case": name, "dlc": status, "dlc_reason": reason, "seconds": seconds,
            "dlc_const": const_status, "const_reason": const_reason, "bound": " ".join(bound),
        }) + "\n")


# ---------------------------------------------------------------- the pool


class Worker:
    def __init__(self, case_dir: Path, target: str, log_path: Path) -> None:
        self.log = log_path.open("ab")
        env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", str(case_dir), "--target", target],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, env=env, cwd=REPO,
            text=True, bufsize=1,
        )
        self.fd = self.proc.stdout.fileno()  # read raw: a buffered readline would hide a 2nd line from select
        self.buffer = b""
        self.ready = False
        self.case: str | None = None
        self.started = 0.0
        self.answer: dict = {}

    def send(self, name: str) -> None:
        self.case, self.started, self.answer = name, time.perf_counter(), {}
        self.proc.stdin.write(name + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.log.close()


def _died(proc: subprocess.Popen) -> str:
    code = proc.wait()
    if code < 0:
        import signal

        return f"worker killed by {signal.Signals(-code).name}"
    return f"worker exited with code {code}"


def run_cases(
    case_dir: Path, names: list[str], ops: dict[str, tuple[str, bool]], *, jobs: int = 1,
    timeout: float = 120.0, target: str = "host", commit: str = "", log_path: Path,
    progress=None,
):
    """Yield one CaseResult per name, in completion order."""
    pending = collections.deque(names)
    workers: list[Worker] = []

    def result(w: Worker, dlc: str, reason: str) -> CaseResult:
        op, expanded = ops[w.case]
        return CaseResult(
            case=w.case, op=op, expanded=expanded, dlc=dlc, dlc_reason=reason,
            dlc_const=w.answer.get("dlc_const", dlc), const_reason=w.answer.get("const_reason", reason),
            bound=w.answer.get("bound", ""),
            ort=w.answer.get("ort", ""), ort_reason=w.answer.get("ort_reason", ""),
            seconds=round(w.answer.get("seconds", time.perf_counter() - w.started), 2), commit=commit,
        )

    try:
        while pending or any(w.case for w in workers):
            while len(workers) < jobs and pending:
                workers.append(Worker(case_dir, target, log_path))
            for w in workers:
                if w.case is None and pending:
                    w.send(pending.popleft())
            busy = [w for w in workers if w.case]
            ready, _, _ = select.select([w.fd for w in busy], [], [], 1.0)
            for w in busy:
                if w.fd in ready:
                    chunk = os.read(w.fd, 1 << 16)
                    if not chunk:  # the worker died mid-case
                        done = result(w, "crash", _died(w.proc))
                        w.stop()
                        workers.remove(w)
                        yield done
                        continue
                    w.buffer += chunk
                    while b"\n" in w.buffer:
                        line, w.buffer = w.buffer.split(b"\n", 1)
                        message = json.loads(line)
                        if message.pop("ready", False):  # a new worker's imports are not the case's time
                            w.started, w.ready = time.perf_counter(), True
                        w.answer.update(message)
                    if "dlc" in w.answer:
                        done = result(w, w.answer["dlc"], w.answer["dlc_reason"])
                        w.case = None
                        yield done
                elif time.perf_counter() - w.started > timeout + (0 if w.ready else STARTUP_ALLOWANCE):
                    done = result(w, "timeout", f"no answer in {timeout:.0f} s")
                    w.stop()
                    workers.remove(w)
                    yield done
    finally:
        for w in workers:
            w.stop()


# ---------------------------------------------------------------- results and summary


def read_results(path: Path) -> dict[str, CaseResult]:
    if not path.exists():
        return {}
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return {
        row["case"]: CaseResult(**{
            **row, "expanded": row["expanded"] == "True", "seconds": float(row["seconds"]),
        })
        for row in rows
    }


def write_results(path: Path, results: dict[str, CaseResult]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[fl.name for fl in fields(CaseResult)])
        writer.writeheader()
        for name in sorted(results):
            writer.writerow(asdict(results[name]))


def _short(reason: str) -> str:
    """A failure reason with the case-specific parts (numbers, quoted names) blurred, so the
    same defect counts once per op type."""
    text = re.sub(r"'[^']*'", "'…'", reason)
    text = re.sub(r"\b\d+(\.\d+)?(e-?\d+)?\b", "N", text)
    return text[:140].replace("|", "\\|")


def summarize(results: dict[str, CaseResult], *, header: str) -> str:
    rows = list(results.values())
    total = len(rows)
    dlc = collections.Counter(r.dlc for r in rows)
    const = collections.Counter(r.dlc_const for r in rows)
    ort = collections.Counter(r.ort or "not run" for r in rows)
    lines = [
        "# ONNX node cases through dlc",
        "",
        header,
        "",
        f"**dlc passes {dlc['pass']} of {total} as the cases are written, {const['pass']} with "
        f"attribute-like inputs as constants; ONNX Runtime passes {ort['pass']}.**",
        "",
        "The second count binds the graph inputs a node takes where exporters write constants",
        "(axes, shapes, sizes, scales, pads, k: `ATTRIBUTE_LIKE` in the script) to the case's values",
        f"and compiles again; {sum(bool(r.bound) for r in rows)} failing cases had such inputs. It",
        "separates \"dlc cannot take a run-time shape\" from \"dlc cannot convert the op\".",
        "",
        "| engine | " + " | ".join(DLC_STATUSES) + " |",
        "|---|" + "---|" * len(DLC_STATUSES),
        "| dlc | " + " | ".join(str(dlc[s]) for s in DLC_STATUSES) + " |",
        "| dlc, constants bound | " + " | ".join(str(const[s]) for s in DLC_STATUSES) + " |",
        "",
        "| engine | " + " | ".join(ORT_STATUSES) + " | not run |",
        "|---|" + "---|" * (len(ORT_STATUSES) + 1),
        "| ONNX Runtime | " + " | ".join(str(ort[s]) for s in ORT_STATUSES) + f" | {ort['not run']} |",
        "",
        f"Both pass: {sum(r.dlc == 'pass' and r.ort == 'pass' for r in rows)}; "
        f"only dlc: {sum(r.dlc == 'pass' and r.ort != 'pass' for r in rows)}; "
        f"only ONNX Runtime: {sum(r.dlc != 'pass' and r.ort == 'pass' for r in rows)}.",
        "",
        "Status: `wrong` ran but disagrees with the expected outputs; `run`, `compile`, `import`:",
        "the stage that raised; `io`: a sequence/optional/exotic-dtype input or output;",
        "`crash`/`timeout`: the worker died or hung. By op type, most dlc failures first:",
        "",
        "| op | cases | dlc pass | dlc pass, constants | ORT pass | dlc's top failure with constants (cases) |",
        "|---|---|---|---|---|---|",
    ]
    by_op: dict[str, list[CaseResult]] = collections.defaultdict(list)
    for r in rows:
        by_op[r.op].append(r)

    def failing(op):
        return sum(r.dlc != "pass" for r in by_op[op])

    for op in sorted(by_op, key=lambda o: (-failing(o), o)):
        group = by_op[op]
        reasons = collections.Counter(
            f"{r.dlc_const}: {_short(r.const_reason)}" for r in group if r.dlc_const != "pass"
        ) or collections.Counter(  # every failure goes away with constants: say what they were
            f"as written only, {r.dlc}: {_short(r.dlc_reason)}" for r in group if r.dlc != "pass"
        )
        top = reasons.most_common(1)
        top_text = f"{top[0][0]} ({top[0][1]})" if top else ""
        lines.append(
            f"| {op} | {len(group)} | {sum(r.dlc == 'pass' for r in group)} | "
            f"{sum(r.dlc_const == 'pass' for r in group)} | {sum(r.ort == 'pass' for r in group)} | {top_text} |"
        )
    return "\n".join(lines) + "\n"


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "dlc"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
        return out + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _versions() -> str:
    from importlib.metadata import version

    return ", ".join(f"{p} {version(p)}" for p in ("apache-tvm", "onnx", "onnxruntime"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", help="comma-separated op types to run (default: all)")
    parser.add_argument("--cases", help="regular expression on case names (re.search)")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per case")
    parser.add_argument("--target", default="host")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--merge", action="store_true", help="keep the rows of cases not re-run")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.target)
        return 0

    cases = collect_cases()
    ops = op_types(cases)
    wanted = {o.strip() for o in args.ops.split(",")} if args.ops else None
    selected = [
        c for c in cases
        if (wanted is None or ops[c.name] in wanted) and (not args.cases or re.search(args.cases, c.name))
    ]
    if not selected:
        print("no case matches --ops/--cases", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    csv_path = args.out / "results.csv"
    results = read_results(csv_path) if args.merge else {}
    commit = _commit()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dlc-conformance-") as tmp:
        case_dir = Path(tmp)
        write_cases(selected, case_dir)
        meta = {c.name: (ops[c.name], "_expanded" in c.name) for c in selected}
        for i, r in enumerate(run_cases(case_dir, [c.name for c in selected], meta, jobs=args.jobs,
                                        timeout=args.timeout, target=args.target, commit=commit,
                                        log_path=args.out / "worker.log"), 1):
            results[r.case] = r
            print(f"[{i}/{len(selected)}] {r.case}: dlc {r.dlc}, ort {r.ort or '-'} ({r.seconds:.1f} s)"
                  + (f"  {r.dlc_reason[:100]}" if r.dlc != "pass" else ""), flush=True)
            if i % 25 == 0:  # a long run leaves usable results if stopped
                write_results(csv_path, results)
    wall = time.perf_counter() - started
    write_results(csv_path, results)
    commits = sorted({r.commit for r in results.values()})
    header = (
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, target `{args.target}`, {_versions()}; "
        f"this run: {len(selected)} cases in {wall / 60:.1f} min with --jobs {args.jobs}; "
        f"rows from dlc commit(s) {', '.join(commits)}. Per-case rows: `results.csv`."
    )
    (args.out / "summary.md").write_text(summarize(results, header=header))
    print(f"dlc {sum(r.dlc == 'pass' for r in results.values())}/{len(results)} pass, "
          f"ort {sum(r.ort == 'pass' for r in results.values())}; wrote {args.out}/summary.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
