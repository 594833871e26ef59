"""The console's JSON API and HTML pages on a real aiohttp server (console_app).

Behind it: a real decision log (SQLite), quarantine and pipeline, whose
layers are test_pipeline_faults' healthy fakes, except that the signature
layer finds no signature (as the real one does for an unsigned image), so
that a pull is denied, quarantined and can be released.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, CookieJar
from aiohttp.test_utils import TestServer
from yarl import URL

from pullguard.gateway.auth.tokens import Authorizer, token_sha256
from pullguard.gateway.console import ConsoleContext, console_app
from pullguard.gateway.console.sessions import COOKIE
from pullguard.gateway.pull import Pipeline
from pullguard.services.runtime.config.access import AdminToken
from tests.gateway.test_grpc_api import UnsignedLayers
from tests.gateway.test_pipeline_faults import DIGEST, _pipeline

VIEWER = "pgt_viewer-token"
OPERATOR = "pgt_operator-token"
TOKENS = [
    AdminToken("vera", "viewer", token_sha256(VIEWER)),
    AdminToken("olga", "operator", token_sha256(OPERATOR)),
]
HOSTILE = "<script>alert(1)</script>"


@dataclass
class Console:
    url: str
    http: ClientSession
    pipeline: Pipeline
    denied: str  # the quarantined decision's id

    async def get(self, path: str, token: str | None = None, **kw: Any) -> Any:
        return await self.send("GET", path, token, **kw)

    async def send(self, method: str, path: str, token: str | None = None, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers.update(kw.pop("headers", {}))
        return await self.http.request(
            method, self.url + path, headers=headers, allow_redirects=False, **kw
        )


def _record_hostile(pipeline: Pipeline) -> None:
    """A decision whose names and findings carry markup, as a hostile upstream's would."""
    pipeline.decisions.record(
        {
            "decision_id": "a" * 32,
            "time": "2099-01-01T00:00:00.000+00:00",  # newest, whenever the test runs
            "reference": f"evil/{HOSTILE}:1",
            "repository": f"evil/{HOSTILE}",
            "decision": "DENY",
            "outcome": "denied",
            "denied_by": "format",
            "reason": f"format: {HOSTILE}",
            "policy_version": "p1",
            "layers": [
                {
                    "layer": "format",
                    "step": "layers",
                    "decision": "DENY",
                    "duration_ms": 1.0,
                    "error": "",
                    "findings": [
                        {"code": "format.setuid", "severity": "ERROR", "message": HOSTILE}
                    ],
                }
            ],
        }
    )


async def _console(tmp_path: Path, tokens: list[AdminToken] | None) -> AsyncIterator[Console]:
    pipeline = _pipeline(tmp_path, {})
    pipeline.clients = UnsignedLayers(pipeline.staging, {})
    denied = (await pipeline.pull("lab/app", "v1", admit=True)).report
    assert denied.decision == "DENY" and pipeline.decisions.is_quarantined(denied.decision_id)
    _record_hostile(pipeline)
    context = ConsoleContext(
        registries=(),
        decisions=pipeline.decisions,
        quarantine=pipeline.quarantine,
        pipeline=pipeline,
        authorizer=Authorizer(tokens),
    )
    server = TestServer(console_app(context), host="127.0.0.1")
    await server.start_server()
    try:
        async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as http:
            yield Console(f"http://127.0.0.1:{server.port}", http, pipeline, denied.decision_id)
    finally:
        await server.close()


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[Console]:
    async for served in _console(tmp_path, TOKENS):
        yield served


@pytest.fixture
async def local_console(tmp_path: Path) -> AsyncIterator[Console]:
    async for served in _console(tmp_path, None):
        yield served


# --- the JSON API ---------------------------------------------------------------------


async def test_the_api_asks_for_a_token(console: Console) -> None:
    for token in (None, "pgt_wrong"):
        response = await console.get("/api/v1/decisions", token)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="pullguard"'
        body = await response.json()
        assert body["error"]["code"] == "UNAUTHORIZED" and "token" in body["error"]["message"]


async def test_a_cookie_is_no_token_for_the_api(console: Console) -> None:
    await _log_in(console, OPERATOR)
    response = await console.get("/api/v1/decisions")
    assert response.status == 401


async def test_a_viewer_reads_decisions_reports_and_the_quarantine(console: Console) -> None:
    listed = await (await console.get("/api/v1/decisions?limit=1", VIEWER)).json()
    (newest,) = listed["decisions"]
    assert newest["decision_id"] == "a" * 32 and newest["outcome"] == "denied"
    second = await (await console.get(listed["next"], VIEWER)).json()
    assert [d["decision_id"] for d in second["decisions"]] == [console.denied]
    assert second["next_cursor"] == ""

    denied = await (
        await console.get("/api/v1/decisions?outcome=denied&layer=signature", VIEWER)
    ).json()
    assert [d["decision_id"] for d in denied["decisions"]] == [console.denied]

    report = await (await console.get(f"/api/v1/decisions/{console.denied}", VIEWER)).json()
    assert report["denied_by"] == "signature" and report["layers"]

    entries = (await (await console.get("/api/v1/quarantine", VIEWER)).json())["entries"]
    assert [e["id"] for e in entries] == [console.denied]
    entry = await (await console.get(f"/api/v1/quarantine/{console.denied}", VIEWER)).json()
    assert entry["open"] and entry["report"]["decision"] == "DENY"


async def test_a_viewer_may_not_release_delete_or_reevaluate(console: Console) -> None:
    path = f"/api/v1/quarantine/{console.denied}"
    calls = [
        ("POST", f"{path}/release", {"json": {"reason": "fine"}}),
        ("DELETE", path, {}),
        ("POST", "/api/v1/reevaluations", {"json": {}}),
    ]
    for method, url, kw in calls:
        response = await console.send(method, url, VIEWER, **kw)
        assert response.status == 403, url
        assert "vera is a viewer" in (await response.json())["error"]["message"]
    assert console.pipeline.decisions.is_quarantined(console.denied)


async def test_an_operator_releases_and_the_token_names_the_operator(console: Console) -> None:
    url = f"/api/v1/quarantine/{console.denied}/release"
    no_reason = await console.send("POST", url, OPERATOR, json={"reason": "  "})
    assert no_reason.status == 400 and "reason" in (await no_reason.json())["error"]["message"]
    # A cross-site form cannot send JSON's type, though its text/plain body may look like JSON.
    as_form = await console.send(
        "POST", url, OPERATOR, data='{"reason": "fine"}', headers={"Content-Type": "text/plain"}
    )
    assert as_form.status == 400
    assert "Content-Type: application/json" in (await as_form.json())["error"]["message"]
    assert console.pipeline.decisions.is_quarantined(console.denied)

    response = await console.send(
        "POST", url, OPERATOR, json={"reason": "reviewed", "operator": "mallory"}
    )
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["released"] and body["report"]["release"]["operator"] == "olga"
    assert console.pipeline.admitted.has(DIGEST)
    assert not console.pipeline.decisions.is_quarantined(console.denied)
    entry = await (await console.get(f"/api/v1/quarantine/{console.denied}", VIEWER)).json()
    assert not entry["open"] and entry["released_by"] == body["report"]["decision_id"]
    images = (await (await console.get("/api/v1/admitted", VIEWER)).json())["images"]
    assert [(i["repository"], i["digest"]) for i in images] == [("lab/app", DIGEST)]


async def test_an_operator_deletes_an_entry(console: Console) -> None:
    path = f"/api/v1/quarantine/{console.denied}"
    assert (await console.send("DELETE", path, OPERATOR)).status == 200
    assert not console.pipeline.decisions.is_quarantined(console.denied)
    gone = await console.send("DELETE", path, OPERATOR)
    assert gone.status == 404 and "no quarantine entry" in (await gone.json())["error"]["message"]


async def test_a_reevaluation_run_is_recorded_with_its_operator(console: Console) -> None:
    release = f"/api/v1/quarantine/{console.denied}/release"
    await console.send("POST", release, OPERATOR, json={"reason": "reviewed"})
    run = await (
        await console.send("POST", "/api/v1/reevaluations", OPERATOR, json={"force": True})
    ).json()
    assert run["operator"] == "olga" and [i["digest"] for i in run["images"]] == [DIGEST]
    runs = (await (await console.get("/api/v1/reevaluations", VIEWER)).json())["runs"]
    assert [r["run_id"] for r in runs] == [run["run_id"]]
    shown = await (await console.get(f"/api/v1/reevaluations/{run['run_id']}", VIEWER)).json()
    assert shown["images"][0]["outcome"] in ("current", "readmitted")
    bad = await console.send("POST", "/api/v1/reevaluations", OPERATOR, json={"limit": 0})
    assert bad.status == 400


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/api/v1/decisions?limit=5000", 400, "limit wants 1 to 500"),
        ("/api/v1/decisions?cursor=bogus", 400, "cursor is not one this server gave"),
        ("/api/v1/decisions?outcome=x", 400, "outcome 'x' is not one of"),
        ("/api/v1/decisions/" + "0" * 32, 404, "no decision"),
        ("/api/v1/quarantine/" + "0" * 32, 404, "no quarantine entry"),
        ("/api/v1/nothing", 404, "no such page"),
    ],
)
async def test_api_errors_are_json_that_says_what(
    console: Console, path: str, status: int, message: str
) -> None:
    response = await console.get(path, VIEWER)
    assert response.status == status
    assert message in (await response.json())["error"]["message"]


# --- the HTML console -----------------------------------------------------------------


async def _log_in(console: Console, token: str) -> str:
    """Log in through the form; return the CSRF token of the decisions page."""
    form = await console.get("/login")
    csrf = _csrf(await form.text())
    done = await console.send("POST", "/login", data={"csrf": csrf, "token": token})
    assert done.status == 303 and done.headers["Location"] == "/decisions"
    cookie = done.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and token not in cookie
    return _csrf(await (await console.get(f"/quarantine/{console.denied}")).text())


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


async def test_pages_send_a_stranger_to_the_login_form(console: Console) -> None:
    response = await console.get("/decisions")
    assert response.status == 303 and response.headers["Location"] == "/login"
    form = await console.get("/login")
    wrong = await console.send(
        "POST", "/login", data={"csrf": _csrf(await form.text()), "token": "pgt_wrong"}
    )
    assert wrong.status == 401 and "not valid" in await wrong.text()


async def test_the_login_form_needs_its_csrf_token(console: Console) -> None:
    await console.get("/login")
    response = await console.send("POST", "/login", data={"token": OPERATOR})
    assert response.status == 403


async def test_the_session_id_changes_at_login(console: Console) -> None:
    await console.get("/login")
    before = console.http.cookie_jar.filter_cookies(URL(console.url))[COOKIE].value
    await _log_in(console, VIEWER)
    after = console.http.cookie_jar.filter_cookies(URL(console.url))[COOKIE].value
    assert before != after
    assert console.pipeline is not None


async def test_a_form_without_its_csrf_token_is_refused(console: Console) -> None:
    csrf = await _log_in(console, OPERATOR)
    release = f"/quarantine/{console.denied}/release"
    for fields in ({"reason": "fine"}, {"reason": "fine", "csrf": csrf[:-1] + "x"}):
        response = await console.send("POST", release, data=fields)
        assert response.status == 403 and "CSRF" in await response.text()
    deleted = await console.send("POST", f"/quarantine/{console.denied}/delete", data={})
    assert deleted.status == 403
    assert console.pipeline.decisions.is_quarantined(console.denied)


async def test_a_viewer_sees_no_release_form_and_may_not_post_one(console: Console) -> None:
    csrf = await _log_in(console, VIEWER)
    page = await (await console.get(f"/quarantine/{console.denied}")).text()
    assert 'id="release"' not in page
    response = await console.send(
        "POST", f"/quarantine/{console.denied}/release", data={"csrf": csrf, "reason": "x"}
    )
    assert response.status == 403 and "vera is a viewer" in await response.text()
    assert console.pipeline.decisions.is_quarantined(console.denied)


async def test_an_operator_releases_through_the_form(console: Console) -> None:
    csrf = await _log_in(console, OPERATOR)
    response = await console.send(
        "POST",
        f"/quarantine/{console.denied}/release",
        data={"csrf": csrf, "reason": "reviewed the missing signature"},
    )
    assert response.status == 303, await response.text()
    page = await (await console.get(response.headers["Location"])).text()
    assert 'id="release-operator">olga<' in page
    assert not console.pipeline.decisions.is_quarantined(console.denied)


async def test_hostile_names_and_findings_are_escaped(console: Console) -> None:
    await _log_in(console, VIEWER)
    for path in ("/decisions", "/decisions/" + "a" * 32):
        page = await (await console.get(path)).text()
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page, path
        assert "<script" not in page, path


async def test_every_page_carries_the_security_headers(console: Console) -> None:
    await _log_in(console, VIEWER)
    for path, token in (("/decisions", None), ("/api/v1/decisions", VIEWER), ("/login", None)):
        headers = (await console.get(path, token)).headers
        assert "default-src 'self'" in headers["Content-Security-Policy"], path
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Cache-Control"] == "no-store"
        assert headers["X-Content-Type-Options"] == "nosniff"


async def test_every_page_renders(console: Console) -> None:
    await _log_in(console, OPERATOR)
    for path in ("/", "/decisions?outcome=denied", "/quarantine", "/reevaluations", "/admitted"):
        response = await console.get(path)
        assert response.status in (200, 303), path
    response = await console.get("/decisions?since=yesterday")
    assert response.status == 400 and "ISO 8601" in await response.text()


# --- without admin tokens (loopback only) ---------------------------------------------


async def test_without_tokens_the_local_operator_still_needs_csrf(local_console: Console) -> None:
    page = await local_console.get(f"/quarantine/{local_console.denied}")
    assert page.status == 200
    csrf = _csrf(await page.text())
    release = f"/quarantine/{local_console.denied}/release"
    refused = await local_console.send("POST", release, data={"reason": "fine"})
    assert refused.status == 403
    done = await local_console.send("POST", release, data={"reason": "fine", "csrf": csrf})
    assert done.status == 303
    report = local_console.pipeline.decisions.decision_report(
        done.headers["Location"].rsplit("/", 1)[1]
    )
    assert report is not None
    assert report["release"]["operator"] == "local (unverified: no admin tokens)"


async def test_without_tokens_the_api_is_the_local_operator(local_console: Console) -> None:
    response = await local_console.get("/api/v1/quarantine")
    assert response.status == 200


async def test_without_tokens_only_a_loopback_host_name_is_answered(
    local_console: Console,
) -> None:
    for host in ("pullguard.attacker.example", "attacker.example:8080"):
        response = await local_console.get("/api/v1/decisions", headers={"Host": host})
        assert response.status == 421
        assert "loopback" in json.dumps(await response.json())
    ok = await local_console.get("/api/v1/decisions", headers={"Host": "localhost:1"})
    assert ok.status == 200


def test_a_flood_of_login_forms_does_not_log_an_operator_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pullguard.gateway.auth.tokens import Principal
    from pullguard.gateway.console import sessions as module

    monkeypatch.setattr(module, "MAX_SESSIONS", 5)
    store = module.Sessions()
    operator = store.open(Principal("olga", "operator"))
    for _ in range(50):
        store.open(None)
    assert store.get(operator.session_id) is operator
    assert store.get("nonsense") is None
