# netstore/config/reader.py - reading one TOML value at a time: the _Reader
# that walks a parsed document and turns every refusal into a ConfigError
# naming the file and the key path, how a value reads in a message, and the
# rule for switch, port and media names.
"""Value readers of the configuration loader; every error names file and key."""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from netstore.config.model import ConfigError

# Given a state directory and a bare LUN name: the registered base medium's
# file, or None (load_config's resolve_medium).
MediumResolver = Callable[[Path, str, "str | None"], "str | None"]

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # switch, port and media names



T = TypeVar("T")


def _describe(value: Any) -> str:
    """How a TOML value reads in a message: strings quoted, others by kind."""
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 80 else text[:76] + '..."'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return f"an array of {len(value)}"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


class _Reader:
    """Walks a parsed TOML document, remembering the file for every error."""

    def __init__(self, file: str, base_dir: Path, check_paths: bool = True,
                 resolve_medium: MediumResolver | None = None) -> None:
        self.file = file
        self.base_dir = base_dir
        self.check_paths = check_paths
        self.resolve_medium = resolve_medium
        self.registry_url: str | None = None  # [registry] url, once read

    def fail(self, key: str, expected: str, got: str) -> ConfigError:
        prefix = f"{self.file}: {key}: " if key else f"{self.file}: "
        return ConfigError(f"{prefix}expected {expected}, got {got}", file=self.file, key=key)

    def table(self, value: Any, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, "a table", _describe(value))
        return value

    def keys(self, table: dict[str, Any], key: str, allowed: Iterable[str]) -> None:
        """Refuse keys not in ``allowed``, suggesting the closest known one."""
        allowed = list(allowed)
        for name in table:
            if name not in allowed:
                where = f"{key}.{name}" if key else name
                close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
                hint = f' (did you mean "{close[0]}"?)' if close else ""
                raise self.fail(
                    where,
                    "one of the keys " + ", ".join(allowed),
                    f"the unknown key {json.dumps(name, ensure_ascii=False)}{hint}",
                )

    def string(self, value: Any, key: str, *, what: str = "a string") -> str:
        if not isinstance(value, str):
            raise self.fail(key, what, _describe(value))
        if not value:
            raise self.fail(key, f"{what}, not empty", '""')
        if "\x00" in value:
            raise self.fail(key, f"{what} without NUL characters", _describe(value))
        return value

    def integer(self, value: Any, key: str, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"an integer in {lo}..{hi}", _describe(value))
        if not lo <= value <= hi:
            raise self.fail(key, f"an integer in {lo}..{hi}", _describe(value))
        return value

    def positive_number(self, value: Any, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, "a positive number of seconds", _describe(value))
        if not (math.isfinite(value) and value > 0):
            raise self.fail(key, "a positive number of seconds", _describe(value))
        return float(value)

    def array(self, value: Any, key: str, item: Callable[[Any, str], T]) -> list[T]:
        if not isinstance(value, list):
            raise self.fail(key, "an array", _describe(value))
        return [item(v, f"{key}[{i}]") for i, v in enumerate(value)]

    def unique_names(self, items: Iterable[Any], key: str) -> None:
        """Refuse a second entry of the array `key` with the name of an earlier one."""
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            if item.name in seen:
                raise self.fail(f"{key}[{i}].name", f"a name not used by {key}[{seen[item.name]}]",
                                _describe(item.name))
            seen[item.name] = i

    def path(self, value: Any, key: str) -> Path:
        text = self.string(value, key, what="a path")
        return (self.base_dir / Path(text).expanduser()).absolute()


def _name(r: _Reader, value: Any, key: str) -> str:
    name = r.string(value, key, what="a name")
    if not _NAME_RE.fullmatch(name):
        raise r.fail(key, "a name of letters, digits, '.', '_', '-' (at most 64)", _describe(name))
    return name
