"""HMAC-SHA256 signatures of event bodies, and how a receiver checks them.

The MAC covers ``<timestamp>.<body>``: the exact body bytes as sent, after
the decimal Unix time of the attempt and a dot. The time travels in
``X-Pullguard-Timestamp``, the MAC in ``X-Pullguard-Signature:
sha256=<hex>``. A receiver recomputes the MAC with the shared secret over
the header's timestamp and the raw body it read (before parsing any JSON),
compares it in constant time, and refuses a timestamp older than its
tolerance (five minutes here), so that a recorded request cannot be replayed
later; the event ``id`` then lets it drop a retry it has already handled.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Pullguard-Signature"
TIMESTAMP_HEADER = "X-Pullguard-Timestamp"
#: Seconds a receiver accepts between the timestamp and its clock (both ways).
TOLERANCE = 300


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Pullguard-Signature`` value of ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: bytes,
    signature: str,
    timestamp: str,
    body: bytes,
    now: float | None = None,
    tolerance: int = TOLERANCE,
) -> bool:
    """Whether a received event is genuine and fresh: what a receiver runs."""
    if not timestamp.isdigit() or len(timestamp) > 12:
        return False
    sent = int(timestamp)
    if abs((time.time() if now is None else now) - sent) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, sent, body), signature)
