"""Changing one top-level array of the user's TOML config without touching anything else in it.

Python reads TOML (``tomllib``) but does not write it, and rewriting the whole file from a parsed dict would
lose the user's comments and layout. So the file is edited as text: the ``KEY = [...]`` assignment before the
first table is replaced (or added there), the result is parsed again and must equal the old file's data
except for that key — else nothing is written — and it is moved into place atomically.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
import uuid
from pathlib import Path
from typing import Any

_TABLE = re.compile(r"^\s*\[", re.MULTILINE)


class ConfigError(ValueError):
    """The config file cannot be read, or edited safely."""


def read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def _array_end(text: str, start: int) -> int:
    """Index just past the ``]`` closing the array that opens at ``text[start]`` (strings and comments skipped)."""
    depth, i = 0, start
    while i < len(text):
        ch = text[i]
        if ch in "\"'":
            triple = text[i : i + 3] == ch * 3
            quote = ch * 3 if triple else ch
            i += len(quote)
            while i < len(text) and text[i : i + len(quote)] != quote:
                i += 2 if (ch == '"' and text[i] == "\\") else 1
            i += len(quote)
            continue
        if ch == "#":
            newline = text.find("\n", i)
            i = len(text) if newline < 0 else newline
            continue
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ConfigError("unterminated array")


def set_top_level_array(text: str, key: str, values: list[str]) -> str:
    """``text`` with top-level ``key`` set to the string array ``values`` (basic strings, one per line)."""
    body = "".join(f"  {json.dumps(v, ensure_ascii=False)},\n" for v in values)
    assignment = f"{key} = [\n{body}]"
    first_table = _TABLE.search(text)
    head_end = first_table.start() if first_table else len(text)
    found = re.search(rf"^[ \t]*{re.escape(key)}[ \t]*=[ \t]*", text[:head_end], re.MULTILINE)
    if found is None:
        prefix = text[:head_end]
        joiner = "" if not prefix or prefix.endswith("\n") else "\n"
        return prefix + joiner + assignment + "\n" + ("\n" if first_table else "") + text[head_end:]
    value_start = found.end()
    if text[value_start : value_start + 1] != "[":
        raise ConfigError(f"{key} is not an array")
    return text[: found.start()] + assignment + text[_array_end(text, value_start) :]


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
