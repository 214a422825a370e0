"""
The longest gap in acknowledged writes around a leader change: an explicit
hand-over (``POST /api/v1/leader/transfer``) against stopping the leader with
SIGTERM. A 3-node cluster on loopback, four writer threads through the
followers; three runs of each. Prints the gaps in seconds.

    .venv/bin/python bench/handover_gap.py
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable

from kvd.testing.cluster import Cluster
from kvd.testing.process import KvdProcess
from kvd.testing.zookeeper import ZooKeeperServer


def longest_gap(workdir: str, zookeeper: ZooKeeperServer, name: str,
                change: Callable[[KvdProcess], None]) -> float:
    cluster = Cluster(f"{workdir}/{name}", zookeeper, name=name, session_timeout=6.0)
    cluster.start()
    acknowledged: list[float] = []
    stopping = threading.Event()

    def write(node: KvdProcess) -> None:
        n = 0
        while not stopping.is_set():
            try:
                if cluster.put(node, f"k{n % 50}", "v", timeout=8).status == 200:
                    acknowledged.append(time.monotonic())
            except OSError:
                pass
            n += 1

    try:
        leader = cluster.wait_leader()
        writers = [threading.Thread(target=write, args=(node,), daemon=True)
                   for node in cluster.running() if node is not leader for _ in range(2)]
        for writer in writers:
            writer.start()
        time.sleep(2)
        started = time.monotonic()
        change(leader)
        time.sleep(3)
        stopping.set()
        for writer in writers:
            writer.join(10)
    finally:
        cluster.stop()
    window = [t for t in acknowledged if t > started - 1]
    return max(b - a for a, b in zip(window, window[1:], strict=False))


def transfer(leader: KvdProcess) -> None:
    answer = leader.call("POST", "/api/v1/leader/transfer", {})
    assert answer.status == 200, answer


def main() -> None:
    with tempfile.TemporaryDirectory() as workdir:
        zookeeper = ZooKeeperServer(f"{workdir}/zookeeper")
        zookeeper.start()
        try:
            for name, change in (("transfer", transfer), ("sigterm", KvdProcess.stop)):
                gaps = [longest_gap(workdir, zookeeper, f"{name}{i}", change) for i in range(3)]
                print(f"{name:9} longest gap (s): " + "  ".join(f"{g:.3f}" for g in gaps))
        finally:
            zookeeper.stop()


if __name__ == "__main__":
    main()
