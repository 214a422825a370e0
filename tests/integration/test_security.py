"""The trust boundary with real processes and a real ZooKeeper: ZooKeeper ACLs."""

from __future__ import annotations

import http.client
import itertools
import os
import socket
import time
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError

from kvd.testing.cluster import Cluster
from kvd.testing.process import KvdProcess, request, wait_for
from kvd.testing.zookeeper import ZooKeeperServer
from tests.zkfixture import zookeeper  # noqa: F401


# Fails if: ZooKeeperService ignores its digest (the tree is created world-writable).
def test_with_a_zookeeper_identity_nobody_else_can_change_the_tree_or_read_the_secret(
    tmp_path: Any, zookeeper: ZooKeeperServer  # noqa: F811
) -> None:
    auth = tmp_path / "zookeeper-auth"
    auth.write_text("kvd:a-password-for-tests\n")
    os.chmod(auth, 0o600)
    # A chroot of its own: /kvd is created with the ACL too, and other tests share
    # this ZooKeeper without an identity.
    node = KvdProcess(str(tmp_path / "node"), args=[
        "--zookeeper", f"{zookeeper.hosts}/acl-test", "--cluster", "acl", "--replicas", "1",
        "--session-timeout", "2", "--zookeeper-auth-file", str(auth)])
    cluster = Cluster(str(tmp_path), zookeeper, size=1, name="acl", nodes=[node])
    try:
        cluster.start()
        assert cluster.put(node, "k", "v").status == 200
        stranger = KazooClient(hosts=f"{zookeeper.hosts}/acl-test")
        stranger.start(10)
        try:
            election = stranger.get_children("/kvd/acl/election")
            assert election, "the leader's election znode"
            with pytest.raises(NoAuthError):
                stranger.delete(f"/kvd/acl/election/{election[0]}")
            with pytest.raises(NoAuthError):
                stranger.set("/kvd/acl/epoch", b"999")
            with pytest.raises(NoAuthError):
                stranger.get("/kvd/acl/secret")
            with pytest.raises(NoAuthError):
                stranger.delete("/kvd/acl/leader")
        finally:
            stranger.stop()
            stranger.close()
        assert cluster.put(node, "k", "v2").status == 200
    finally:
        cluster.stop()


def _closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> bytes:
    """Read ``sock`` until the node closes it (or fail); sends ``trickle`` a byte at a time."""
    deadline = time.monotonic() + seconds
    received = b""
    sock.settimeout(0.3)
    for byte in itertools.chain((bytes([b]) for b in trickle), itertools.repeat(b"")):
        if time.monotonic() > deadline:
            raise AssertionError(f"still open after {seconds}s; got {received!r}")
        try:
            if byte:
                sock.sendall(byte)
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk
    raise AssertionError("unreachable")


# Fails if: KvdChannel arms no headers deadline (a client trickling headers is never cut off),
# or ConnectionLimit takes every connection, or the watch route ignores max_watches.
def test_slow_clients_connections_and_watches_are_bounded(tmp_path: Any) -> None:
    node = KvdProcess(str(tmp_path / "node"), args=[
        "--standalone", "--request-timeout", "1", "--max-connections", "3",
        "--max-watches", "1"]).start()
    try:
        host, port = "127.0.0.1", node.port
        with socket.create_connection((host, port)) as slow:
            answer = _closed_within(slow, 10, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" * 40)
        assert answer.startswith(b"HTTP/1.1 408")
        first = http.client.HTTPConnection(host, port, timeout=5)
        first.request("GET", "/api/v1/watch?key=w")
        assert first.getresponse().status == 200
        second = http.client.HTTPConnection(host, port, timeout=5)
        second.request("GET", "/api/v1/watch?key=w")
        refused = second.getresponse()
        assert refused.status == 429 and b"too_many_requests" in refused.read()
        second.close()
        held = [first.sock]
        held += [socket.create_connection((host, port)) for _ in range(2)]
        with socket.create_connection((host, port)) as extra:
            assert _closed_within(extra, 5, b"GET /healthz HTTP/1.1\r\n\r\n") == b""
        for sock in held[1:]:
            sock.close()
        first.close()
        wait_for(lambda: request(node.url, path="/healthz", timeout=2).status == 200, 10,
                 "the node takes connections again")
    finally:
        node.stop()


# Fails if: PeerTLS.server_options does not require a client certificate from the CA.
def test_a_cluster_with_peer_mutual_tls_replicates_and_refuses_strangers(
    tmp_path: Any, zookeeper: ZooKeeperServer  # noqa: F811
) -> None:
    """Three nodes whose peers speak mutual TLS with certificates from a throw-away CA."""
    import ssl

    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    files = {"cert": tmp_path / "peer.pem", "key": tmp_path / "peer.key",
             "ca": tmp_path / "ca.pem"}
    leaf.cert_chain_pems[0].write_to_path(str(files["cert"]))
    leaf.private_key_pem.write_to_path(str(files["key"]))
    ca.cert_pem.write_to_path(str(files["ca"]))
    tls = ["--peer-cert", str(files["cert"]), "--peer-key", str(files["key"]),
           "--peer-ca", str(files["ca"])]
    cluster = Cluster(str(tmp_path), zookeeper, name="tls", session_timeout=2.0,
                      extra_args=tls)
    try:
        cluster.start()
        written = {}
        for i, node in enumerate(cluster.nodes):
            response = cluster.put(node, f"tls{i}", f"v{i}")
            assert response.status == 200, response.body
            written[f"tls{i}"] = (f"v{i}", response.body["revision"])
        for node in cluster.nodes:
            for key, (value, _) in written.items():
                assert cluster.get(node, key).body["value"] == value
        peer_url = cluster.peer_url(cluster.nodes[0])
        assert peer_url.startswith("https://127.0.0.1:")
        host, port = peer_url.split("://", 1)[1].split(":")
        stranger = ssl.create_default_context(cafile=str(files["ca"]))  # no client cert
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
                with stranger.wrap_socket(raw, server_hostname=host) as tls_sock:
                    tls_sock.sendall(b"POST /peer/v1/readindex HTTP/1.1\r\nHost: x\r\n\r\n")
                    if not tls_sock.recv(1):
                        raise ConnectionResetError("closed without an answer")
    finally:
        cluster.stop()


# Fails if: kvctl's --cacert is not handed to the client's TLS policy.
def test_kvctl_talks_to_a_tls_client_listener_with_its_ca(tmp_path: Any) -> None:
    import ssl
    import subprocess
    import sys

    import trustme

    from kvd.testing.process import free_port

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    node = KvdProcess(str(tmp_path / "node"), port=port, args=["--standalone"],
                      listen=f"ssl:{port}:privateKey={key}:certKey={cert}:interface=127.0.0.1",
                      scheme="https")
    node.start(wait=False)
    context = ssl.create_default_context(cafile=str(ca_file))

    def ready() -> bool:
        connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=2,
                                                 context=context)
        try:
            connection.request("GET", "/readyz")
            return connection.getresponse().status == 200
        except OSError:
            return False
        finally:
            connection.close()

    def kvctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "kvd.client.kvctl", "--endpoints", url,
                               *args], capture_output=True, text=True, timeout=60)

    try:
        wait_for(ready, 30, "the TLS listener")
        done = kvctl("--cacert", str(ca_file), "put", "secure", "yes")
        assert done.returncode == 0, done.stderr
        got = kvctl("--cacert", str(ca_file), "get", "secure")
        assert got.returncode == 0 and got.stdout.split() == ["secure", "yes"], got
        untrusted = kvctl("get", "secure")  # the system's roots do not know this CA
        assert untrusted.returncode != 0
    finally:
        node.stop()


# Fails if: KvdService does not wrap the client listener in mutual TLS with --client-ca
# (a client without a certificate gets in).
def test_with_client_certificates_required_only_a_client_with_one_gets_in(
        tmp_path: Any) -> None:
    import subprocess
    import sys

    import trustme

    from kvd.testing.process import free_port

    ca = trustme.CA()
    server, client = ca.issue_cert("127.0.0.1"), ca.issue_cert("kvctl")
    paths = {name: str(tmp_path / f"{name}.pem") for name in
             ("ca", "cert", "key", "client-cert", "client-key")}
    ca.cert_pem.write_to_path(paths["ca"])
    server.cert_chain_pems[0].write_to_path(paths["cert"])
    server.private_key_pem.write_to_path(paths["key"])
    client.cert_chain_pems[0].write_to_path(paths["client-cert"])
    client.private_key_pem.write_to_path(paths["client-key"])
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    node = KvdProcess(str(tmp_path / "node"), port=port, scheme="https", args=[
        "--standalone", "--client-cert", paths["cert"], "--client-key", paths["key"],
        "--client-ca", paths["ca"]])

    def kvctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "kvd.client.kvctl", "--endpoints", url,
                               "--cacert", paths["ca"], "--timeout", "3", *args],
                              capture_output=True, text=True, timeout=60)

    with_cert = ("--cert", paths["client-cert"], "--key", paths["client-key"])
    node.start(wait=False)
    try:
        wait_for(lambda: kvctl(*with_cert, "put", "k", "v").returncode == 0, 30,
                 "a write with a client certificate")
        got = kvctl(*with_cert, "get", "k")
        assert got.returncode == 0 and got.stdout.split() == ["k", "v"], got
        refused = kvctl("get", "k")
        assert refused.returncode == 3, refused  # the handshake fails: unavailable
    finally:
        node.stop()
