#!/usr/bin/env python3
"""Conformance suite: the official, unchanged AgentSecrets Python SDK (agentsecrets==3.0.0
from PyPI) driving this repository's `agentsecrets` binary.

Run it with the SDK installed and the binary under test first on PATH (scripts/test does
both). Plain Python, no test framework: every `test_*` function runs in a fresh home
(`AGENTSECRETS_HOME`), with `AGENTSECRETS_KEYCHAIN=off` and `AGENTSECRETS_ALLOW_LOCAL_HTTP=1`
set in os.environ before the SDK spawns the binary (the SDK passes its environment on),
against a loopback echo server that records what it receives.

    python tests/sdk-conformance/run.py [-k SUBSTRING] [-v]

The last line is `N passed, N failed`; the exit status is 1 when anything failed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import agentsecrets
import agentsecrets.call as sdk_call
from agentsecrets import (
    AgentSecrets,
    CLIError,
    DomainNotAllowed,
    SecretNotFound,
    UpstreamError,
)
from agentsecrets import agent as sdk_agent

MARKER = "[REDACTED_BY_AGENTSECRETS]"
VERBOSE = False


# ---------------------------------------------------------------------------
# Loopback echo upstream
# ---------------------------------------------------------------------------


class Echo:
    """An HTTP server on 127.0.0.1 that records every request and answers with a JSON
    echo of its method, path, query, headers and body."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        echo = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                parsed = urllib.parse.urlsplit(self.path)
                record = {
                    "method": self.command,
                    "path": parsed.path,
                    "raw_query": parsed.query,
                    "query": urllib.parse.parse_qs(parsed.query, keep_blank_values=True),
                    "headers": {k: v for k, v in self.headers.items()},
                    "body": raw.decode("utf-8", errors="replace"),
                }
                echo.requests.append(record)
                status = 200
                if parsed.path.startswith("/status/"):
                    status = int(parsed.path.rsplit("/", 1)[1])
                out = json.dumps(record).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Echo-Authorization", self.headers.get("Authorization", ""))
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, *args: object) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def last(self) -> dict:
        assert self.requests, "the upstream received no request"
        return self.requests[-1]

    def header(self, name: str) -> str | None:
        """A header of the last request, by case-insensitive name."""
        for key, value in self.last()["headers"].items():
            if key.lower() == name.lower():
                return value
        return None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------
# Per-test environment
# ---------------------------------------------------------------------------

CLEARED_ENV = [
    "AGENTSECRETS_PORT",
    "AGENTSECRETS_TOKEN",
    "AGENTSECRETS_AGENT_ID",
    "AS_AGENT_TOKEN",
    "AGENTSECRETS_PASSPHRASE",
    "AGENTSECRETS_PROXY_DETACH",
    "AGENTSECRETS_ENV",
    "AS_ENV",
]


class Ctx:
    """What a test gets: a client, the echo upstream, the home, and a CLI helper."""

    def __init__(self, home: str, echo: Echo) -> None:
        self.home = home
        self.echo = echo
        self.client = AgentSecrets(auto_start=False)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Runs the binary directly (as the SDK does: captured, text, no stdin change)."""
        result = subprocess.run(
            [shutil.which("agentsecrets") or "agentsecrets", *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"agentsecrets {' '.join(args)} exited {result.returncode}: {result.stderr}"
            )
        return result

    def allow_loopback(self) -> None:
        self.client.allowlist.add("127.0.0.1")


@contextlib.contextmanager
def fresh_env():
    saved_env = dict(os.environ)
    saved_cwd = os.getcwd()
    root = tempfile.mkdtemp(prefix="as-sdk-conf-")
    home = os.path.join(root, "home")
    work = os.path.join(root, "work")
    os.makedirs(work)
    for name in CLEARED_ENV:
        os.environ.pop(name, None)
    os.environ["AGENTSECRETS_HOME"] = home
    os.environ["AGENTSECRETS_KEYCHAIN"] = "off"
    os.environ["AGENTSECRETS_ALLOW_LOCAL_HTTP"] = "1"
    os.chdir(work)
    echo = Echo()
    try:
        yield Ctx(home, echo)
    finally:
        echo.close()
        if os.path.exists(os.path.join(home, "session.json")):
            subprocess.run(
                [shutil.which("agentsecrets") or "agentsecrets", "proxy", "stop"],
                capture_output=True,
                timeout=30,
            )
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        shutil.rmtree(root, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raises(exc_type, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except exc_type as exc:
        return exc
    except Exception as exc:  # noqa: BLE001
        raise AssertionError(
            f"expected {exc_type.__name__}, got {type(exc).__name__}: {exc}"
        ) from exc
    raise AssertionError(f"expected {exc_type.__name__}, nothing was raised")


def eq(actual, expected, what: str = "") -> None:
    if actual != expected:
        raise AssertionError(f"{what}: expected {expected!r}, got {actual!r}")


def check(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(what)


def never_shows(resp, *values: str) -> None:
    """No injected value appears in the response the SDK hands to the agent."""
    seen = resp.body.decode("utf-8", errors="replace") + json.dumps(resp.headers)
    for value in values:
        check(value not in seen, f"the value {value!r} reached the caller")


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------


def test_call_help_advertises_json_mode(ctx: Ctx) -> None:
    sdk_call._binary_supports_json_call.cache_clear()
    check(sdk_call._binary_supports_json_call(), "`call --help` stdout lacks --output")


def test_inject_bearer(ctx: Ctx) -> None:
    ctx.client.secrets.set("BEARER_KEY", "sk_bearer_v4lue")
    ctx.allow_loopback()
    resp = ctx.client.call(ctx.echo.url + "/bearer", bearer="BEARER_KEY")
    eq(resp.status_code, 200, "status")
    eq(ctx.echo.header("Authorization"), "Bearer sk_bearer_v4lue", "upstream Authorization")
    never_shows(resp, "sk_bearer_v4lue")


def test_inject_basic(ctx: Ctx) -> None:
    ctx.client.secrets.set("BASIC_CRED", "alice:s3cr3t-pw")
    ctx.allow_loopback()
    resp = ctx.client.call(ctx.echo.url + "/basic", basic="BASIC_CRED")
    eq(resp.status_code, 200, "status")
    encoded = base64.b64encode(b"alice:s3cr3t-pw").decode()
    eq(ctx.echo.header("Authorization"), f"Basic {encoded}", "upstream Authorization")
    never_shows(resp, "s3cr3t-pw", encoded)


def test_inject_header(ctx: Ctx) -> None:
    ctx.client.secrets.set("HDR_KEY", "hdr_v4lue_123")
    ctx.allow_loopback()
    resp = ctx.client.call(ctx.echo.url + "/header", header={"X-Api-Key": "HDR_KEY"})
    eq(resp.status_code, 200, "status")
    eq(ctx.echo.header("X-Api-Key"), "hdr_v4lue_123", "upstream X-Api-Key")
    never_shows(resp, "hdr_v4lue_123")


def test_inject_query(ctx: Ctx) -> None:
    ctx.client.secrets.set("Q_KEY", "q v4lue&=/")
    ctx.allow_loopback()
    resp = ctx.client.call(ctx.echo.url + "/query?keep=1", query={"apiKey": "Q_KEY"})
    eq(resp.status_code, 200, "status")
    # The parameter's case is preserved and the value is URL-encoded.
    eq(ctx.echo.last()["query"], {"keep": ["1"], "apiKey": ["q v4lue&=/"]}, "upstream query")
    never_shows(resp, "q v4lue&=/", urllib.parse.quote("q v4lue&=/", safe=""))


def test_inject_body_field(ctx: Ctx) -> None:
    ctx.client.secrets.set("BODY_KEY", "body_v4lue_xyz")
    ctx.allow_loopback()
    resp = ctx.client.call(
        ctx.echo.url + "/body",
        method="POST",
        body={"grant_type": "client_credentials", "auth": {"kept": 1}},
        body_field={"auth.client_secret": "BODY_KEY"},
    )
    eq(resp.status_code, 200, "status")
    sent = json.loads(ctx.echo.last()["body"])
    eq(
        sent,
        {
            "grant_type": "client_credentials",
            "auth": {"kept": 1, "client_secret": "body_v4lue_xyz"},
        },
        "upstream JSON body",
    )
    check(
        (ctx.echo.header("Content-Type") or "").startswith("application/json"),
        f"Content-Type {ctx.echo.header('Content-Type')!r}",
    )
    eq(ctx.echo.last()["method"], "POST", "method")
    never_shows(resp, "body_v4lue_xyz")


def test_inject_form_field(ctx: Ctx) -> None:
    ctx.client.secrets.set("FORM_KEY", "form v4lue+&")
    ctx.allow_loopback()
    resp = ctx.client.call(
        ctx.echo.url + "/form",
        method="POST",
        body="grant_type=client_credentials&scope=read",
        form_field={"client_Secret": "FORM_KEY"},
    )
    eq(resp.status_code, 200, "status")
    sent = urllib.parse.parse_qs(ctx.echo.last()["body"], keep_blank_values=True)
    eq(
        sent,
        {
            "grant_type": ["client_credentials"],
            "scope": ["read"],
            "client_Secret": ["form v4lue+&"],
        },
        "upstream form body",
    )
    check(
        (ctx.echo.header("Content-Type") or "").startswith("application/x-www-form-urlencoded"),
        f"Content-Type {ctx.echo.header('Content-Type')!r}",
    )
    never_shows(resp, "form v4lue+&")


def test_all_styles_in_one_call(ctx: Ctx) -> None:
    for key, value in [("K_B", "vb_1111"), ("K_H", "vh_2222"), ("K_Q", "vq_3333")]:
        ctx.client.secrets.set(key, value)
    ctx.allow_loopback()
    resp = ctx.client.call(
        ctx.echo.url + "/multi",
        bearer="K_B",
        header={"X-Org": "K_H"},
        query={"token": "K_Q"},
    )
    eq(resp.status_code, 200, "status")
    eq(ctx.echo.header("Authorization"), "Bearer vb_1111", "bearer")
    eq(ctx.echo.header("X-Org"), "vh_2222", "header")
    eq(ctx.echo.last()["query"].get("token"), ["vq_3333"], "query")
    never_shows(resp, "vb_1111", "vh_2222", "vq_3333")


def test_echoed_value_is_redacted(ctx: Ctx) -> None:
    ctx.client.secrets.set("ECHO_KEY", "echo_s3cret_value")
    ctx.allow_loopback()
    resp = ctx.client.call(ctx.echo.url + "/echo", bearer="ECHO_KEY")
    eq(resp.status_code, 200, "status")
    check(resp.redacted is True, f"redacted is {resp.redacted!r}")
    text = resp.text
    check(MARKER in text, "the redaction marker is not in the body")
    check("echo_s3cret_value" not in text, "the value is in the body")
    # The echo server also reflects the Authorization header in a response header.
    header = resp.headers.get("X-Echo-Authorization", "")
    check("echo_s3cret_value" not in header, f"the value is in a header: {header!r}")
    check(MARKER in header, f"the response header is not redacted: {header!r}")
    logs = ctx.client.proxy.logs(last=1)
    eq(len(logs), 1, "log entries")
    check(logs[0].redacted is True, "the audit entry does not record the redaction")


def test_response_fields(ctx: Ctx) -> None:
    ctx.client.secrets.set("RF_KEY", "rf_v4lue")
    ctx.allow_loopback()
    resp = ctx.client.call(ctx.echo.url + "/fields", bearer="RF_KEY")
    eq(resp.status_code, 200, "status")
    check(resp.redacted is True, "the echoed bearer value is redacted")
    eq(resp.headers.get("Content-Type"), "application/json", "flattened Content-Type header")
    eq(resp.json()["path"], "/fields", "body parses as the upstream's JSON")
    check(isinstance(resp.duration_ms, int), "duration_ms is an int")


def test_upstream_error_status(ctx: Ctx) -> None:
    ctx.client.secrets.set("UE_KEY", "ue_v4lue")
    ctx.allow_loopback()
    exc = raises(UpstreamError, ctx.client.call, ctx.echo.url + "/status/418", bearer="UE_KEY")
    eq(exc.status_code, 418, "UpstreamError.status_code")
    check("ue_v4lue" not in exc.body, "the value is in the error body")


def test_blocked_domain(ctx: Ctx) -> None:
    ctx.client.secrets.set("BLK_KEY", "blk_v4lue")
    ctx.allow_loopback()
    exc = raises(
        DomainNotAllowed, ctx.client.call, "https://blocked.example.com/v1/x", bearer="BLK_KEY"
    )
    eq(exc.domain, "blocked.example.com", "DomainNotAllowed.domain")
    logs = ctx.client.proxy.logs(last=1)
    eq(logs[0].status, "BLOCKED", "audit status")
    eq(logs[0].reason, "domain_not_in_allowlist", "audit reason")


def test_blocked_domain_with_empty_allowlist(ctx: Ctx) -> None:
    ctx.client.secrets.set("BLK_KEY", "blk_v4lue")
    exc = raises(DomainNotAllowed, ctx.client.call, ctx.echo.url + "/x", bearer="BLK_KEY")
    eq(exc.domain, "127.0.0.1", "DomainNotAllowed.domain")
    eq(ctx.echo.requests, [], "upstream requests")


def test_missing_secret(ctx: Ctx) -> None:
    ctx.allow_loopback()
    exc = raises(SecretNotFound, ctx.client.call, ctx.echo.url + "/x", bearer="NOPE_KEY")
    eq(exc.key, "NOPE_KEY", "SecretNotFound.key")
    eq(ctx.echo.requests, [], "upstream requests")


def test_text_mode_fallback(ctx: Ctx) -> None:
    """The SDK's text path (`HTTP <code>` on stdout, mapped stderr), as used by a binary
    without `--output`: still parsed right, exceptions still mapped."""
    ctx.client.secrets.set("TXT_KEY", "txt_v4lue")
    ctx.allow_loopback()
    original = sdk_call._binary_supports_json_call
    sdk_call._binary_supports_json_call = lambda: False
    try:
        resp = ctx.client.call(ctx.echo.url + "/text", bearer="TXT_KEY")
        eq(resp.status_code, 200, "status")
        check(resp.redacted is True, "marker detected in text mode")
        eq(resp.json()["path"], "/text", "body")
        exc = raises(DomainNotAllowed, ctx.client.call, "https://no.example.com/", bearer="TXT_KEY")
        eq(exc.domain, "no.example.com", "domain")
        exc = raises(SecretNotFound, ctx.client.call, ctx.echo.url, bearer="MISSING_KEY")
        eq(exc.key, "MISSING_KEY", "key")
    finally:
        sdk_call._binary_supports_json_call = original


def test_json_body_is_sent_as_json(ctx: Ctx) -> None:
    ctx.client.secrets.set("JB_KEY", "jb_v4lue")
    ctx.allow_loopback()
    resp = ctx.client.call(
        ctx.echo.url + "/json", method="put", body={"n": 1, "s": "é"}, bearer="JB_KEY"
    )
    eq(resp.status_code, 200, "status")
    eq(ctx.echo.last()["method"], "PUT", "method")
    eq(json.loads(ctx.echo.last()["body"]), {"n": 1, "s": "é"}, "body")
    check(
        (ctx.echo.header("Content-Type") or "").startswith("application/json"),
        f"Content-Type {ctx.echo.header('Content-Type')!r}",
    )


def test_async_call_and_spawn(ctx: Ctx) -> None:
    import asyncio

    from agentsecrets import AsyncAgentSecrets

    ctx.client.secrets.set("ASYNC_KEY", "async_v4lue")
    ctx.allow_loopback()

    async def go():
        async with AsyncAgentSecrets(auto_start=False) as client:
            resp = await client.call(ctx.echo.url + "/async", bearer="ASYNC_KEY", agent="async-bot")
            spawned = await client.spawn(
                [sys.executable, "-c", "import os; print(os.environ['ASYNC_KEY'])"]
            )
            return resp, spawned

    resp, spawned = asyncio.run(go())
    eq(resp.status_code, 200, "status")
    eq(ctx.echo.header("Authorization"), "Bearer async_v4lue", "upstream Authorization")
    eq((spawned.exit_code, spawned.stdout.strip()), (0, "async_v4lue"), "spawn_async")
    entries = ctx.client.proxy.logs(last=2)
    eq(entries[0].agent_id, "async-bot", "agent of the async call")


def test_call_without_injection_is_an_error(ctx: Ctx) -> None:
    ctx.allow_loopback()
    raises(CLIError, ctx.client.call, ctx.echo.url + "/x")
    eq(ctx.echo.requests, [], "upstream requests")


def test_declared_identity(ctx: Ctx) -> None:
    ctx.client.secrets.set("DEC_KEY", "dec_v4lue")
    ctx.allow_loopback()
    resp = ctx.client.call(ctx.echo.url + "/declared", bearer="DEC_KEY", agent_id="conf-declared")
    eq(resp.status_code, 200, "status")
    logs = ctx.client.proxy.logs(last=1)
    eq(len(logs), 1, "log entries")
    eq(logs[0].agent_id, "conf-declared", "agent_id")
    eq(logs[0].identity_level, "declared", "identity_level")
    eq(logs[0].secret_keys, ["DEC_KEY"], "secret_keys")
    eq(logs[0].auth_styles, ["bearer"], "auth_styles")


def test_declared_identity_via_constructor(ctx: Ctx) -> None:
    ctx.client.secrets.set("DEC_KEY", "dec_v4lue")
    ctx.allow_loopback()
    client = AgentSecrets(auto_start=False, agent="ctor-agent")
    eq(client.call(ctx.echo.url + "/ctor", bearer="DEC_KEY").status_code, 200, "status")
    entry = ctx.client.proxy.logs(last=1)[0]
    eq((entry.agent_id, entry.identity_level), ("ctor-agent", "declared"), "identity")


def test_anonymous_identity(ctx: Ctx) -> None:
    ctx.client.secrets.set("ANON_KEY", "anon_v4lue")
    ctx.allow_loopback()
    ctx.client.call(ctx.echo.url + "/anon", bearer="ANON_KEY")
    entry = ctx.client.proxy.logs(last=1)[0]
    eq(entry.identity_level, "anonymous", "identity_level")
    check(not entry.agent_id, f"anonymous agent_id {entry.agent_id!r}")


def test_issued_identity(ctx: Ctx) -> None:
    ctx.client.secrets.set("ISS_KEY", "iss_v4lue")
    ctx.allow_loopback()
    created = sdk_agent.create("conf-issued", label="first")
    check(created.token.startswith("agt_"), f"register token {created.token!r}")
    eq(created.agent.name, "conf-issued", "registered name")
    check(created.agent.project_id is None, "workspace scope")
    issued = sdk_agent.issue_token("conf-issued", label="second")
    check(issued.token.startswith("agt_"), f"issued token {issued.token!r}")
    check(" " not in issued.token, "token holds whitespace")
    eq(issued.label, "second", "label")
    resp = ctx.client.call(ctx.echo.url + "/issued", bearer="ISS_KEY", agent_token=issued.token)
    eq(resp.status_code, 200, "status")
    never_shows(resp, issued.token)
    entry = ctx.client.proxy.logs(last=1)[0]
    eq(entry.agent_id, "conf-issued", "agent_id")
    eq(entry.identity_level, "issued", "identity_level")
    check(entry.token_id.startswith("tok_"), f"token_id {entry.token_id!r}")
    check(issued.token not in json.dumps(ctx.cli("proxy", "logs", "--last", "5").stdout),
          "the token value is in the log")


def test_saved_token_reference(ctx: Ctx) -> None:
    """`agent.create(save_token=True)`, then a call as that agent: the SDK sends
    `--token CONF-SAVED_TOKEN`, which must resolve to the saved, issued token."""
    ctx.client.secrets.set("SAV_KEY", "sav_v4lue")
    ctx.allow_loopback()
    sdk_agent.create("conf-saved", save_token=True)
    resp = sdk_agent.Agent("conf-saved").call(ctx.echo.url + "/saved", bearer="SAV_KEY")
    eq(resp.status_code, 200, "status")
    entry = ctx.client.proxy.logs(last=1)[0]
    eq((entry.agent_id, entry.identity_level), ("conf-saved", "issued"), "identity")


def test_identity_names_keep_their_case(ctx: Ctx) -> None:
    """The SDK upper-cases the agent into `--token <NAME>_TOKEN`: the binary maps it back
    to the registered spelling, to the saved token, or (unknown) to the lower-cased name."""
    ctx.client.secrets.set("CASE_KEY", "case_v4lue")
    ctx.allow_loopback()
    sdk_agent.create("SavedBot", save_token=True)
    sdk_agent.create("RegBot")
    expected = [
        ("SavedBot", ("SavedBot", "issued")),
        ("RegBot", ("RegBot", "declared")),
        ("Ad_Hoc-Bot", ("ad_hoc-bot", "declared")),
    ]
    for name, identity in expected:
        ctx.client.call(ctx.echo.url + "/case", bearer="CASE_KEY", agent_id=name)
        entry = ctx.client.proxy.logs(last=1)[0]
        eq((entry.agent_id, entry.identity_level), identity, f"identity of {name}")


def test_proxy_start_detach_cli(ctx: Ctx) -> None:
    port = free_port()
    started = ctx.cli("proxy", "start", "--port", str(port), "--detach")
    match = re.fullmatch(rf"proxy started on 127\.0\.0\.1:{port} \(pid (\d+)\)\n", started.stdout)
    check(match is not None, f"stdout {started.stdout!r}")
    with open(os.path.join(ctx.home, "session.json")) as f:
        eq(json.load(f)["pid"], int(match.group(1)), "pid in session.json")
    log = os.stat(os.path.join(ctx.home, "proxy.log"))
    eq(oct(log.st_mode & 0o777), oct(0o600), "proxy.log mode")
    # The starting process has exited; the proxy lives on.
    check(ctx.client.proxy.status(port=port).running, "the detached proxy is gone")
    busy = ctx.cli("proxy", "start", "--port", str(port), "--detach", check=False)
    eq(busy.returncode, 1, "second start on the same port")
    check("cannot listen on 127.0.0.1" in busy.stderr, f"stderr {busy.stderr!r}")
    ctx.cli("proxy", "stop")
    check(not ctx.client.proxy.status(port=port).running, "still running after stop")


def test_token_from_environment_and_forged_token(ctx: Ctx) -> None:
    ctx.client.secrets.set("ENVT_KEY", "envt_v4lue")
    ctx.allow_loopback()
    eq(sdk_agent.list_agents(), [], "no agents yet")
    issued = sdk_agent.create("env-token-bot")
    os.environ["AS_AGENT_TOKEN"] = issued.token
    eq(ctx.client.call(ctx.echo.url + "/env", bearer="ENVT_KEY").status_code, 200, "status")
    entry = ctx.client.proxy.logs(last=1)[0]
    eq((entry.agent_id, entry.identity_level), ("env-token-bot", "issued"), "AS_AGENT_TOKEN")
    del os.environ["AS_AGENT_TOKEN"]

    before = len(ctx.echo.requests)
    forged = issued.token[:-4] + ("AAAA" if not issued.token.endswith("AAAA") else "BBBB")
    exc = raises(UpstreamError, ctx.client.call, ctx.echo.url, bearer="ENVT_KEY",
                 agent_token=forged)
    eq(exc.status_code, 401, "forged token status")
    check(forged not in exc.body, "the token is echoed in the refusal")
    eq(len(ctx.echo.requests), before, "the forged call reached the upstream")


def test_token_expiry_flag(ctx: Ctx) -> None:
    sdk_agent.create("conf-exp")
    issued = sdk_agent.issue_token("conf-exp", label="dated", expires="2099-01-31")
    eq(issued.expires_at, "2099-01-31", "expires_at")
    tokens = {t.label: t for t in sdk_agent.list_tokens("conf-exp")}
    eq(tokens["dated"].expires_at, "2099-01-31", "listed expiry")


def test_token_lifecycle_and_revoked_token_refused(ctx: Ctx) -> None:
    ctx.client.secrets.set("TOK_KEY", "tok_v4lue")
    ctx.allow_loopback()
    sdk_agent.create("conf-tok", label="init")
    second = sdk_agent.issue_token("conf-tok", label="second")
    tokens = sdk_agent.list_tokens("conf-tok")
    eq(sorted(t.label for t in tokens), ["init", "second"], "labels")
    for token in tokens:
        check(token.id.startswith("tok_"), f"token id {token.id!r}")
        eq(token.status, "active", "status")
        eq(token.agent_id, "conf-tok", "agent_id")
        check(token.last_used is None, f"last_used {token.last_used!r}")
        check(token.expires_at is None, f"expires_at {token.expires_at!r}")

    eq(ctx.client.call(ctx.echo.url + "/ok", bearer="TOK_KEY", agent_token=second.token)
       .status_code, 200, "call with a live token")
    before = len(ctx.echo.requests)
    used = {t.label: t for t in sdk_agent.list_tokens("conf-tok")}
    check(
        re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", used["second"].last_used or "")
        is not None,
        f"last_used after a call {used['second'].last_used!r}",
    )
    check(used["init"].last_used is None, "an unused token has a last_used time")

    second_id = next(t.id for t in tokens if t.label == "second")
    sdk_agent.revoke_token("conf-tok", second_id)
    status = {t.id: t.status for t in sdk_agent.list_tokens("conf-tok")}
    check(status.get(second_id, "revoked") == "revoked", f"after revoke: {status}")

    exc = raises(
        UpstreamError,
        ctx.client.call,
        ctx.echo.url + "/refused",
        bearer="TOK_KEY",
        agent_token=second.token,
    )
    eq(exc.status_code, 401, "status of a revoked token")
    eq(len(ctx.echo.requests), before, "the revoked call reached the upstream")
    entry = ctx.client.proxy.logs(last=1)[0]
    eq(entry.status, "BLOCKED", "audit status of the refused call")

    sdk_agent.create("conf-none")
    sdk_agent.revoke_all_tokens("conf-none")
    eq([t.status for t in sdk_agent.list_tokens("conf-none")], ["revoked"], "revoke_all")
    eq(sdk_agent.list_tokens("never-registered"), [], "tokens of an unknown agent")

    sdk_agent.revoke_all_tokens("conf-tok")
    check(
        all(t.status == "revoked" for t in sdk_agent.list_tokens("conf-tok")),
        "revoke_all left a token active",
    )


def test_agent_list_and_delete(ctx: Ctx) -> None:
    sdk_agent.create("conf-list-a")
    sdk_agent.create("conf-list-b")
    sdk_agent.issue_token("conf-list-b")
    agents = {a.name: a for a in sdk_agent.list_agents()}
    check({"conf-list-a", "conf-list-b"} <= set(agents), f"agents {sorted(agents)}")
    eq(agents["conf-list-b"].token_count, 2, "token count")
    check(
        re.fullmatch(r"\d{4}-\d\d-\d\d", agents["conf-list-b"].created_at or "") is not None,
        f"registered column {agents['conf-list-b'].created_at!r}",
    )
    check(agents["conf-list-b"].last_used is None, "last_used of an unused agent")
    check(agents["conf-list-a"].project_id is None, "workspace scope")
    eq(sdk_agent.get("conf-list-a").name, "conf-list-a", "agent.get")
    sdk_agent.delete("conf-list-a")
    check("conf-list-a" not in {a.name for a in sdk_agent.list_agents()}, "deleted agent listed")


def test_policy_get_set_and_enforced(ctx: Ctx) -> None:
    ctx.client.secrets.set("POL_A", "pol_v4lue_a")
    ctx.client.secrets.set("POL_B", "pol_v4lue_b")
    ctx.allow_loopback()
    registered = sdk_agent.create("conf-pol")
    eq(sdk_agent.get_policy("conf-pol").allowed_secrets, [], "no policy yet")

    sdk_agent.set_policy("conf-pol", allow=["POL_A", "POL_B"], deny="POL_B")
    caps = sdk_agent.get_policy("conf-pol")
    eq(caps.allowed_secrets, ["POL_A", "POL_B"], "allowed secrets")
    eq(caps.denied_secrets, ["POL_B"], "denied secrets")

    token = registered.token
    eq(ctx.client.call(ctx.echo.url + "/a", bearer="POL_A", agent_token=token).status_code,
       200, "an allowed secret")
    before = len(ctx.echo.requests)
    exc = raises(UpstreamError, ctx.client.call, ctx.echo.url + "/b", bearer="POL_B",
                 agent_token=token)
    eq(exc.status_code, 403, "status of a denied secret")
    eq(len(ctx.echo.requests), before, "the denied call reached the upstream")
    entry = ctx.client.proxy.logs(last=1)[0]
    eq((entry.status, entry.reason), ("BLOCKED", "capability_denied"), "audit of the refusal")

    # Another agent, with no contract, is not affected.
    other = sdk_agent.create("conf-free")
    eq(ctx.client.call(ctx.echo.url + "/b", bearer="POL_B", agent_token=other.token)
       .status_code, 200, "an agent without a contract")


def test_spawn(ctx: Ctx) -> None:
    ctx.client.secrets.set("SPAWN_KEY", "spawn_v4lue")
    os.environ["CONF_PASSTHROUGH"] = "kept"
    script = (
        "import os, sys\n"
        "print(os.environ.get('SPAWN_KEY'))\n"
        "print(os.environ.get('CONF_PASSTHROUGH'))\n"
        "sys.stderr.write('to stderr\\n')\n"
        "sys.exit(7)\n"
    )
    result = ctx.client.spawn([sys.executable, "-c", script])
    eq(result.exit_code, 7, "exit code")
    eq(result.stdout.splitlines(), ["spawn_v4lue", "kept"], "stdout (no banner)")
    check("to stderr" in result.stderr, f"stderr {result.stderr!r}")
    entry = ctx.client.proxy.logs(last=1)[0]
    eq(entry.secret_keys, ["SPAWN_KEY"], "env audit entry keys")


def test_spawn_unknown_command(ctx: Ctx) -> None:
    result = ctx.client.spawn(["definitely-not-a-command-xyz"])
    check(result.exit_code != 0, "unknown command exited 0")
    check(result.stderr.strip() != "", "no message on stderr")
    eq(result.stdout, "", "stdout")


def test_logs_last_and_secret_filter(ctx: Ctx) -> None:
    ctx.client.secrets.set("LOG_A", "log_a_v4lue")
    ctx.client.secrets.set("LOG_B", "log_b_v4lue")
    ctx.allow_loopback()
    ctx.client.call(ctx.echo.url + "/1", bearer="LOG_A", agent_id="log-agent")
    ctx.client.call(ctx.echo.url + "/2", bearer="LOG_B")
    ctx.client.call(ctx.echo.url + "/3", bearer="LOG_A")
    logs = ctx.client.proxy.logs(last=2)
    eq(len(logs), 2, "--last 2")
    for entry in logs:
        check(entry.timestamp.tzinfo is not None, "timestamp without a time zone")
        check(entry.identity_level in {"anonymous", "declared", "issued"}, "identity_level")
        eq(entry.method, "GET", "method")
        eq(entry.domain, "127.0.0.1", "domain")
        eq(entry.status, "OK", "status")
        eq(entry.status_code, 200, "status_code")
        check(entry.id.startswith("log_"), f"id {entry.id!r}")
    eq(sorted(e.target_url.rsplit("/", 1)[1] for e in logs), ["2", "3"], "the most recent two")
    only_a = ctx.client.proxy.logs(secret="LOG_A")
    eq(len(only_a), 2, "--secret LOG_A")
    check(all(e.secret_keys == ["LOG_A"] for e in only_a), "secret filter")
    declared = [e for e in only_a if e.agent_id == "log-agent"]
    eq([e.identity_level for e in declared], ["declared"], "identity of the declared call")
    raw = ctx.cli("proxy", "logs", "--last", "20").stdout
    for value in ("log_a_v4lue", "log_b_v4lue"):
        check(value not in raw, "a secret value is in the log")


def test_proxy_start_call_stop(ctx: Ctx) -> None:
    ctx.client.secrets.set("PX_KEY", "px_v4lue")
    ctx.allow_loopback()
    port = free_port()
    # The SDK passes only `--port`; the environment asks `proxy start` to detach.
    os.environ["AGENTSECRETS_PROXY_DETACH"] = "1"
    started = time.monotonic()
    ctx.client.proxy.start(port=port)
    check(time.monotonic() - started < 12, "proxy.start() did not return promptly")
    status = ctx.client.proxy.status(port=port)
    check(status.running, "proxy.status() says not running")
    eq(status.port, port, "port")
    eq(status.project, "default", "project from /health")

    resp = ctx.client.call(ctx.echo.url + "/via-proxy", bearer="PX_KEY", agent_id="px-agent")
    eq(resp.status_code, 200, "status")
    eq(ctx.echo.header("Authorization"), "Bearer px_v4lue", "upstream Authorization")
    check(resp.redacted, "echo redacted through the proxy")
    entry = json.loads(ctx.cli("proxy", "logs", "--last", "1").stdout.splitlines()[0])
    eq(entry.get("transport"), "http", "the call went through the running proxy")
    eq((entry.get("agent_id"), entry.get("identity_level")), ("px-agent", "declared"), "identity")

    exc = raises(DomainNotAllowed, ctx.client.call, "https://evil.example.com/", bearer="PX_KEY")
    eq(exc.domain, "evil.example.com", "domain through the proxy")
    exc = raises(SecretNotFound, ctx.client.call, ctx.echo.url, bearer="NOT_THERE")
    eq(exc.key, "NOT_THERE", "key through the proxy")

    ctx.client.proxy.stop()
    check(not ctx.client.proxy.status(port=port).running, "proxy still running after stop()")


def test_proxy_start_busy_port(ctx: Ctx) -> None:
    os.environ["AGENTSECRETS_PROXY_DETACH"] = "1"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        exc = raises(CLIError, ctx.client.proxy.start, port=port)
        eq(exc.exit_code, 1, "exit code")
        check(str(port) in exc.stderr, f"message {exc.stderr!r}")


def test_proxy_auto_start(ctx: Ctx) -> None:
    """The SDK's own auto-start: `proxy start --port N` with stdio to /dev/null, then it
    polls /health (a foreground proxy)."""
    from agentsecrets.auth import resolve

    port = free_port()
    context = resolve(port, auto_start_proxy=True)
    eq(context.port, port, "port")
    eq(context.project, "default", "project")
    ctx.client.proxy.stop()


def test_interceptor_through_running_proxy(ctx: Ctx) -> None:
    """`agentsecrets.init()` rewrites requests/httpx calls that carry `AS_SECRET_`
    placeholders to the running proxy's /proxy. It sends no session token, so the proxy
    must run with --no-session-token (which the SDK cannot pass: started by the CLI)."""
    import httpx
    import requests

    from agentsecrets import credential, settings

    ctx.client.secrets.set("ICPT_BEARER", "icpt_b_v4lue")
    ctx.client.secrets.set("ICPT_HDR", "icpt_h_v4lue")
    ctx.allow_loopback()
    port = free_port()
    ctx.cli("proxy", "start", "--port", str(port), "--no-session-token", "--detach")
    settings.port = port
    agentsecrets.init(port=port)

    got = requests.get(
        ctx.echo.url + "/requests?x=1",
        headers={"Authorization": f"Bearer {credential.ICPT_BEARER}", "X-Plain": "kept"},
        timeout=10,
    )
    eq(got.status_code, 200, "status via requests")
    eq(ctx.echo.header("Authorization"), "Bearer icpt_b_v4lue", "bearer via requests")
    eq(ctx.echo.header("X-Plain"), "kept", "other headers are forwarded")
    eq(ctx.echo.last()["query"], {"x": ["1"]}, "query kept")
    check("icpt_b_v4lue" not in got.text, "value echoed back to requests")

    with httpx.Client() as client:
        got = client.post(
            ctx.echo.url + "/httpx",
            headers={"X-Api-Key": credential.ICPT_HDR},
            json={"k": "v"},
            timeout=10,
        )
    eq(got.status_code, 200, "status via httpx")
    eq(ctx.echo.header("X-Api-Key"), "icpt_h_v4lue", "header via httpx")
    eq(json.loads(ctx.echo.last()["body"]), {"k": "v"}, "body via httpx")
    check("icpt_h_v4lue" not in got.text, "value echoed back to httpx")

    blocked = requests.get(
        "https://blocked.example.com/", headers={"X-Key": credential.ICPT_HDR}, timeout=10
    )
    eq(blocked.status_code, 403, "blocked status")
    eq(blocked.json().get("error"), "domain_not_in_allowlist", "blocked slug")
    ctx.client.proxy.stop()


def test_secrets_list_exact_names(ctx: Ctx) -> None:
    eq(ctx.client.secrets.list(), [], "empty project")
    for key in ("ZETA_KEY", "ALPHA_KEY", "MID_KEY"):
        ctx.client.secrets.set(key, "v=with spaces and = signs")
    names = [k.key for k in ctx.client.secrets.list()]
    eq(sorted(names), ["ALPHA_KEY", "MID_KEY", "ZETA_KEY"], "secret names")
    ctx.client.secrets.delete("MID_KEY")
    eq(sorted(k.key for k in ctx.client.secrets.list()), ["ALPHA_KEY", "ZETA_KEY"], "after delete")
    raises(CLIError, ctx.client.secrets.delete, "MID_KEY")


def test_allowlist_list(ctx: Ctx) -> None:
    eq(ctx.client.allowlist.list(), [], "empty allowlist")
    ctx.client.allowlist.add("api.example.com", "127.0.0.1")
    entries = ctx.client.allowlist.list()
    eq(sorted(e.domain for e in entries), ["127.0.0.1", "api.example.com"], "domains")
    for entry in entries:
        check(entry.added_by != "", "added_by")
        check(entry.created_at[:2] == "20", f"created_at {entry.created_at!r}")
    ctx.client.allowlist.remove("api.example.com")
    eq([e.domain for e in ctx.client.allowlist.list()], ["127.0.0.1"], "after remove")
    check("api.example.com" in ctx.client.allowlist.log(), "allowlist log")


def test_projects_list(ctx: Ctx) -> None:
    eq([p.name for p in ctx.client.projects.list()], ["default"], "projects")
    ctx.client.projects.create("conf-other")
    names = sorted(p.name for p in ctx.client.projects.list())
    eq(names, ["conf-other", "default"], "projects after create")
    ctx.client.projects.use("conf-other")
    ctx.client.secrets.set("OTHER_ONLY", "x")
    eq([k.key for k in ctx.client.secrets.list()], ["OTHER_ONLY"], "secrets follow project use")
    # A project that still holds secrets is not deleted without --force (which the SDK
    # cannot pass): a plain CLIError, never a prompt.
    exc = raises(CLIError, ctx.client.projects.delete, "conf-other")
    check("--force" in exc.stderr, f"message {exc.stderr!r}")
    ctx.client.secrets.delete("OTHER_ONLY")
    ctx.client.projects.delete("conf-other")
    # The directory still links to the deleted project: listing must work regardless.
    eq([p.name for p in ctx.client.projects.list()], ["default"], "after delete")
    ctx.client.projects.use("default")
    eq(ctx.client.secrets.list(), [], "default project is empty")


def test_status_raw(ctx: Ctx) -> None:
    check(isinstance(ctx.client.status()["raw"], str), "status() raw")


# ---------------------------------------------------------------------------
# Runner
# ---------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    global VERBOSE
    pattern = ""
    if "-k" in argv:
        pattern = argv[argv.index("-k") + 1]
    VERBOSE = "-v" in argv

    binary = shutil.which("agentsecrets")
    if binary is None:
        print("agentsecrets is not on PATH", file=sys.stderr)
        print("0 passed, 1 failed")
        return 1
    sdk_dir = os.path.dirname(agentsecrets.__file__)
    print(f"SDK agentsecrets {agentsecrets.__version__} from {sdk_dir}")
    print(f"binary {binary}")

    tests = [
        (name, fn)
        for name, fn in globals().items()
        if name.startswith("test_") and callable(fn) and pattern in name
    ]
    passed = failed = 0
    for name, fn in tests:
        started = time.monotonic()
        try:
            with fresh_env() as ctx:
                fn(ctx)
        except Exception as exc:  # noqa: BLE001
            failed += 1
            print(f"FAIL {name} ({time.monotonic() - started:.1f}s): {type(exc).__name__}: {exc}")
            if VERBOSE or not isinstance(exc, AssertionError):
                traceback.print_exc()
        else:
            passed += 1
            print(f"ok   {name} ({time.monotonic() - started:.1f}s)")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
