"""
``make run``: a local kvd to play with, in the foreground until Ctrl-C.

Data lives under ``run/`` (git-ignored).
"""

from __future__ import annotations

import os
import signal
import sys
import time

from kvd.testing.process import KvdProcess

RUN_DIR = "run"
PORTS = (8081,)


def main() -> int:
    nodes = [KvdProcess(os.path.join(RUN_DIR, str(port)), port=port, args=["--standalone"])
             for port in PORTS]
    try:
        for node in nodes:
            node.start()
        url = nodes[0].url
        print(f"kvd is running: standalone node at {url} (logs in {RUN_DIR}/*/kvd.log)")
        print(f"  curl -s -XPOST {url}/api/v1/ -d '{{\"key\":\"greeting\",\"value\":\"hello\"}}'")
        print(f"  curl -s {url}/api/v1/keys/greeting")
        print(f"  curl -s {url}/api/v1/cluster")
        print("Ctrl-C stops it.")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while all(n.proc is not None and n.proc.poll() is None for n in nodes):
            time.sleep(0.5)
        print("a node exited; see its log", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for node in nodes:
            node.stop()


if __name__ == "__main__":
    sys.exit(main())
