"""Typed configs shared by the CLI, YAML files and the Python API.

Each engine owns one config dataclass. A field's default, help text and reference-spelling aliases
live in its metadata, so ``--help``, the YAML loader and the API all read the same source of truth.
Precedence: dataclass defaults < YAML file < command-line flags (or Python keywords).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from .errors import EmbforgeError

if TYPE_CHECKING:  # pragma: no cover
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


def option(default: Any = None, help: str = "", aliases: tuple[str, ...] = (), choices: tuple[Any, ...] | None = None,
           default_factory: Any = None) -> Any:
    """A dataclass field that carries its help text and the reference systems' spellings."""
    meta = {"help": help, "aliases": tuple(aliases), "choices": choices}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "y", "on"):
        return True
    if text in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _base_type(tp: Any) -> tuple[Any, bool]:
    """Return (inner type, is_list) for annotations like ``int | None`` or ``list[int] | None``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    if origin in (list, tuple):
        return typing.get_args(tp)[0], True
    return tp, False


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(value: Any, tp: Any, name: str, source: str) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if isinstance(value, str) and str in args:
            return value  # e.g. TrainingArguments' "dict | str" fields given a JSON string or a path
        if any(typing.get_origin(a) is typing.Literal and value in typing.get_args(a) for a in args):
            return value  # a named value beside a list, such as mrl_dims "auto"
    inner, is_list = _base_type(tp)
    try:
        if is_list:
            given = value
            if not isinstance(value, (list, tuple)):
                value = [value]
            # "--dims 32,64 128" and YAML "32,64" both mean [32, 64, 128].
            items = [p for v in value for p in (str(v).replace(",", " ").split() if isinstance(v, str) else [v])]
            try:
                return [_convert(v, inner, name, source) for v in items]
            except EmbforgeError as exc:
                want = "integers" if inner is int else f"{getattr(inner, '__name__', inner)} values"
                raise EmbforgeError(f"{source}: {name} expects comma-separated {want}, got {given!r}") from exc
        if inner is bool:
            return parse_bool(value)
        if inner in (int, float):
            if isinstance(value, bool):
                raise ValueError
            return inner(value)
        if inner is str:
            if isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float)) for v in value):
                return ",".join(map(str, value))  # YAML `k: [1, 10]` means the flag's "1,10"
            if not isinstance(value, (str, int, float, os.PathLike)):
                raise ValueError  # str() of a dict or a DataFrame is never the value that was meant
            return str(value)
        if inner is dict or typing.get_origin(inner) is dict:
            if not isinstance(value, dict):
                raise ValueError
            return value
        return value
    except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
        want = getattr(inner, "__name__", str(inner))
        raise EmbforgeError(f"{source}: {name} expects {'a list of ' if is_list else ''}{want}, got {value!r}") from exc


def field_aliases(cls: type, f: dataclasses.Field[Any]) -> tuple[str, ...]:
    """A field's other spellings: its own metadata, plus ``cls.EXTRA_ALIASES`` for inherited fields
    (such as TrainingArguments') whose metadata we do not own."""
    extra = tuple(a for a, name in getattr(cls, "EXTRA_ALIASES", {}).items() if name == f.name)
    return tuple(f.metadata.get("aliases", ())) + extra


def alias_map(cls: type) -> dict[str, str]:
    """Every accepted spelling (field name and aliases, dashes or underscores) -> field name."""
    out: dict[str, str] = {}
    for f in dataclasses.fields(cls):
        for spelling in (f.name, *field_aliases(cls, f)):
            out[spelling] = f.name
            out[spelling.replace("_", "-")] = f.name
    return out


def did_you_mean(key: object, known: typing.Iterable[str]) -> str:
    # YAML keys may be null, numbers or booleans (``null: 1``, ``on: x``); they are reported, not a crash.
    match = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def from_dict(cls: type[T], data: dict[str, Any], source: str = "config", base: T | None = None) -> T:
    """Build ``cls`` from a mapping, accepting aliases; unknown keys fail with a did-you-mean."""
    names = alias_map(cls)
    hints = _field_types(cls)
    values = dataclasses.asdict(base) if base is not None else {}
    for key, value in data.items():
        if key not in names:
            raise EmbforgeError(f"{source}: unknown key {key!r}{did_you_mean(key, names)}")
        name = names[key]
        field = next(f for f in dataclasses.fields(cls) if f.name == name)
        converted = _convert(value, hints[name], key, source)
        choices = field.metadata.get("choices")
        if choices and converted is not None and converted not in choices:
            raise EmbforgeError(f"{source}: {key} must be one of {', '.join(map(str, choices))}, got {converted!r}")
        values[name] = converted
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise EmbforgeError(f"{source}: {exc}") from exc


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise EmbforgeError(f"{p}: config file not found")
    raw = p.read_bytes()
    try:
        data = yaml.safe_load(raw.decode("utf-8")) or {}
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise EmbforgeError(f"{p}:{line}: not valid UTF-8 ({exc.reason})") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        loc = f"{p}:{mark.line + 1}" if mark is not None else str(p)
        raise EmbforgeError(f"{loc}: invalid YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(data, dict):
        raise EmbforgeError(f"{p}: expected a mapping of option: value at the top level")
    return data


def _help_text(field: dataclasses.Field[Any], aliases: tuple[str, ...]) -> str:
    default: Any = field.default
    if default is dataclasses.MISSING:
        factory = field.default_factory
        default = factory() if callable(factory) else None
    text = field.metadata.get("help", "")
    extra = f" Aliases: {', '.join('--' + a for a in aliases)}." if aliases else ""
    return f"{text} (default: {default!r}){extra}".replace("%", "%%")


def add_arguments(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """Add one flag per field. Defaults are SUPPRESSed so we can tell which flags were given."""
    hints = _field_types(cls)
    group = parser.add_argument_group("options of this command")
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        inner, is_list = _base_type(hints[f.name])
        aliases = field_aliases(cls, f)
        flags = [f"--{f.name}"] + [f"--{a}" for a in aliases if a != f.name]
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": _help_text(f, aliases)}
        if is_list:
            kwargs["nargs"] = "+"
        elif inner is bool:
            kwargs.update(nargs="?", const=True, type=parse_bool, metavar="BOOL")
        elif inner in (int, float):
            kwargs["type"] = inner
        if f.metadata.get("choices") and not is_list:
            kwargs["choices"] = f.metadata["choices"]
        group.add_argument(*flags, **kwargs)


def config_from_args(cls: type[T], namespace: argparse.Namespace, yaml_path: str | None = None,
                     source: str = "command line") -> T:
    """The command line's config: defaults < YAML < flags."""
    base = from_dict(cls, load_yaml(yaml_path), source=str(yaml_path)) if yaml_path else None
    given = {f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls) if hasattr(namespace, f.name)}
    return from_dict(cls, given, source=source, base=base)


def build_config(cls: type[T], config: T | Mapping[str, Any] | str | os.PathLike[str] | None = None,
                 fields: Mapping[str, Any] | None = None, objects: tuple[str, ...] = (),
                 is_object: Callable[[Any], bool] = lambda value: False) -> T:
    """Python's config: ``cls`` from ``config`` (an instance, a mapping or a YAML path) with ``fields`` on top.

    Fields named in ``objects`` may hold a value for which ``is_object`` is true (in-memory data, say):
    it bypasses from_dict's conversion and is set on the result as it is.
    """
    names = alias_map(cls)
    held: dict[str, Any] = {}

    def split(values: Mapping[str, Any]) -> dict[str, Any]:
        plain = {}
        for key, value in values.items():
            name = names.get(key)
            if name in objects and value is not None and is_object(value):
                held[name] = value
            else:
                held.pop(name or key, None)  # a later plain value replaces an earlier object
                plain[key] = value
        return plain

    if config is None:
        base = None
    elif isinstance(config, cls):
        base = config
    elif isinstance(config, Mapping):
        base = from_dict(cls, split(config), source="config")
    elif isinstance(config, (str, os.PathLike)):
        base = from_dict(cls, split(load_yaml(config)), source=str(config))
    else:
        raise EmbforgeError(f"config must be a {cls.__module__}.{cls.__qualname__}, a mapping or a YAML file, "
                            f"got {type(config).__name__}")
    plain = split(fields or {})
    cfg = from_dict(cls, plain, source="keyword arguments", base=base) if plain or base is None else copy.copy(base)
    for name, value in held.items():
        setattr(cfg, name, value)
    return cfg
