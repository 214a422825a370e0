"""etcd as ``cluster_vs_etcd.py`` runs it: three members on loopback, one data dir each."""

from __future__ import annotations

import base64
import os
import subprocess
from dataclasses import dataclass
from typing import Any

from harness import (
    HOST,
    BenchError,
    Conn,
    Line,
    System,
    delta,
    free_port,
    ratio,
    run_quiet,
    stop_process,
    tail,
)

from kvd.testing.process import request, wait_for

ETCD_INSTALL_HINT = "install it with `apt-get install -y etcd-server`"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclass
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: str
    log_path: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{HOST}:{self.peer_port}"


class EtcdSystem(System):
    """Three ``etcd`` members on loopback, one data dir each."""

    name = "etcd"
    script = "cluster_etcd.lua"

    def __init__(self, workdir: str, value_bytes: int, extra_args: list[str],
                 binary: str) -> None:
        super().__init__(workdir, value_bytes, extra_args)
        self.binary = binary
        self.members: list[EtcdMember] = []
        self._ids: dict[str, str] = {}  # member id -> name
        self._leader: EtcdMember | None = None
        self._follower: EtcdMember | None = None

    def command(self, member: EtcdMember) -> list[str]:
        cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        return [
            self.binary, "--name", member.name, "--data-dir", member.data_dir,
            "--listen-client-urls", member.url, "--advertise-client-urls", member.url,
            "--listen-peer-urls", member.peer_url,
            "--initial-advertise-peer-urls", member.peer_url,
            "--initial-cluster", cluster, "--initial-cluster-state", "new",
            "--initial-cluster-token", f"kvd-bench-{os.getpid()}",
            "--logger", "zap", "--log-level", "warn", *self.extra_args,
        ]

    def start(self) -> None:
        root = os.path.join(self.workdir, "etcd")
        for i in range(3):
            member_dir = os.path.join(root, f"m{i}")
            os.makedirs(member_dir, exist_ok=True)
            self.members.append(EtcdMember(f"m{i}", free_port(), free_port(),
                                           os.path.join(member_dir, "data"),
                                           os.path.join(member_dir, "etcd.log")))
        for member in self.members:
            with open(member.log_path, "ab") as log:
                member.proc = subprocess.Popen(
                    self.command(member), stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True)
        for member in self.members:
            wait_for(lambda m=member: self._healthy(m), 60, f"etcd {member.name} /health")
        wait_for(self._find_roles, 60, "an etcd leader")

    def _healthy(self, member: EtcdMember) -> bool:
        assert member.proc is not None
        if member.proc.poll() is not None:
            raise BenchError(f"etcd {member.name} exited with {member.proc.returncode}:\n"
                             + tail(member.log_path))
        response = request(member.url, "GET", "/health", timeout=2)
        return response.status == 200 and str(response.body.get("health")) == "true"

    def _status(self, member: EtcdMember) -> dict[str, Any]:
        response = request(member.url, "POST", "/v3/maintenance/status", {}, timeout=5)
        if response.status != 200:
            raise BenchError(f"etcd {member.name} status answered {response.status}")
        return dict(response.body)

    def _find_roles(self) -> bool:
        leader_ids = set()
        for member in self.members:
            status = self._status(member)
            self._ids[str(status["header"]["member_id"])] = member.name
            leader_ids.add(str(status.get("leader", "0")))
        if len(leader_ids) != 1 or "0" in leader_ids:
            return False
        leader_name = self._ids.get(leader_ids.pop())
        if leader_name is None:
            return False
        self._leader = next(m for m in self.members if m.name == leader_name)
        self._follower = next(m for m in self.members if m is not self._leader)
        return True

    def stop(self) -> None:
        for member in self.members:
            if member.proc is not None:
                stop_process(member.proc)

    def describe(self) -> dict[str, Any]:
        version = run_quiet([self.binary, "--version"])
        return {
            "version": version.splitlines()[0] if version else None,
            "version_output": version,
            "members": [{"name": m.name, "url": m.url, "pid": m.proc.pid if m.proc else None,
                         "command": self.command(m)} for m in self.members],
            "leader": self._leader.name if self._leader else None,
            "follower": self._follower.name if self._follower else None,
            "extra_args": self.extra_args,
        }

    def leader_url(self) -> str:
        assert self._leader is not None
        return self._leader.url

    def follower_url(self) -> str:
        assert self._follower is not None
        return self._follower.url

    def leader_id(self) -> str:
        try:
            status = self._status(self.members[0])
        except Exception:
            return "unknown"
        return self._ids.get(str(status.get("leader")), str(status.get("leader")))

    def pids(self) -> dict[str, int]:
        assert self._leader is not None
        out: dict[str, int] = {}
        for member in [self._leader, *[m for m in self.members if m is not self._leader]]:
            if member.proc is None:
                continue
            role = "leader" if member is self._leader else (
                "follower" if member is self._follower else "other")
            out[f"{role}:{member.name}"] = member.proc.pid
        return out

    def put(self, conn: Conn, key: str, value: str) -> None:
        status, body = conn.call("POST", "/v3/kv/put", {"key": b64(key), "value": b64(value)})
        if status != 200 or not isinstance(body, dict) or "header" not in body:
            raise BenchError(f"etcd put {key} answered {status}: {body!r}")

    def count(self, url: str) -> int:
        response = request(url, "POST", "/v3/kv/range",
                           {"key": b64("k"), "range_end": b64("l"), "count_only": True,
                            "serializable": True}, timeout=10)
        if response.status != 200:
            raise BenchError(f"etcd count on {url} answered {response.status}")
        return int(response.body.get("count", 0))

    def read(self, url: str, key: str) -> str | None:
        response = request(url, "POST", "/v3/kv/range", {"key": b64(key)}, timeout=10)
        kvs = response.body.get("kvs") if response.status == 200 else None
        return base64.b64decode(kvs[0]["value"]).decode() if kvs else None

    def mode(self, line: Line) -> str:
        return line.etcd_mode

    def metrics_urls(self) -> dict[str, str]:
        by_name = {m.name: m.url for m in self.members}
        return {role: by_name[role.split(":")[1]] for role in self.pids()}

    def derive(self, before: dict[str, dict[str, float]], after: dict[str, dict[str, float]],
               requests: int) -> dict[str, dict[str, float]]:
        return derive_etcd(before, after, requests)


def derive_etcd(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]],
                requests: int) -> dict[str, dict[str, float]]:
    """Per member: WAL fsyncs and backend commits per client request."""
    out: dict[str, dict[str, float]] = {}
    for role, now in after.items():
        was = before.get(role, {})
        if not now:
            continue
        fsyncs = delta(was, now, "etcd_disk_wal_fsync_duration_seconds_count")
        commits = delta(was, now, "etcd_disk_backend_commit_duration_seconds_count")
        sent = sum(delta(was, now, k) for k in now
                   if k.startswith("etcd_network_peer_sent_bytes_total"))
        figures = {
            "wal_fsyncs_per_request": ratio(fsyncs, requests),
            "wal_fsync_mean_ms": ratio(
                delta(was, now, "etcd_disk_wal_fsync_duration_seconds_sum"), fsyncs, 1000),
            "backend_commits_per_request": ratio(commits, requests),
            "peer_bytes_sent_per_request": ratio(sent, requests, digits=1),
        }
        out[role] = {k: v for k, v in figures.items() if v is not None}
    return out
