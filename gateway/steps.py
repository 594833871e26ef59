"""The names of a pull's steps, as reports, the pipeline and release rules spell them.

A step is (layer, step name); :data:`pullguard.gateway.release.WAIVABLE` keys
on these names, so a renamed step cannot silently stop (or start) being
waivable. Some steps carry what they looked at in their name instead
(``attestations <digest>``, ``referrer <digest>``); those are never waivable.
"""

from __future__ import annotations

import enum


class StepName(enum.StrEnum):
    PLAN = "plan"
    MANIFEST = "manifest"
    INDEX_DEPTH = "index depth"
    SIGNATURES = "signatures"
    SOURCE = "source"
    INDEX_UNIT = "index unit"
    BLOBS = "blobs"
    BLOB_SOURCE = "blob source"
    CONFIG = "config"
    LAYERS = "layers"
    STAGED_DIGESTS = "staged digests"
    PUBLISH = "publish"
    #: pullguard signed the admission (attest:) and stored the signature.
    ATTEST = "attest"
    INTERNAL = "internal"
    REFERRERS = "referrers"
    VULNERABILITIES = "vulnerabilities"
