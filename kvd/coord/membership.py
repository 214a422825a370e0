"""
Changes of the voter set, proposed at the leader, one at a time (safety rule 4).

A change is two log entries: the joint one (old and new voters decide
together, ``kvd/replication/quorum.py``), which this module proposes, and
the new set alone, which the leader appends once the joint one committed.
A change answers once the second has committed. A voter is added only when
it is caught up, and only if the new set could commit at once.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from kvd.errors import BadRequest, Conflict, InDoubt, NotReady
from kvd.node import Node, Role
from kvd.replication.quorum import config_voter_sets, write_quorum_for
from kvd.replication.stream import FollowerStream

#: A learner may become a voter once its log is at most this many entries behind
#: the leader's commit index...
PROMOTE_MAX_LAG = 1000
#: ...and it answered the leader within this many seconds.
PROMOTE_MAX_SILENCE = 2.0
#: How long a change may take before it answers 504 (it may still complete).
CHANGE_TIMEOUT = 10.0


class Coordinator(Protocol):
    """What a change needs of ``kvd.coord.cluster.ClusterCoordinator``."""

    node: Node
    reactor: IReactorTime
    replicas: int
    write_quorum: int
    members: dict[str, dict[str, Any]]
    streams: dict[str, FollowerStream]

    async def transfer(self, target: str | None) -> str: ...


class VoterChanges:
    """Promote, remove and replace voters through the log."""

    log = Logger()

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator
        self._changing = False

    def _leading(self) -> Node:
        node = self.coordinator.node
        if node.leader is None or node.role != Role.LEADER:
            leader = (node.leader_info or {}).get("url")
            raise NotReady(f"only the leader changes the voter set; ask the leader at {leader}")
        return node

    def promote(self, node_id: str) -> Any:
        node = self._leading()
        current = node.voters()
        if node_id in current:
            raise BadRequest(f"{node_id} is a voter already")
        return self._change({**current, node_id: self._ready(node_id)})

    def remove(self, node_id: str) -> Any:
        node = self._leading()
        current = node.voters()
        if node_id not in current:
            raise BadRequest(f"{node_id} is not a voter")
        new = {i: inc for i, inc in current.items() if i != node_id}
        if not new:
            raise BadRequest("the last voter cannot be removed")
        return self._change(new)

    def replace(self, old: str, new_id: str) -> Any:
        node = self._leading()
        current = node.voters()
        if old not in current:
            raise BadRequest(f"{old} is not a voter")
        if new_id in current:
            raise BadRequest(f"{new_id} is a voter already")
        new = {i: inc for i, inc in current.items() if i != old}
        new[new_id] = self._ready(new_id)
        return self._change(new)

    def _ready(self, node_id: str) -> str:
        """The incarnation of a learner fit to vote: known, caught up, answering."""
        coordinator = self.coordinator
        member = coordinator.members.get(node_id)
        stream = coordinator.streams.get(node_id)
        if member is None or stream is None:
            raise BadRequest(f"{node_id} is not a member this leader replicates to")
        incarnation = member.get("incarnation")
        if not isinstance(incarnation, str) or stream.answered_incarnation != incarnation:
            raise BadRequest(f"{node_id} has not answered this leader from its data dir yet")
        rlog, clock = coordinator.node.rlog, coordinator.node.clock
        lag = rlog.commit_index - stream.match_index
        if lag > PROMOTE_MAX_LAG or clock.seconds() - stream.last_ok > PROMOTE_MAX_SILENCE:
            raise BadRequest(f"{node_id} is not caught up ({lag} entries behind, at most "
                             f"{PROMOTE_MAX_LAG}, answering within {PROMOTE_MAX_SILENCE:g}s)")
        return incarnation

    async def _change(self, new: dict[str, str]) -> dict[str, Any]:
        coordinator = self.coordinator
        node = coordinator.node
        leader = node.leader
        assert leader is not None
        rlog = node.rlog
        if self._changing or node.quorums(leader.write_quorum).joint or (
                rlog.config_indexes and rlog.config_indexes[-1] > rlog.commit_index):
            raise Conflict("another change of the voter set is in progress")
        new_quorum = write_quorum_for(len(new), coordinator.replicas, leader.write_quorum)
        answering = {node.node_id} | {
            i for i, s in coordinator.streams.items()
            if s.answered_incarnation is not None
            and node.clock.seconds() - s.last_ok <= PROMOTE_MAX_SILENCE}
        live = sum(1 for i in new if i in answering)
        if live < new_quorum:
            raise BadRequest(f"the new voter set has {live} answering of the {new_quorum} "
                             f"it needs to commit")
        current = node.voters()
        self._changing = True
        self.log.info("Changing the voters from {old} to {new}", old=sorted(current),
                      new=sorted(new))
        try:
            await leader.propose([{"op": "config", "voters": _listed(new),
                                   "joint": _listed(current)}])
            deadline = coordinator.reactor.seconds() + CHANGE_TIMEOUT
            while not _committed_alone(node, new):
                if node.leader is not leader:
                    raise NotReady("leadership changed during the change; GET "
                                   "/api/v1/members shows how it ended")
                if coordinator.reactor.seconds() > deadline:
                    raise InDoubt(f"the change did not commit within {CHANGE_TIMEOUT:g}s; "
                                  "it may still")
                await deferLater(coordinator.reactor, 0.01, lambda: None)
        finally:
            self._changing = False
        index = rlog.config_indexes[-1]
        self.log.info("Voters now {new} (entry {index})", new=sorted(new), index=index)
        if node.node_id not in new:
            # Out of the set: hand over to the most caught-up new voter (liveness
            # only: else this node resigns within half a second anyway).
            try:
                await coordinator.transfer(None)
            except Exception as e:
                self.log.info("No hand-over after leaving the voter set: {error}", error=e)
        return {"voters": sorted(new), "write_quorum": new_quorum, "index": index}


def _listed(voters: dict[str, str]) -> list[list[str]]:
    return [[i, inc] for i, inc in sorted(voters.items())]


def _committed_alone(node: Node, voters: dict[str, str]) -> bool:
    """Is the newest config the set ``voters`` alone, and committed?"""
    rlog = node.rlog
    config = rlog.newest_config()
    return (config is not None and config_voter_sets(config) == [voters]
            and rlog.config_indexes[-1] <= rlog.commit_index)
