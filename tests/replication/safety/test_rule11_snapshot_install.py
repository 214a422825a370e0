"""Safety rule 11 of DESIGN.md section 5: snapshot install."""

from __future__ import annotations

from typing import Any

from kvd.wal.record import RecordType
from tests.replication.safety.support import (
    cluster,
    give_log,
    install,
    member,
    payloads,
    run_sync,
    snapshot_of,
)
from tests.replication.support import (
    InlineReactor,
    ManualPool,
    Peers,
    answer,
    entry,
    prepare,
    reopen,
)
from tests.support import follower_of


# Fails if: Follower._install_snapshot skips `snapshot.write_raw` (the file).
def test_rule11_install_writes_the_snapshot_file_and_a_wal_record(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """The snapshot is a file and a WAL record; a restart recovers from it."""
    entries = [entry(1, i) for i in range(1, 6)]
    leader_store, data = snapshot_of(entries)
    node = member(tmp_path, reactor, "b")
    assert install(node, "a", 1, entries[-1], data).reply() == {
        "ok": True, "index": 5, "promised": 1}
    assert node.data_dir is not None
    assert node.data_dir.snapshot_indexes() == [5]
    with open(node.data_dir.snapshot_path(5), "rb") as f:
        assert f.read() == data
    assert payloads(node, RecordType.SNAPSHOT) == [[1, 5]]
    assert node.store.digest() == leader_store.digest()
    node = reopen(node, reactor)
    assert (node.rlog.base_epoch, node.rlog.base_index) == (1, 5)
    assert node.store.applied_index == 5 and node.store.digest() == leader_store.digest()
    ack = answer(follower_of(node).prepare(prepare("a", 1, (1, 5), [entry(1, 6)], 6))).reply()
    assert ack == {"ok": True, "index": 6, "promised": 1} and node.store.applied_index == 6


# Fails if: ReplicatedLog.install_snapshot always drops the entries it holds after the
# snapshot (`kept = []`).
def test_rule11_entries_after_the_snapshot_that_agree_are_kept(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """A follower that holds (1,6) and (1,7) keeps them across the install and a restart."""
    entries = [entry(1, i) for i in range(1, 8)]
    node = member(tmp_path, reactor, "b")
    answer(follower_of(node).prepare(prepare("a", 1, (0, 0), entries, 2))).get()
    _, data = snapshot_of(entries[:5])
    assert install(node, "a", 1, entries[4], data).get()["ok"]
    assert node.rlog.last == (1, 7) and node.rlog.base_index == 5
    assert node.store.applied_index == 5
    restarted = reopen(node, reactor)
    assert restarted.rlog.last == (1, 7)
    assert [e.index for e in restarted.rlog.entries] == [6, 7]


# Fails if: ReplicatedLog.install_snapshot does not write the truncate record of a
# divergent suffix (drop `records.append(record.truncate(index + 1))`).
def test_rule11_divergent_entries_are_not_resurrected_by_a_restart(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """Entries of a deposed leader beyond the snapshot stay gone after a restart."""
    node = member(tmp_path, reactor, "b")
    held = [entry(1, 1), entry(1, 2), entry(1, 3), entry(2, 4), entry(2, 5), entry(2, 6)]
    answer(follower_of(node).prepare(prepare("a", 2, (0, 0), held, 3))).get()
    leaders = [entry(1, 1), entry(1, 2), entry(1, 3), entry(3, 4), entry(3, 5)]
    leader_store, data = snapshot_of(leaders)
    assert install(node, "c", 3, leaders[-1], data).get()["ok"]
    assert node.rlog.last == (3, 5) and node.rlog.entries == []
    restarted = reopen(node, reactor)
    assert restarted.rlog.last == (3, 5) and restarted.rlog.entries == []
    assert restarted.store.digest() == leader_store.digest()


# Fails if: Follower.prepare does not take the lock (`return self._prepare(message)`).
def test_rule11_a_prepare_waits_for_the_snapshot_install_in_progress(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """A PREPARE that arrives during an install is answered only once its record is durable."""
    pool = ManualPool()
    node = member(tmp_path, reactor, "b", pool)
    node.rlog.promise(1)
    pool.run_all()
    entries = [entry(1, i) for i in range(1, 6)]
    _, data = snapshot_of(entries)
    installed = install(node, "a", 1, entries[-1], data)
    heartbeat = answer(follower_of(node).prepare(prepare("a", 1, (1, 5), [], 5)))
    assert not installed.called and not heartbeat.called
    pool.run_all()
    assert installed.get()["ok"]
    assert heartbeat.reply() == {"ok": True, "index": 5, "promised": 1}


# Fails if: the commit index after a restart may be below the snapshot base.
def test_rule11_a_node_restarted_after_an_install_can_still_adopt_a_log(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """Entries up to the installed snapshot are committed, before and after a restart."""
    nodes = cluster(tmp_path, reactor)
    entries = [entry(1, i) for i in range(1, 6)]
    give_log(nodes["b"], [*entries, entry(1, 6)], commit=5, promised=1)
    _, data = snapshot_of(entries)
    assert install(nodes["a"], "b", 1, entries[-1], data,
                   nodes["b"].identity.incarnation).get()["ok"]
    assert nodes["a"].rlog.commit_index == 5
    candidate = reopen(nodes["a"], reactor)
    peers = Peers()
    peers.route_to(nodes["b"])
    synced = run_sync(candidate, 2, peers, 2)
    assert synced.called and synced.failure is None, synced.failure
    assert candidate.rlog.last == (1, 6)
    assert candidate.rlog.commit_index >= candidate.rlog.base_index == 5
