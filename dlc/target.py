"""Parse target strings, JSON and dlc/targets/*.toml presets into a validated TargetSpec.

TVM 0.27 only accepts the dict form of a target ({"kind": "llvm", "mcpu": "skylake"});
the classic "llvm -mcpu=skylake" strings users know are translated here. Parsing is pure
Python so that `import dlc.target` and the CLI's --help never import tvm.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import shlex
import tomllib
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlc import hostcpu, usable_cpus
from dlc.errors import TargetError

if TYPE_CHECKING:
    import tvm.target

# Package data, so a regular (non-editable) install carries the presets.
DEFAULT_PRESETS_DIR: Traversable = resources.files("dlc") / "targets"

# The options TVM 0.27 registers for the two CPU kinds (TargetKind.options_from_name),
# minus its internal ones (kind, tag, host, from_device, target_device_type). The order
# is the order str(spec) prints them in. A unit test checks this table against TVM, so
# parsing stays exact without paying for `import tvm`.
_COMMON: dict[str, type] = {"device": str, "model": str, "keys": list, "libs": list}
_OPTIONS: dict[str, dict[str, type]] = {
    "llvm": {
        "mtriple": str, "mcpu": str, "mattr": list, "mfloat-abi": str, "mabi": str,
        **_COMMON,
        "num-cores": int, "opt-level": int, "vector-width": int, "cl-opt": list, "jit": str,
        "fast-math": bool, "fast-math-nnan": bool, "fast-math-ninf": bool,
        "fast-math-nsz": bool, "fast-math-arcp": bool, "fast-math-contract": bool,
        "fast-math-reassoc": bool,
    },
    "c": {
        "mcpu": str, "march": str, **_COMMON,
        "workspace-byte-alignment": int, "constants-byte-alignment": int,
    },
}
# Every other kind TVM 0.27 knows, so "cuda" is told dlc builds for CPUs, not "unknown".
_OTHER_KINDS = frozenset({
    "composite", "cuda", "cuda_host", "ext_dev", "hexagon", "metal", "nvptx", "opencl",
    "rocm", "test", "trn", "vulkan", "webgpu",
})
_TYPE_WORDS = {str: "a string", int: "an integer", bool: "true or false", list: "a comma list"}
_BOOLS = {"true": True, "1": True, "false": False, "0": False}
_EXAMPLES = 'a TVM string like "llvm -mcpu=skylake", or JSON'
_JSON_HINT = 'write a TVM config object, e.g. {"kind": "llvm", "mcpu": "skylake"}'
_KIND_HINT = 'use kind "llvm" (or "c" for C source), e.g. "llvm -mcpu=skylake"'
_PRESET_KEYS = ("description", "target", "cross_compiler", "notes")
# Where the code runs, not what it is: left out of the tuning-log key, so records measured
# with 2 cores and with 8 share one folder.
_PLACEMENT_OPTIONS = ("num-cores",)


@dataclass(frozen=True)
class TargetSpec:
    """A validated CPU target: TVM's dict form plus how to link for it."""

    name: str
    config: dict
    description: str = ""
    cross_compiler: str | None = None
    notes: str = ""

    def __post_init__(self) -> None:
        # Canonical (validated, typed, fixed key order) so equality, key and str agree.
        object.__setattr__(self, "config", _canonical(self.config, str(self.config)))

    def __hash__(self) -> int:
        return hash((self.name, self.key, self.description, self.cross_compiler, self.notes))

    def __str__(self) -> str:
        parts = [self.config["kind"]]
        for name, value in self.config.items():
            if name == "kind":
                continue
            if value is True:
                parts.append(f"-{name}")
                continue
            text = ",".join(value) if isinstance(value, list) else str(value)
            parts.append(shlex.quote(f"-{name}={'false' if value is False else text}"))
        return " ".join(parts)

    @property
    def kind(self) -> str:
        return self.config["kind"]

    @property
    def arch(self) -> str:
        triple = self.config.get("mtriple")
        return hostcpu.normalize_arch(triple.split("-")[0]) if triple else hostcpu.host_arch()

    @property
    def key_config(self) -> dict:
        """The options that decide the generated code: the config less its core count."""
        return {k: v for k, v in self.config.items() if k not in _PLACEMENT_OPTIONS}

    @property
    def key(self) -> str:
        blob = json.dumps(self.key_config, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(blob.encode()).hexdigest()[:8]
        triple = self.config.get("mtriple")
        label = self.config.get("mcpu") or (triple.split("-")[0] if triple else "generic")
        label = re.sub(r"[^a-z0-9.]+", "-", label.lower()).strip("-.") or "generic"
        return f"{self.kind}-{label}-{digest}"

    def to_tvm(self) -> tvm.target.Target:
        from tvm.target import Target, codegen

        cpu = self.config.get("mcpu")
        if self.kind == "llvm" and cpu:
            # TVM takes any mcpu, logs an error and builds for "generic"; refuse instead.
            triple = self.config.get("mtriple") or str(codegen.llvm_get_system_triple())
            if not codegen.llvm_is_valid_cpu(cpu, triple):
                archs = codegen.llvm_get_cpu_archlist(Target({"kind": "llvm", "mtriple": triple}))
                raise TargetError(
                    f"LLVM does not know CPU {cpu!r} for {triple!r}"
                    f"{_did_you_mean(cpu, [str(a) for a in archs])}",
                    hint=f"list the valid ones with `llc -mtriple={triple} -mcpu=help`")
        try:
            return Target(dict(self.config))
        except Exception as err:  # TVM raises ValueError or TVMError; keep its text
            raise TargetError(f"TVM rejects target {str(self)!r}: {err}",
                              hint="fix the option TVM names above") from err

    def with_cores(self, cores: int) -> TargetSpec:
        """This target with `-num-cores` set, unless it names its own (MetaSchedule needs it)."""
        if "num-cores" in self.config:
            return self
        config = {**self.config, "num-cores": cores}
        return TargetSpec(self.name, config, self.description, self.cross_compiler, self.notes)

    def isa_features(self) -> list[str]:
        """The instruction-set features (LLVM names) that code built for this target may use."""
        if self.kind != "llvm":
            return []
        from tvm.target import codegen

        return hostcpu.isa_features(self.arch, codegen.llvm_get_cpu_features(self.to_tvm()))

    def isa_class(self) -> tuple[str, str, str]:
        """(kind, arch, vector level): targets of one class share tuned schedules."""
        if self.kind != "llvm":
            return (self.kind, self.arch, "")
        from tvm.target import codegen

        return (self.kind, self.arch, hostcpu.vector_level(self.arch, codegen.llvm_get_cpu_features(self.to_tvm())))

    def compatible_with(self, other: TargetSpec) -> bool:
        """Another CPU model (or core count) of the same kind, arch and vector level: its
        tuning records are a good start here, though measured on another machine."""
        return self.key != other.key and self.isa_class() == other.isa_class()

    def unrunnable_reason(self) -> str | None:
        """Why code built for this target cannot execute on this machine (None: it can)."""
        if self.kind != "llvm":
            if self.arch != hostcpu.host_arch() or self.cross_compiler is not None:
                return "it is built for another machine"
            return None
        return hostcpu.unrunnable_reason(self.arch, self.isa_features())

    def runs_on_host(self) -> bool:
        return self.unrunnable_reason() is None


def parse_target(text: str, *, presets_dir: Path | Traversable | None = None) -> TargetSpec:
    """Turn a preset name, classic TVM string, inline JSON or .json/.toml path into a spec."""
    presets_dir = _presets(presets_dir)
    stripped = text.strip()
    if not stripped:
        raise TargetError("empty target", hint=_valid_hint(presets_dir))
    if stripped.startswith(("{", "[")):
        return TargetSpec("custom", _load_json(stripped, text))
    if stripped.endswith((".json", ".toml")):
        path = Path(stripped).expanduser()
        if not path.is_file():
            raise TargetError(f"target file {text!r} not found",
                              hint="check the path, or " + _valid_hint(presets_dir))
        if path.suffix == ".toml":
            return _load_preset(path)
        try:
            source = path.read_text()
        except OSError as err:
            raise TargetError(f"cannot read target file {text!r}: {err}", hint=_JSON_HINT) from err
        return TargetSpec("custom", _load_json(source, text))
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", stripped):
        preset = presets_dir / f"{stripped}.toml"
        if preset.is_file():
            return _load_preset(preset)
        if stripped == "host":
            return host_target()
    first = stripped.split()[0]
    if first != stripped or first in _OPTIONS or first in _OTHER_KINDS:
        return TargetSpec("custom", _parse_classic(stripped))
    names = _preset_names(presets_dir)
    raise TargetError(f"unknown target {text!r}{_did_you_mean(stripped, names)}",
                      hint=_valid_hint(presets_dir))


def list_presets(presets_dir: Path | Traversable | None = None) -> list[TargetSpec]:
    """Every dlc/targets/*.toml preset, loaded and validated, sorted by name."""
    presets_dir = _presets(presets_dir)
    return [_load_preset(presets_dir / f"{name}.toml") for name in _preset_names(presets_dir)]


def host_target() -> TargetSpec:
    """This machine: LLVM's CPU name less the features the CPU does not report
    (dlc.hostcpu), with every core it lets this process use."""
    return TargetSpec("host", hostcpu.host_config(usable_cpus()), description="this machine (detected)")


def _parse_classic(text: str) -> dict:
    try:
        tokens = shlex.split(text)
    except ValueError as err:
        raise TargetError(f"cannot parse target {text!r}: {err}",
                          hint="balance the quotes; options look like -name=value") from err
    kind, rest = tokens[0], tokens[1:]
    options = _check_kind(kind, text)
    config: dict[str, Any] = {"kind": kind}
    i = 0
    while i < len(rest):
        token = rest[i]
        i += 1
        name, has_value, value = token.lstrip("-").partition("=")
        if not token.startswith("-") or not name:
            raise TargetError(f"unexpected {token!r} in target {text!r}",
                              hint='options look like -name=value, e.g. "llvm -mcpu=skylake"')
        if name not in options:
            raise _unknown_option(name, kind, text)
        if not has_value:
            if options[name] is bool:
                value = "true"
            elif i < len(rest) and not rest[i].startswith("-"):
                value, i = rest[i], i + 1
            else:
                raise TargetError(f"option '-{name}' in target {text!r} has no value",
                                  hint=f"write -{name}=VALUE")
        if name in config:
            raise TargetError(f"option '-{name}' is given twice in target {text!r}",
                              hint="keep one of them")
        config[name] = value
    return _canonical(config, text)


def _canonical(config: Any, text: str) -> dict:
    if not isinstance(config, dict):
        raise TargetError(f"target {text!r} must be a JSON object, not {type(config).__name__}",
                          hint=_JSON_HINT)
    if "kind" not in config:
        raise TargetError(f"target {text!r} has no 'kind'", hint=_KIND_HINT)
    kind = config["kind"]
    options = _check_kind(kind, text)
    for name in config:
        if name != "kind" and name not in options:
            raise _unknown_option(str(name), kind, text)
    out: dict[str, Any] = {"kind": kind}
    for name, typ in options.items():
        if name in config:
            out[name] = _coerce(name, typ, config[name], text)
    return out


def _coerce(name: str, typ: type, value: Any, text: str) -> Any:
    if isinstance(value, str):
        value = value.strip()
        if not value:
            raise TargetError(f"option '-{name}' in target {text!r} has no value",
                              hint=f"write -{name}=VALUE")
        if typ is bool and value.lower() in _BOOLS:
            return _BOOLS[value.lower()]
        if typ is int and re.fullmatch(r"-?\d+", value):
            return int(value)
        if typ is list:
            value = [item.strip() for item in value.split(",")]
    if typ is list and isinstance(value, (list, tuple)) and value:
        # str() joins items with ",", so an item may not hold one.
        if all(isinstance(item, str) and item.strip() and "," not in item for item in value):
            return [item.strip() for item in value]
    elif type(value) is typ:  # `is`: JSON true must not pass as an int
        return value
    raise TargetError(f"option '-{name}' in target {text!r} expects {_TYPE_WORDS[typ]}, "
                      f"got {value!r}", hint=f"e.g. {_example(name, typ)}")


def _example(name: str, typ: type) -> str:
    sample = {int: "4", bool: "true", list: "+neon,+dotprod" if name == "mattr" else "a,b"}
    return f"-{name}={sample.get(typ, 'skylake' if name == 'mcpu' else 'VALUE')}"


def _check_kind(kind: Any, text: str) -> dict[str, type]:
    if kind in _OPTIONS:
        return _OPTIONS[kind]
    if kind in _OTHER_KINDS:
        raise TargetError(f"dlc only builds for CPUs, not {kind!r} (in target {text!r})",
                          hint=_KIND_HINT)
    raise TargetError(f"unknown target kind {kind!r} in target {text!r}", hint=_KIND_HINT)


def _unknown_option(name: str, kind: str, text: str) -> TargetError:
    valid = list(_OPTIONS[kind])
    return TargetError(
        f"unknown option '-{name}' in target {text!r}{_did_you_mean(name, valid, prefix='-')}",
        hint=f"valid options for {kind!r}: " + ", ".join(f"-{o}" for o in valid))


def _load_json(source: str, text: str) -> dict:
    try:
        config = json.loads(source)
    except json.JSONDecodeError as err:
        raise TargetError(f"invalid JSON in target {text!r}: {err}", hint=_JSON_HINT) from err
    return _canonical(config, text)


def _load_preset(path: Path | Traversable) -> TargetSpec:
    where = str(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise TargetError(f"cannot read target preset {where!r}: {err}",
                          hint="fix the file; see dlc/targets/cortex-a72.toml for the format") from err
    for name, value in data.items():
        if name not in _PRESET_KEYS:
            raise TargetError(f"unknown key {name!r} in target preset {where!r}",
                              hint="a preset has: " + ", ".join(_PRESET_KEYS))
        if name != "target" and not isinstance(value, str):
            raise TargetError(f"{name!r} in target preset {where!r} must be a string",
                              hint=f'write {name} = "..."')
    target = data.get("target")
    try:
        if target == "host":
            config = host_target().config
        elif isinstance(target, str) and target.strip().startswith("{"):
            config = _load_json(target, target)
        elif isinstance(target, str):
            config = _parse_classic(target)
        elif isinstance(target, dict):
            config = _canonical(target, json.dumps(target))
        else:
            raise TargetError("'target' must be a table or a string",
                              hint='e.g. target = { kind = "llvm", mcpu = "skylake" }')
    except TargetError as err:
        raise TargetError(f"in target preset {where!r}: {err.message}", hint=err.hint) from err
    return TargetSpec(path.name.removesuffix(".toml"), config, description=data.get("description", ""),
                      cross_compiler=data.get("cross_compiler") or None,
                      notes=data.get("notes", ""))


def _presets(presets_dir: Path | Traversable | None) -> Traversable:
    if presets_dir is None:
        return DEFAULT_PRESETS_DIR
    return Path(presets_dir) if isinstance(presets_dir, str) else presets_dir


def _preset_names(presets_dir: Traversable) -> list[str]:
    if not presets_dir.is_dir():
        return []
    return sorted(p.name.removesuffix(".toml") for p in presets_dir.iterdir() if p.name.endswith(".toml"))


def _valid_hint(presets_dir: Traversable) -> str:
    names = _preset_names(presets_dir)
    return (f"use a preset ({', '.join(names)}), {_EXAMPLES}" if names
            else f"use {_EXAMPLES}")


def _did_you_mean(word: str, choices: list[str], *, prefix: str = "") -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean '{prefix}{close[0]}'?" if close else ""
