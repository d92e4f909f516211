"""Dataclass configs from presets or files, with errors that name the bad key.

Each package defines its configs as dataclasses whose defaults are the paper's values
and parses overrides with tyro. This module covers the other half: ``--config NAME``
(a registered preset such as ``tiny`` or ``paper``) or ``--config path.json|.toml``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

T = TypeVar("T")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (possibly nested) dataclass."""
    from latentforge.runs import _jsonable

    if not (dataclasses.is_dataclass(config) and not isinstance(config, type)):
        raise TypeError(f"expected a dataclass instance, got {type(config).__name__}")
    return _jsonable(config)


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected a table/object for {annotation.__name__}, got {value!r}")
        return config_from_dict(annotation, value, where=where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is typing.Literal:
        if value not in typing.get_args(annotation):
            raise ValueError(f"{where}: {value!r} is not one of {list(typing.get_args(annotation))}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(annotation)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ValueError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(
                _coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
        item = args[0] if args else Any
        seq = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(seq) if origin is tuple else seq
    if annotation is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true/false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return value
    if annotation is Path:
        if not isinstance(value, (str, os.PathLike)):
            raise ValueError(f"{where}: expected a path, got {value!r}")
        return Path(value)
    return value


def config_from_dict(cls: type[T], data: Mapping[str, Any], *, where: str = "config") -> T:
    """Build ``cls`` from ``data``, checking keys and basic types; missing keys keep defaults."""
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {unknown} for {cls.__name__}; valid keys: {sorted(fields)}"
        )
    kwargs = {name: _coerce(value, hints[name], f"{where}.{name}") for name, value in data.items()}
    return cls(**kwargs)


def load_config_file(cls: type[T], path: str | os.PathLike) -> T:
    """Read a ``.json`` or ``.toml`` file into ``cls``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        elif path.suffix == ".toml":
            data = tomllib.loads(text)
        else:
            raise ValueError(f"config file {path} must end in .json or .toml")
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"config file {path} could not be parsed: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a table/object at the top level")
    return config_from_dict(cls, data, where=str(path))


def resolve_config(cls: type[T], source: str, presets: Mapping[str, Callable[[], T]]) -> T:
    """``source`` is a preset name (``tiny``, ``paper``...) or a path to a config file."""
    if source in presets:
        return presets[source]()
    if source.endswith((".json", ".toml")) or os.sep in source:
        return load_config_file(cls, source)
    raise ValueError(f"unknown config {source!r}: expected one of {sorted(presets)} or a .json/.toml file")
