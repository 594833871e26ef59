"""The OCI descriptor as domain code sees it: every field is a claim."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Descriptor:
    """An OCI descriptor exactly as a manifest (or a caller) states it.

    Its digest and size are claims until hashverify has recomputed the content.
    """

    media_type: str
    digest: str
    size: int
    urls: tuple[str, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)
    artifact_type: str = ""
    #: "os/architecture[/variant]" of an index entry, else "".
    platform: str = ""
