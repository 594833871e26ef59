"""Request analysis: from a name and reference as the client sent them to a plan.

Order of checks, each of which can only refuse:

1. the name's characters and shape, then the reference (tag or digest), with
   the exact distribution grammar (:mod:`.reference`), and the parent index
   the gateway may name for a pull by digest;
2. the upstream: the first path component when it is a configured alias,
   otherwise the default upstream; a first component that looks like a
   registry host but is not configured is refused rather than guessed at;
3. the repository components against the grammar; Docker Hub's official
   images get ``library/``;
4. deny globs, and the deny database (inline digests and the deny file) for
   the digest asked for and its parent index;
5. the first rule whose glob matches ``<alias>/<repository>``; no rule, no pull;
6. the rule's tag rules, digest-pull mode and pins (:mod:`.tagpolicy`).

Only when all of that passes is the verdict an ALLOW with a plan. Nothing
here touches the network; the only file read is the deny database.
"""

from __future__ import annotations

from dataclasses import dataclass

from pullguard.services.analysis.reference import (
    INVALID_NAME,
    INVALID_PARENT_INDEX,
    INVALID_REFERENCE,
    NAME_MAX,
    Reference,
    Rejected,
    check_repository,
    parse_parent_index,
    parse_reference,
    shown,
    split_name,
)
from pullguard.services.analysis.tagpolicy import RuleReferences
from pullguard.services.runtime.config import Config, Rule, Upstream
from pullguard.services.runtime.denylist import DenyList
from pullguard.services.runtime.findings import Finding, Verdict

LAYER = "analysis"

UNKNOWN_UPSTREAM = "analysis.unknown_upstream"
DENIED_REPOSITORY = "analysis.denied_repository"
DENIED_DIGEST = "analysis.denied_digest"
NO_RULE = "analysis.no_rule"
RULE = "analysis.rule"
PARENT_INDEX = "analysis.parent_index"

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
    realm_hosts: tuple[str, ...] = ()
    #: SHA-256 of the SubjectPublicKeyInfo the upstream must present, hex.
    tls_spki_sha256: tuple[str, ...] = ()
    #: Whether a CA bundle replaces the system trust store (its path stays here).
    tls_custom_ca: bool = False


@dataclass(frozen=True)
class PlanData:
    """What to fetch and under which rule. Exactly one of tag or digest is set,
    unless the plan is for the repository alone (then neither)."""

    upstream_alias: str
    repository: str
    tag: str
    digest: str
    upstream: UpstreamPlan
    #: The policy rule that applies, with the digest its pins require for the tag.
    rule: Rule
    policy_version: str
    client_name: str
    #: The inline ``policy.deny_digests`` only: the deny file may be huge, and
    #: hashverify reads it itself.
    deny_digests: tuple[str, ...]
    #: An admitted index of this repository that lists ``digest``, or "".
    parent_index: str = ""
    #: Most signatures and attestations examined per image, and bytes of each.
    max_signatures: int = 0
    max_signature_bytes: int = 0

    @property
    def canonical_name(self) -> str:
        """``<alias>/<repository>``, the form globs, caches and reports use."""
        return f"{self.upstream_alias}/{self.repository}"


class Planner:
    """Turns (name, reference) into a verdict and, when allowed, a plan.

    Safe to call from several threads: the only mutable state is the deny
    database, which locks itself.
    """

    def __init__(self, config: Config) -> None:
        self._config = config
        hubs = [u for u in config.upstreams.values() if u.canonical_host == DOCKER_HUB]
        # The legacy spelling maps to Docker Hub only when exactly one upstream
        # is Docker Hub; otherwise it would be a guess.
        self._docker_hub: Upstream | None = hubs[0] if len(hubs) == 1 else None
        self._references = {rule.index: RuleReferences(rule) for rule in config.policy.rules}
        self._deny_digests = tuple(sorted(config.policy.deny_digests))
        self._deny_list = DenyList(config.policy.deny_digests, config.policy.deny_digests_file)

    def plan(
        self,
        name: str,
        reference: str,
        repository_only: bool = False,
        parent_index: str = "",
    ) -> tuple[Verdict, PlanData | None]:
        """Analyse one request. A refusal is a DENY verdict and no plan.

        Raises :class:`~pullguard.services.runtime.denylist.DenyListError`
        when the deny database cannot be read: the check cannot run.
        """
        try:
            plan = self._plan(name, reference, repository_only, parent_index)
        except Rejected as rejected:
            return Verdict(LAYER, (rejected.finding,)), None
        rule = plan.rule
        findings = [
            Finding.info(
                RULE,
                f"rule {rule.index} {rule.match!r} applies to {plan.canonical_name}",
                rule=rule.index,
                match=rule.match,
            )
        ]
        if plan.parent_index:
            findings.append(
                Finding.info(
                    PARENT_INDEX,
                    f"{plan.canonical_name}@{plan.digest} is listed by admitted index"
                    f" {plan.parent_index}",
                    parent_index=plan.parent_index,
                )
            )
        return Verdict(LAYER, tuple(findings)), plan

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

    def _parse(self, reference: str, repository_only: bool, parent_index: str) -> Reference:
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
        if parent_index and not ref.digest:
            raise Rejected(
                Finding.error(
                    INVALID_PARENT_INDEX,
                    f"parent index {shown(parent_index)} given for a pull by"
                    f" {'tag' if ref.tag else 'repository'}; expected one only for a pull by"
                    " digest",
                    parent_index=parent_index,
                )
            )
        if parent_index:
            parse_parent_index(parent_index, ref.digest)
        return ref

    def _check_deny_database(self, canonical: str, ref: Reference, parent_index: str) -> None:
        # A deny-listed index no longer vouches for the manifests it lists.
        for what, digest in (("digest", ref.digest), ("parent index", parent_index)):
            if digest and digest in self._deny_list:
                raise Rejected(
                    Finding.error(
                        DENIED_DIGEST,
                        f"{canonical}: {what} {digest} is in the deny database",
                        digest=digest,
                    )
                )

    def _plan(
        self, name: str, reference: str, repository_only: bool, parent_index: str
    ) -> PlanData:
        upstream, repository = self.resolve(name)
        ref = self._parse(reference, repository_only, parent_index)
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
        self._check_deny_database(canonical, ref, parent_index)
        rule = self._rule_for(canonical)
        pinned_digest = ""
        if not repository_only:
            pinned_digest = self._references[rule.index].check(canonical, ref, parent_index)
        limits = self._config.limits
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
                realm_hosts=tuple(upstream.realm_hosts),
                tls_spki_sha256=tuple(upstream.tls.spki_sha256),
                tls_custom_ca=bool(upstream.tls.ca_file),
            ),
            rule=rule.pinned(pinned_digest),
            policy_version=self._config.policy_version,
            client_name=name,
            deny_digests=self._deny_digests,
            parent_index=parent_index,
            max_signatures=limits.signatures,
            max_signature_bytes=limits.signature_bytes,
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
