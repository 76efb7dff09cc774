"""Configuration dataclass <-> command line and JSON.

Every stage script starts with ``@dataclass class Configuration`` whose fields carry a docstring each;
``parse(Configuration)`` turns the command line into an instance with `tyro`_ (flags are the field
names with ``-`` for ``_``; ``--help`` shows the field docstrings, types and defaults; booleans get
``--flag`` / ``--no-flag``; ``Literal`` choices are checked). ``--config path.json`` loads a saved
configuration first, and flags given beside it win.

.. _tyro: https://brentyi.github.io/tyro/
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import tyro

from reid.errors import InputError

T = TypeVar("T")

CONFIG_FLAG = "--config"


class ConfigError(InputError):
    """A saved configuration does not fit the dataclass (unknown field, wrong type)."""


def parse(config_class: type[T], args: Sequence[str] | None = None, description: str | None = None,
          default: T | None = None) -> T:
    """Build ``config_class`` from the command line.

    args: the command-line words (default ``sys.argv[1:]``). ``--config PATH`` (or ``--config=PATH``)
    anywhere among them loads that JSON as the defaults; the other flags override it.
    description: text at the top of ``--help``; by default the calling script's module docstring.
    default: an instance whose values are the defaults (``--config`` replaces it), e.g. a checkpoint's configuration.
    On a bad flag or value, prints a message naming the flag and what was expected, and exits 2.
    """
    args = list(sys.argv[1:] if args is None else args)
    config_path, args = _pop_config_flag(args)
    if config_path is not None:
        try:
            default = load_config(config_class, config_path)
        except (OSError, ConfigError, json.JSONDecodeError) as error:
            print(f"error: {CONFIG_FLAG} {config_path}: {error}", file=sys.stderr)
            raise SystemExit(2) from None
    if description is None:
        description = _caller_docstring() or inspect.getdoc(config_class)
    # tyro would otherwise show the class name and a usage line built from sys.argv[0].
    return tyro.cli(config_class, args=args, default=default, description=description)


def _pop_config_flag(args: list[str]) -> tuple[Path | None, list[str]]:
    rest: list[str] = []
    path: Path | None = None
    i = 0
    while i < len(args):
        word = args[i]
        if word == CONFIG_FLAG:
            if i + 1 >= len(args):
                print(f"error: {CONFIG_FLAG} expects a path to a JSON file", file=sys.stderr)
                raise SystemExit(2)
            path = Path(args[i + 1])
            i += 2
            continue
        if word.startswith(CONFIG_FLAG + "="):
            path = Path(word.split("=", 1)[1])
        else:
            rest.append(word)
        i += 1
    return path, rest


def _caller_docstring() -> str | None:
    # The script that called parse() is the __main__ module, whose docstring holds its example commands.
    main = sys.modules.get("__main__")
    return getattr(main, "__doc__", None)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A dataclass instance -> plain JSON-able dict (Path -> str, tuple -> list), recursively."""
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"expected a dataclass instance, got {type(config).__name__}")
    return {f.name: _to_plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_to_dict(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_plain(v) for k, v in value.items()}
    return value


def save_config(config: Any, path: str | os.PathLike) -> Path:
    """Write the resolved configuration as indented JSON (the parent folder is created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config_to_dict(config), indent=2) + "\n")
    return path


def config_from_dict(config_class: type[T], values: dict[str, Any], strict: bool = True) -> T:
    """Plain dict (as written by ``config_to_dict``) -> ``config_class`` instance.

    Values are converted to the field types (str -> Path, list -> tuple, ...). ``strict``: an unknown
    key raises ``ConfigError``; otherwise unknown keys are ignored (e.g. a checkpoint written by a
    script with more fields). Missing keys keep the class defaults.
    """
    hints = typing.get_type_hints(config_class)
    names = {f.name for f in dataclasses.fields(config_class) if f.init}
    unknown = sorted(set(values) - names)
    if unknown and strict:
        raise ConfigError(f"unknown field(s) {', '.join(unknown)}; {config_class.__name__} has: {', '.join(sorted(names))}")
    kwargs = {}
    for name in names & set(values):
        try:
            kwargs[name] = _coerce(values[name], hints[name])
        except (TypeError, ValueError) as error:
            raise ConfigError(f"field {name!r}: {error}") from None
    return config_class(**kwargs)


def load_config(config_class: type[T], path: str | os.PathLike, strict: bool = True) -> T:
    """Read a JSON written by ``save_config`` back into ``config_class``."""
    values = json.loads(Path(path).read_text())
    if not isinstance(values, dict):
        raise ConfigError(f"expected a JSON object, got {type(values).__name__}")
    return config_from_dict(config_class, values, strict=strict)


def _coerce(value: Any, hint: Any) -> Any:
    """Convert a JSON value to the annotated type (enough for the types our configurations use)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg)
            except (TypeError, ValueError) as error:
                errors.append(str(error))
        raise ValueError(f"{value!r} fits none of {hint}: {'; '.join(errors)}")
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{value!r} is not one of {args}")
        return value
    if origin in (list, tuple, Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner) for v in value]
        return tuple(items) if (origin is tuple or hint is tuple) else items
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise TypeError(f"expected an object, got {value!r}")
        return dict(value)
    if hint is Path or (isinstance(hint, type) and issubclass(hint, os.PathLike)):
        if not isinstance(value, str):
            raise TypeError(f"expected a path string, got {value!r}")
        return Path(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise TypeError(f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {value!r}")
        return value
    return value
