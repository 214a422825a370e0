"""A real standalone ``twistd kvd`` process: durability across kill -9 and bad disks."""

from __future__ import annotations

import os
import subprocess
from typing import Any

from kvd.testing.process import KvdProcess, twistd_command
from kvd.wal.layout import DataDir


def node(tmp_path: Any, *args: str) -> KvdProcess:
    return KvdProcess(str(tmp_path), args=["--standalone", *args])


def test_acknowledged_writes_survive_kill_9(tmp_path: Any) -> None:
    kvd = node(tmp_path).start()
    try:
        acknowledged = {}
        for i in range(200):
            response = kvd.call("POST", "/api/v1/", {"key": f"k{i % 50}", "value": f"v{i}"})
            assert response.status == 200
            acknowledged[f"k{i % 50}"] = (f"v{i}", response.body["revision"])
        kvd.kill()
        kvd.start()
        for key, (value, revision) in acknowledged.items():
            got = kvd.call("GET", f"/api/v1/keys/{key}")
            assert (got.status, got.body["value"], got.body["revision"]) == (200, value, revision)
    finally:
        kvd.stop()


def test_torn_tail_is_dropped_and_nothing_acknowledged_is_lost(tmp_path: Any) -> None:
    kvd = node(tmp_path).start()
    try:
        for i in range(20):
            assert kvd.call("PUT", f"/api/v1/keys/k{i}", {"value": "v"}).status == 200
        kvd.kill()
        data_dir = DataDir(kvd.data_dir)
        with open(data_dir.segment_path(data_dir.segment_names()[-1]), "ab") as f:
            f.write(b"\x13\x00\x00\x00torn" + os.urandom(5))
        kvd.start()
        assert "Dropping a torn WAL tail" in kvd.log_tail(100)
        assert kvd.call("GET", "/api/v1/?keys=k0,k19").body == ["v", "v"]
    finally:
        kvd.stop()


def test_corrupt_record_refuses_to_start_and_names_the_place(tmp_path: Any) -> None:
    kvd = node(tmp_path).start()
    for i in range(20):
        assert kvd.call("PUT", f"/api/v1/keys/k{i}", {"value": "v" * 30}).status == 200
    kvd.stop()
    data_dir = DataDir(kvd.data_dir)
    path = data_dir.segment_path(data_dir.segment_names()[-1])
    with open(path, "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    kvd.start(wait=False)
    assert kvd.wait_exit() != 0
    assert f"{path}: unreadable record at offset" in kvd.log_tail(50)


def test_bad_command_line_is_a_usage_error() -> None:
    for args in (["--port", "0"], ["--port", "8081", "--fsync", "sometimes"],
                 ["--port", "8081", "--write-quorum", "4"], ["--port", "x"]):
        run = subprocess.run([*twistd_command(), "--pidfile=", "kvd", *args],
                             capture_output=True, timeout=60)
        assert run.returncode != 0
        assert b"Traceback" not in run.stderr + run.stdout


def test_bad_requests_before_routing_get_json_errors(tmp_path: Any) -> None:
    kvd = node(tmp_path, "--max-body-bytes", "1000").start()
    try:
        big = kvd.call("PUT", "/api/v1/keys/a", b"x" * 5000)
        assert (big.status, big.body["error"]["code"]) == (413, "too_large")
        bad_path = kvd.call("GET", "/api/v1/keys/%ff")
        assert (bad_path.status, bad_path.body["error"]["code"]) == (400, "bad_request")
        assert kvd.call("PUT", "/api/v1/keys/a", {"value": "ok"}).status == 200
        assert kvd.call("GET", "/api/v1/keys/a").body["value"] == "ok"
        assert "Traceback" not in kvd.log_tail(200)
    finally:
        kvd.stop()
