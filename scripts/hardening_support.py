"""Shared pieces of the hardening scripts (scripts/load-soak, scripts/crash-kill,
scripts/leak-canary): a private agentsecrets home, the proxy process, a minimal
HTTP/1.1 client and server on asyncio, loopback upstreams in a child process, and
/proc readings of the proxy.

Standard library only. Every socket here is on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def raise_nofile() -> tuple[int, int]:
    """Raises this process's soft RLIMIT_NOFILE to the hard limit; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------
# /proc
# ---------------------------------------------------------------------------


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_kinds(pid: int) -> dict[str, int]:
    """Open fds of a process by kind (socket, anon_inode:[eventpoll], file paths...)."""
    kinds: dict[str, int] = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        kind = "socket" if target.startswith("socket:") else (
            "pipe" if target.startswith("pipe:") else target)
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def proc_status(pid: int, field: str) -> int:
    """A `kB` field of /proc/PID/status (VmHWM, VmRSS), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_nofile(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    return 0


# ---------------------------------------------------------------------------
# The home and the binary
# ---------------------------------------------------------------------------


class Home:
    """A private AGENTSECRETS_HOME (keychain off) inside a fresh temporary directory."""

    def __init__(self, binary: Path, prefix: str, base: Path | None = None) -> None:
        self.binary = Path(binary).resolve()
        self.tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
        self.path = self.tmp / "home"
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.tmp),
            "TMPDIR": str(self.tmp),
            "AGENTSECRETS_HOME": str(self.path),
            "AGENTSECRETS_KEYCHAIN": "off",
        }
        # Everything a run printed, kept for leak searches: (what, bytes).
        self.captured: list[tuple[str, bytes]] = []

    def run(self, args: list[str], stdin: bytes | None = None, env: dict | None = None,
            check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        full_env = dict(self.env, **(env or {}))
        done = subprocess.run([str(self.binary)] + args, env=full_env, input=stdin,
                              capture_output=True, timeout=timeout, cwd=self.tmp)
        self.captured.append((f"agentsecrets {' '.join(args[:3])} stdout", done.stdout))
        self.captured.append((f"agentsecrets {' '.join(args[:3])} stderr", done.stderr))
        if check and done.returncode != 0:
            raise RuntimeError(f"agentsecrets {' '.join(args)} exited {done.returncode}: "
                               f"{done.stderr.decode(errors='replace')}")
        return done

    def out(self, args: list[str], **kw) -> str:
        return self.run(args, **kw).stdout.decode()

    def set_secret(self, key: str, value: str) -> None:
        self.run(["secrets", "set", key], stdin=value.encode())

    def allow(self, *domains: str) -> None:
        self.run(["workspace", "allowlist", "add", *domains])

    def issue_token(self, agent: str) -> dict:
        return json.loads(self.out(["agent", "token", "issue", agent, "--label", "hardening",
                                    "--output", "json"]))

    def audit_entries(self) -> list[dict]:
        text = self.out(["log", "list", "--format", "jsonl", "--last", "100000000"],
                        timeout=600)
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def files(self, root: Path | None = None) -> list[Path]:
        out = []
        for dirpath, _dirs, names in os.walk(root or self.tmp):
            out.extend(Path(dirpath) / n for n in names)
        return out

    def remove(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


class Proxy:
    """`agentsecrets proxy start --port N --allow-local-http` on a home; stderr to a file."""

    def __init__(self, home: Home, port: int | None = None, env: dict | None = None,
                 log_name: str = "proxy.stderr") -> None:
        self.home = home
        self.port = port or free_port()
        self.log_path = home.tmp / log_name
        self.log_file = open(self.log_path, "ab")
        argv = [str(home.binary), "proxy", "start", "--port", str(self.port),
                "--allow-local-http"]
        self.process = subprocess.Popen(argv, env=dict(home.env, **(env or {})),
                                        stdin=subprocess.DEVNULL, stdout=self.log_file,
                                        stderr=self.log_file, cwd=home.tmp)
        self.pid = self.process.pid
        self.token = self._wait_ready()

    def _wait_ready(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        session = self.home.path / "session.json"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the proxy exited with {self.process.returncode}: "
                                   f"{self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                data = json.loads(session.read_text())
                if data.get("pid") == self.pid and data.get("port") == self.port:
                    with socket.create_connection((LOOPBACK, self.port), timeout=2) as s:
                        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        if s.recv(64).startswith(b"HTTP/1.1 200"):
                            return data["token"]
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the proxy did not come up on port {self.port} in {timeout} s")

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self.log_file.close()

    def stop(self) -> int:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        self.log_file.close()
        return self.process.returncode


# ---------------------------------------------------------------------------
# HTTP/1.1 on asyncio, just enough for these scripts
# ---------------------------------------------------------------------------


class Response:
    __slots__ = ("status", "headers", "body", "raw_head")

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes,
                 raw_head: bytes) -> None:
        self.status, self.headers, self.body, self.raw_head = status, headers, body, raw_head

    def header(self, name: str) -> str | None:
        name = name.lower()
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def slug(self) -> str | None:
        refusal = self.header("x-as-refusal")
        if refusal:
            return refusal
        try:
            return json.loads(self.body).get("error")
        except (ValueError, AttributeError):
            return None

    def everything(self) -> bytes:
        return self.raw_head + self.body


def parse_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
    return lines[0], headers


async def read_body(reader: asyncio.StreamReader, headers: list[tuple[str, str]],
                    until_eof: bool) -> bytes:
    hmap = {n: v for n, v in headers}
    if "chunked" in hmap.get("transfer-encoding", "").lower():
        parts = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
    if "content-length" in hmap:
        return await reader.readexactly(int(hmap["content-length"]))
    if until_eof:
        return await reader.read()
    return b""


async def read_response(reader: asyncio.StreamReader, head_request: bool = False) -> Response:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, headers = parse_head(head)
    status = int(status_line.split(" ", 2)[1])
    no_body = head_request or status in (204, 304) or 100 <= status < 200
    body = b"" if no_body else await read_body(reader, headers, until_eof=True)
    return Response(status, headers, body, head)


def request_bytes(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {LOOPBACK}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# ---------------------------------------------------------------------------
# Upstream servers, in a child process of their own
# ---------------------------------------------------------------------------


class Request:
    __slots__ = ("method", "path", "headers", "body", "server")

    def __init__(self, method, path, headers, body, server) -> None:
        self.method, self.path, self.headers, self.body = method, path, headers, body
        self.server = server

    def header(self, name: str) -> str | None:
        for n, v in self.headers:
            if n == name:
                return v
        return None


def http_response(status: int, body: bytes = b"", headers: dict | None = None,
                  reason: str = "X") -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}"]
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    if "Transfer-Encoding" not in hdrs:
        hdrs["Content-Length"] = str(len(body))
    lines += [f"{k}: {v}" for k, v in hdrs.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _ServerSet:
    """The servers of one upstream process and their open connections."""

    def __init__(self, handler) -> None:
        self.handler = handler
        self.writers: set[asyncio.StreamWriter] = set()
        self.served = 0

    async def connection(self, name: str, reader, writer) -> None:
        self.writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
                    return
                request_line, headers = parse_head(head)
                method, path, _ = request_line.split(" ", 2)
                body = await read_body(reader, headers, until_eof=False)
                self.served += 1
                # The handler answers with pieces to write and whether to close after; no
                # pieces at all means: close without an answer.
                pieces, close = await self.handler(Request(method, path, headers, body, name))
                for i, piece in enumerate(pieces):
                    if i:
                        await asyncio.sleep(0.01)
                    writer.write(piece)
                    await writer.drain()
                if close or not pieces:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self.writers.discard(writer)
            writer.close()

    def close_all(self) -> int:
        n = len(self.writers)
        for writer in list(self.writers):
            writer.transport.abort()
        return n


def _upstream_main(handler_factory, names, conn) -> None:
    # The child: ignore Ctrl-C (the parent stops it), serve until told to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    handler = handler_factory()
    servers = _ServerSet(handler)
    ports = {}
    stop = asyncio.Event()

    async def start():
        for name in names:
            server = await asyncio.start_server(
                lambda r, w, name=name: servers.connection(name, r, w), LOOPBACK, 0,
                backlog=4096, limit=1 << 20)
            ports[name] = server.sockets[0].getsockname()[1]

    loop.run_until_complete(start())
    conn.send(ports)

    def commands():
        while True:
            try:
                command = conn.recv()
            except EOFError:
                command = "stop"
            done = threading.Event()
            answer = {}

            def run(command=command):
                if command == "close-all":
                    answer["value"] = servers.close_all()
                elif command == "served":
                    answer["value"] = servers.served
                elif command == "records":
                    answer["value"] = getattr(handler, "records", None)
                elif command == "stop":
                    servers.close_all()
                    stop.set()
                done.set()

            loop.call_soon_threadsafe(run)
            done.wait()
            conn.send(answer.get("value"))
            if command == "stop":
                return

    threading.Thread(target=commands, daemon=True).start()
    loop.run_until_complete(stop.wait())


class UpstreamProcess:
    """Loopback HTTP servers named `names`, in a forked child, answering through the
    object `handler_factory()` builds there: `await handler(request) -> (pieces, close)`.
    """

    def __init__(self, handler_factory, names: list[str]) -> None:
        ctx = multiprocessing.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_upstream_main, args=(handler_factory, names, child),
                                   daemon=True)
        self.process.start()
        if not self.conn.poll(30):
            raise RuntimeError("the upstream process did not start")
        self.ports: dict[str, int] = self.conn.recv()
        self._lock = threading.Lock()

    def command(self, command: str, timeout: float = 60):
        with self._lock:
            self.conn.send(command)
            if not self.conn.poll(timeout):
                raise RuntimeError(f"the upstream process did not answer {command!r}")
            return self.conn.recv()

    def url(self, name: str, path: str) -> str:
        return f"http://{LOOPBACK}:{self.ports[name]}{path}"

    def stop(self) -> None:
        if self.process.is_alive():
            try:
                self.command("stop", timeout=10)
            except (RuntimeError, OSError, EOFError):
                pass
            self.process.join(10)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(10)
