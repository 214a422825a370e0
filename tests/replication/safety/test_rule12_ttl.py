"""Safety rule 12 of DESIGN.md section 5: TTL."""

from __future__ import annotations

from typing import Any

from kvd.node import NodeSettings
from kvd.replica import open_replica
from kvd.store import (
    expire_command,
    lease_expire_command,
    lease_grant_command,
    lease_keepalive_command,
    put_command,
)
from kvd.wal.layout import DataDir
from kvd.wal.storage import recover_store
from tests.replication.safety.support import lead, member, serve, submit
from tests.replication.support import Answer, FakeLink, InlineReactor, answer, entry, prepare, put
from tests.support import follower_of


# Fails if: expire_command drops its `"prev": mod_revision` (an unconditional delete).
def test_rule12_expiry_is_a_delete_if_unchanged_evaluated_at_its_log_position(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """A TTL firing while a newer put is pending deletes nothing: the put comes first in the log."""
    node = member(tmp_path, reactor, "a")
    link = FakeLink("b")
    lead(node, 1, 2, link)
    leader = serve(node, link)
    first = submit(node, reactor, put_command(b"k", b"v1", "w1", ttl=3))
    link.match_index = node.rlog.last_index
    leader.stream_answered(link)
    revision = first.get()[0]["revision"]
    newer = submit(node, reactor, put("k", "v2", "w2"))  # proposed, not committed
    reactor.advance(3)
    assert node.rlog.entries[-1].commands == [expire_command(b"k", revision)]
    assert node.store.get(b"k") is not None, "nothing expires before the log says so"
    link.match_index = node.rlog.last_index
    leader.stream_answered(link)
    assert newer.get()[0]["ok"]
    kv = node.store.get(b"k")
    assert kv is not None and kv.value == b"v2"


# Fails if: ExpiryScheduler.start does not arm the TTLs of the keys it finds in the store.
def test_rule12_a_new_leader_rearms_ttls_for_their_full_duration_on_its_own_clock(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """Time spent as a follower does not count: the new leader waits the whole TTL."""
    node = member(tmp_path, reactor, "b")
    ttl_put = entry(1, 1, put_command(b"k", b"v", "w1", ttl=10))
    answer(follower_of(node).prepare(prepare("a", 1, (0, 0), [ttl_put], 1))).get()
    reactor.advance(8)
    assert node.rlog.last_index == 1, "a follower never expires keys itself"
    link = FakeLink("c")
    lead(node, 2, 2, link)
    serve(node, link)
    marker = node.rlog.last_index
    reactor.advance(9)
    assert node.rlog.last_index == marker
    reactor.advance(1)
    assert node.rlog.last_index == marker + 1
    assert node.rlog.entries[-1].commands == [expire_command(b"k", 1)]


# Smaller findings of the protocol review


# Fails if: kvd.replica.assemble gives ExpiryScheduler the reactor instead of the clock.
def test_rule12_ttls_run_on_the_monotonic_clock_not_the_wall_clock(tmp_path: Any) -> None:
    """An NTP step of the wall clock expires nothing; the monotonic clock decides."""
    from tests.support import InlinePool

    wall, monotonic = InlineReactor(), InlineReactor()
    data_dir = DataDir(str(tmp_path / "a"))
    replica = open_replica(wall, data_dir, recover_store(data_dir, "a"), NodeSettings(url="u"),
                           True, pool=InlinePool(), clock=monotonic)
    node = replica.node
    started = Answer(node.become_standalone())
    wall.advance(0)
    assert started.called
    write = submit(node, wall, put_command(b"k", b"v", "w1", ttl=10))
    assert write.get()[0]["ok"]
    wall.advance(3600)
    assert node.store.get(b"k") is not None
    monotonic.advance(10)
    wall.advance(0)
    assert node.store.get(b"k") is None
    replica.writer.close()


# Fails if: ExpiryScheduler.start does not arm the leases it finds in the store.
def test_rule12_a_new_leader_rearms_leases_for_their_full_ttl_on_its_own_clock(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """A lease granted under another leader expires a whole TTL after this one leads."""
    node = member(tmp_path, reactor, "b")
    granted = entry(1, 1, lease_grant_command(7, 10, "g"))
    answer(follower_of(node).prepare(prepare("a", 1, (0, 0), [granted], 1))).get()
    reactor.advance(8)
    assert node.rlog.last_index == 1, "a follower never expires leases itself"
    link = FakeLink("c")
    lead(node, 2, 2, link)
    serve(node, link)
    marker = node.rlog.last_index
    reactor.advance(9)
    assert node.rlog.last_index == marker
    reactor.advance(1)
    assert node.rlog.entries[-1].commands == [lease_expire_command(7, 0)]


# Fails if: a lease expiry is applied without comparing its renewals (a keep-alive
# committed before the expiry in the log no longer saves the lease).
def test_rule12_a_lease_expiry_is_void_after_a_keepalive_earlier_in_the_log(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    node = member(tmp_path, reactor, "a")
    link = FakeLink("b")
    lead(node, 1, 2, link)
    leader = serve(node, link)
    submit(node, reactor, lease_grant_command(7, 3, "g"))
    submit(node, reactor, {"op": "put", "k": b"k", "v": b"v", "lease": 7, "rid": "p"})
    link.match_index = node.rlog.last_index
    leader.stream_answered(link)
    kept = submit(node, reactor, lease_keepalive_command(7))  # proposed, not committed
    reactor.advance(3)
    assert node.rlog.entries[-1].commands == [lease_expire_command(7, 0)]
    link.match_index = node.rlog.last_index
    leader.stream_answered(link)
    assert kept.get()[0]["ok"]
    assert node.store.get(b"k") is not None and 7 in node.store.leases
