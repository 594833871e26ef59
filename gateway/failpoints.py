"""Failpoints: named places on the admission path where a test can stop the gateway.

Only the environment variable ``PULLGUARD_FAILPOINTS`` enables them, and only
tests set it: ``PULLGUARD_FAILPOINTS=admit.after_blobs:kill`` SIGKILLs the own
process when the admission path reaches ``admit.after_blobs``;
``NAME:enospc`` raises ``OSError(ENOSPC)`` there instead. Several are
separated by commas. Unset, :func:`hit` is two dictionary lookups.

A test in the same process may also run code of its own at a point
(:func:`calling`), such as a garbage collection while a pull is half admitted.

The points, in the order an admission passes them (see ``pull.admission.Admissions.admit``):

- ``admit.after_blobs``: blobs moved into the admitted store, manifest not yet;
- ``admit.after_manifest``: manifest moved too, nothing recorded;
- ``admit.after_commit``: decision row and admission committed in one transaction;
- ``admit.after_audit``: the audit line written and fsynced;
- ``index.before_replace``: ``index.json``'s temporary file written, not yet renamed;
- ``admit.after_index``: ``index.json`` names the image.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from collections.abc import Callable, Iterator

ENV = "PULLGUARD_FAILPOINTS"
POINTS = (
    "admit.after_blobs",
    "admit.after_manifest",
    "admit.after_commit",
    "admit.after_audit",
    "index.before_replace",
    "admit.after_index",
)
ACTIONS = ("kill", "enospc")


def _parse(text: str) -> dict[str, str]:
    armed: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, action = item.partition(":")
        if name not in POINTS or action not in ACTIONS:
            raise ValueError(f"{ENV}: unknown failpoint {item!r}")
        armed[name] = action
    return armed


_armed = _parse(os.environ.get(ENV, ""))
#: In-process callbacks (tests only, see :func:`calling`).
_callbacks: dict[str, Callable[[], None]] = {}


@contextlib.contextmanager
def calling(name: str, callback: Callable[[], None]) -> Iterator[None]:
    """While inside, reaching failpoint ``name`` calls ``callback`` (tests only)."""
    if name not in POINTS:
        raise ValueError(f"unknown failpoint {name!r}")
    _callbacks[name] = callback
    try:
        yield
    finally:
        _callbacks.pop(name, None)


def hit(name: str) -> None:
    """Act on failpoint ``name`` when a test armed it; otherwise do nothing."""
    callback = _callbacks.get(name)
    if callback is not None:
        callback()
    action = _armed.get(name)
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)
