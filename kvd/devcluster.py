"""
``make run``: a local ZooKeeper and a 3-node kvd cluster on 8081-8083, until Ctrl-C.

Everything lives under ``run/`` (git-ignored): ZooKeeper's data, each node's
data dir and log.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from kvd.testing.process import KvdProcess, request, wait_for
from kvd.testing.zookeeper import ZooKeeperServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", default="run", help="where data and logs go")
    parser.add_argument("--zookeeper-port", type=int, default=2181)
    parser.add_argument("--ports", default="8081,8082,8083")
    args = parser.parse_args(argv)
    ports = [int(p) for p in args.ports.split(",")]
    zookeeper = ZooKeeperServer(os.path.join(args.dir, "zookeeper"), port=args.zookeeper_port)
    nodes = [
        KvdProcess(os.path.join(args.dir, f"node-{port}"), port=port,
                   args=["--zookeeper", f"127.0.0.1:{args.zookeeper_port}", "--cluster", "dev"])
        for port in ports
    ]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        zookeeper.start()
        print(f"ZooKeeper on {zookeeper.hosts} (data in {args.dir}/zookeeper)")
        for node in nodes:
            node.start(wait=False)
        for node in nodes:
            node.wait_ready(60)

        def leader() -> str | None:
            body = request(nodes[0].url, path="/api/v1/cluster").body
            return (body.get("leader") or {}).get("url")

        url = wait_for(leader, 60, "a leader")
        print(f"kvd cluster 'dev' is up: nodes at {', '.join(n.url for n in nodes)}; "
              f"leader {url}")
        print(f"Logs: {args.dir}/node-*/kvd.log. Try:")
        first, second = nodes[0].url, nodes[-1].url
        print(f"  curl -s -XPOST {first}/api/v1/ -d '{{\"key\":\"greeting\",\"value\":\"hello\"}}'")
        print(f"  curl -s {second}/api/v1/keys/greeting")
        print(f"  curl -s -XGET {second}/api/v1/ -d '{{\"keys\":[\"greeting\",\"missing\"]}}'")
        print(f"  curl -s {first}/api/v1/cluster")
        print("Ctrl-C stops everything.")
        while all(n.proc is not None and n.proc.poll() is None for n in nodes):
            time.sleep(0.5)
        print("a node exited; see its log", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for node in nodes:
            node.stop()
        zookeeper.stop()


if __name__ == "__main__":
    sys.exit(main())
