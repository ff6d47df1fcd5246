"""Signing in to the console at ``/console``, against a real gateway on 127.0.0.1: the form,
the cookie and its flags, what the cookie opens (the console's API only), the same-origin
rule for every ``POST``, and the page and its files.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import httpx2

from tests.gateway.console_client import KEY, bearer, session_path, signed_in
from tests.secrets import GATEWAY_TOKEN as TOKEN
from tests.support import running_gateway
from turngate.gateway.console.page import static_files
from turngate.gateway.console.routes import console_routes

STATIC = Path(__file__).parents[2] / "src/turngate/gateway/console/static"


def test_the_console_shows_the_sign_in_form_until_the_browser_is_signed_in(
    tmp_path: Path,
) -> None:
    with running_gateway(tmp_path, token=TOKEN) as url, httpx2.Client(base_url=url) as http:
        before = http.get("/console")
        slash = http.get("/console/")
        refused = http.post("/console/login", json={"token": TOKEN})
        http.headers["Origin"] = url
        signed = http.post("/console/login", json={"token": TOKEN})
        after = http.get("/console")
    assert before.status_code == 200
    assert 'data-testid="signin-form"' in before.text
    assert 'data-testid="sessions' not in before.text
    assert (slash.status_code, slash.headers["location"]) == (307, f"{url}/console")
    assert refused.status_code == 403  # no Origin: not from the console's page
    assert signed.json() == {"ok": True, "tokenRequired": True}
    assert 'data-testid="signin-form"' not in after.text
    assert 'src="/console/static/console.js"' in after.text


def test_sign_in_with_a_wrong_token_is_refused_and_sets_no_cookie(tmp_path: Path) -> None:
    with (
        running_gateway(tmp_path, token=TOKEN) as url,
        httpx2.Client(base_url=url, headers={"Origin": url}) as http,
    ):
        wrong = http.post("/console/login", json={"token": TOKEN + "x"})
        api = http.get("/console/api/sessions")
        missing = http.post("/console/login", json={})
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (401, "unauthorized")
    assert "not this gateway's token" in wrong.json()["error"]["message"]
    assert "set-cookie" not in wrong.headers
    assert api.status_code == 401
    assert (missing.status_code, missing.json()["error"]["code"]) == (422, "missing_field")


def test_sign_in_sets_an_httponly_strict_console_cookie_that_is_not_the_token(
    tmp_path: Path,
) -> None:
    with (
        running_gateway(tmp_path, token=TOKEN) as url,
        httpx2.Client(base_url=url, headers={"Origin": url}) as http,
    ):
        answer = http.post("/console/login", json={"token": TOKEN})
        api = http.get("/console/api/sessions")
        out = http.post("/console/logout")
        after = http.get("/console/api/sessions")
    cookie = answer.headers["set-cookie"]
    name, _, value = cookie.split(";")[0].partition("=")
    flags = {flag.strip() for flag in cookie.split(";")[1:]}
    assert name == "turngate_console"
    assert flags == {"Path=/console", "HttpOnly", "SameSite=Strict"}
    assert re.fullmatch(r"[0-9a-f]{64}", value)
    assert TOKEN not in cookie
    assert answer.headers["cache-control"] == "no-store"
    assert api.status_code == 200
    assert out.headers["set-cookie"].startswith("turngate_console=;")
    assert "Max-Age=0" in out.headers["set-cookie"]
    assert after.status_code == 401


def test_the_console_api_needs_the_cookie_or_the_bearer_token(tmp_path: Path) -> None:
    paths = [
        "/console/api/gateway",
        "/console/api/sessions",
        session_path(KEY),
        "/console/api/lanes",
        "/console/api/connections",
        "/console/api/events",
    ]
    with running_gateway(tmp_path, token=TOKEN) as url, httpx2.Client(base_url=url) as anonymous:
        refused = {path: anonymous.get(path) for path in paths}
        forged = anonymous.get(paths[1], headers={"Cookie": "turngate_console=" + "0" * 64})
        with bearer(url) as http:
            allowed = {path: http.get(path).status_code for path in paths[:-1]}
        with signed_in(url) as http:
            elsewhere = http.get("/health", headers={"Cookie": _cookie_header(http)})
    for path, answer in refused.items():
        assert (answer.status_code, answer.json()["error"]["code"]) == (401, "unauthorized"), path
        assert "sign in at /console" in answer.json()["error"]["message"]
    assert forged.status_code == 401
    assert allowed == dict.fromkeys(paths[:-1], 200)
    # The cookie opens the console only: the rest of the API still wants the bearer token.
    assert elsewhere.status_code == 401


def _cookie_header(http: httpx2.Client) -> str:
    return "; ".join(f"{name}={value}" for name, value in http.cookies.items())


def test_a_gateway_without_a_token_opens_the_console_to_everyone(tmp_path: Path) -> None:
    with running_gateway(tmp_path) as url, httpx2.Client(base_url=url) as http:
        page = http.get("/console")
        api = http.get("/console/api/gateway")
        login = http.post("/console/login", json={"token": "anything"}, headers={"Origin": url})
    assert 'src="/console/static/console.js"' in page.text
    assert api.json()["auth"] == "open"
    assert login.json() == {"ok": True, "tokenRequired": False}
    assert "set-cookie" not in login.headers


# -- the same-origin rule --------------------------------------------------------------------


def post_paths() -> list[str]:
    """Every console route that changes something, with its parameters filled in."""
    fill = {"{key:str}": quote(KEY, safe=""), "{job:str}": "digest"}
    paths = []
    for route in console_routes():
        if "POST" in (route.methods or ()):
            path = route.path
            for parameter, value in fill.items():
                path = path.replace(parameter, value)
            paths.append(path)
    return paths


def test_no_console_post_is_answered_for_another_origin(tmp_path: Path) -> None:
    foreign = [
        {"Origin": "http://evil.example"},
        {"Origin": "http://127.0.0.1:1"},  # another port of the same host: another origin
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {},
    ]
    with running_gateway(tmp_path, token=TOKEN) as url, signed_in(url) as http:
        del http.headers["Origin"]
        answers = {
            (path, tuple(headers.items())): http.post(path, json={}, headers=headers)
            for path in post_paths()
            for headers in foreign
        }
        same_site = http.post("/console/logout", headers={"Sec-Fetch-Site": "same-origin"})
    assert len(post_paths()) == 6
    for where, answer in answers.items():
        assert answer.status_code == 403, (where, answer.text)
        error = answer.json()["error"]
        assert error["code"] == "forbidden"
        assert "must come from the console's own page" in error["message"]
    assert same_site.status_code == 200


# -- the page and its files ------------------------------------------------------------------


def imported_modules(name: str, seen: set[str]) -> set[str]:
    """``name`` and every module it imports, transitively (the page's whole script)."""
    seen.add(name)
    text = (STATIC / name).read_text(encoding="utf-8")
    for module in re.findall(r"from '\./([\w.-]+\.js)'", text):
        if module not in seen:
            imported_modules(module, seen)
    return seen


def test_the_page_and_every_file_it_loads_are_served_under_a_strict_policy(
    tmp_path: Path,
) -> None:
    modules = imported_modules("console.js", set()) | imported_modules("signin.js", set())
    files = sorted(modules | {"console.css", "icon.svg"})
    with running_gateway(tmp_path, token=TOKEN) as url, signed_in(url) as http:
        page = http.get("/console")
        served = {name: http.get(f"/console/static/{name}") for name in files}
        again = http.get("/console/static/console.css", headers={"If-None-Match": '"x"'})
        etag = again.headers["etag"]
        cached = http.get("/console/static/console.css", headers={"If-None-Match": etag})
        unknown = http.get("/console/static/nope.js")
        page_as_file = http.get("/console/static/index.html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self'" in policy
    assert "connect-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    for name, answer in served.items():
        assert answer.status_code == 200, name
        assert answer.headers["content-security-policy"] == policy
    assert served["console.js"].headers["content-type"].startswith("text/javascript")
    assert cached.status_code == 304
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "not_found")
    assert page_as_file.status_code == 404
    assert set(static_files()) == {p.name for p in STATIC.iterdir()}


def test_the_page_fetches_nothing_from_anywhere_but_its_gateway() -> None:
    for path in STATIC.iterdir():
        if path.suffix in (".html", ".js", ".css"):
            text = path.read_text(encoding="utf-8")
            assert not re.search(r"https?://|//cdn|@import", text), path.name


def test_the_page_keeps_the_hooks_the_browser_tests_drive() -> None:
    text = "\n".join(p.read_text(encoding="utf-8") for p in STATIC.iterdir() if p.suffix != ".svg")
    hooks = [
        "signin-form",
        "signin-token",
        "signin-submit",
        "signin-error",
        "sessions-table",
        "session-row",
        "data-session-key",
        "session-page",
        "turn-row",
        "data-turn-state",
        "transcript-entry",
        "abort-button",
        "unstick-button",
        "confirm-ok",
        "chat-input",
        "chat-send",
        "chat-reply",
        "cron-run",
        "live-status",
    ]
    assert [hook for hook in hooks if hook not in text] == []
