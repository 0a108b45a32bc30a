"""Changing one top-level array of the user's TOML config without touching anything else in it.

Python reads TOML (``tomllib``) but does not write it, and rewriting the whole file from a parsed dict would
lose the user's comments and layout. ``tomlkit`` parses a TOML file into a document that keeps every comment,
blank line and quoting style, so the key is changed in that document: an array that already starts with the
wanted values only has the new ones appended (its own comments, even between entries, stay); any other
value is replaced, and a missing key is added before the first table (tomlkit places it there, so it stays
top level). The result is parsed again with ``tomllib`` and must equal the old file's data except for that
key — else nothing is written — and it is moved into place atomically.
"""

from __future__ import annotations

import os
import tomllib
import uuid
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import Array


class ConfigError(ValueError):
    """The config file cannot be read, or edited safely."""


def read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def _new_array(values: list[str]) -> Array:
    array = tomlkit.array()
    array.extend(values)
    return array.multiline(True)


def set_top_level_array(text: str, key: str, values: list[str]) -> str:
    """``text`` with top-level ``key`` set to the string array ``values``, everything else as it was."""
    try:
        document = tomlkit.parse(text)
    except TOMLKitError as exc:
        raise ConfigError(f"not valid TOML: {exc}") from exc
    current = document.get(key)
    if current is None:
        document[key] = _new_array(values)
    elif not isinstance(current, Array):
        raise ConfigError(f"{key} is not an array")
    elif list(current) == values[: len(current)]:
        current.extend(values[len(current) :])  # keeps the comments between the entries already there
    else:
        document[key] = _new_array(values)
    return tomlkit.dumps(document)


def write_array(path: Path, key: str, values: list[str]) -> None:
    """Set ``key`` in the config at ``path`` (created if missing), keeping every other key, comment and line."""
    old_text = path.read_text() if path.is_file() else ""
    old = read_config(path)
    new_text = set_top_level_array(old_text, key, values)
    try:
        new = tomllib.loads(new_text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"editing {path} would break it ({exc}); change {key} by hand") from exc
    if new.get(key) != values or {k: v for k, v in new.items() if k != key} != {
        k: v for k, v in old.items() if k != key
    }:
        raise ConfigError(f"editing {path} would change more than {key}; change {key} by hand")
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        temp.write_text(new_text)
        if path.exists():
            os.chmod(temp, path.stat().st_mode & 0o7777)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
