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
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import react

from kvd import backup
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
    p.add_argument("--user", default=os.environ.get("KVCTL_USER"),
                   help="NAME:PASSWORD to log in with, when auth is on (env KVCTL_USER, "
                   "which stays out of ps and shell history)")
    commands = p.add_subparsers(dest="command", required=True)

    put = commands.add_parser("put", help="write a key")
    put.add_argument("key")
    put.add_argument("value")
    put.add_argument("--ttl", type=int, help="seconds until the key expires")
    put.add_argument("--prev-revision", type=int, help="compare-and-set (0: must not exist)")
    put.add_argument("--lease", type=int, help="attach the key to this lease")

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

    user = commands.add_parser("user", help="users (need no credentials until auth is on)")
    verbs = user.add_subparsers(dest="verb", required=True)
    for verb in ("add", "passwd"):
        v = verbs.add_parser(verb, help=f"{'create a user' if verb == 'add' else 'new password'}")
        v.add_argument("name")
        v.add_argument("--password", required=True)
    verbs.add_parser("delete", help="delete a user").add_argument("name")
    for verb in ("grant-role", "revoke-role"):
        v = verbs.add_parser(verb, help=f"{verb.split('-')[0]} a user a role")
        v.add_argument("name")
        v.add_argument("role")
    verbs.add_parser("list", help="users and their roles")

    role = commands.add_parser("role", help="roles: permissions on key prefixes")
    verbs = role.add_subparsers(dest="verb", required=True)
    verbs.add_parser("add", help="create a role").add_argument("role")
    verbs.add_parser("delete", help="delete a role").add_argument("role")
    grant = verbs.add_parser("grant", help="let a role read and/or write a key prefix")
    grant.add_argument("role")
    grant.add_argument("--prefix", required=True)
    grant.add_argument("--permission", required=True, choices=("read", "write", "readwrite"))
    revoke = verbs.add_parser("revoke", help="take a prefix's grant from a role")
    revoke.add_argument("role")
    revoke.add_argument("--prefix", required=True)
    verbs.add_parser("list", help="roles and their grants")

    lease = commands.add_parser("lease", help="leases: keys that go when their lease does")
    verbs = lease.add_subparsers(dest="verb", required=True)
    grant_lease = verbs.add_parser("grant", help="a new lease of TTL seconds; prints its id")
    grant_lease.add_argument("ttl", type=int)
    grant_lease.add_argument("--id", type=int, help="the lease's id (default: chosen)")
    for verb, text in (("keepalive", "renew a lease once, for its full TTL"),
                       ("revoke", "end a lease now: its keys are deleted"),
                       ("ttl", "time left and attached keys")):
        verbs.add_parser(verb, help=text).add_argument("id", type=int)
    verbs.add_parser("list", help="every lease")

    member = commands.add_parser("member", help="the voter set: list, promote, remove, "
                                 "replace (through the log, one change at a time)")
    verbs = member.add_subparsers(dest="verb", required=True)
    verbs.add_parser("list", help="every member: role, voter, last index, lag")
    verbs.add_parser("promote", help="make a caught-up learner ID a voter").add_argument("id")
    verbs.add_parser("remove", help="take voter ID out of the voter set").add_argument("id")
    replace = verbs.add_parser("replace", help="replace voter OLD by the caught-up learner NEW")
    replace.add_argument("old")
    replace.add_argument("new")

    lead = commands.add_parser("leader", help="leadership")
    verbs = lead.add_subparsers(dest="verb", required=True)
    move = verbs.add_parser("transfer", help="hand leadership to ID (default: the most "
                            "caught-up voter)")
    move.add_argument("id", nargs="?")

    snap = commands.add_parser("snapshot", help="backups: save, inspect, restore")
    verbs = snap.add_subparsers(dest="verb", required=True)
    save = verbs.add_parser("save", help="write a consistent backup of the store to FILE")
    save.add_argument("file")
    save.add_argument("--consistency", choices=("linearizable", "stale"),
                      default="linearizable")
    verbs.add_parser("status", help="what a backup file holds").add_argument("file")
    restore = verbs.add_parser("restore", help="make an empty data dir from a backup "
                               "(offline; start the nodes with a new --cluster)")
    restore.add_argument("file")
    restore.add_argument("--data-dir", required=True)

    auth = commands.add_parser("auth", help="turn authentication on or off")
    verbs = auth.add_subparsers(dest="verb", required=True)
    verbs.add_parser("enable", help="require tokens (a root user must exist)")
    verbs.add_parser("disable", help="let anyone in again")
    verbs.add_parser("status", help="is auth on")
    return p


def _credentials(text: str | None) -> tuple[str, str] | None:
    if text is None:
        return None
    name, sep, password = text.partition(":")
    if not sep or not name:
        raise ValueError("--user must be NAME:PASSWORD")
    return name, password


def _print(args: argparse.Namespace, answer: Any, text: str) -> None:
    print(json.dumps(answer) if args.output == "json" else text)


async def run(reactor: Any, args: argparse.Namespace) -> int:
    tls = None
    if args.cacert or args.tls_cert or args.tls_key:
        tls = ClientTLS(args.cacert, args.tls_cert, args.tls_key)
    client = KvdClient([e.strip() for e in args.endpoints.split(",") if e.strip()], reactor,
                       args.timeout, tls, _credentials(args.user))
    try:
        return await _command(reactor, client, args)
    finally:
        await client.close()


async def _command(reactor: Any, client: KvdClient, args: argparse.Namespace) -> int:
    if args.command == "put":
        answer = await client.put(args.key, args.value, args.prev_revision, args.ttl,
                                  args.lease)
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
    elif args.command in ("user", "role", "auth"):
        return await _auth(client, args)
    elif args.command == "lease":
        return await _lease(client, args)
    elif args.command == "member":
        return await _member(client, args)
    elif args.command == "leader":
        answer = await client.request("POST", "/api/v1/leader/transfer",
                                      {} if args.id is None else {"target": args.id})
        _print(args, answer, f"Leadership handed to {answer['target']}")
    elif args.command == "snapshot" and args.verb == "save":
        return await _save_snapshot(client, args)
    return 0


async def _member(client: KvdClient, args: argparse.Namespace) -> int:
    if args.verb == "list":
        answer = await client.request("GET", "/api/v1/members")
        rows = [(m["node_id"], m["role"] or "-", "yes" if m["voter"] else "no",
                 "-" if m["last_index"] is None else str(m["last_index"]),
                 "-" if m["lag"] is None else str(m["lag"]), str(m["url"]))
                for m in answer["members"]]
        text = _table(("ID", "ROLE", "VOTER", "LAST INDEX", "LAG", "URL"), rows)
        if answer.get("joint_with"):
            text += f"\nchanging: joint with {', '.join(answer['joint_with'])}"
        _print(args, answer, text)
        return 0
    if args.verb == "promote":
        answer = await client.request("POST", f"/api/v1/members/{quote(args.id, safe='')}"
                                      "/promote")
    elif args.verb == "remove":
        answer = await client.request("DELETE", f"/api/v1/members/{quote(args.id, safe='')}")
    else:
        answer = await client.request("POST", "/api/v1/members/replace",
                                      {"old": args.old, "new": args.new})
    _print(args, answer, f"Voters now {', '.join(answer['voters'])} "
                         f"(entry {answer['index']})")
    return 0


async def _lease(client: KvdClient, args: argparse.Namespace) -> int:
    if args.verb == "grant":
        body = {"ttl": args.ttl, **({} if args.id is None else {"id": args.id})}
        answer = await client.request("POST", "/api/v1/leases", body, write=True)
        _print(args, answer, f"lease {answer['id']} granted with TTL {answer['ttl']}s")
    elif args.verb == "keepalive":
        answer = await client.request("POST", f"/api/v1/leases/{args.id}/keepalive",
                                      write=True)
        _print(args, answer, f"lease {answer['id']} kept alive with TTL {answer['ttl']}s")
    elif args.verb == "revoke":
        answer = await client.request("DELETE", f"/api/v1/leases/{args.id}", write=True)
        _print(args, answer, f"lease {answer['id']} revoked at revision {answer['revision']}")
    elif args.verb == "ttl":
        answer = await client.request("GET", f"/api/v1/leases/{args.id}")
        keys = ", ".join(k.get("key", k.get("key_b64", "")) for k in answer["keys"])
        _print(args, answer, f"lease {answer['id']} granted with TTL {answer['granted_ttl']}s, "
               f"remaining {answer['ttl']}s, attached keys [{keys}]")
    else:
        answer = await client.request("GET", "/api/v1/leases")
        _print(args, answer, "\n".join(str(row["id"]) for row in answer["leases"]))
    return 0


async def _save_snapshot(client: KvdClient, args: argparse.Namespace) -> int:
    """Stream a backup to ``FILE.part`` with a progress bar, check it, then rename."""
    partial = args.file + ".part"
    progress = _Progress()
    with open(partial, "wb") as f:
        def sink(chunk: bytes) -> None:
            f.write(chunk)
            progress.advance(len(chunk))

        headers = await client.save_snapshot(sink, args.consistency, progress.start)
    progress.done()
    with open(partial, "rb") as saved:
        data = saved.read()
    try:
        info = backup.describe(data)
        if info.checksum != headers.get("x-kvd-snapshot-sha256"):
            raise ValueError("its sha256 is not the one the node sent")
    except ValueError as e:
        os.unlink(partial)
        raise ValueError(f"the backup did not arrive whole: {e}") from None
    os.replace(partial, args.file)
    _print(args, info.as_json(), f"Saved revision {info.revision} ({info.keys} keys, "
           f"{info.bytes} bytes, sha256 {info.checksum}) to {args.file}")
    return 0


class _Progress:
    """A progress bar on stderr when it is a terminal; silent otherwise."""

    WIDTH = 30

    def __init__(self) -> None:
        self.received = 0
        self.total: int | None = None
        self.shown = sys.stderr.isatty()

    def start(self, headers: dict[str, str]) -> None:
        length = headers.get("content-length", "")
        self.total = int(length) if length.isdigit() else None

    def advance(self, n: int) -> None:
        self.received += n
        if not self.shown:
            return
        mib = f"{self.received / 2**20:.1f} MiB"
        if self.total:
            filled = self.WIDTH * self.received // self.total
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            mib = f"[{bar}] {100 * self.received // self.total:3d}% {mib}"
        print(f"\r{mib}", end="", file=sys.stderr)

    def done(self) -> None:
        if self.shown:
            print(file=sys.stderr)


def _offline(args: argparse.Namespace) -> int | None:
    """The verbs that need no cluster (``snapshot status`` and ``restore``); None for others."""
    if args.command != "snapshot" or args.verb == "save":
        return None
    with open(args.file, "rb") as f:
        data = f.read()
    if args.verb == "status":
        info = backup.describe(data)
        _print(args, info.as_json(), f"revision {info.revision}  index {info.index}  "
               f"keys {info.keys}  bytes {info.bytes}  sha256 {info.checksum}")
    else:
        info = backup.restore(data, args.data_dir)
        _print(args, info.as_json(), f"Restored revision {info.revision} ({info.keys} keys) "
               f"into {args.data_dir}; start every node of the new cluster on such a dir, "
               "with a new --cluster name")
    return 0


def _auth_call(args: argparse.Namespace) -> tuple[str, str, Any, dict[str, Any] | None]:
    """The (method, path under /api/v1/auth/, body, query) of a user, role or auth verb."""
    quoted = {name: quote(getattr(args, name), safe="")
              for name in ("name", "role") if hasattr(args, name)}
    calls: dict[tuple[str, str], tuple[str, str, Any, dict[str, Any] | None]] = {
        ("user", "add"): ("PUT", "users/{name}", {"password": getattr(args, "password", None)},
                          None),
        ("user", "passwd"): ("PUT", "users/{name}/password",
                             {"password": getattr(args, "password", None)}, None),
        ("user", "delete"): ("DELETE", "users/{name}", None, None),
        ("user", "grant-role"): ("PUT", "users/{name}/roles/{role}", None, None),
        ("user", "revoke-role"): ("DELETE", "users/{name}/roles/{role}", None, None),
        ("user", "list"): ("GET", "users", None, None),
        ("role", "add"): ("PUT", "roles/{role}", None, None),
        ("role", "delete"): ("DELETE", "roles/{role}", None, None),
        ("role", "grant"): ("PUT", "roles/{role}/permissions",
                            {"prefix": getattr(args, "prefix", None),
                             "permission": getattr(args, "permission", None)}, None),
        ("role", "revoke"): ("DELETE", "roles/{role}/permissions", None,
                             {"prefix": getattr(args, "prefix", None)}),
        ("role", "list"): ("GET", "roles", None, None),
        ("auth", "enable"): ("POST", "enable", None, None),
        ("auth", "disable"): ("POST", "disable", None, None),
        ("auth", "status"): ("GET", "status", None, None),
    }
    method, path, body, query = calls[(args.command, args.verb)]
    return method, path.format(**quoted), body, query


async def _auth(client: KvdClient, args: argparse.Namespace) -> int:
    method, path, body, query = _auth_call(args)
    answer = await client.auth_call(method, path, body, query)
    if args.verb == "list" and args.command == "user":
        text = "\n".join(f"{u['name']}\t{','.join(u['roles'])}" for u in answer["users"])
    elif args.verb == "list":
        text = "\n".join(
            f"{r['name']}\t" + ",".join(f"{p['prefix']}:{p['permission']}"
                                        for p in r["permissions"]) for r in answer["roles"])
    elif args.verb == "status":
        text = "enabled" if answer["enabled"] else "disabled"
    else:
        text = "OK"
    _print(args, answer, text)
    return 0


async def _status(client: KvdClient, args: argparse.Namespace) -> int:
    rows = []
    answers: list[dict[str, Any]] = []
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
    table = _table(header, rows)
    members: list[dict[str, Any]] = next(
        (a["members"] for a in answers if isinstance(a.get("members"), list)), [])
    if members:
        # Every member as the first endpoint that answered sees it: voters and learners.
        table += "\n\n" + _table(("MEMBER", "ROLE", "LAST INDEX", "LAG", "URL"), [
            (m["node_id"], m["role"], str(m.get("last_index", "-")), str(m.get("lag", "-")),
             str(m.get("url"))) for m in members])
    _print(args, answers, table)
    return 0 if any("error" not in a for a in answers) else EXIT_UNAVAILABLE


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in [header, *rows])


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        offline = _offline(args)
    except (OSError, ValueError) as e:
        print(f"kvctl: {e}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    if offline is not None:
        raise SystemExit(offline)
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
