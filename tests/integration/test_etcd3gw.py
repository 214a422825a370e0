"""etcd3gw's own functional tests, unchanged, against kvd's etcd gateway.

The suite ships inside the pinned ``etcd3gw`` package. It skips every test
when nothing answers at its URL, so a run counts only if nothing was skipped.
"""

from __future__ import annotations

import base64
import http.client
import itertools
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from typing import Any

import pytest

from kvd.testing.cluster import Cluster
from kvd.testing.process import KvdProcess, wait_for
from kvd.testing.zookeeper import ZooKeeperServer
from tests.zkfixture import zookeeper, zookeeper_factory  # noqa: F401

#: The functional tests of etcd3gw 2.7.0 (its unit tests of the client mock HTTP).
SUITE = "etcd3gw.tests.test_etcd3gw"
EXPECTED_TESTS = 23
_names = itertools.count()


def run_suite(node: KvdProcess, workdir: str) -> dict[str, int]:
    """Run etcd3gw's suite against ``node``; its counts from the JUnit report."""
    report = os.path.join(workdir, "etcd3gw.xml")
    env = {**os.environ, "TOOZ_TEST_ETCD_PORT": str(node.port),
           "TOOZ_TEST_HTTP_URL": f"http://localhost:{node.port}"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs",
         "--rootdir", workdir, "--junitxml", report, "--pyargs", SUITE],
        cwd=workdir, env=env, capture_output=True, timeout=600)
    suite = ElementTree.parse(report).getroot()
    if suite.tag == "testsuites":
        suite = suite[0]
    counts = {name: int(suite.get(name, "0")) for name in ("tests", "failures", "errors",
                                                            "skipped")}
    assert run.returncode == 0, run.stdout.decode()[-4000:]
    return counts


def assert_all_passed(counts: dict[str, int]) -> None:
    assert counts == {"tests": EXPECTED_TESTS, "failures": 0, "errors": 0, "skipped": 0}


def test_etcd3gw_suite_passes_against_a_standalone_node(tmp_path: Any) -> None:
    node = KvdProcess(str(tmp_path / "node"), args=["--standalone"]).start()
    try:
        assert_all_passed(run_suite(node, str(tmp_path)))
    finally:
        node.stop()


@pytest.fixture
def cluster(tmp_path: Any, zookeeper: ZooKeeperServer) -> Iterator[Cluster]:  # noqa: F811
    with Cluster(str(tmp_path), zookeeper, name=f"gw{next(_names)}", session_timeout=2.0) as c:
        yield c


def test_etcd3gw_suite_passes_through_a_follower(cluster: Cluster, tmp_path: Any) -> None:
    follower = cluster.followers()[0]
    assert_all_passed(run_suite(follower, str(tmp_path)))
    # The suite's writes went through the follower to the leader and back.
    cluster.wait_converged()


def test_a_gateway_watch_ends_when_its_client_goes(tmp_path: Any) -> None:
    node = KvdProcess(str(tmp_path / "node"), args=["--standalone", "--max-watches", "1"]
                      ).start()
    body = json.dumps({"create_request": {"key": base64.b64encode(b"k").decode()}})
    try:
        first = http.client.HTTPConnection("127.0.0.1", node.port, timeout=5)
        first.request("POST", "/v3/watch", body)
        opened = first.getresponse()
        assert opened.status == 200
        assert json.loads(opened.readline())["result"]["created"] is True
        second = http.client.HTTPConnection("127.0.0.1", node.port, timeout=5)
        second.request("POST", "/v3/watch", body)
        refused = second.getresponse()
        assert (refused.status, json.loads(refused.read())["code"]) == (429, 8)
        second.close()
        first.close()

        def slot_freed() -> bool:
            again = http.client.HTTPConnection("127.0.0.1", node.port, timeout=5)
            try:
                again.request("POST", "/v3/watch", body)
                return again.getresponse().status == 200
            finally:
                again.close()
        wait_for(slot_freed, 10, "the closed watch's slot is free again")
    finally:
        node.stop()
