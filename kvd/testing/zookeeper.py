"""
A throw-away ZooKeeper server on loopback, for tests and ``make run``.

``ZooKeeperServer`` is plain blocking Python (no Twisted): it writes a
``zoo.cfg`` and data directory into a directory it is given, runs the Debian
``zookeeper`` package's ``ZooKeeperServerMain`` under ``java`` as a
subprocess, and waits until the server actually serves requests. It can be
stopped and started again on the same port and data directory (sessions and
znodes survive, as with a real restart), and it can force-expire a client's
session, which is what fault tests need.

Run one in the foreground with::

    python -m kvd.testing.zookeeper --port 2181 --dir run/zk
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, TracebackType

#: Where the Debian ``zookeeper`` package puts the server jar; its manifest
#: Class-Path pulls in the dependencies.
DEFAULT_CLASSPATH = "/usr/share/java/zookeeper.jar"
#: Optional slf4j backend so ZooKeeper's own log lines reach our log file.
SLF4J_SIMPLE_JAR = "/usr/share/java/slf4j-simple.jar"
#: Environment variable that overrides the classpath (``:``-separated).
CLASSPATH_ENV = "KVD_ZOOKEEPER_CLASSPATH"
MAIN_CLASS = "org.apache.zookeeper.server.ZooKeeperServerMain"

#: JVM flags that make a small test server start fast and stay small.
DEFAULT_JVM_OPTIONS: tuple[str, ...] = (
    "-Xmx256m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Dorg.slf4j.simpleLogger.showDateTime=true",
    "-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS",
)

_INSTALL_HINT = "install it with `apt-get install zookeeper`"


class ZooKeeperNotInstalled(RuntimeError):
    """Raised when java or the ZooKeeper jar cannot be found."""


class ZooKeeperStartError(RuntimeError):
    """Raised when the server process dies or does not serve in time."""


def find_java() -> str:
    """Return the ``java`` executable on PATH, or raise ZooKeeperNotInstalled."""
    java = shutil.which("java")
    if java is None:
        raise ZooKeeperNotInstalled(f"no `java` on PATH; ZooKeeper needs a JRE: {_INSTALL_HINT}")
    return java


def find_classpath() -> str:
    """Return the ZooKeeper server classpath, or raise ZooKeeperNotInstalled.

    ``$KVD_ZOOKEEPER_CLASSPATH`` wins over the Debian jar location; every
    non-wildcard entry must exist so a typo fails here, not inside java.
    """
    override = os.environ.get(CLASSPATH_ENV)
    classpath = override or DEFAULT_CLASSPATH
    entries = [entry for entry in classpath.split(os.pathsep) if entry]
    missing = [e for e in entries if not e.endswith("*") and not Path(e).exists()]
    if not entries or missing:
        source = f"${CLASSPATH_ENV}" if override else "the default location"
        raise ZooKeeperNotInstalled(
            f"ZooKeeper server jar not found at {', '.join(missing) or classpath!r}"
            f" ({source}); {_INSTALL_HINT}, or point ${CLASSPATH_ENV} at the jars"
        )
    if not override and Path(SLF4J_SIMPLE_JAR).exists():
        entries.append(SLF4J_SIMPLE_JAR)
    return os.pathsep.join(entries)


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now (racy, as always)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def four_letter_word(host: str, port: int, word: str, timeout: float = 1.0) -> str:
    """Send a ZooKeeper four-letter command (``ruok``, ``srvr``...) and return the reply.

    Raises OSError if nothing listens; the server must whitelist the word.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(word.encode("ascii"))
        chunks = []
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


# Servers still running at interpreter exit are stopped so that no java
# process outlives a crashed test run.
_live_servers: weakref.WeakSet[ZooKeeperServer] = weakref.WeakSet()


@atexit.register
def _stop_live_servers() -> None:
    for server in list(_live_servers):
        try:
            server.stop(timeout=5.0)
        except Exception:  # best effort at exit
            pass


class ZooKeeperServer:
    """A standalone ZooKeeper on loopback, owning ``directory``.

    The port is fixed at construction (picked free if not given) so that
    ``stop()`` followed by ``start()`` brings the same server back on the same
    address with the same data, like an operator restarting it.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        tick_time_ms: int = 200,
        min_session_timeout_ms: int | None = None,
        max_session_timeout_ms: int | None = None,
        force_sync: bool = False,
        startup_timeout: float = 30.0,
        jvm_options: Sequence[str] = DEFAULT_JVM_OPTIONS,
    ) -> None:
        """Configure (but do not start) a server; nothing is written yet.

        Session timeouts default to ZooKeeper's own rule (2 and 20 ticks).
        ``force_sync=False`` skips fsync: the data survives a process kill
        (it is in the page cache) but not a machine crash, fine for tests.
        """
        self.directory = Path(directory).resolve()
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.tick_time_ms = tick_time_ms
        self.min_session_timeout_ms = (
            min_session_timeout_ms if min_session_timeout_ms is not None else 2 * tick_time_ms
        )
        self.max_session_timeout_ms = (
            max_session_timeout_ms if max_session_timeout_ms is not None else 20 * tick_time_ms
        )
        self.force_sync = force_sync
        self.startup_timeout = startup_timeout
        self.jvm_options = tuple(jvm_options)
        self._process: subprocess.Popen[bytes] | None = None

    # -- paths and addresses ------------------------------------------------

    @property
    def hosts(self) -> str:
        """The connection string for clients, ``"127.0.0.1:PORT"``."""
        return f"{self.host}:{self.port}"

    @property
    def data_dir(self) -> Path:
        """ZooKeeper's dataDir (snapshots and transaction logs)."""
        return self.directory / "data"

    @property
    def config_path(self) -> Path:
        """The generated ``zoo.cfg``."""
        return self.directory / "zoo.cfg"

    @property
    def log_path(self) -> Path:
        """The java process's stdout+stderr, appended to across restarts."""
        return self.directory / "zookeeper.log"

    @property
    def pid(self) -> int | None:
        """The java process id while it runs, else None."""
        return self._process.pid if self.running and self._process else None

    @property
    def running(self) -> bool:
        """Whether the java process is alive (not necessarily serving yet)."""
        return self._process is not None and self._process.poll() is None

    # -- lifecycle ----------------------------------------------------------

    def write_config(self) -> None:
        """Write ``zoo.cfg`` and create the data dir (idempotent)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lines = [
            f"tickTime={self.tick_time_ms}",
            f"dataDir={self.data_dir}",
            f"clientPort={self.port}",
            f"clientPortAddress={self.host}",
            f"minSessionTimeout={self.min_session_timeout_ms}",
            f"maxSessionTimeout={self.max_session_timeout_ms}",
            "admin.enableServer=false",
            "4lw.commands.whitelist=*",
            f"forceSync={'yes' if self.force_sync else 'no'}",
            "preAllocSize=4096",
            "maxClientCnxns=0",
        ]
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float | None = None, *, wait: bool = True) -> None:
        """Start java on the configured port; with ``wait``, block until it serves.

        ``wait=False`` only spawns the process (useful from a reactor thread);
        call ``wait_until_serving()`` later. Raises ZooKeeperStartError if
        the process dies or does not serve before the deadline.
        """
        if self.running:
            raise ZooKeeperStartError(f"ZooKeeper on {self.hosts} is already running")
        java = find_java()
        classpath = find_classpath()
        self.write_config()
        argv = [java, *self.jvm_options, "-cp", classpath, MAIN_CLASS]
        argv.append(str(self.config_path))
        with open(self.log_path, "ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"--- {stamp} kvd: starting {' '.join(argv)}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                start_new_session=True,  # Ctrl-C on a terminal reaches us only
            )
        _live_servers.add(self)
        if wait:
            self.wait_until_serving(timeout)

    def is_serving(self) -> bool:
        """Whether the server answers requests now (``ruok`` alone says imok too early)."""
        try:
            if four_letter_word(self.host, self.port, "ruok") != "imok":
                return False
            return "Mode:" in four_letter_word(self.host, self.port, "srvr")
        except OSError:
            return False

    def wait_until_serving(self, timeout: float | None = None) -> None:
        """Poll until the server serves, the process dies, or the deadline passes."""
        deadline = time.monotonic() + (self.startup_timeout if timeout is None else timeout)
        delay = 0.02
        while True:
            if self._process is None:
                raise ZooKeeperStartError("ZooKeeper was never started")
            code = self._process.poll()
            if code is not None:
                raise ZooKeeperStartError(
                    f"ZooKeeper on {self.hosts} exited with status {code} while"
                    f" starting; see {self.log_path}:\n{self._log_tail()}"
                )
            if self.is_serving():
                return
            if time.monotonic() >= deadline:
                self.stop()
                raise ZooKeeperStartError(
                    f"ZooKeeper on {self.hosts} did not serve within the deadline;"
                    f" see {self.log_path}:\n{self._log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop the server: SIGTERM, then SIGKILL after ``timeout``; wait for exit.

        Returns the exit status (None if it was not running). Idempotent.
        """
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        _live_servers.discard(self)
        return process.returncode

    def restart(self, timeout: float | None = None) -> None:
        """Stop then start again on the same port and data dir."""
        self.stop()
        self.start(timeout)

    def wait(self) -> int:
        """Block until the java process exits and return its status."""
        if self._process is None:
            raise ZooKeeperStartError("ZooKeeper was never started")
        return self._process.wait()

    def expire_session(self, session_id: int, password: bytes, timeout: float = 10.0) -> None:
        """Force the server to expire another client's session.

        The documented trick: a second client joins the same session (same id
        and password), which takes the session over, and then closes it. The
        original client sees its connection drop and, on reconnecting, learns
        that its session has expired (kazoo: SUSPENDED, then LOST).
        """
        from kazoo.client import KazooClient

        client = KazooClient(
            hosts=self.hosts,
            client_id=(session_id, password),
            timeout=self.max_session_timeout_ms / 1000.0,
        )
        try:
            client.start(timeout=timeout)
            client.stop()
        finally:
            client.close()

    # -- context manager ----------------------------------------------------

    def __enter__(self) -> ZooKeeperServer:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<ZooKeeperServer {self.hosts} {state} dir={self.directory}>"

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m kvd.testing.zookeeper",
        description="Run a throw-away ZooKeeper on loopback until Ctrl-C/SIGTERM.",
    )
    parser.add_argument("--port", type=int, default=2181, help="client port")
    parser.add_argument("--dir", default="run/zk", help="directory for zoo.cfg, data and log")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("--tick-time", type=int, default=200, help="tickTime in milliseconds")
    parser.add_argument("--startup-timeout", type=float, default=60.0, help="seconds to wait")
    return parser.parse_args(argv)


class _Terminate(Exception):
    """Raised from the SIGTERM handler to leave the foreground wait."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run one server in the foreground; print one line when it serves.

    Exits 0 on Ctrl-C/SIGTERM (after stopping java), 1 if java dies or
    fails to start, 2 if ZooKeeper is not installed.
    """
    args = _parse_args(argv)
    server = ZooKeeperServer(
        args.dir,
        args.port,
        host=args.host,
        tick_time_ms=args.tick_time,
        startup_timeout=args.startup_timeout,
    )

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise _Terminate()

    previous_term = signal.signal(signal.SIGTERM, on_sigterm)
    previous_int = signal.getsignal(signal.SIGINT)
    try:
        server.start()
        print(
            f"zookeeper ready on {server.hosts}"
            f" (pid {server.pid}, dir {server.directory}, log {server.log_path})",
            flush=True,
        )
        code = server.wait()
        print(f"zookeeper exited with status {code}", file=sys.stderr, flush=True)
        return 1
    except (KeyboardInterrupt, _Terminate):
        return 0
    except ZooKeeperNotInstalled as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    except ZooKeeperStartError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        # A second signal while stopping must not leave java behind.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            server.stop()
        finally:
            signal.signal(signal.SIGTERM, previous_term)
            signal.signal(signal.SIGINT, previous_int)


if __name__ == "__main__":
    sys.exit(main())
