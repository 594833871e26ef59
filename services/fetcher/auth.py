"""Registry authentication: challenge parsing, realm rules, token hygiene.

The Docker/OCI token flow: the registry answers 401 with
``WWW-Authenticate: Bearer realm="...",service="...",scope="..."``; the
client fetches a token from the realm and retries with
``Authorization: Bearer <token>``. The realm is chosen by the registry, so it
is untrusted: configured credentials go to it only when it is the upstream's
own host or one listed in ``realm_hosts``, over https (T-08). Token bodies are
bounded, CR/LF and other non-token characters are refused, and expiry is
clamped.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from pullguard.services.fetcher.urls import is_loopback_host, is_non_global_host, normal_host
from pullguard.services.runtime.config import Upstream
from pullguard.services.runtime.patterns import host_matches

#: Characters of an RFC 7230 token (auth-scheme and parameter names).
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
#: A bearer token: visible ASCII, no spaces or separators that could split a header.
_BEARER_RE = re.compile(r"[\x21-\x7e]{1,8192}")
MAX_PARAMS = 32
DEFAULT_EXPIRY = 60.0
MAX_EXPIRY = 3600.0
MIN_EXPIRY = 1.0
#: Tokens are dropped this long before they expire, so a request does not race the expiry.
EXPIRY_MARGIN = 5.0


class ChallengeError(ValueError):
    """A WWW-Authenticate header that does not parse."""


class TokenError(ValueError):
    """A token response that cannot be used."""


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower case, e.g. "bearer", "basic"
    params: dict[str, str]


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a WWW-Authenticate value into challenges (RFC 7235 grammar).

    Quoted values may contain commas and escaped quotes. A duplicated
    parameter within one challenge is an error, not "last one wins": two
    realms are an ambiguity an attacker could exploit.
    """
    parser = _Parser(header)
    challenges: list[Challenge] = []
    while True:
        parser.skip(" \t,")
        if parser.done():
            return challenges
        scheme = parser.token()
        if not scheme:
            raise ChallengeError(f"expected an auth scheme at offset {parser.pos}")
        params: dict[str, str] = {}
        parser.skip(" \t")
        while not parser.done():
            mark = parser.pos
            name = parser.token()
            parser.skip(" \t")
            if not name or not parser.take("="):
                # Not a parameter: either the next challenge's scheme or a token68.
                parser.pos = mark
                if name and params == {} and parser.token68():
                    parser.skip(" \t")
                    if parser.done() or parser.take(","):
                        break
                    raise ChallengeError("unexpected text after token68")
                parser.pos = mark
                break
            parser.skip(" \t")
            value = parser.quoted() if parser.peek() == '"' else parser.token()
            key = name.lower()
            if key in params:
                raise ChallengeError(f"duplicate parameter {key!r}")
            if len(params) >= MAX_PARAMS:
                raise ChallengeError("too many parameters")
            params[key] = value
            parser.skip(" \t")
            if not parser.take(","):
                break
            parser.skip(" \t")
        challenges.append(Challenge(scheme.lower(), params))


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def done(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def take(self, char: str) -> bool:
        if self.peek() == char:
            self.pos += 1
            return True
        return False

    def skip(self, chars: str) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in chars:
            self.pos += 1

    def token(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _TOKEN_CHARS:
            self.pos += 1
        return self.text[start : self.pos]

    def token68(self) -> bool:
        start = self.pos
        while self.pos < len(self.text) and (
            self.text[self.pos].isalnum() or self.text[self.pos] in "-._~+/"
        ):
            self.pos += 1
        while self.peek() == "=":
            self.pos += 1
        return self.pos > start

    def quoted(self) -> str:
        self.pos += 1  # opening quote
        out: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char == '"':
                return "".join(out)
            if char == "\\":
                if self.pos >= len(self.text):
                    break
                char = self.text[self.pos]
                self.pos += 1
            if ord(char) < 0x20 or ord(char) == 0x7F:
                raise ChallengeError("control character in a quoted value")
            out.append(char)
        raise ChallengeError("unterminated quoted value")


def select_challenge(headers: list[str]) -> Challenge | None:
    """The challenge to answer: Bearer preferred over Basic; None if neither."""
    found: list[Challenge] = []
    for header in headers:
        found.extend(parse_challenges(header))
    for scheme in ("bearer", "basic"):
        for challenge in found:
            if challenge.scheme == scheme:
                return challenge
    return None


def realm_problem(upstream: Upstream, realm: httpx.URL) -> str | None:
    """Why a token realm must not be asked at all, or None.

    Refused: schemes other than http(s), URLs with userinfo, https-to-http
    downgrades, and loopback, private or link-local addresses named by an
    upstream that is not itself on one (SSRF through the realm, T-08).
    """
    if realm.scheme not in ("http", "https") or not realm.host:
        return "not an http(s) URL"
    if realm.userinfo:
        return "carries userinfo"
    if upstream.scheme == "https" and realm.scheme != "https":
        return "is plain http for an https upstream"
    if is_non_global_host(realm.host) and not is_non_global_host(upstream.host):
        return f"is on non-public address {realm.host}"
    return None


def foreign_realm_problem(upstream: Upstream, host: httpx.URL, realm: httpx.URL) -> str | None:
    """Why the realm of a host the upstream redirected to must not be asked, or None.

    Only an anonymous token is ever fetched there; still, the realm must be
    https (plain http only when the upstream, the host and the realm are all
    on loopback, as in a lab), carry no userinfo, and be on that host itself
    or on a ``realm_hosts`` entry of the upstream (T-08).
    """
    if realm.scheme not in ("http", "https") or not realm.host:
        return "not an http(s) URL"
    if realm.userinfo:
        return "carries userinfo"
    if realm.scheme != "https" and not (
        is_loopback_host(realm.host)
        and is_loopback_host(host.host)
        and is_loopback_host(upstream.host)
    ):
        return "is not https"
    if normal_host(realm.host) != normal_host(host.host) and not host_matches(
        realm.host, upstream.realm_hosts
    ):
        return f"is neither on {host.host[:100]} nor a configured realm host"
    if is_non_global_host(realm.host) and not is_non_global_host(upstream.host):
        return f"is on non-public address {realm.host}"
    return None


def credentials_allowed(upstream: Upstream, realm: httpx.URL) -> bool:
    """May the upstream's configured credentials be sent to ``realm``?

    Yes for https realms on the upstream's own host or a ``realm_hosts``
    entry. For a plain-http lab upstream on loopback, only a realm on the same
    host and port (or a ``realm_hosts`` entry ``host:port``) qualifies: another
    port on a shared machine may be anybody's listener.
    """
    if realm.userinfo or not realm.host:
        return False
    if realm.scheme == "https":
        return realm.host == upstream.host or host_matches(realm.host, upstream.realm_hosts)
    if realm.scheme != "http":
        return False
    if upstream.scheme != "http" or not upstream.insecure or not is_loopback_host(upstream.host):
        return False
    if realm.host != upstream.host:
        return False
    port = realm.port or 80
    return port == upstream.port or f"{realm.host}:{port}" in upstream.realm_hosts


def basic_header(username: str, password: str) -> str:
    raw = f"{username}:{password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class Token:
    value: str
    expires_in: float


def parse_token_response(body: bytes) -> Token:
    """Read ``token`` (or ``access_token``) and a clamped ``expires_in``."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise TokenError("token response is not JSON") from None
    if not isinstance(data, dict):
        raise TokenError("token response is not a JSON object")
    value = data.get("token") or data.get("access_token")
    if not isinstance(value, str) or not value:
        raise TokenError("token response has no token")
    if not _BEARER_RE.fullmatch(value):
        raise TokenError("token contains control characters, spaces or is over 8 KiB")
    return Token(value, clamp_expiry(data.get("expires_in")))


def clamp_expiry(value: object) -> float:
    """An ``expires_in`` within [1 s, 1 h]; absent, invalid or non-positive means 60 s."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return DEFAULT_EXPIRY
    if value != value or value <= 0:  # NaN or non-positive
        return DEFAULT_EXPIRY
    return max(MIN_EXPIRY, min(float(value), MAX_EXPIRY))


class TokenCache:
    """Authorization header values per scope, for one upstream, until they expire."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, max_entries: int = 1024
    ) -> None:
        self._clock = clock
        self._max_entries = max_entries
        self._entries: dict[str, tuple[str, float]] = {}

    def get(self, scope: str) -> str | None:
        entry = self._entries.get(scope)
        if entry is None:
            return None
        header, expires = entry
        if self._clock() >= expires:
            del self._entries[scope]
            return None
        return header

    def put(self, scope: str, header: str, expires_in: float) -> None:
        if len(self._entries) >= self._max_entries:
            self._evict()
        lifetime = max(0.0, clamp_expiry(expires_in) - EXPIRY_MARGIN)
        self._entries[scope] = (header, self._clock() + lifetime)

    def drop(self, scope: str) -> None:
        self._entries.pop(scope, None)

    def _evict(self) -> None:
        now = self._clock()
        for scope in [s for s, (_, exp) in self._entries.items() if exp <= now]:
            del self._entries[scope]
        while len(self._entries) >= self._max_entries:
            del self._entries[next(iter(self._entries))]
