"""Splitting a CLI reference ``<alias>/<repository>[:tag|@digest]`` into name and reference."""

from __future__ import annotations

from pullguard.services.runtime.errors import InvalidRequest


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
