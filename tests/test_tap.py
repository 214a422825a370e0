"""``twistd kvd``'s options, parsed directly (as transit relay's test_config does)."""

from __future__ import annotations

import os
from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage

from kvd.service import KvdService
from kvd.tap import Options


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


def test_defaults_for_a_port() -> None:
    config = parse("--port", "8081").config()
    assert config.listen == "tcp:8081"
    assert config.advertise == "http://127.0.0.1:8081"
    assert config.data_dir == os.path.join("kvd-data", "8081")
    assert (config.replicas, config.write_quorum, config.sync_quorum) == (3, 2, 2)
    assert config.fsync and not config.standalone and not config.metrics_auth
    assert (config.token_ttl, config.max_connections, config.request_timeout) == (300, 1024, 10)
    assert config.peer_listen is None and config.peer_secret_file is None
    assert (config.snapshot_entries, config.snapshot_bytes) == (20_000, 64 << 20)


def test_flags_reach_the_config() -> None:
    config = parse("--listen", "tcp:9000:interface=10.0.0.5", "--advertise",
                   "http://10.0.0.5:9000/", "--replicas", "5", "--write-quorum", "4",
                   "--fsync", "none", "--token-ttl", "60", "--metrics-auth",
                   "--peer-listen", "tcp:9100", "--advertise-peer", "http://10.1.0.5:9100",
                   "--cluster", "prod.eu-1", "--snapshot-entries", "500",
                   "--snapshot-bytes", "1048576").config()
    assert config.advertise == "http://10.0.0.5:9000"
    assert (config.replicas, config.write_quorum, config.sync_quorum) == (5, 4, 2)
    assert not config.fsync and config.metrics_auth and config.token_ttl == 60
    assert (config.peer_listen, config.advertise_peer) == ("tcp:9100", "http://10.1.0.5:9100")
    assert config.cluster == "prod.eu-1"
    assert (config.snapshot_entries, config.snapshot_bytes) == (500, 1 << 20)


def test_snapshot_bounds_reach_the_node(tmp_path: Any) -> None:
    config = parse("--port", "1", "--standalone", "--data-dir", str(tmp_path / "d"),
                   "--snapshot-entries", "500", "--snapshot-bytes", "4096").config()
    settings = KvdService(config, reactor=MemoryReactorClock())._settings()
    assert (settings.snapshot_entries, settings.snapshot_bytes) == (500, 4096)


@pytest.mark.parametrize("argv,message", [
    ([], "--port or --listen is required"),
    (["--port", "1", "--listen", "tcp:2"], "not both"),
    (["--port", "70000"], "1-65535"),
    (["--listen", "unix:/tmp/s"], "--advertise is required"),
    (["--port", "1", "--advertise", "ftp://x"], "http(s) URL"),
    (["--port", "1", "--advertise-peer", "x"], "http(s) URL"),
    (["--port", "1", "--write-quorum", "4"], "between 1 and --replicas"),
    (["--port", "1", "--fsync", "sometimes"], "'always' or 'none'"),
    (["--port", "1", "--max-watches", "0"], "positive integer"),
    (["--port", "1", "--snapshot-bytes", "0"], "--snapshot-bytes must be a positive integer"),
    (["--port", "1", "--token-ttl", "0"], "--token-ttl must be positive"),
    (["--port", "1", "--cluster", "a/b"], "--cluster may hold only"),
    (["--port", "1", "--peer-cert", "c.pem"], "together"),
    (["--port", "1", "--client-ca", "c.pem"], "together"),
    (["--listen", "ssl:1", "--advertise", "https://h:1", "--client-cert", "c", "--client-key",
      "k", "--client-ca", "a"], "needs a tcp: --listen"),
    (["--port", "1", "--client-cert", "c", "--client-key", "k", "--client-ca", "a"],
     "needs an https:// --advertise"),
])
def test_bad_values_are_one_line_usage_errors(argv: list[str], message: str) -> None:
    with pytest.raises(usage.UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(*argv)


def test_secret_files_must_be_private_and_long_enough(tmp_path: Any) -> None:
    secret = tmp_path / "secret"
    secret.write_text("short\n")
    os.chmod(secret, 0o600)
    with pytest.raises(usage.UsageError, match="at least 16 bytes"):
        parse("--port", "1", "--peer-secret-file", str(secret))
    secret.write_text("a" * 32)
    os.chmod(secret, 0o644)
    with pytest.raises(usage.UsageError, match="readable by others"):
        parse("--port", "1", "--peer-secret-file", str(secret))
    os.chmod(secret, 0o600)
    assert parse("--port", "1", "--peer-secret-file", str(secret)).config().peer_secret_file
