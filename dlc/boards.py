"""Boards reached through TVM's RPC: one server (`--rpc HOST:PORT`) or every server a
tracker holds under a key (`--rpc-tracker HOST:PORT --rpc-key KEY`).

The host builds and links; a board only loads libraries and runs them. Every network step
has a timeout, so a board that is gone, busy or of the wrong architecture is an error (or,
while tuning, a failed trial), never a hang.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from dlc.errors import BoardError, InputError

if TYPE_CHECKING:
    import numpy as np
    from tvm.s_tir import meta_schedule as ms

    from dlc.runtime import Manifest
    from dlc.target import TargetSpec

log = logging.getLogger(__name__)

DEFAULT_TRACKER_PORT = 9190


def parse_address(text: str, *, flag: str, default_port: int | None = None) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep and default_port is not None:
        host, port = text.strip(), str(default_port)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"{flag} {text!r} is not HOST:PORT", hint=f"e.g. {flag} 127.0.0.1:9190")
    return host, int(port)


@dataclass(frozen=True)
class BoardSpec:
    """Where the boards are: one server, or a tracker and a key."""

    host: str
    port: int
    key: str | None = None  # set: (host, port) is a tracker
    # Seconds to get a session (an emulated board on a loaded machine can take a minute to
    # fork its session); a session's own calls get `session_timeout`.
    timeout: float = 180.0
    session_timeout: float = 600.0

    @classmethod
    def from_flags(cls, *, rpc: str | None, tracker: str | None, key: str | None,
                   timeout: float = 180.0) -> BoardSpec | None:
        if rpc and tracker:
            raise InputError("--rpc and --rpc-tracker both given",
                             hint="--rpc HOST:PORT for one server, or --rpc-tracker HOST:PORT --rpc-key KEY")
        if tracker:
            if not key:
                raise InputError("--rpc-tracker needs --rpc-key", hint="the key the boards registered with, "
                                 "e.g. --rpc-key rpi4 (see `dlc board list --tracker HOST:PORT`)")
            return cls(*parse_address(tracker, flag="--rpc-tracker", default_port=DEFAULT_TRACKER_PORT), key,
                       timeout)
        if key:
            raise InputError("--rpc-key needs --rpc-tracker", hint="pass --rpc-tracker HOST:PORT too")
        if rpc:
            return cls(*parse_address(rpc, flag="--rpc"), None, timeout)
        return None

    @property
    def is_tracker(self) -> bool:
        return self.key is not None

    def __str__(self) -> str:
        return f"key {self.key!r} at tracker {self.host}:{self.port}" if self.key else f"server {self.host}:{self.port}"


def _in_time(call, seconds: float, what: str):
    """Run `call` in a helper thread; a silent peer costs `seconds`, not forever."""
    box: dict[str, Any] = {}

    def target():
        try:
            box["value"] = call()
        except BaseException as err:  # handed to the caller's thread
            box["error"] = err

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise TimeoutError(f"{what}: no answer within {seconds:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def tracker_summary(host: str, port: int, *, timeout: float = 10.0) -> dict:
    import socket

    from tvm import rpc

    try:
        # TVM's own connect retries a refused connection for 60 s: probe once first.
        socket.create_connection((host, port), timeout=min(timeout, 10.0)).close()
        return _in_time(lambda: rpc.connect_tracker(host, port).summary(), timeout, "tracker")
    except (OSError, RuntimeError, TimeoutError) as err:
        raise BoardError(f"cannot reach the RPC tracker at {host}:{port}: {err}",
                         hint="start one with `dlc board tracker`, or check the address") from err


def servers_under(spec: BoardSpec) -> int:
    """How many servers a tracker holds under the key (1 for a single server); 0 is an error."""
    if not spec.is_tracker:
        return 1
    summary = tracker_summary(spec.host, spec.port, timeout=spec.timeout)
    queue = summary.get("queue_info", {})
    # Servers stay connected to the tracker while they serve a session (and between a
    # session's end and their next PUT, when the queue shows none free): count connections.
    count = sum(s.get("key") == f"server:{spec.key}" for s in summary.get("server_info", []))
    if count == 0:
        known = ", ".join(f"{k!r} ({v.get('free', 0)} free)" for k, v in queue.items()) or "none"
        raise BoardError(f"no board is registered under key {spec.key!r} at tracker {spec.host}:{spec.port}",
                         hint=f"keys there: {known}; start one with `dlc board emulate aarch64 --tracker "
                         f"{spec.host}:{spec.port} --key {spec.key}` or on the board `python -m "
                         f"tvm.exec.rpc_server --tracker {spec.host}:{spec.port} --key {spec.key}`")
    return count


def connect(spec: BoardSpec):
    """An RPC session on one board (the tracker picks a free one; a key with no boards is
    an error at once rather than a wait)."""
    from tvm import rpc

    servers_under(spec)

    def open_session():
        if spec.is_tracker:
            tracker = rpc.connect_tracker(spec.host, spec.port)
            return tracker.request(spec.key, priority=1, session_timeout=spec.session_timeout, max_retry=1)
        return rpc.connect(spec.host, spec.port, session_timeout=spec.session_timeout)

    try:
        # Two tries in the time given: a session that never answers (qemu-user can deadlock
        # a forked session child, rarely) keeps its board busy, so the tracker hands the
        # second try another board when there is one.
        try:
            return _in_time(open_session, spec.timeout / 2, f"board ({spec})")
        except TimeoutError:
            log.warning("no session on %s within %g s; trying again", spec, spec.timeout / 2)
            return _in_time(open_session, spec.timeout / 2, f"board ({spec})")
    except (OSError, RuntimeError, TimeoutError) as err:
        text = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise BoardError(f"cannot get a session on {spec}: {text}",
                         hint="is the board's RPC server running (and free)? `dlc board list --tracker "
                         "HOST:PORT` shows a tracker's boards") from err


def _remote_error(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def upload(session, library: Path, *, arch: str, spec: BoardSpec):
    """Send a library to the board and load it there; a board of another architecture is named."""
    name = Path(library).name
    try:
        session.upload(str(library), name)
        return session.load_module(name)
    except Exception as err:
        text = _remote_error(err)
        if any(s in text for s in ("ELF", "Exec format", "wrong ELF class", "cannot open shared object")):
            raise BoardError(f"the board ({spec}) cannot load '{name}', built for {arch}: {text}",
                             hint="that board has another architecture; use the key of a board of this "
                             "target's architecture, or build for the board's") from err
        raise BoardError(f"loading '{name}' on the board ({spec}) failed: {text}",
                         hint="rerun with --debug for TVM's error") from err


class RemoteLibrary:
    """A dlc library loaded into a Relax VM on a board: the same `run` contract as LoadedLibrary."""

    def __init__(self, manifest: Manifest, spec: BoardSpec) -> None:
        from tvm import relax

        self.manifest = manifest
        self.spec = spec
        self.session = connect(spec)
        arch = manifest.data["target"].get("arch", "?")
        module = upload(self.session, manifest.library, arch=arch, spec=spec)
        self._device = self.session.cpu()
        try:
            self._vm = relax.VirtualMachine(module, self._device)
        except Exception as err:
            raise BoardError(f"the board cannot start '{manifest.library.name}': {_remote_error(err)}",
                             hint="rebuild the library; its TVM must match the board's") from err

    def check_inputs(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        from dlc.runtime import check_inputs

        return check_inputs(self.manifest, inputs)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tvm

        arrays = [tvm.runtime.tensor(a, self._device) for a in self.check_inputs(inputs)]
        # Outputs one by one: a tuple of tensors does not cross an RPC session.
        try:
            self._vm.set_input("main", *arrays)
            self._vm.invoke_stateful("main")
            values = self._vm.get_outputs("main")
        except Exception as err:
            raise BoardError(f"'{self.manifest.library.name}' failed on the board ({self.spec}): "
                             f"{_remote_error(err)}", hint="rerun with --debug for TVM's error") from err
        from dlc.runtime import output_array

        values = [values] if hasattr(values, "numpy") else list(values)
        return {s.name: output_array(v.numpy(), s.dtype) for s, v in zip(self.manifest.outputs, values)}


def load_remote(library: Path | str, spec: BoardSpec) -> RemoteLibrary:
    from dlc.runtime import read_manifest

    return RemoteLibrary(read_manifest(library), spec)


def preflight(target: TargetSpec, spec: BoardSpec | None = None) -> int:
    """Before long work: link a tiny kernel for the target (the cross linker works) and, with
    boards, run it on one (they answer and have the target's architecture). Returns the
    number of boards measurements can spread over."""
    import tempfile

    import numpy as np
    import tvm
    from tvm import te

    from dlc.build import linker

    n = 64
    a = te.placeholder((n,), name="a")
    b = te.compute((n,), lambda i: a[i] * 2.0 + 1.0, name="b")
    try:
        kernel = tvm.compile(te.create_prim_func([a, b]), target=target.to_tvm())
    except Exception as err:
        raise BoardError(f"TVM cannot compile a tiny kernel for '{target.name}': {_remote_error(err)}",
                         hint="check the target") from err
    with tempfile.TemporaryDirectory(prefix="dlc-preflight-") as tmp:
        path = Path(tmp) / "preflight.so"
        try:
            kernel.export_library(str(path), fcompile=linker(target))
        except BoardError:
            raise
        except Exception as err:
            raise BoardError(f"linking a tiny kernel for '{target.name}' failed: {_remote_error(err)}",
                             hint="check the cross compiler (--cross-compiler)") from err
        if spec is None:
            return 0
        count = servers_under(spec)
        session = connect(spec)
        module = upload(session, path, arch=target.arch, spec=spec)
        device = session.cpu()
        x = tvm.runtime.tensor(np.arange(n, dtype="float32"), device)
        y = tvm.runtime.tensor(np.zeros(n, dtype="float32"), device)
        try:
            module["main"](x, y)
        except Exception as err:
            raise BoardError(f"a tiny kernel failed on the board ({spec}): {_remote_error(err)}",
                             hint="the board may not support the target's instructions (check --target)") from err
        if not np.allclose(y.numpy(), np.arange(n) * 2.0 + 1.0):
            raise BoardError(f"a tiny kernel computed wrong values on the board ({spec})",
                             hint="the board may not match the target")
        return count


# MetaSchedule's measurement on boards --------------------------------------------------


def _create_session(rpc_config, *, timeout: float):
    """RPCRunner's session factory with a deadline: a tracker with no free board under the
    key makes the trial fail after `timeout` instead of waiting forever."""
    return _in_time(rpc_config.connect_server, timeout, "board session")


def _export_linked(mod, *, fcompile) -> str:
    """Link a candidate into a .so on the host (boards have no compiler; MetaSchedule's
    default export writes a .tar that the board would have to link)."""
    import os
    import tempfile

    path = os.path.join(tempfile.mkdtemp(prefix="dlc-cand-"), "candidate.so")
    mod.export_library(path, fcompile=fcompile)
    return path


def board_runner(spec: BoardSpec, *, workers: int, timeout_sec: float = 60.0) -> ms.runner.Runner:
    """Times candidates on the boards: `workers` sessions at once, one per board."""
    import functools

    from tvm.s_tir import meta_schedule as ms

    config = ms.runner.RPCConfig(tracker_host=spec.host, tracker_port=spec.port, tracker_key=spec.key,
                                 session_priority=1, session_timeout_sec=int(timeout_sec))
    evaluator = ms.runner.EvaluatorConfig(number=1, repeat=3, min_repeat_ms=20, enable_cpu_cache_flush=False)
    return ms.runner.RPCRunner(config, evaluator, max_workers=workers,
                               f_create_session=functools.partial(_create_session, timeout=timeout_sec))


def export_function(target: TargetSpec):
    """MetaSchedule's f_export for candidates measured on boards of `target`."""
    import functools

    from dlc.build import linker

    return functools.partial(_export_linked, fcompile=linker(target))


def measuring_on(target: TargetSpec, spec: BoardSpec) -> dict:
    """The builder and runner `dlc.tuning.tune` measures on the boards with, after a
    pre-flight (the linker works, the boards answer and run the target's code)."""
    from dlc.measure import pooled_builder

    if not spec.is_tracker:
        raise InputError("dlc tune measures on boards through a tracker (MetaSchedule's RPCRunner needs one)",
                         hint="start one with `dlc board tracker`, register the board with it, and pass "
                         "--rpc-tracker HOST:PORT --rpc-key KEY")
    count = preflight(target, spec)
    log.info("measuring on %d board(s) under %s", count, spec)
    return {"builder": pooled_builder(f_export=export_function(target)),
            "runner": board_runner(spec, workers=count)}
