"""Typed configuration: dataclasses loaded from YAML, validated with one-line errors.

Each stage of the data flow owns its config dataclass (``vos/model/config.py: ModelConfig``, ...);
this module composes them into :class:`Config` and does the loading:

* a YAML file may name a base file with ``extends: base.yaml`` (relative to itself); mappings merge
  recursively, the extending file wins;
* ``overrides`` are ``a.b=value`` strings (the CLI's ``--set``), the value parsed as YAML;
* unknown keys, wrong types and missing files raise :class:`~vos.errors.ConfigError` naming the file
  and the dotted key.

There is no global config: the loaded object is passed down explicitly.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from vos.data.config import DataConfig
from vos.errors import ConfigError
from vos.losses.config import LossConfig
from vos.memory.config import MemoryConfig
from vos.model.config import ModelConfig
from vos.train.config import TrainConfig


@dataclass
class Config:
    """Everything a run needs; each field is one stage's config."""

    model: ModelConfig = field(default_factory=ModelConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        self._scale_schedule()

    def _scale_schedule(self) -> None:
        """Resolve ``train.schedule_reference``: every schedule counted in iterations (the lr steps and
        warm-up, the weak losses' warm-up, the bootstrapped CE's start and end) was written for a run of that
        many iterations; scale them to ``train.iterations`` and clear the reference, so that a
        shortened run keeps the schedule's shape and the saved config holds the values in use."""
        ref = self.train.schedule_reference
        if ref is None:
            return
        total = self.train.iterations

        def scaled(value: int) -> int:
            return int(round(value * total / ref))

        self.train.lr_steps = tuple(scaled(v) for v in self.train.lr_steps)
        self.train.lr_warmup = scaled(self.train.lr_warmup)
        self.losses.warmup_iters = scaled(self.losses.warmup_iters)
        self.losses.boot_start = scaled(self.losses.boot_start)
        self.losses.boot_end = scaled(self.losses.boot_end)
        self.train.schedule_reference = None


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), cls: type = Config):
    """Load ``path`` (YAML, may ``extends:`` a base) with ``a.b=value`` overrides into ``cls``."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        data = _read_yaml_chain(Path(path), seen=())
        source = str(path)
    for item in overrides:
        _apply_override(data, item)
    if overrides:
        source = f"{source} + --set"
    return from_dict(cls, data, source=source)


def to_dict(config) -> dict[str, Any]:
    """Plain-data view of a config (YAML/JSON serialisable; tuples become lists)."""
    return _plain(dataclasses.asdict(config))


def save_config(config, path: str | Path) -> None:
    from vos.output import write_text

    write_text(path, yaml.safe_dump(to_dict(config), sort_keys=False))


def from_dict(cls: type, data: Any, source: str = "<dict>", prefix: str = ""):
    """Build dataclass ``cls`` from a mapping, checking keys and types; errors name ``source`` and the key."""
    where = prefix.rstrip(".") or "top level"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: '{where}' must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        known = ", ".join(sorted(fields))
        raise ConfigError(f"{source}: unknown key '{prefix}{unknown[0]}' (known keys here: {known})")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(hints[name], value, source, f"{prefix}{name}")
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: invalid value in '{where}': {exc}") from None


def _convert(tp: Any, value: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, source, prefix=f"{key}.")
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _convert(option, value, source, key)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[-1] if len(errors) == 1 else _type_error(source, key, tp, value)
    if origin is Literal:
        if value in args:
            return value
        choices = ", ".join(repr(a) for a in args)
        raise ConfigError(f"{source}: '{key}' must be one of {choices}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _type_error(source, key, tp, value)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{source}: '{key}' needs {len(args)} values, got {len(value)}")
            return tuple(_convert(a, v, source, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item_tp = args[0] if args else Any
        items = [_convert(item_tp, v, source, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise _type_error(source, key, tp, value)
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _type_error(source, key, tp, value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _type_error(source, key, tp, value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise _type_error(source, key, tp, value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _type_error(source, key, tp, value)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _type_error(source, key, tp, value)


def _type_error(source: str, key: str, tp: Any, value: Any) -> ConfigError:
    name = getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
    return ConfigError(f"{source}: '{key}' must be {name}, got {value!r} ({type(value).__name__})")


def _read_yaml_chain(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    resolved = path.resolve()
    if resolved in seen:
        raise ConfigError(f"{path}: 'extends' forms a cycle")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{line}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of sections")
    base_name = data.pop("extends", None)
    if base_name is None:
        return data
    if not isinstance(base_name, str):
        raise ConfigError(f"{path}: 'extends' must be a file name")
    base = _read_yaml_chain(path.parent / base_name, seen + (resolved,))
    return _merge(base, data)


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _apply_override(data: dict[str, Any], item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"--set {item}: expected key.path=value")
    key, raw = item.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {item}: empty key")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
