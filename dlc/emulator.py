"""An emulated aarch64 board: TVM's RPC server under qemu-aarch64 user-mode emulation.

The board's root is Debian's arm64 python3.11 unpacked with `dpkg -x` (nothing installed
into the system) plus aarch64 wheels of the same apache-tvm and apache-tvm-ffi the host
runs, installed with `pip install --target`. It is built once into the user's cache
(~/.cache/dlc/boards/aarch64-<stamp>) by a private apt (its own lists and archive dir, so
no `dpkg --add-architecture` and no root) and pip.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

from dlc.errors import BoardError

log = logging.getLogger(__name__)

QEMU = {"aarch64": "qemu-aarch64"}
QEMU_INSTALL = "apt-get install qemu-user"
# The closure of python3.11-minimal's shared libraries plus the stdlib's optional modules
# (ssl, ffi, sqlite, curses) that `import tvm` or its dependencies touch.
DEBIAN_PACKAGES = (
    "libc6", "libgcc-s1", "libstdc++6", "python3.11-minimal", "libpython3.11-minimal",
    "libpython3.11-stdlib", "libffi8", "zlib1g", "libexpat1", "libssl3", "libbz2-1.0",
    "liblzma5", "libuuid1", "libcrypt1", "libncursesw6", "libtinfo6", "libsqlite3-0",
)
# Distributions the RPC server imports, at the versions this host runs (the two ends of an
# RPC session must agree on TVM's protocol and object layout).
WHEELS = ("apache-tvm", "apache-tvm-ffi", "numpy", "ml_dtypes", "typing_extensions", "psutil")
ROOT_FORMAT = 1

# Runs on the board. The stock `python -m tvm.exec.rpc_server` re-executes the interpreter
# in a worker process, which needs binfmt_misc; so the server runs here, and its listening
# loop runs on the main thread rather than in TVM's helper thread: each session is a fork,
# and a fork of a multi-threaded guest can deadlock inside qemu-user (seen once: a session
# child that never answered and ignored SIGTERM).
_SERVER = """
import errno, socket, sys
from tvm.rpc import server
host, port, key, tracker = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
addr = None
if tracker:
    th, tp = tracker.rsplit(":", 1)
    addr = (th, int(tp))
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
for bound in range(port, port + 100):
    try:
        sock.bind((host, bound))
        break
    except OSError as err:
        if err.errno != errno.EADDRINUSE:
            raise
else:
    sys.exit(f"no free port in [{port}, {port + 100})")
sock.listen(1)
print(f"dlc-board-ready {bound}", flush=True)
server._listen_loop(sock, bound, key, addr, None, None)
"""


@dataclass(frozen=True)
class BoardRoot:
    """A ready emulated-board root: where its files are and how long set-up took."""

    arch: str
    path: Path
    seconds: float  # 0 when it was already in the cache

    @property
    def python(self) -> Path:
        return self.path / "usr" / "bin" / "python3.11"

    @property
    def site(self) -> Path:
        return self.path / "site-packages"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dlc" / "boards"


def _pins() -> list[str]:
    return [f"{name}=={metadata.version(name)}" for name in WHEELS]


def root_path(arch: str = "aarch64", *, cache: Path | None = None) -> Path:
    """The cache folder of a board root, keyed by its contents (packages and wheel pins)."""
    blob = "\n".join([str(ROOT_FORMAT), arch, *DEBIAN_PACKAGES, *_pins()])
    return (cache or cache_dir()) / f"{arch}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def qemu_for(arch: str) -> str:
    if arch not in QEMU:
        raise BoardError(f"no emulated board for {arch!r}",
                         hint="dlc emulates aarch64 (ARMv7 has no apache-tvm wheel; see the README)")
    found = shutil.which(QEMU[arch])
    if found is None:
        raise BoardError(f"{QEMU[arch]} is not installed (it runs the emulated board)",
                         hint=f"on Debian: {QEMU_INSTALL} (or ./scripts/bootstrap-boards)")
    return found


def _run(command: list[str], *, what: str, cwd: Path | None = None) -> None:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise BoardError(f"{what} failed (exit {done.returncode}): {tail}",
                         hint="command: " + " ".join(command))


def _apt_options(state: Path) -> list[str]:
    # A private apt: own lists, status and archive dir, arm64 as the only architecture.
    return ["-q", "-o", f"Dir::State={state}", "-o", f"Dir::State::status={state / 'status'}",
            "-o", f"Dir::Cache={state / 'cache'}", "-o", "APT::Architecture=arm64",
            "-o", "APT::Architectures::=arm64", "-o", "Debug::NoLocking=1"]


def ensure_root(arch: str = "aarch64", *, cache: Path | None = None,
                on_step: Callable[[str], None] | None = None) -> BoardRoot:
    """Build the emulated board's root into the cache unless it is there (idempotent)."""
    qemu_for(arch)
    path = root_path(arch, cache=cache)
    if (path / ".complete").exists():
        return BoardRoot(arch, path, 0.0)
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise BoardError("the emulated board's root is built with apt-get and dpkg, which are missing",
                         hint="set it up on Debian or Ubuntu")
    say = on_step or (lambda text: log.info("%s", text))
    started = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        state, root = work / "apt", work / "root"
        (state / "lists" / "partial").mkdir(parents=True)
        (state / "cache" / "archives" / "partial").mkdir(parents=True)
        (state / "status").touch()
        debs = work / "debs"
        debs.mkdir()
        say("fetching Debian's arm64 package lists")
        _run(["apt-get", *_apt_options(state), "update"], what="apt-get update (arm64 lists)")
        say(f"downloading {len(DEBIAN_PACKAGES)} arm64 packages")
        _run(["apt-get", *_apt_options(state), "download", *DEBIAN_PACKAGES], what="apt-get download", cwd=debs)
        for deb in sorted(debs.glob("*.deb")):
            _run(["dpkg", "-x", str(deb), str(root)], what=f"dpkg -x {deb.name}")
        say("installing aarch64 wheels: " + " ".join(_pins()))
        _run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
              "--target", str(root / "site-packages"), "--platform", "manylinux_2_28_aarch64",
              "--python-version", "3.11", "--implementation", "cp", "--only-binary=:all:", *_pins()],
             what="pip install (aarch64 wheels)")
        if not (root / "usr" / "bin" / "python3.11").exists():
            raise BoardError("the arm64 python3.11 package did not unpack a python3.11",
                             hint=f"look into {work}")
        (root / ".complete").write_text(" ".join(_pins()) + "\n")
        shutil.rmtree(path, ignore_errors=True)
        os.replace(root, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return BoardRoot(arch, path, time.perf_counter() - started)


def server_command(board: BoardRoot, *, host: str, port: int, key: str, tracker: str | None) -> list[str]:
    return [qemu_for(board.arch), "-L", str(board.path), str(board.python), "-c", _SERVER,
            host, str(port), key, tracker or ""]


def server_env(board: BoardRoot) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(board.site)
    env["PYTHONNOUSERSITE"] = "1"
    # One thread per session: the host's cores are the emulated board's cores, shared.
    env.setdefault("TVM_NUM_THREADS", os.environ.get("TVM_NUM_THREADS", "1"))
    return env


class EmulatedServer:
    """An RPC server under qemu, started in the background (tests, `dlc board emulate`)."""

    def __init__(self, board: BoardRoot, *, host: str = "127.0.0.1", port: int = 9090, key: str = "",
                 tracker: str | None = None, ready_timeout: float = 180.0, log_file: Path | None = None) -> None:
        """`log_file`: where the server's log goes (one "connected from" line per session);
        None: this process's stderr."""
        self.board = board
        self.log_file = log_file
        stderr = open(log_file, "a") if log_file else None
        try:
            self.proc = subprocess.Popen(server_command(board, host=host, port=port, key=key, tracker=tracker),
                                         env=server_env(board), stdout=subprocess.PIPE, stderr=stderr,
                                         text=True, start_new_session=True)
        finally:
            if stderr:
                stderr.close()
        self.host = host
        self.port = self._wait_ready(ready_timeout)
        if tracker:
            self._wait_registered(tracker, key, ready_timeout)

    def _wait_registered(self, tracker: str, key: str, timeout: float) -> None:
        """The server says it is ready before its thread registers with the tracker."""
        from dlc.boards import parse_address, tracker_summary

        host, port = parse_address(tracker, flag="--tracker")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            summary = tracker_summary(host, port)
            ours = any(list(s.get("addr", []))[1:] == [self.port] for s in summary.get("server_info", []))
            queue = summary.get("queue_info", {}).get(key, {})
            if ours and queue.get("free", 0) + queue.get("pending", 0) > 0:
                return
            time.sleep(0.2)
        self.terminate()
        raise BoardError(f"the emulated board did not register with the tracker {tracker} as {key!r}",
                         hint="check the tracker's address (`dlc board list --tracker HOST:PORT`)")

    def _wait_ready(self, timeout: float) -> int:
        import selectors

        selector = selectors.DefaultSelector()
        selector.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            line = self.proc.stdout.readline()
            if line.startswith("dlc-board-ready "):
                return int(line.split()[1])
            if not line and self.proc.poll() is not None:
                where = f" (its log: {self.log_file})" if self.log_file else ""
                raise BoardError(f"the emulated board exited (code {self.proc.returncode}) before serving{where}",
                                 hint="run `dlc board emulate aarch64` in a shell to see its output")
        self.terminate()
        raise BoardError(f"the emulated board did not start serving within {timeout:g} s",
                         hint="the machine may be busy; `import tvm` alone takes ~15 s under qemu")

    def sessions(self) -> int:
        """Sessions served so far (counted in `log_file`)."""
        return self.log_file.read_text().count("connected from") if self.log_file else 0

    def terminate(self) -> None:
        import signal

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        # Session children share the server's process group; a stuck one ignores SIGTERM.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def __enter__(self) -> EmulatedServer:
        return self

    def __exit__(self, *exc) -> None:
        self.terminate()
