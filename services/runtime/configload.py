"""Reading configuration YAML strictly, and gathering every error of a file.

A YAML mapping with the same key twice is refused at any depth: PyYAML's
default keeps the last one silently, so a second ``lab:`` under
``upstreams`` would replace the first without a word. Syntax errors name the
file, the line and the column.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import yaml

from pullguard.services.runtime.errors import ConfigError

T = TypeVar("T")

#: At most this many errors are gathered from one file; the rest are counted.
MAX_ERRORS = 100


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
