"""Admin tokens and roles: who may read pullguard's records and who may change them.

``auth.admin_tokens`` names a YAML list of ``{name, role, token_sha256}``;
only the SHA-256 of each token is stored. A caller presents the token as
``Authorization: Bearer <token>`` (an HTTP header, or gRPC metadata
``authorization``). The token is hashed and compared with every entry in
constant time; the :class:`Principal` it names carries the entry's name,
which is what a release records as its operator.

Roles (:data:`ROLE_ACTIONS`):

- ``viewer`` reads: decisions, reports, the quarantine, and ``check`` (which
  admits nothing);
- ``operator`` also admits, releases, deletes quarantine entries and runs
  re-evaluations.

Without ``auth.admin_tokens`` every caller is :data:`LOCAL`, an unverified
operator; :mod:`.exposure` keeps such listeners on loopback.

Servers use one :class:`Authorizer`: :meth:`Authorizer.grpc` in a servicer
method, :meth:`Authorizer.http` in an HTTP handler (its errors carry the
status and, for a 401, the ``WWW-Authenticate`` header: :func:`challenge`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc

from pullguard.services.runtime.config.access import AdminToken
from pullguard.services.runtime.errors import NotPermitted, PullguardError, Unauthenticated

#: What a role may do; every action a server checks is one of these.
READ_ACTIONS = frozenset({"read", "check"})
OPERATOR_ACTIONS = READ_ACTIONS | {"admit", "release", "delete", "reevaluate"}
ROLE_ACTIONS: Mapping[str, frozenset[str]] = {"viewer": READ_ACTIONS, "operator": OPERATOR_ACTIONS}
#: The realm of the Bearer challenge an HTTP 401 carries.
REALM = "pullguard"
#: Longest Authorization value read; a token is 47 characters.
MAX_AUTHORIZATION = 1024
#: How a token made by :func:`new_token` starts (so a leaked one is recognisable).
TOKEN_PREFIX = "pgt_"  # noqa: S105 - a prefix, not a secret


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    #: False for :data:`LOCAL`: no token was asked for, so nobody vouches for the name.
    verified: bool = True

    def may(self, action: str) -> bool:
        return action in ROLE_ACTIONS.get(self.role, frozenset())


#: The caller when no admin tokens are configured (loopback listeners only).
LOCAL = Principal("local", "operator", verified=False)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random token (256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value, or None."""
    if not authorization or len(authorization) > MAX_AUTHORIZATION:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or any(c.isspace() for c in token):
        return None
    return token


class TokenStore:
    """The configured tokens, by hash; a lookup compares with every entry."""

    def __init__(self, tokens: Sequence[AdminToken]) -> None:
        self._entries = [(bytes.fromhex(t.token_sha256), Principal(t.name, t.role)) for t in tokens]

    def authenticate(self, token: str) -> Principal | None:
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        # No early exit: the time taken does not say which entry (if any) matched.
        for stored, principal in self._entries:
            if hmac.compare_digest(digest, stored):
                found = principal
        return found


class Authorizer:
    """Checks a caller's Bearer token and role; ``tokens`` None means no tokens asked."""

    def __init__(self, tokens: Sequence[AdminToken] | None) -> None:
        self.store = TokenStore(tokens) if tokens is not None else None

    @property
    def enabled(self) -> bool:
        return self.store is not None

    def authorize(self, authorization: str | None, action: str) -> Principal:
        """The principal the Authorization value names, allowed to do ``action``.

        Raises :class:`Unauthenticated` (no or unknown token; the message never
        repeats the token) or :class:`NotPermitted` (the role may not).
        """
        if action not in OPERATOR_ACTIONS:
            raise PullguardError(f"unknown action {action!r}")
        if self.store is None:
            return LOCAL
        token = bearer_token(authorization)
        if token is None:
            raise Unauthenticated("an admin token is required (Authorization: Bearer <token>)")
        principal = self.store.authenticate(token)
        if principal is None:
            raise Unauthenticated("the admin token is not valid")
        if not principal.may(action):
            raise NotPermitted(f"{principal.name} is a {principal.role} and may not {action}")
        return principal

    def grpc(self, context: grpc.aio.ServicerContext, action: str) -> Principal:
        """:meth:`authorize` with the call's ``authorization`` metadata."""
        values = [
            value
            for key, value in (context.invocation_metadata() or ())
            if key == "authorization" and isinstance(value, str)
        ]
        return self.authorize(values[0] if len(values) == 1 else None, action)

    def http(self, headers: Mapping[str, str], action: str) -> Principal:
        """:meth:`authorize` with a request's ``Authorization`` header; see :func:`challenge`."""
        return self.authorize(headers.get("Authorization"), action)


def challenge(error: PullguardError) -> dict[str, str]:
    """The headers an HTTP answer to ``error`` carries: a Bearer challenge for a 401."""
    if isinstance(error, Unauthenticated):
        return {"WWW-Authenticate": f'Bearer realm="{REALM}"'}
    return {}


def entry_line(name: str, role: str, token: str) -> str:
    """The admins.yaml list item for ``token`` (which itself is not written)."""
    return f"- {{name: {name}, role: {role}, token_sha256: {token_sha256(token)}}}"


__all__ = [
    "LOCAL",
    "NotPermitted",
    "OPERATOR_ACTIONS",
    "READ_ACTIONS",
    "ROLE_ACTIONS",
    "Authorizer",
    "Principal",
    "TokenStore",
    "Unauthenticated",
    "bearer_token",
    "challenge",
    "entry_line",
    "new_token",
    "token_sha256",
]
