"""`dlc board ...`: an RPC tracker, an emulated aarch64 board, what a tracker holds."""

from __future__ import annotations

import click

from dlc.commands import CONTEXT

board_options = [
    click.option("--rpc", metavar="HOST:PORT", help="Run on the board whose RPC server is there."),
    click.option("--rpc-tracker", metavar="HOST:PORT", help="Run on a board from this RPC tracker..."),
    click.option("--rpc-key", metavar="KEY", help="...registered under this key."),
]
cross_option = click.option("--cross-compiler", metavar="CMD",
                            help="Link with this instead of the target's (e.g. zig: PyPI ziglang).")


def flags_board(rpc: str | None, rpc_tracker: str | None, rpc_key: str | None):
    """The boards the --rpc* flags name (None: run here)."""
    from dlc.boards import BoardSpec

    return BoardSpec.from_flags(rpc=rpc, tracker=rpc_tracker, key=rpc_key)


def flags_target(text: str, cross_compiler: str | None):
    """--target, with --cross-compiler (when given) replacing the preset's linker."""
    import dataclasses

    from dlc.target import parse_target

    spec = parse_target(text)
    return dataclasses.replace(spec, cross_compiler=cross_compiler) if cross_compiler else spec


host_option = click.option("--host", default="127.0.0.1", show_default=True,
                           help="Address to listen on (0.0.0.0: reachable from other machines).")


@click.group("board", context_settings=CONTEXT)
def board_group() -> None:
    """Boards reached through TVM's RPC: a tracker, an emulated aarch64 board, a listing."""


@board_group.command("tracker", context_settings=CONTEXT)
@host_option
@click.option("--port", type=click.IntRange(1, 65535), default=9190, show_default=True)
def tracker_command(host, port):
    """Run a TVM RPC tracker until Ctrl-C (boards register with it under a key)."""
    import time

    from tvm.rpc.tracker import PopenTrackerServerState

    from dlc.errors import BoardError

    try:
        state = PopenTrackerServerState(host, port, port + 1, silent=True)
    except (OSError, ValueError) as err:
        raise BoardError(f"cannot listen on {host}:{port}: {err}", hint="pick another --port") from err
    click.echo(f"tracker listening on {host}:{state.port} (Ctrl-C stops it)", err=True)
    while state.thread.is_alive():
        time.sleep(1)


@board_group.command("emulate", context_settings=CONTEXT)
@click.argument("arch", type=click.Choice(["aarch64"]))
@click.option("--tracker", metavar="HOST:PORT", help="Register with this RPC tracker.")
@click.option("--key", default="aarch64", show_default=True, help="Key to register under.")
@host_option
@click.option("--port", type=click.IntRange(1, 65535), default=9090, show_default=True,
              help="First port to try (the next free one is taken).")
def emulate_command(arch, tracker, key, host, port):
    """Run TVM's RPC server for ARCH under qemu user-mode emulation until Ctrl-C.

    The first call builds the board's root into ~/.cache/dlc/boards (Debian's arm64 python
    and the aarch64 apache-tvm wheel; needs qemu-user: ./scripts/bootstrap-boards)."""
    import signal
    import sys

    from dlc import display, emulator

    if tracker:
        from dlc.boards import parse_address

        parse_address(tracker, flag="--tracker")
    console = display.make_console()
    root = emulator.ensure_root(arch, on_step=lambda text: console.print(f"  {text}"))
    if root.seconds:
        console.print(f"board root ready in {root.seconds:.0f} s: {root.path}")
    with display.step(console, f"emulated {arch} board started (import tvm under qemu)"):
        # Without a tracker the key would only make TVM's server refuse `--rpc HOST:PORT`
        # clients (they ask for no key).
        server = emulator.EmulatedServer(root, host=host, port=port, key=key if tracker else "", tracker=tracker)
    where = f", registered with {tracker} as {key!r}" if tracker else f" (use --rpc {host}:{server.port})"
    click.echo(f"emulated {arch} board serving on {host}:{server.port}{where} (Ctrl-C stops it)", err=True)
    # SIGTERM as SystemExit, so the `finally` below stops the server (a handler that waited
    # for it itself would block on the wait the main thread is in).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        server.proc.wait()
    finally:
        server.terminate()


@board_group.command("list", context_settings=CONTEXT)
@click.option("--tracker", metavar="HOST:PORT", default="127.0.0.1:9190", show_default=True)
def list_command(tracker):
    """Show the keys a tracker holds and how many boards are free under each."""
    from dlc.boards import parse_address, tracker_summary

    host, port = parse_address(tracker, flag="--tracker")
    queue = tracker_summary(host, port).get("queue_info", {})
    if not queue:
        click.echo(f"no boards registered at {host}:{port}")
    for key, info in sorted(queue.items()):
        click.echo(f"{key}: {info.get('free', 0)} free, {info.get('pending', 0)} pending")


@board_group.command("setup", context_settings=CONTEXT)
@click.argument("arch", type=click.Choice(["aarch64"]))
def setup_command(arch):
    """Build the emulated ARCH board's root into ~/.cache/dlc/boards (once; later calls
    return at once). Needs qemu-user, apt-get and dpkg; no root."""
    from dlc import display, emulator

    console = display.make_console()
    root = emulator.ensure_root(arch, on_step=lambda text: console.print(f"  {text}"))
    state = f"built in {root.seconds:.1f} s" if root.seconds else "already in the cache"
    click.echo(f"emulated {arch} board root {state}: {root.path}")
