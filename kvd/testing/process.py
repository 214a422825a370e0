"""
Real ``twistd -n kvd`` processes on loopback, for tests, benchmarks and torture runs.

Blocking on purpose: the caller is a test or a script, not a reactor.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float, what: str,
              interval: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something truthy, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception as e:  # the condition may fail while a node starts
            last_error = e
            value = None
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}"
                       + (f" (last error: {last_error!r})" if last_error else ""))


def twistd_command() -> list[str]:
    """twistd of the running interpreter's environment."""
    script = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.exists(script):
        return [script]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str]


def request(url: str, method: str = "GET", path: str = "/", body: Any = None,
            headers: dict[str, str] | None = None, timeout: float = 10.0) -> Response:
    """One HTTP exchange; JSON in and out."""
    host = url.split("://", 1)[1]
    conn = http.client.HTTPConnection(host, timeout=timeout)
    try:
        payload = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        conn.request(method, path, body=payload, headers=headers or {})
        raw = conn.getresponse()
        data = raw.read()
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = data
        return Response(raw.status, parsed, {k.lower(): v for k, v in raw.getheaders()})
    finally:
        conn.close()


@dataclass
class KvdProcess:
    """One kvd node run by twistd in its own working directory."""

    workdir: str
    port: int = field(default_factory=free_port)
    args: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = None
    #: Extra environment variables for this node's process (on top of ours).
    env: dict[str, str] = field(default_factory=dict)
    #: The client listener's endpoint string (default: plain TCP on ``host:port``).
    listen: str | None = None
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def data_dir(self) -> str:
        return os.path.join(self.workdir, "data")

    @property
    def log_path(self) -> str:
        return os.path.join(self.workdir, "kvd.log")

    def command(self) -> list[str]:
        return [
            *twistd_command(), "-n", "--pidfile=", "kvd",
            "--listen", self.listen or f"tcp:{self.port}:interface={self.host}",
            "--advertise", self.url, "--data-dir", self.data_dir, *self.args,
        ]

    def start(self, wait: bool = True, timeout: float = 30.0) -> KvdProcess:
        os.makedirs(self.workdir, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), cwd=self.workdir, stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={**os.environ, **self.env} if self.env else None)
        log.close()
        if wait:
            self.wait_ready(timeout)
        return self

    def ready(self) -> bool:
        return request(self.url, path="/readyz", timeout=2).status == 200

    def wait_ready(self, timeout: float = 30.0) -> None:
        def check() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"kvd exited with {self.proc.returncode}:\n{self.log_tail()}")
            return self.ready()

        try:
            wait_for(check, timeout, f"{self.url}/readyz")
        except TimeoutError as e:
            raise TimeoutError(f"{e}\n{self.log_tail()}") from None

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signum)

    def kill(self) -> None:
        """kill -9, and reap."""
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def call(self, method: str, path: str, body: Any = None,
             headers: dict[str, str] | None = None, timeout: float = 10.0) -> Response:
        return request(self.url, method, path, body, headers, timeout)
