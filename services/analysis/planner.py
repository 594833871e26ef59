"""Request analysis: from a name and reference as the client sent them to a plan.

Order of checks, each of which can only refuse:

1. the name's characters and shape, then the reference (tag or digest), with
   the exact distribution grammar (:mod:`.reference`);
2. the upstream: the first path component when it is a configured alias,
   otherwise the default upstream; a first component that looks like a
   registry host but is not configured is refused rather than guessed at;
3. the repository components against the grammar; Docker Hub's official
   images get ``library/``;
4. deny globs and deny-listed digests;
5. the first rule whose glob matches ``<alias>/<repository>``; no rule, no pull;
6. pins: a pinned rule admits only its pinned tags and digests.

Only when all of that passes is the verdict an ALLOW with a plan. Nothing
here touches the network or the filesystem.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pullguard.services.analysis.reference import (
    INVALID_NAME,
    INVALID_REFERENCE,
    NAME_MAX,
    Reference,
    Rejected,
    check_repository,
    parse_reference,
    shown,
    split_name,
)
from pullguard.services.runtime.config import Config, Rule, Upstream
from pullguard.services.runtime.findings import Finding, Verdict

LAYER = "analysis"

UNKNOWN_UPSTREAM = "analysis.unknown_upstream"
DENIED_REPOSITORY = "analysis.denied_repository"
DENIED_DIGEST = "analysis.denied_digest"
NO_RULE = "analysis.no_rule"
TAG_NOT_PINNED = "analysis.tag_not_pinned"
DIGEST_NOT_PINNED = "analysis.digest_not_pinned"
RULE = "analysis.rule"

#: Canonical host of Docker Hub, whose one-component names are official images.
DOCKER_HUB = "docker.io"
#: Docker's legacy spelling of Docker Hub (containers/image ``legacyDefaultDomain``).
LEGACY_DOCKER_HUB = "index.docker.io"
OFFICIAL_NAMESPACE = "library"


@dataclass(frozen=True)
class UpstreamPlan:
    """Non-secret facts about the upstream; credentials never leave the config."""

    alias: str
    url: str
    insecure: bool
    redirect_hosts: tuple[str, ...]
    canonical_host: str


@dataclass(frozen=True)
class RulePlan:
    """The policy rule that applies, resolved so other layers need not read policy."""

    index: int
    match: str
    signature_mode: str  # "none", "enforce" or "warn", as in the configuration
    keys: tuple[tuple[str, str], ...]  # (file name, PEM text)
    threshold: int
    pinned_digest: str
    foreign_url_hosts: tuple[str, ...]
    layer_media_types: tuple[str, ...]


@dataclass(frozen=True)
class PlanData:
    """What to fetch and under which rule. Exactly one of tag or digest is set,
    unless the plan is for the repository alone (then neither)."""

    upstream_alias: str
    repository: str
    tag: str
    digest: str
    upstream: UpstreamPlan
    rule: RulePlan
    policy_version: str
    client_name: str
    deny_digests: tuple[str, ...]

    @property
    def canonical_name(self) -> str:
        """``<alias>/<repository>``, the form globs, caches and reports use."""
        return f"{self.upstream_alias}/{self.repository}"


class Planner:
    """Turns (name, reference) into a verdict and, when allowed, a plan."""

    def __init__(self, config: Config) -> None:
        self._config = config
        hubs = [u for u in config.upstreams.values() if u.canonical_host == DOCKER_HUB]
        # The legacy spelling maps to Docker Hub only when exactly one upstream
        # is Docker Hub; otherwise it would be a guess.
        self._docker_hub: Upstream | None = hubs[0] if len(hubs) == 1 else None
        self._pinned_digests: Mapping[int, frozenset[str]] = {
            rule.index: frozenset(rule.pins.values()) for rule in config.policy.rules
        }
        self._deny_digests = tuple(sorted(config.policy.deny_digests))

    def plan(
        self, name: str, reference: str, repository_only: bool = False
    ) -> tuple[Verdict, PlanData | None]:
        """Analyse one request. A refusal is a DENY verdict and no plan."""
        try:
            plan = self._plan(name, reference, repository_only)
        except Rejected as rejected:
            return Verdict(LAYER, (rejected.finding,)), None
        rule = plan.rule
        allowed = Finding.info(
            RULE,
            f"rule {rule.index} {rule.match!r} applies to {plan.canonical_name}",
            rule=rule.index,
            match=rule.match,
        )
        return Verdict(LAYER, (allowed,)), plan

    def resolve(self, name: str) -> tuple[Upstream, str]:
        """The upstream and the repository at that upstream for a client name."""
        components = split_name(name)
        upstream, repository_components, first_index = self._upstream_for(name, components)
        check_repository(name, repository_components, first_index)
        if upstream.canonical_host == DOCKER_HUB and len(repository_components) == 1:
            repository_components = (OFFICIAL_NAMESPACE, *repository_components)
        repository = "/".join(repository_components)
        if len(repository) > NAME_MAX:
            raise Rejected(
                Finding.error(
                    INVALID_NAME,
                    f"repository {shown(repository)} at {upstream.alias} is {len(repository)}"
                    f" characters long, expected at most {NAME_MAX}",
                    name=name,
                )
            )
        return upstream, repository

    def _plan(self, name: str, reference: str, repository_only: bool) -> PlanData:
        upstream, repository = self.resolve(name)
        if repository_only:
            if reference:
                raise Rejected(
                    Finding.error(
                        INVALID_REFERENCE,
                        f"reference {shown(reference)} given for a repository-only plan;"
                        " expected none",
                        reference=reference,
                    )
                )
            ref = Reference()
        else:
            ref = parse_reference(reference)
        canonical = f"{upstream.alias}/{repository}"
        for glob, pattern in self._config.policy.deny:
            if pattern.fullmatch(canonical):
                raise Rejected(
                    Finding.error(
                        DENIED_REPOSITORY,
                        f"{canonical} matches deny glob {glob!r}",
                        repository=canonical,
                        glob=glob,
                    )
                )
        if ref.digest and ref.digest in self._config.policy.deny_digests:
            raise Rejected(
                Finding.error(
                    DENIED_DIGEST,
                    f"digest {ref.digest} is in policy.deny_digests",
                    digest=ref.digest,
                )
            )
        rule = self._rule_for(canonical)
        pinned_digest = "" if repository_only else self._check_pins(rule, canonical, ref)
        return PlanData(
            upstream_alias=upstream.alias,
            repository=repository,
            tag=ref.tag,
            digest=ref.digest,
            upstream=UpstreamPlan(
                alias=upstream.alias,
                url=upstream.url,
                insecure=upstream.insecure,
                redirect_hosts=tuple(upstream.redirect_hosts),
                canonical_host=upstream.canonical_host,
            ),
            rule=RulePlan(
                index=rule.index,
                match=rule.match,
                signature_mode=rule.signature.mode,
                keys=tuple(rule.signature.keys),
                threshold=rule.signature.threshold,
                pinned_digest=pinned_digest,
                foreign_url_hosts=tuple(rule.foreign_url_hosts),
                layer_media_types=tuple(rule.layer_media_types),
            ),
            policy_version=self._config.policy_version,
            client_name=name,
            deny_digests=self._deny_digests,
        )

    def _upstream_for(
        self, name: str, components: tuple[str, ...]
    ) -> tuple[Upstream, tuple[str, ...], int]:
        """Split off the alias; returns (upstream, repository components, index of
        the first repository component in the name as sent)."""
        upstreams = self._config.upstreams
        # A one-component name is always a repository, as in docker's grammar.
        if len(components) > 1:
            first = components[0]
            upstream = upstreams.get(first)
            if upstream is not None:
                return upstream, components[1:], 1
            if first == LEGACY_DOCKER_HUB and self._docker_hub is not None:
                return self._docker_hub, components[1:], 1
            if "." in first or ":" in first or first == "localhost":
                # Docker reads such a component as a registry host. Sending it to
                # the default upstream as part of a repository path would make
                # "registry-1.docker.io/library/x" or a punycode look-alike mean
                # something other than what the client asked for (THREATS P-01).
                raise Rejected(
                    Finding.error(
                        UNKNOWN_UPSTREAM,
                        f"name {shown(name)}: path component 0 {first!r} looks like a"
                        " registry host but is not a configured upstream alias; expected"
                        f" one of {', '.join(sorted(upstreams))}",
                        name=name,
                        component=0,
                    )
                )
        return upstreams[self._config.default_upstream], components, 0

    def _rule_for(self, canonical: str) -> Rule:
        for rule in self._config.policy.rules:
            if rule.pattern.fullmatch(canonical):
                return rule
        raise Rejected(
            Finding.error(
                NO_RULE,
                f"no policy rule matches {canonical}; nothing is admitted without a rule",
                repository=canonical,
            )
        )

    def _check_pins(self, rule: Rule, canonical: str, ref: Reference) -> str:
        """The digest the pins require for this request, or "" for an unpinned rule."""
        if not rule.pins:
            return ""
        where = f"rule {rule.index} {rule.match!r}"
        if ref.digest:
            # By-digest pulls may not step around the pins (THREATS P-03 c).
            if ref.digest not in self._pinned_digests[rule.index]:
                raise Rejected(
                    Finding.error(
                        DIGEST_NOT_PINNED,
                        f"{canonical}@{ref.digest}: digest is not one of the"
                        f" {len(rule.pins)} pinned by {where}",
                        digest=ref.digest,
                        rule=rule.index,
                    )
                )
            return ""
        pinned = rule.pins.get(ref.tag)
        if pinned is None:
            raise Rejected(
                Finding.error(
                    TAG_NOT_PINNED,
                    f"{canonical}:{ref.tag}: tag is not pinned by {where}; expected one of"
                    f" its {len(rule.pins)} pinned tags",
                    tag=ref.tag,
                    rule=rule.index,
                )
            )
        return pinned
