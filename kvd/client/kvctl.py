"""
``kvctl``: kvd from the command line, in the manner of etcdctl.

Exit codes: 0 done; 1 the cluster said no (key not found, compare failed);
2 usage error; 3 unavailable (no endpoint could take it, nothing was
applied); 4 outcome unknown (a write may or may not have been applied).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import react

from kvd.client.client import KvdClient, KvdError, OutcomeUnknown, Unavailable
from kvd.client.tls import ClientTLS

EXIT_NO, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_UNKNOWN = 1, 2, 3, 4


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kvctl", description="Talk to a kvd cluster.")
    p.add_argument("--endpoints", default=os.environ.get("KVCTL_ENDPOINTS",
                                                         "http://127.0.0.1:8081"),
                   help="comma-separated node URLs, tried in order (env KVCTL_ENDPOINTS)")
    p.add_argument("-w", "--output", choices=("text", "json"), default="text")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    p.add_argument("--cacert", help="CA certificate (PEM) to trust for https:// endpoints")
    p.add_argument("--cert", dest="tls_cert", help="client certificate (PEM) to show")
    p.add_argument("--key", dest="tls_key", help="the client certificate's key (PEM)")
    commands = p.add_subparsers(dest="command", required=True)

    put = commands.add_parser("put", help="write a key")
    put.add_argument("key")
    put.add_argument("value")
    put.add_argument("--ttl", type=int, help="seconds until the key expires")
    put.add_argument("--prev-revision", type=int, help="compare-and-set (0: must not exist)")

    get = commands.add_parser("get", help="read a key, or keys by prefix")
    get.add_argument("key")
    get.add_argument("--prefix", action="store_true", help="every key starting with KEY")
    get.add_argument("--consistency", choices=("linearizable", "stale"),
                     default="linearizable")
    get.add_argument("--limit", type=int)
    get.add_argument("--keys-only", action="store_true")

    delete = commands.add_parser("del", help="delete a key")
    delete.add_argument("key")
    delete.add_argument("--prev-revision", type=int)

    txn = commands.add_parser("txn", help="run a transaction from a JSON file ('-': stdin)")
    txn.add_argument("file")

    watch = commands.add_parser("watch", help="print changes until Ctrl-C")
    watch.add_argument("key")
    watch.add_argument("--prefix", action="store_true")
    watch.add_argument("--start-revision", type=int)

    commands.add_parser("status", help="the cluster as each endpoint sees it")
    return p


def _print(args: argparse.Namespace, answer: Any, text: str) -> None:
    print(json.dumps(answer) if args.output == "json" else text)


async def run(reactor: Any, args: argparse.Namespace) -> int:
    tls = None
    if args.cacert or args.tls_cert or args.tls_key:
        tls = ClientTLS(args.cacert, args.tls_cert, args.tls_key)
    client = KvdClient([e.strip() for e in args.endpoints.split(",") if e.strip()], reactor,
                       args.timeout, tls)
    try:
        return await _command(reactor, client, args)
    finally:
        await client.close()


async def _command(reactor: Any, client: KvdClient, args: argparse.Namespace) -> int:
    if args.command == "put":
        answer = await client.put(args.key, args.value, args.prev_revision, args.ttl)
        _print(args, answer, f"OK revision {answer['revision']}")
    elif args.command == "get" and args.prefix:
        answer = await client.range(args.key, args.consistency, args.limit,
                                    **({"keys_only": "true"} if args.keys_only else {}))
        lines = [kv["key"] if args.keys_only else f"{kv['key']}\n{kv['value']}"
                 for kv in answer["kvs"]]
        _print(args, answer, "\n".join(lines))
    elif args.command == "get":
        kv = await client.get(args.key, args.consistency)
        if kv is None:
            _print(args, None, "")
            return EXIT_NO
        _print(args, kv, kv["key"] if args.keys_only else f"{kv['key']}\n{kv['value']}")
    elif args.command == "del":
        answer = await client.delete(args.key, args.prev_revision)
        _print(args, answer, f"deleted at revision {answer['revision']}")
    elif args.command == "txn":
        with (sys.stdin if args.file == "-" else open(args.file)) as f:
            body = json.load(f)
        answer = await client.txn(body)
        _print(args, answer, ("SUCCESS" if answer["succeeded"] else "FAILURE")
               + f" revision {answer['revision']}")
        return 0 if answer["succeeded"] else EXIT_NO
    elif args.command == "watch":
        def event(e: dict[str, Any]) -> None:
            text = f"{e['type'].upper()} {e['key']} {e['revision']}"
            if e["type"] == "put":
                text += f"\n{e['value']}"
            _print(args, e, text)
            sys.stdout.flush()

        key, prefix = (None, args.key) if args.prefix else (args.key, None)
        await client.watch(event, key=key, prefix=prefix, start_revision=args.start_revision)
    elif args.command == "status":
        return await _status(client, args)
    return 0


async def _status(client: KvdClient, args: argparse.Namespace) -> int:
    rows = []
    answers = []
    for endpoint in client.endpoints:
        try:
            status = await client.status(endpoint)
        except KvdError as e:
            rows.append((endpoint, "-", "unreachable", "-", "-", "-", "-", e.message))
            answers.append({"endpoint": endpoint, "error": e.message})
            continue
        answers.append({"endpoint": endpoint, **status})
        leader = (status.get("leader") or {}).get("node_id", "-")
        rows.append((endpoint, status["node_id"], status["role"], str(status["epoch"]),
                     str(status["commit_index"]), str(status["applied_index"]), leader, ""))
    header = ("ENDPOINT", "ID", "ROLE", "EPOCH", "COMMIT", "APPLIED", "LEADER", "ERROR")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    table = "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                      for r in [header, *rows])
    _print(args, answers, table)
    return 0 if any("error" not in a for a in answers) else EXIT_UNAVAILABLE


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    outcome = {"code": 0}

    async def entry(reactor: Any) -> None:
        try:
            outcome["code"] = await run(reactor, args)
        except OutcomeUnknown as e:
            print(f"kvctl: outcome unknown: {e.message}", file=sys.stderr)
            outcome["code"] = EXIT_UNKNOWN
        except Unavailable as e:
            print(f"kvctl: unavailable: {e.message}", file=sys.stderr)
            outcome["code"] = EXIT_UNAVAILABLE
        except KvdError as e:
            print(f"kvctl: {e.status} {e.code}: {e.message}", file=sys.stderr)
            outcome["code"] = EXIT_USAGE if e.status in (400, 413) else EXIT_NO
        except (OSError, ValueError) as e:
            print(f"kvctl: {e}", file=sys.stderr)
            outcome["code"] = EXIT_USAGE
        if outcome["code"]:
            # react() turns SystemExit into the process's exit code.
            raise SystemExit(outcome["code"])

    signal.signal(signal.SIGINT, lambda *_: os._exit(outcome["code"]))
    react(lambda reactor: ensureDeferred(entry(reactor)))


if __name__ == "__main__":
    main()
