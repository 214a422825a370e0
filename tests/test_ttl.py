"""The leader's expiry timers (kvd/ttl.py), fed applied entries by hand."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import succeed
from twisted.internet.task import Clock

from kvd.store import Command, Result, Store, lease_grant_command
from kvd.ttl import ExpiryScheduler


class Fed:
    """A store and a leading scheduler; ``apply`` applies an entry and feeds it."""

    def __init__(self) -> None:
        self.store, self.clock = Store(), Clock()
        self.proposed: list[list[Command]] = []
        self.expiry = ExpiryScheduler(lambda: self.store, self._submit, self.clock)
        self.expiry.leading(True)
        self.index = 0

    def _submit(self, commands: list[Command]) -> Any:
        self.proposed.append(commands)
        return succeed([{"ok": True}] * len(commands))

    def apply(self, *commands: Command) -> list[Result]:
        self.index += 1
        results = self.store.apply(self.index, list(commands))
        self.expiry.applied(self.index, list(commands), results)
        return results


# Fails if: the scheduler trusts a lease op's result to be a lease's (a request id
# reused by another command answers that command's result): it raised, and the
# TTL of the next command in the entry was never armed; or a revoke answered that
# way disarmed a live lease.
def test_a_reused_request_id_neither_breaks_nor_disarms_expiry() -> None:
    fed = Fed()
    fed.apply(lease_grant_command(7, 5, "grant"), {"op": "put", "k": b"a", "v": b"1",
                                                   "rid": "r1"})
    fed.apply({"op": "lease_keepalive", "id": 7, "rid": "r1"},
              {"op": "lease_revoke", "id": 7, "rid": "r1"},
              {"op": "put", "k": b"t", "v": b"1", "ttl": 1})
    assert 7 in fed.store.leases
    fed.clock.advance(1)
    assert [c[0]["op"] for c in fed.proposed] == ["del"]
    assert fed.expiry.remaining(7) == 4
    fed.clock.advance(4)
    assert [c[0]["op"] for c in fed.proposed] == ["del", "lease_revoke"]
