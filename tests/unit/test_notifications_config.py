"""``notifications:`` in the configuration, the event bodies and their HMAC signature."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from pullguard.gateway.notify.events import DecisionFacts, decision_events, finding_codes
from pullguard.gateway.notify.sender import MAX_BACKOFF, backoff
from pullguard.gateway.notify.signing import sign, verify
from pullguard.services.runtime.errors import ConfigError
from tests.support.configs import make_config

SECRET = "0123456789abcdef-shared"


def _error(tmp_path: Path, *entries: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        make_config(tmp_path, notifications=list(entries))
    return caught.value.message


def test_a_subscription_reads_its_secret_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "hook.secret").write_text(SECRET + "\n")
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    config = make_config(
        tmp_path,
        notifications=[
            {
                "url": "https://hooks.example.com/a",
                "events": ["deny"],
                "secret_file": "hook.secret",
            },
            {"url": "http://127.0.0.1:8080/b?token=x", "secret_env": "HOOK_SECRET", "timeout": 3},
            {"url": "https://hooks.example.com/c"},
        ],
    )
    first, second, third = config.notifications
    assert first.events == {"deny"} and first.secret == SECRET.encode()
    assert second.secret == SECRET.encode() and second.timeout == 3.0
    assert second.events == {"deny", "quarantine", "release", "revoke", "moved_tag"}
    assert third.secret is None
    # The secret never shows, nor a URL's query in logs.
    assert SECRET not in repr(config.notifications)
    assert second.shown == "http://127.0.0.1:8080/b"


@pytest.mark.parametrize(
    ("entry", "key", "problem"),
    [
        ({"url": "ftp://h/x"}, "notifications[0].url", "must be an http:// or https:// URL"),
        ({"url": "file:///etc/passwd"}, "notifications[0].url", "must be an http://"),
        ({"url": "https://u:p@h/x"}, "notifications[0].url", "must not carry credentials"),
        ({"url": "https:///x"}, "notifications[0].url", "has no host"),
        ({"url": "https://h:port/x"}, "notifications[0].url", "is not a valid URL"),
        ({"url": "https://h/x", "secret": SECRET}, "notifications[0].secret", "secret_file"),
        ({"url": "https://h/x", "events": ["pull"]}, "notifications[0].events[0]", "'pull'"),
        ({"url": "https://h/x", "events": []}, "notifications[0].events", "lists no event"),
        ({"url": "https://h/x", "hdrs": 1}, "notifications[0].hdrs", "unknown key"),
        ({"url": "https://h/x", "secret_env": "NO_SUCH_VAR_X"}, ".secret_env", "not set"),
        ({"url": "https://h/x", "secret_file": "missing"}, ".secret_file", "cannot read"),
        ({"url": "https://h/x", "max_attempts": 0}, ".max_attempts", ">= 1"),
        ({"url": "https://h/x", "timeout": 0}, ".timeout", ">= 0.1"),
    ],
)
def test_a_bad_subscription_names_its_key(
    tmp_path: Path, entry: dict[str, Any], key: str, problem: str
) -> None:
    message = _error(tmp_path, entry)
    assert key in message and problem in message, message


def test_a_short_secret_and_a_list_that_is_not_one_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHORT", "abc")
    assert "shorter than 16 bytes" in _error(tmp_path, {"url": "https://h/", "secret_env": "SHORT"})
    with pytest.raises(ConfigError, match="notifications: must be a list"):
        make_config(tmp_path, notifications={"url": "https://h/"})


def test_a_receiver_verifies_the_signature_and_refuses_a_changed_or_old_body() -> None:
    body = b'{"event":"deny","id":"1"}'
    now = int(time.time())
    signature = sign(SECRET.encode(), now, body)
    assert verify(SECRET.encode(), signature, str(now), body)
    assert not verify(SECRET.encode(), signature, str(now), body + b" ")
    assert not verify(b"another-secret-of-length", signature, str(now), body)
    # The timestamp is under the MAC, and an old one is refused: no replay.
    assert not verify(SECRET.encode(), signature, str(now - 1), body)
    old = now - 3600
    assert not verify(SECRET.encode(), sign(SECRET.encode(), old, body), str(old), body)
    assert not verify(SECRET.encode(), signature, "not-a-number", body)


def _report(**extra: Any) -> dict[str, Any]:
    return {
        "decision_id": "d1",
        "reference": "lab/app:v1",
        "repository": "lab/app",
        "digest": "sha256:" + "a" * 64,
        "decision": "DENY",
        "outcome": "denied",
        "denied_by": "signature",
        "reason": "no signature",
        "layers": [
            {"layer": "format", "decision": "ALLOW", "findings": [{"code": "format.x"}]},
            {
                "layer": "signature",
                "decision": "DENY",
                "error": "",
                "findings": [
                    {"code": "signature.missing", "severity": "ERROR"},
                    {"code": "signature.note", "severity": "INFO"},
                ],
            },
        ],
        **extra,
    }


def test_a_decision_gives_the_events_its_verdict_names() -> None:
    kinds = [e.kind for e in decision_events(_report(), DecisionFacts(quarantined=True), "r")]
    assert kinds == ["deny", "quarantine"]
    allowed = _report(decision="ALLOW", outcome="allowed", admitted=True)
    assert decision_events(allowed, DecisionFacts(), "r") == []
    released = {**allowed, "release": {"operator": "alice", "reason": "ok"}}
    (event,) = decision_events(released, DecisionFacts(), "r")
    body = json.loads(event.body)
    assert (event.kind, body["operator"], body["release_reason"]) == ("release", "alice", "ok")
    outage = _report(decision="OUTAGE")
    assert decision_events(outage, DecisionFacts(previous_digest="sha256:" + "b" * 64), "r") == []
    assert finding_codes(_report()) == ["signature.missing"]


def test_backoff_doubles_with_jitter_and_stops_at_its_ceiling() -> None:
    for attempt in range(1, 8):
        delay = backoff(1.0, attempt)
        assert 2 ** (attempt - 1) * 0.5 <= delay <= 2 ** (attempt - 1)
    assert backoff(1.0, 1000) <= MAX_BACKOFF


def test_the_readme_verification_example_accepts_a_signed_event_and_no_other() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    code = readme.split("```python\nimport hashlib, hmac, time\n", 1)[1].split("```", 1)[0]
    scope: dict[str, Any] = {}
    exec("import hashlib, hmac, time\n" + code, scope)  # noqa: S102 - the README's own example
    body = b'{"event":"deny"}'
    now = str(int(time.time()))
    headers = {
        "X-Pullguard-Timestamp": now,
        "X-Pullguard-Signature": sign(b"k" * 16, int(now), body),
    }
    assert scope["genuine"](b"k" * 16, headers, body)
    assert not scope["genuine"](b"k" * 16, headers, body + b"x")
