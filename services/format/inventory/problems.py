"""The inventory's finding codes and its one exception.

- ``format.inventory_limit`` (WARNING): a bound of :mod:`limits` was hit; the
  layer's inventory is incomplete.
- ``format.inventory_malformed`` (WARNING): a database lies about itself
  (bad stanza, oversized field, binary garbage, offsets out of range).
- ``format.inventory_unsupported`` (INFO): a database in a format not read
  (rpm's Berkeley DB and ndb, Go build info before Go 1.18).

All three also go into ``LayerInventory.incomplete`` so that a merged
inventory can say it may miss packages; none of them refuses the layer:
the vulnerability gate decides what an incomplete inventory means.
"""

from __future__ import annotations

LIMIT = "format.inventory_limit"
MALFORMED = "format.inventory_malformed"
UNSUPPORTED = "format.inventory_unsupported"


class InventoryProblem(Exception):
    """A database could not be read (fully); ``code`` is one of the above."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def malformed(message: str) -> InventoryProblem:
    return InventoryProblem(MALFORMED, message)


def text(raw: bytes | str, what: str, limit: int) -> str:
    """A field as valid UTF-8 (undecodable bytes replaced, so it always
    serialises), stripped; :class:`InventoryProblem` when longer than ``limit``
    or holding control characters."""
    value = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace").strip()
    if len(value) > limit:
        raise malformed(f"{what} of {len(value)} characters, limit {limit}")
    if any(ch < " " or ch == "\x7f" for ch in value):
        raise malformed(f"{what} holds control characters")
    return value
