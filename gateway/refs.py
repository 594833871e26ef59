"""Splitting a CLI reference ``<alias>/<repository>[:tag|@digest]`` into name and reference."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pullguard.services.runtime.errors import InvalidRequest

if TYPE_CHECKING:
    from pullguard.services.runtime.config import Config


def split_reference(text: str) -> tuple[str, str]:
    """Split without validating: analysis validates both halves exactly.

    ``lab/app@sha256:…`` -> (``lab/app``, ``sha256:…``); ``lab/app:v1`` ->
    (``lab/app``, ``v1``); ``lab/app`` -> (``lab/app``, ``latest``), as docker does.
    """
    if not text or len(text) > 4096:
        raise InvalidRequest("reference is empty or too long")
    if "@" in text:
        name, _, digest = text.partition("@")
        return name, digest
    slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > slash:
        return text[:colon], text[colon + 1 :]
    return text, "latest"


def check_reference_syntax(text: str, config: Config) -> None:
    """Refuse a CLI reference that is not one by its grammar alone (a usage error,
    not a verdict): bad characters, empty components, a malformed tag or digest.
    Whether the name may be pulled stays the layers' question."""
    from pullguard.services.analysis.reference import (
        Rejected,
        check_repository,
        parse_reference,
        split_name,
    )

    name, reference = split_reference(text)
    try:
        components = split_name(name)
        # A first component that is or looks like a registry host is the layers' to judge.
        first = components[0]
        hostlike = first in config.upstreams or first == "localhost" or bool(set(first) & set(".:"))
        alias = 1 if len(components) > 1 and hostlike else 0
        check_repository(name, components[alias:], alias)
        parse_reference(reference)
    except Rejected as exc:
        raise InvalidRequest(
            f"{text[:200]!r} is not <alias>/<repository>[:tag|@digest]: {exc}"
        ) from None
