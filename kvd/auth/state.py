"""
Users, roles and whether auth is on: replicated, changed only by ``auth`` commands.

The state lives beside the keys in the store, not in the key space, so no
scan or watch can show it, and it travels in every snapshot. Every replica
applies the same commands, so every node agrees on who may do what.
Passwords arrive hashed by the node that took the request: applying stays
deterministic and cheap.

The ``root`` role is built in and grants everything; the ``root`` user always
holds it. Auth cannot be enabled before a ``root`` user exists, nor that user
deleted while auth is on, so the cluster never locks itself out.
"""

from __future__ import annotations

from typing import Any

from kvd.keys import prefix_end

ROOT = "root"
READ, WRITE, READWRITE = "read", "write", "readwrite"
#: What each grantable permission allows.
PERMISSIONS: dict[str, frozenset[str]] = {
    READ: frozenset({READ}), WRITE: frozenset({WRITE}), READWRITE: frozenset({READ, WRITE}),
}
MAX_NAME = 128
MAX_HASH = 256
MAX_PREFIX = 4096

#: Each action and the fields it needs besides ``op`` and ``action``.
ACTIONS: dict[str, tuple[str, ...]] = {
    "user_add": ("name", "hash"),
    "user_delete": ("name",),
    "user_passwd": ("name", "hash"),
    "user_grant": ("name", "role"),
    "user_revoke": ("name", "role"),
    "role_add": ("role",),
    "role_delete": ("role",),
    "role_grant": ("role", "prefix", "perm"),
    "role_revoke": ("role", "prefix"),
    "enable": (),
    "disable": (),
}

Result = dict[str, Any]


def valid_name(value: Any) -> bool:
    """A user or role name: 1 to 128 printable characters, no '/' (it names a path)."""
    return (isinstance(value, str) and 0 < len(value) <= MAX_NAME and value.isprintable()
            and "/" not in value)


def command_problem(command: dict[str, Any]) -> str | None:
    """What is wrong with an ``auth`` command's fields, or None."""
    action = command.get("action")
    if not isinstance(action, str) or action not in ACTIONS:
        return "'action' is not an auth action"
    for field in ACTIONS[action]:
        value = command.get(field)
        if field in ("name", "role"):
            ok = valid_name(value)
        elif field == "hash":
            ok = isinstance(value, bytes) and 0 < len(value) <= MAX_HASH
        elif field == "prefix":
            ok = isinstance(value, bytes) and len(value) <= MAX_PREFIX
        else:
            ok = isinstance(value, str) and value in PERMISSIONS
        if not ok:
            return f"auth '{action}' has a bad '{field}'"
    return None


def _error(code: str, message: str) -> Result:
    return {"ok": False, "error": code, "message": message}


class AuthState:
    """The users, roles and enabled flag every replica holds."""

    def __init__(self) -> None:
        self.enabled = False
        #: Bumped by every change; a user's ``stamp`` is the revision that set its
        #: password, so a token outlives neither a password change nor a delete.
        self.revision = 0
        #: name -> {"hash": bytes, "roles": [role, ...], "stamp": int}
        self.users: dict[str, dict[str, Any]] = {}
        #: role -> {prefix: permission}
        self.roles: dict[str, dict[bytes, str]] = {}
        self._cache: dict[tuple[str, str], list[tuple[bytes, bytes | None]] | None] = {}
        self._cache_revision = -1

    # Reading

    def roles_of(self, name: str) -> list[str]:
        user = self.users.get(name)
        if user is None:
            return []
        return sorted({*user["roles"], *([ROOT] if name == ROOT else [])})

    def is_root(self, name: str) -> bool:
        return ROOT in self.roles_of(name)

    def stamp(self, name: str) -> int | None:
        user = self.users.get(name)
        return None if user is None else int(user["stamp"])

    def password_hash(self, name: str) -> bytes | None:
        user = self.users.get(name)
        return None if user is None else bytes(user["hash"])

    def permits(self, name: str, access: str, start: bytes, end: bytes | None) -> bool:
        """May ``name`` have ``access`` to every key in ``[start, end)``?

        ``end`` None means to the end of the key space. The grants of all the
        user's roles are merged, so adjacent prefixes together cover a range.
        """
        spans = self._spans(name, access)
        if spans is None:
            return True
        covered_to: bytes | None = start
        for low, high in spans:
            if covered_to is None:
                break
            if low > covered_to:
                break
            if high is None or high > covered_to:
                covered_to = high
        if covered_to is None:
            return True
        return end is not None and end <= covered_to

    def _spans(self, name: str, access: str) -> list[tuple[bytes, bytes | None]] | None:
        """The user's grant ranges for ``access``, sorted (None: root). Cached until
        the next change, so a request over many keys does not rebuild them per key."""
        if self._cache_revision != self.revision:
            self._cache.clear()
            self._cache_revision = self.revision
        if (name, access) in self._cache:
            return self._cache[(name, access)]
        spans: list[tuple[bytes, bytes | None]] | None = None
        if not self.is_root(name):
            spans = sorted(
                ((prefix, prefix_end(prefix)) for role in self.roles_of(name)
                 for prefix, permission in self.roles.get(role, {}).items()
                 if access in PERMISSIONS[permission]), key=lambda span: span[0])
        self._cache[(name, access)] = spans
        return spans

    def permits_key(self, name: str, access: str, key: bytes) -> bool:
        return self.permits(name, access, key, key + b"\x00")

    def allows(self, command: dict[str, Any]) -> bool:
        """At apply time, in log order: may the command's ``user`` do what it does?

        True while auth is off, and for what the leader itself appends (its
        marker, the voter set, a TTL expiry). Checked again here, not only by
        the node that took the request, because that node may not yet have
        applied a revoke or the enabling itself.
        """
        op = command.get("op")
        if not self.enabled or op in ("noop", "config"):
            return True
        user = command.get("user")
        if user is None and op == "del" and command.get("expire") is True \
                and "prev" in command:
            return True  # the leader's own TTL expiry: delete only if unchanged
        if user is None and op == "lease_revoke" and command.get("expire") is True:
            return True  # the leader's own lease expiry
        if not isinstance(user, str):
            return False
        if "stamp" in command and command["stamp"] != self.stamp(user):
            return False  # a token voided by a new password (or a re-created user)
        if op == "auth":
            return self.is_root(user)
        if op in ("lease_grant", "lease_keepalive", "lease_revoke"):
            return True  # any user; a revoke's keys are checked by the store, which has them
        if op in ("put", "del"):
            return self._permits_write(user, command)
        return (all(self._permits_span(user, READ, c) for c in command["compare"])
                and all(self._permits_span(user, READ, item) if item["op"] in ("get", "range")
                        else self._permits_write(user, item)
                        for item in (*command["success"], *command["failure"])))

    def _permits_write(self, name: str, item: dict[str, Any]) -> bool:
        """A put or delete: write access to what it changes, and read access too
        when it answers the previous keys (``prev_kv``), as etcd checks it."""
        return self._permits_span(name, WRITE, item) and (
            not item.get("prev_kv") or self._permits_span(name, READ, item))

    def _permits_span(self, name: str, access: str, item: dict[str, Any]) -> bool:
        """``permits`` over what one command, op or compare touches: its key, or
        ``[k, end)`` for a range (``end`` empty: to the end of the key space).

        ``commands.problem`` refuses an ``end`` on a put or a single-key get,
        and a range that ends at or before its key is checked as that key:
        the span checked is never narrower than the one the store touches.
        """
        key, end = item["k"], item.get("end")
        if isinstance(end, bytes) and (not end or end > key):
            return self.permits(name, access, key, end or None)
        return self.permits_key(name, access, key)

    def describe_users(self) -> list[dict[str, Any]]:
        return [{"name": name, "roles": self.roles_of(name)} for name in sorted(self.users)]

    def describe_roles(self) -> list[dict[str, Any]]:
        names = sorted({ROOT, *self.roles})
        return [{"name": role, "permissions": [
            {"prefix": prefix.decode("utf-8", "replace"), "permission": permission}
            for prefix, permission in sorted(self.roles.get(role, {}).items())]}
            for role in names]

    # Changing

    def apply(self, command: dict[str, Any]) -> Result:
        """Apply one ``auth`` command whose shape ``command_problem`` passed."""
        action = command["action"]
        name: str = command.get("name", "")
        role: str = command.get("role", "")
        users, roles = self.users, self.roles
        if action in ("user_delete", "user_passwd", "user_grant", "user_revoke") and (
                name not in users):
            return _error("not_found", f"no such user: {name}")
        if action in ("user_grant", "user_revoke", "role_delete", "role_grant",
                      "role_revoke") and role != ROOT and role not in roles:
            return _error("not_found", f"no such role: {role}")
        if action == "user_add":
            if name in users:
                return _error("exists", f"user {name} already exists")
            users[name] = {"hash": command["hash"], "roles": [], "stamp": self.revision + 1}
        elif action == "user_delete":
            if name == ROOT and self.enabled:
                return _error("invalid", "the root user cannot be deleted while auth is on")
            del users[name]
        elif action == "user_passwd":
            users[name]["hash"] = command["hash"]
            users[name]["stamp"] = self.revision + 1
        elif action == "user_grant":
            if role not in users[name]["roles"]:
                users[name]["roles"] = sorted([*users[name]["roles"], role])
        elif action == "user_revoke":
            if name == ROOT and role == ROOT:
                return _error("invalid", "the root user always holds the root role")
            if role not in users[name]["roles"]:
                return _error("not_found", f"user {name} does not hold role {role}")
            users[name]["roles"] = [r for r in users[name]["roles"] if r != role]
        elif action == "role_add":
            if role == ROOT or role in roles:
                return _error("exists", f"role {role} already exists")
            roles[role] = {}
        elif action == "role_delete":
            if role == ROOT:
                return _error("invalid", "the root role is built in")
            del roles[role]
            for user in users.values():
                user["roles"] = [r for r in user["roles"] if r != role]
        elif action == "role_grant":
            if role == ROOT:
                return _error("invalid", "the root role already grants everything")
            roles[role][command["prefix"]] = command["perm"]
        elif action == "role_revoke":
            if command["prefix"] not in roles.get(role, {}):
                return _error("not_found", f"role {role} has no grant on that prefix")
            del roles[role][command["prefix"]]
        elif action == "enable":
            if ROOT not in users:
                return _error("invalid", "create the root user before enabling auth")
            self.enabled = True
        else:
            self.enabled = False
        self.revision += 1
        return {"ok": True}

    # Snapshots

    def snapshot(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "revision": self.revision,
                "users": {n: dict(u, roles=list(u["roles"])) for n, u in self.users.items()},
                "roles": {r: dict(grants) for r, grants in self.roles.items()}}

    @classmethod
    def from_snapshot(cls, state: Any) -> AuthState:
        """The state a snapshot holds (None: an older snapshot, no auth); ValueError if bad."""
        auth = cls()
        if state is None:
            return auth
        _check(state)
        auth.enabled = state["enabled"]
        auth.revision = state["revision"]
        auth.users = {n: {"hash": u["hash"], "roles": list(u["roles"]), "stamp": u["stamp"]}
                      for n, u in state["users"].items()}
        auth.roles = {r: dict(grants) for r, grants in state["roles"].items()}
        return auth


def _check(state: Any) -> None:
    if not isinstance(state, dict) or not isinstance(state.get("enabled"), bool):
        raise ValueError("'auth' is not a map with an 'enabled' flag")
    if type(state.get("revision")) is not int or state["revision"] < 0:
        raise ValueError("'auth.revision' is not a non-negative integer")
    users, roles = state.get("users"), state.get("roles")
    if not isinstance(users, dict) or not all(
            valid_name(n) and isinstance(u, dict) and isinstance(u.get("hash"), bytes)
            and type(u.get("stamp")) is int and isinstance(u.get("roles"), list)
            and all(valid_name(r) for r in u["roles"]) for n, u in users.items()):
        raise ValueError("'auth.users' is not a map of users")
    if not isinstance(roles, dict) or not all(
            valid_name(r) and isinstance(g, dict) and all(
                isinstance(p, bytes) and isinstance(v, str) and v in PERMISSIONS
                for p, v in g.items())
            for r, g in roles.items()):
        raise ValueError("'auth.roles' is not a map of roles to grants")
