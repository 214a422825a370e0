"""Safety rule 7 of DESIGN.md section 5: sync details."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import fail
from twisted.internet.error import ConnectionLost

from kvd.node import Node
from kvd.replication import follower as follower_module
from kvd.wal.record import RecordType
from tests.replication.safety.support import cluster, epochs, give_log, member, payloads, run_sync
from tests.replication.support import InlineReactor, Peers, config_entry, entry, reopen


def _divergent_cluster(tmp_path: Any, reactor: InlineReactor) -> dict[str, Node]:
    """a: (1,1)(1,2)(2,3); b: ...(3,3)(3,4); c: (1,1..5). Index 2 committed everywhere."""
    nodes = cluster(tmp_path, reactor)
    common = [entry(1, 1), entry(1, 2)]
    give_log(nodes["a"], [*common, entry(2, 3)], commit=2, promised=2)
    give_log(nodes["b"], [*common, entry(3, 3), entry(3, 4)], commit=2, promised=3)
    give_log(nodes["c"], [*common, entry(1, 3), entry(1, 4), entry(1, 5)], commit=2,
             promised=1)
    return nodes


# Fails if: synchronise picks the best log by last index alone
# (`key=lambda v: counted[v]["last"][1]`).
def test_rule7_sync_adopts_the_log_with_the_highest_last_epoch_then_index(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """b's (3,4) beats c's longer (1,5); the candidate's own (2,3) is truncated."""
    nodes = _divergent_cluster(tmp_path, reactor)
    peers = Peers()
    peers.route_to(nodes["b"])
    peers.route_to(nodes["c"])
    run_sync(nodes["a"], 4, peers, 3).get()
    assert peers.sent("fetch") == ["http://b"]
    assert nodes["a"].rlog.last == (3, 4) and epochs(nodes["a"]) == [1, 1, 3, 3]
    assert payloads(nodes["a"], RecordType.TRUNCATE) == [[3]]
    assert epochs(reopen(nodes["a"], reactor)) == [1, 1, 3, 3]


# Fails if: Follower.append_missing skips `rlog.truncate_from(entry.index)` (sync then fails).
def test_rule7_the_candidate_truncates_its_own_longer_divergent_suffix(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """A candidate whose own uncommitted tail is longer than the adopted log loses all of it."""
    nodes = cluster(tmp_path, reactor)
    common = [entry(1, 1), entry(1, 2)]
    give_log(nodes["a"], [*common, entry(2, 3), entry(2, 4), entry(2, 5)], commit=2,
             promised=2)
    give_log(nodes["b"], [*common, entry(3, 3)], commit=2, promised=3)
    peers = Peers()
    peers.route_to(nodes["b"])
    run_sync(nodes["a"], 4, peers, 2).get()
    assert nodes["a"].rlog.last == (3, 3) and epochs(nodes["a"]) == [1, 1, 3]
    assert epochs(reopen(nodes["a"], reactor)) == [1, 1, 3]


# Fails if: synchronise sends NEWEPOCH to the members it has URLs for
# (`[v for v in urls if v not in asked]` instead of the voters).
def test_rule7_newepoch_goes_to_every_voter_of_the_log_and_no_one_else(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """members/ only supplies URLs: a learner with a URL is not asked, a log voter is."""
    node = member(tmp_path, reactor, "a")
    voters = {"a": node.identity.incarnation, "b": "ib", "d": "id"}
    give_log(node, [config_entry(1, 1, voters)], commit=1, promised=1)
    peers = Peers()
    urls = {v: f"http://{v}" for v in ("a", "b", "c", "d", "x")}
    for url in urls.values():
        peers.handlers[url] = lambda name, body, url=url: {
            "ok": True, "promised": body["epoch"], "last": [1, 1], "commit_index": 1,
            "torn": False, "incarnation": "i" + url[-1]}
    run_sync(node, 2, peers, 2, urls).get()
    assert sorted(peers.sent("newepoch")) == ["http://b", "http://d"]


# Fails if: _fetch_log fetches once (`while rlog.last < target` -> `if ...`).
def test_rule7_a_fetch_that_fails_midway_fails_the_sync(
    tmp_path: Any, reactor: InlineReactor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner of the adopted log dying mid-fetch fails sync (it is run again)."""
    monkeypatch.setattr(follower_module, "FETCH_LIMIT", 1)
    nodes = _divergent_cluster(tmp_path, reactor)
    peers = Peers()
    peers.route_to(nodes["b"])
    peers.route_to(nodes["c"])
    real = peers.handlers["http://b"]

    def dies_after_one_fetch(name: str, body: dict[str, Any]) -> Any:
        if name == "fetch" and peers.sent("fetch").count("http://b") > 1:
            return fail(ConnectionLost("b died"))
        return real(name, body)

    peers.handlers["http://b"] = dies_after_one_fetch
    synced = run_sync(nodes["a"], 4, peers, 3)
    assert synced.called and synced.failure is not None
    assert synced.failure.check(ConnectionLost)
    assert nodes["a"].rlog.last == (3, 3), "one entry fetched, then b died"
