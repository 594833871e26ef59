"""Issue 11 (3): the web console in a real browser, over a real stack.

``pullguard up`` with ``console_listen`` and admin tokens, a real registry,
skopeo-built images and cosign keys: one pull is allowed, one is denied
(no signature) and quarantined. Debian's headless ``chromium``, driven over
the DevTools protocol, logs in with the operator's token and clicks through
decisions -> the denial's report -> its quarantine entry -> release with a
reason, then starts a re-evaluation from its page. The release must take
effect: the entry leaves the quarantine and the new decision records the
token's name as the operator. Last, an image with a vulnerable liblzma5
(Debian's own dpkg status) is denied by the vulnerability gate, and its
report shows the advisory, the operating system and the package, with all
packages a link away.

Screenshots of every page are kept in ``tests/artifacts/console/`` (not
committed; the path is printed).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from pullguard.gateway.auth.tokens import entry_line, new_token
from tests.e2e.test_vulnerability_pull import VULNERABLE, base_layer
from tests.support.browser import Page, chromium, chromium_binary
from tests.support.cosign import cosign_binary, generate_key_pair
from tests.support.images import build_image, push, random_layers
from tests.support.osv import osv_folder
from tests.support.registry_process import RegistryProcess
from tests.support.stack import Pullguard, free_port

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "console"
REASON = "vendor image without signatures; reviewed in SEC-4711"
CVE = "CVE-2024-3094"


def _api(console: str, path: str, token: str) -> httpx.Response:
    return httpx.get(
        f"http://{console}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=60
    )


async def _shot(page: Page, name: str) -> None:
    path = await page.screenshot(ARTIFACTS / f"{name}.png")
    print(f"screenshot: {path}")


async def test_login_list_report_quarantine_release_in_chromium(
    upstream: RegistryProcess,
    pullguard_factory: Callable[..., Pullguard],
    tmp_path: Path,
) -> None:
    if chromium_binary() is None:
        pytest.fail("chromium is not installed: run `make system-deps`")
    if cosign_binary() is None:
        pytest.fail("cosign is not installed: run `make system-deps`")
    _, pub = generate_key_pair(tmp_path / "keys")
    operator, viewer = new_token(), new_token()
    admins = tmp_path / "admins.yaml"
    admins.write_text(
        entry_line("alice", "operator", operator) + "\n" + entry_line("view.bot", "viewer", viewer)
    )
    for repository, seed in (("open/app", 51), ("vendor/app", 52)):
        image = build_image(tmp_path / repository, "v1", random_layers(1, 16 * 1024, seed=seed))
        push(image, upstream.address, repository)
    push(
        build_image(tmp_path / "vuln", "v1", [base_layer(VULNERABLE)]), upstream.address, "vuln/app"
    )
    console = f"127.0.0.1:{free_port()}"
    pg = pullguard_factory(
        upstream.url,
        console_listen=console,
        auth={"admin_tokens": str(admins)},
        vulnerabilities={"osv": str(osv_folder(tmp_path / "osv")), "deny": {"ids": [CVE]}},
        policy={
            "rules": [
                {"match": "lab/vuln/**", "signature": "none"},
                {"match": "lab/open/**", "signature": "none", "vulnerabilities": "none"},
                {"match": "lab/**", "signature": {"keys": [str(pub)]}, "vulnerabilities": "none"},
            ]
        },
    )
    assert pg.get("/v2/lab/open/app/manifests/v1").status_code == 200
    denied = pg.get("/v2/lab/vendor/app/manifests/v1")
    assert denied.status_code == 403, denied.text
    entry = str(denied.json()["errors"][0]["detail"]["decision"])

    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    print(f"console screenshots in {ARTIFACTS}")
    (tmp_path / "profile").mkdir()
    async with chromium(tmp_path / "profile") as page:
        await page.goto(f"http://{console}/decisions")
        assert (await page.url()).endswith("/login")  # a stranger is sent to log in
        await page.type_into("#token", operator)
        await _shot(page, "01-login")
        await page.click("#login")

        assert (await page.url()).endswith("/decisions")
        listed = await page.text("#decisions")
        assert "lab/open/app:v1" in listed and "lab/vendor/app:v1" in listed
        assert "alice (operator)" in await page.text("header")
        await _shot(page, "02-decisions")

        await page.click(f'a.decision-link[href="/decisions/{entry}"]')
        report = await page.text()
        assert "signature.missing" in report and "Decision " + entry in report
        await _shot(page, "03-decision-report")

        await page.click("#quarantine-link")
        assert "Open: the image is not served." in await page.text("#entry-status")
        await page.type_into("#reason", REASON)
        await _shot(page, "04-quarantine-entry")
        await page.click("#release")

        # The release's own decision: admitted, by the token's name.
        assert await page.text("#release-operator") == "alice"
        assert REASON in await page.text("#release-info")
        released = (await page.url()).rsplit("/", 1)[1]
        await _shot(page, "05-release-decision")

        for path, name in (
            ("/quarantine", "06-quarantine"),
            (f"/quarantine/{entry}", "07-quarantine-entry-released"),
            ("/admitted", "08-admitted"),
            ("/reevaluations", "09-reevaluations"),
        ):
            await page.goto(f"http://{console}{path}")
            await _shot(page, name)
            if path == f"/quarantine/{entry}":
                assert "Closed: released by decision" in await page.text("#entry-status")
            elif path == "/quarantine":
                assert "The quarantine is empty." in await page.text("#quarantine")

        # A re-evaluation from its page: both admitted images are still admitted.
        await page.click("#reevaluate")
        run = await page.text()
        assert "by alice" in run and run.count("current") == 2, run
        await _shot(page, "10-reevaluation-run")

        # The vulnerability gate's denial: the advisory, the OS and the package.
        vulnerable = pg.get("/v2/lab/vuln/app/manifests/v1")
        assert vulnerable.status_code == 403, vulnerable.text
        denial = str(vulnerable.json()["errors"][0]["detail"]["decision"])
        await page.goto(f"http://{console}/decisions?repository=lab/vuln/app")
        await page.click(f'a.decision-link[href="/decisions/{denial}"]')
        matches = await page.text("#vulnerability-matches")
        assert CVE in matches and "liblzma5" in matches and VULNERABLE in matches, matches
        assert "denied" in matches and "xz-utils" in matches
        assert "Debian GNU/Linux 13 (trixie)" in await page.text("#image-os")
        assert "liblzma5" in await page.text("#packages")
        await _shot(page, "11-vulnerable-decision")
        await page.goto(f"http://{console}/decisions/{denial}/packages?q=lzma")
        listed = await page.text("#packages")
        assert "pkg:deb/debian/liblzma5@" in listed and "libc6" not in listed, listed
        await _shot(page, "12-vulnerable-packages")

    entries = _api(console, "/api/v1/quarantine", viewer).json()["entries"]
    assert [e["reference"] for e in entries] == ["lab/vuln/app:v1"]  # the released one left
    advisories = _api(console, f"/api/v1/decisions/{denial}/vulnerabilities", viewer).json()
    assert [(m["package"], m["verdict"]) for m in advisories["matches"] if CVE in m["aliases"]] == [
        ("xz-utils", "denied")
    ]
    record = _api(console, f"/api/v1/decisions/{released}", viewer).json()
    assert record["decision"] == "ALLOW" and record["admitted"]
    assert record["release"] == {
        "quarantine_id": entry,
        "digest": record["digest"],
        "waivers": ["signature.missing"],
        "reason": REASON,
        "operator": "alice",
    }
    assert pg.get("/v2/lab/vendor/app/manifests/v1").status_code == 200
    assert operator not in pg.log()
