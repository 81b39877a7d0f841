"""Board flags, cross linkers and the emulated board's cache key: no board, no compiling."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from dlc import emulator
from dlc.boards import BoardSpec
from dlc.build import linker_command
from dlc.errors import BoardError, BuildError, InputError
from dlc.target import parse_target
from tests.conftest import assert_fails, run_dlc


def test_board_flags():
    assert BoardSpec.from_flags(rpc=None, tracker=None, key=None) is None
    spec = BoardSpec.from_flags(rpc=None, tracker="10.0.0.5:9190", key="rpi4")
    assert (spec.host, spec.port, spec.key, spec.is_tracker) == ("10.0.0.5", 9190, "rpi4", True)
    assert BoardSpec.from_flags(rpc=None, tracker="10.0.0.5", key="rpi4").port == 9190
    one = BoardSpec.from_flags(rpc="127.0.0.1:9090", tracker=None, key=None)
    assert (one.port, one.is_tracker) == (9090, False)


@pytest.mark.parametrize("flags, message", [
    ({"rpc": None, "tracker": "h:9190", "key": None}, "--rpc-tracker needs --rpc-key"),
    ({"rpc": None, "tracker": None, "key": "k"}, "--rpc-key needs --rpc-tracker"),
    ({"rpc": "h:1", "tracker": "h:2", "key": "k"}, "--rpc and --rpc-tracker both given"),
    ({"rpc": "h:port", "tracker": None, "key": None}, "--rpc 'h:port' is not HOST:PORT"),
    ({"rpc": "h", "tracker": None, "key": None}, "--rpc 'h' is not HOST:PORT"),
])
def test_bad_board_flags(flags, message):
    with pytest.raises(InputError, match=message):
        BoardSpec.from_flags(**flags)


def test_cli_board_flags_and_an_unreachable_tracker(tmp_path):
    library = tmp_path / "m.so"
    library.write_bytes(b"")
    result = run_dlc("run", str(library), "--rpc-tracker", "127.0.0.1:9190")
    assert_fails(result, 2, "--rpc-tracker needs --rpc-key", "--rpc-key")
    (tmp_path / "m.so.json").write_text('{"inputs": [], "outputs": [], "target": {"name": "x", "config": {}}}')
    result = run_dlc("run", str(library), "--rpc-tracker", "127.0.0.1:1", "--rpc-key", "k")
    assert_fails(result, BoardError.exit_code, "cannot reach the RPC tracker at 127.0.0.1:1", "dlc board tracker")


def test_linker_is_the_presets_or_the_override():
    a72 = parse_target("cortex-a72")
    assert parse_target("host").cross_compiler is None and linker_command(parse_target("host")) is None
    missing = dataclasses.replace(a72, cross_compiler="no-such-aarch64-g++")
    with pytest.raises(BuildError, match="'no-such-aarch64-g\\+\\+' for target 'cortex-a72' is not installed") as err:
        linker_command(missing)
    assert "apt-get install g++-aarch64-linux-gnu" in err.value.hint and "--cross-compiler zig" in err.value.hint
    a7 = dataclasses.replace(parse_target("cortex-a7"), cross_compiler="nope-g++")
    with pytest.raises(BuildError) as err:
        linker_command(a7)
    assert "apt-get install g++-arm-linux-gnueabihf" in err.value.hint


def test_zig_linker_command():
    a72 = dataclasses.replace(parse_target("cortex-a72"), cross_compiler="zig")
    from importlib.util import find_spec

    if find_spec("ziglang") is None:
        with pytest.raises(BuildError, match="needs the ziglang package") as err:
            linker_command(a72)
        assert "pip install ziglang" in err.value.hint
    else:
        assert linker_command(a72)[-4:] == ["ziglang", "c++", "-target", "aarch64-linux-gnu"]


def test_tuning_for_a_board_without_boards_names_the_flags(tmp_path):
    from tests import models

    model = models.matmul_softmax(tmp_path / "m.onnx")
    result = run_dlc("tune", str(model), "--target", "cortex-a72", "--logs", str(tmp_path / "logs"))
    assert_fails(result, 2, "cannot be measured here", "--rpc-tracker HOST:PORT --rpc-key KEY")


def test_board_root_is_keyed_by_its_contents(tmp_path):
    path = emulator.root_path("aarch64", cache=tmp_path)
    assert path.parent == tmp_path and path.name.startswith("aarch64-")
    assert path == emulator.root_path("aarch64", cache=tmp_path)
    assert emulator.cache_dir().parts[-2:] == ("dlc", "boards")


def test_no_emulator_for_armv7():
    with pytest.raises(BoardError, match="no emulated board for 'arm'"):
        emulator.qemu_for("arm")


def test_tuning_on_one_server_without_a_tracker_is_refused(tmp_path):
    from tests import models

    model = models.matmul_softmax(tmp_path / "m.onnx")
    result = run_dlc("tune", str(model), "--target", "cortex-a72", "--rpc", "127.0.0.1:9090",
                     "--logs", str(tmp_path / "logs"))
    assert_fails(result, 2, "measures on boards through a tracker", "dlc board tracker")
