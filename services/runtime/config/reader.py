"""Reading configuration: strict YAML, typed access naming each key, every error gathered.

A YAML mapping with the same key twice is refused at any depth: PyYAML's
default keeps the last one silently, so a second ``lab:`` under
``upstreams`` would replace the first without a word. Syntax errors name the
file, the line and the column.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from pullguard.services.runtime.errors import ConfigError

T = TypeVar("T")

#: At most this many errors are gathered from one file; the rest are counted.
MAX_ERRORS = 100


#: One grammar for every duration in the configuration.
_DURATION = re.compile(r"([0-9]{1,9})([smhdw])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class ConfigErrors(ConfigError):
    """Several errors in one configuration file; ``errors`` lists each."""

    def __init__(self, errors: list[ConfigError]) -> None:
        first = errors[0]
        super().__init__(first.file, first.key, first.problem)
        self.errors = errors
        self.message = "\n".join(error.message for error in errors)
        self.args = (self.message,)


class ConfigUnreadable(ConfigError):
    """The configuration file could not be read at all (missing, a folder, not UTF-8)."""


class _StrictLoader(yaml.SafeLoader):
    """The safe loader, refusing a mapping that repeats a key."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Hashable, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            if not isinstance(key, Hashable):
                continue  # the safe loader refuses it below, with its own message
            if key in seen:
                first = seen[key].start_mark
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"duplicate key {key!r} (first at line {first.line + 1},"
                    f" column {first.column + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, source: str) -> Any:
    """Parse one YAML document; a ConfigError names ``source``, the line and the column."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = " ".join(part for part in (exc.context, exc.problem) if part)
        raise ConfigError(source, "", f"not valid YAML: {where}{problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, "", f"not valid YAML: {exc}") from None


class Gathered:
    """Errors met while reading one file: each part is tried, and every failure kept."""

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []
        self.dropped = 0

    def attempt(self, fallback: T, read: Callable[..., T], *args: Any) -> T:
        """``read(*args)``, or ``fallback`` when it raises a ConfigError (which is kept)."""
        try:
            return read(*args)
        except ConfigErrors as exc:
            for error in exc.errors:
                self.add(error)
        except ConfigError as exc:
            self.add(exc)
        return fallback

    def add(self, error: ConfigError) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(error)
        else:
            self.dropped += 1

    def raise_any(self) -> None:
        if not self.errors:
            return
        errors = list(self.errors)
        if self.dropped:
            first = errors[0]
            errors.append(ConfigError(first.file, "", f"and {self.dropped} more errors"))
        raise errors[0] if len(errors) == 1 else ConfigErrors(errors)


class Reader:
    """Typed access to a YAML mapping that reports the key path on error."""

    def __init__(self, source: str, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir
        self.gathered = Gathered()

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.source, key, problem)

    def mapping(self, value: Any, key: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a mapping, got {kind(value)}")
        for name in value:
            if not isinstance(name, str):
                raise self.fail(key, f"keys must be strings, got {name!r}")
        return value

    def known(self, value: dict[str, Any], key: str, allowed: set[str]) -> None:
        for name in value:
            if name not in allowed:
                where = f"{key}.{name}" if key else name
                raise self.fail(where, f"unknown key (known: {', '.join(sorted(allowed))})")

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"must be a non-empty string, got {kind(value)}")
        return value

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {kind(value)}")
        return value

    def number(self, value: Any, key: str, minimum: float) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            raise self.fail(key, f"must be a number >= {minimum}, got {value!r}")
        return float(value)

    def duration(self, value: Any, key: str, minimum: float = 0.0) -> float:
        """Seconds: ``45s`` / ``30m`` / ``6h`` / ``90d`` / ``2w``, or a number of seconds."""
        if isinstance(value, int | float) and not isinstance(value, bool):
            return self.number(value, key, minimum)
        matched = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
        if matched is None:
            raise self.fail(
                key, f"must be a duration such as 30m, 6h or 90d (or seconds), got {value!r:.60}"
            )
        seconds = float(int(matched.group(1)) * _DURATION_UNITS[matched.group(2)])
        if seconds < minimum:
            raise self.fail(key, f"must be at least {minimum:g} seconds, got {value!r:.60}")
        return seconds

    def integer(self, value: Any, key: str, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(key, f"must be an integer >= {minimum}, got {value!r}")
        return value

    def strings(self, value: Any, key: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.fail(key, f"must be a list, got {kind(value)}")
        return tuple(self.string(item, f"{key}[{i}]") for i, item in enumerate(value))

    def path(self, value: Any, key: str) -> Path:
        text = self.string(value, key)
        path = Path(text)
        return path if path.is_absolute() else self.base_dir / path

    def read_file(self, value: Any, key: str, limit: int = 1024 * 1024) -> tuple[Path, str]:
        path = self.path(value, key)
        try:
            with path.open("rb") as handle:
                data = handle.read(limit + 1)
        except OSError as exc:
            raise self.fail(key, f"cannot read {path}: {exc.strerror or exc}") from None
        if len(data) > limit:
            raise self.fail(key, f"{path} is larger than {limit} bytes")
        try:
            return path, data.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(key, f"{path} is not UTF-8 text") from None


def kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"boolean {value}"
    if isinstance(value, str):
        return f"string {value[:60]!r}"
    return type(value).__name__
