"""What one policy rule admits by tag and by digest (THREATS P-03).

A tag pull passes, in this order: ``tags.require_digest`` (no tag pulls at
all), ``tags.deny`` (exact tags refused, e.g. ``latest``), ``tags.allow``
(anchored regular expressions; when given, a tag must match one), and the
pins (a pinned rule admits only its pinned tags, and the plan carries the
digest the tag must resolve to).

A digest pull cannot be checked against tag rules: nothing here knows which
tag, if any, reaches that digest. So ``tags.digest_pulls`` decides:

- ``allow`` (the default): any digest, unless the rule has pins; then only a
  pinned digest, as with ``pinned``;
- ``pinned``: only digests the pins name;
- ``deny``: none.

In every mode a digest listed by an index this repository already admitted
under this policy (``parent_index``, which the gateway looks up) passes: that
is how a client fetches the platform manifest of an admitted multi-arch
image, and it cannot reach content no admitted index names.
"""

from __future__ import annotations

from pullguard.services.analysis.reference import (
    INVALID_REFERENCE,
    TAG_MAX,
    Reference,
    Rejected,
    shown,
)
from pullguard.services.runtime.config import Rule
from pullguard.services.runtime.errors import PullguardError
from pullguard.services.runtime.findings import Finding
from pullguard.services.runtime.patterns import compile_anchored

TAG_DENIED = "analysis.tag_denied"
TAG_NOT_ALLOWED = "analysis.tag_not_allowed"
DIGEST_REQUIRED = "analysis.digest_required"
DIGEST_PULL_DENIED = "analysis.digest_pull_denied"
TAG_NOT_PINNED = "analysis.tag_not_pinned"
DIGEST_NOT_PINNED = "analysis.digest_not_pinned"

DIGEST_PULL_MODES = ("allow", "pinned", "deny")


class RuleReferences:
    """The tag rules, digest-pull mode and pins of one rule, compiled once."""

    def __init__(self, rule: Rule) -> None:
        if rule.tags.digest_pulls not in DIGEST_PULL_MODES:
            # The configuration validates this; an unknown mode reaching here
            # must stop the service rather than be read as "allow".
            raise PullguardError(
                f"rule {rule.index}: tags.digest_pulls {rule.tags.digest_pulls!r} is not one of"
                f" {', '.join(DIGEST_PULL_MODES)}"
            )
        self._rule = rule
        self._where = f"rule {rule.index} {rule.match!r}"
        self._denied_tags = frozenset(rule.tags.deny)
        # Validated as anchored by the configuration; fullmatch is used anyway
        # so that "$" cannot match before a trailing newline.
        self._allowed_tags = tuple(compile_anchored(pattern) for pattern in rule.tags.allow)
        self._pinned_digests = frozenset(rule.pins.values())

    def check(self, canonical: str, ref: Reference, parent_index: str) -> str:
        """Refuse what the rule does not admit; return the digest the pins
        require for a tag pull ("" when the rule is unpinned or for a digest)."""
        if ref.digest:
            self._check_digest(canonical, ref.digest, parent_index)
            return ""
        return self._check_tag(canonical, ref.tag)

    def _reject(self, code: str, message: str, **evidence: object) -> Rejected:
        return Rejected(Finding.error(code, message, rule=self._rule.index, **evidence))

    def _check_tag(self, canonical: str, tag: str) -> str:
        tags = self._rule.tags
        if not tag or len(tag) > TAG_MAX:
            # The grammar has bounded the tag already; a regex never runs on
            # anything longer, whoever builds the Reference.
            raise Rejected(
                Finding.error(
                    INVALID_REFERENCE,
                    f"tag {shown(tag)} is {len(tag)} characters long, expected 1 to {TAG_MAX}",
                    reference=tag,
                )
            )
        if tags.require_digest:
            raise self._reject(
                DIGEST_REQUIRED,
                f"{canonical}:{tag}: got a pull by tag, expected a pull by digest"
                f" ({self._where} has tags.require_digest)",
                tag=tag,
            )
        if tag in self._denied_tags:
            raise self._reject(
                TAG_DENIED,
                f"{canonical}:{tag}: tag {tag!r} is in tags.deny of {self._where}",
                tag=tag,
            )
        if self._allowed_tags and not any(p.fullmatch(tag) for p in self._allowed_tags):
            raise self._reject(
                TAG_NOT_ALLOWED,
                f"{canonical}:{tag}: tag matches none of tags.allow of {self._where};"
                f" expected one of {', '.join(tags.allow)}",
                tag=tag,
            )
        if not self._rule.pins:
            return ""
        pinned = self._rule.pins.get(tag)
        if pinned is None:
            raise self._reject(
                TAG_NOT_PINNED,
                f"{canonical}:{tag}: tag is not pinned by {self._where}; expected one of"
                f" its {len(self._rule.pins)} pinned tags",
                tag=tag,
            )
        return pinned

    def _check_digest(self, canonical: str, digest: str, parent_index: str) -> None:
        if parent_index:
            # The gateway vouches that an index this repository admitted under
            # this policy lists the digest; the index passed these checks.
            return
        mode = self._rule.tags.digest_pulls
        if mode == "deny":
            raise self._reject(
                DIGEST_PULL_DENIED,
                f"{canonical}@{digest}: got a pull by digest, expected a pull by tag"
                f" ({self._where} has tags.digest_pulls: deny)",
                digest=digest,
            )
        if mode == "pinned" or self._rule.pins:
            # A pull by digest may not step around tag rules or pins (P-03 c).
            if digest not in self._pinned_digests:
                raise self._reject(
                    DIGEST_NOT_PINNED,
                    f"{canonical}@{digest}: digest is not one of the"
                    f" {len(self._pinned_digests)} pinned by {self._where}, nor listed by"
                    " an admitted index",
                    digest=digest,
                )
