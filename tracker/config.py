"""TOML → frozen dataclass loader shared by every face3d config.

A config is a (frozen) dataclass whose fields are plain types, possibly nested dataclasses; a TOML
file (or an already parsed mapping) fills it::

    @dataclass(frozen=True)
    class Offline:
        cutoff_hz: float = 4.0

    @dataclass(frozen=True)
    class Smoothing:
        offline: Offline = Offline()

    cfg = load_config(Smoothing, "configs/smoothing.toml")     # [offline] cutoff_hz = 3.0

Rules (pinned by ``tests/test_config.py``):

* Unknown keys raise :class:`~tracker.errors.ConfigError` naming the dotted key and the file.
* Wrong types raise :class:`ConfigError`; there is no silent coercion except ``int → float``
  (TOML writes ``1`` for ``1.0``) and ``list → tuple``. ``bool`` is never accepted as a number.
* Missing keys take the dataclass default; a field without a default is required. A partial
  nested table is merged over the *field's* default instance (``[live.rotation] beta = 4`` keeps
  that field's default ``min_cutoff``, even when the nested class itself has no defaults).
* Supported field types: ``bool``, ``int``, ``float``, ``str``, ``pathlib.Path``, ``Literal[...]``,
  ``tuple[T, ...]``, ``tuple[T1, T2, …]``, ``X | None`` (TOML has no null: ``None`` only comes from
  a default), unions tried in order, ``typing.Any`` and nested dataclasses (TOML tables).
* A ``ConfigError``/``ValueError`` raised by the dataclass's own ``__post_init__`` (range checks)
  is re-raised as ``ConfigError`` with the file and table prefixed.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError

T = TypeVar("T")


def load_config(cls: type[T], source: str | Path | Mapping[str, Any]) -> T:
    """Build the dataclass ``cls`` from a TOML file path or a parsed mapping.

    ``source``: a path to a ``.toml`` file, or a mapping (e.g. one table of a bigger file, or
    values from the command line). Raises :class:`ConfigError` for a missing or unparsable file,
    unknown keys, wrong types and values the dataclass rejects; messages name the file and key.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"load_config needs a dataclass type, got {cls!r}")
    if isinstance(source, Mapping):
        origin, data = "<mapping>", source
    else:
        path = Path(source)
        origin = str(path)
        try:
            with path.open("rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"{origin}: config file not found") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{origin}: invalid TOML: {e}") from None
        except OSError as e:
            raise ConfigError(f"{origin}: cannot read config: {e}") from None
    return _build(cls, data, origin, "")


def config_to_dict(obj: Any) -> dict[str, Any]:
    """A config dataclass as plain TOML/JSON values (tuples → lists, paths → str).

    ``load_config(type(obj), config_to_dict(obj)) == obj`` for every supported config; used to
    record settings in sidecar files.
    """
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise TypeError(f"config_to_dict needs a dataclass instance, got {obj!r}")
    return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def _plain(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return config_to_dict(v)
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    return v


def _where(origin: str, key: str) -> str:
    return f"{origin}: key '{key}'" if key else f"{origin}: top level"


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _build(cls: type, data: Any, origin: str, prefix: str, base: Any = None) -> Any:
    """``cls`` from the table ``data``; missing keys come from ``base`` (the default instance of
    the enclosing field, if any) or else from the class defaults."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{_where(origin, prefix.rstrip('.'))} must be a table, "
                          f"got {type(data).__name__}")
    try:
        hints = typing.get_type_hints(cls)
    except Exception as e:  # an unresolvable annotation is a programming error in the config class
        raise TypeError(f"cannot resolve the annotations of {cls.__name__}: {e}") from e
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        dotted = ", ".join(f"'{prefix}{k}'" for k in unknown)
        allowed = ", ".join(sorted(fields))
        raise ConfigError(f"{origin}: unknown key {dotted} (allowed in "
                          f"{prefix.rstrip('.') or 'the top level'}: {allowed})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = prefix + name
        if name in data:
            nested_base = getattr(base, name) if base is not None else _field_default(f)
            kwargs[name] = _convert(hints[name], data[name], origin, key, nested_base)
        elif base is not None:
            kwargs[name] = getattr(base, name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{_where(origin, key)} is required")
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{origin}: [{prefix.rstrip('.') or cls.__name__}] {e}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{origin}: [{prefix.rstrip('.') or cls.__name__}] invalid values: {e}") \
            from None


def _convert(tp: Any, value: Any, origin: str, key: str, base: Any = None) -> Any:
    """``value`` checked (and minimally converted) against the annotation ``tp``; ``base`` is the
    field's default, over which a partial nested table is merged."""
    if tp is Any:
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value, origin, key + ".", base if isinstance(base, tp) else None)
    org = typing.get_origin(tp)
    args = typing.get_args(tp)
    if org is typing.Literal:
        if isinstance(value, bool) or value not in args:
            raise ConfigError(f"{_where(origin, key)} must be one of {list(args)}, got {value!r}")
        return value
    if org in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        errors = []
        for a in members:
            try:
                return _convert(a, value, origin, key, base)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else
                          f"{_where(origin, key)} matches none of {members}: got {value!r}")
    if org is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{_where(origin, key)} must be an array, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, origin, f"{key}[{i}]") for i, v in enumerate(value))
        if not args:
            return tuple(value)
        if len(args) != len(value):
            raise ConfigError(f"{_where(origin, key)} must have {len(args)} items, got {len(value)}")
        return tuple(_convert(a, v, origin, f"{key}[{i}]")
                     for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{_where(origin, key)} must be a boolean, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{_where(origin, key)} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{_where(origin, key)} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{_where(origin, key)} must be a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{_where(origin, key)} must be a path string, got {value!r}")
        return Path(value)
    raise TypeError(f"unsupported config field type {tp!r} for '{key}'")
