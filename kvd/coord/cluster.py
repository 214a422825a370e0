"""
The cluster's coordination through ZooKeeper: tree, voters, election, epochs.

It turns ZooKeeper events into the node's role. The tree (DESIGN section 4)
lives under ``/kvd/<cluster>`` and is created here. Voters stand for
election on ephemeral sequential znodes and each watches only its
predecessor; the lowest takes the next epoch in one transaction that also
checks its own election znode still exists, syncs, commits its marker, and
only then writes ``leader``.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

from kazoo.exceptions import ConnectionLoss, NodeExistsError, NoNodeError
from twisted.internet.defer import ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from kvd.config import NodeConfig
from kvd.coord.bridge import CONNECTED, LOST, SUSPENDED, TransactionFailed, ZooKeeperService
from kvd.coord.membership import VoterChanges
from kvd.errors import BadRequest, NotReady
from kvd.node import Node, Role, Superseded
from kvd.replication.follower import Follower
from kvd.replication.peer import PeerClient
from kvd.replication.peerauth import PeerAuth, generate_secret
from kvd.replication.stream import FollowerStream
from kvd.replication.sync import HigherEpoch, LostCommits, SyncFailed, synchronise

#: A leader (or candidate) without a quorum for this long resigns (rule 13).
QUORUM_GRACE_SECONDS = 3.0
MARKER_TIMEOUT = 5.0
RETRY_ELECTION_SECONDS = 0.5
#: How often a node publishes its last logged index in its ``members/`` znode and
#: reads the others' (a ZooKeeper write per entry would cost one per batch).
PROGRESS_SECONDS = 1.0
#: How long a leader waits for the hand-over target to hold its whole log.
TRANSFER_TIMEOUT = 5.0
#: Test-only: names a file; while it exists, a leader leaves a committed joint
#: change joint (``Leader.hold_joint``).
HOLD_JOINT_ENV = "KVD_TESTING_HOLD_JOINT_FILE"


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True).encode()


def _peer_url(member: dict[str, Any]) -> Any:
    """Where a member takes peer messages (older members had only ``url``)."""
    return member.get("peer_url") or member.get("url")


def _sequence(name: str) -> int:
    return int(name.rsplit("-n_", 1)[1])


class ClusterCoordinator:
    """Keeps this node's znodes, runs the election, and leads or follows."""

    log = Logger()

    def __init__(self, reactor: IReactorTime, zk: ZooKeeperService, node: Node,
                 follower: Follower, config: NodeConfig, peer: PeerClient,
                 auth: PeerAuth | None = None) -> None:
        """``follower`` is the node's (a sync changes the log under its lock)."""
        self.reactor = reactor
        self.zk = zk
        self.node = node
        self.follower = follower
        self.config = config
        self.peer = peer
        #: The peer secret's holder, to fill from ZooKeeper when no file gave it.
        self.auth = auth
        self.root = f"/kvd/{config.cluster}"
        self.replicas = config.replicas
        self.write_quorum = config.write_quorum
        self.members: dict[str, dict[str, Any]] = {}
        self.streams: dict[str, FollowerStream] = {}
        self._election_path: str | None = None
        #: Protected-create prefix of this node's election znodes (rule 16): after
        #: a ConnectionLoss, a znode with it may exist although create failed.
        self._prefix = uuid.uuid4().hex
        #: Prefixes of resigned election znodes whose delete has not succeeded yet.
        self._stale_prefixes: set[str] = set()
        self._generation = 0
        self._busy = False
        self._again = False
        self._liveness: LoopingCall | None = None
        self._progress: LoopingCall | None = None
        #: The last index our members/ znode says we hold.
        self._published_index = -1
        self._watching = False
        node.on_newer_epoch.append(self._newer_epoch)
        node.on_applied.append(self._config_applied)
        #: Whether this node was a voter when the last config entry applied.
        self._voter = node.is_voter()
        #: Promote, remove and replace voters (at the leader).
        self.voter_changes = VoterChanges(self)

    def path(self, *parts: str) -> str:
        return "/".join((self.root, *parts))

    def start(self) -> None:
        self.node.session_waiting(f"waiting for ZooKeeper at {self.zk.servers}")
        self.zk.add_state_listener(self._state_changed)
        if self.zk.connected:
            self._state_changed(CONNECTED)
        self._progress = LoopingCall(lambda: ensureDeferred(self._exchange_progress()))
        self._progress.clock = self.reactor
        self._progress.start(PROGRESS_SECONDS, now=False).addErrback(
            lambda f: self.log.failure("Progress publishing stopped", f))

    def stop(self) -> None:
        self._generation += 1
        if self._progress is not None and self._progress.running:
            self._progress.stop()
        self.zk.remove_state_listener(self._state_changed)
        self._stop_leading("the node is stopping")

    # Session

    def _state_changed(self, state: str) -> None:
        self.log.info("ZooKeeper session {state}", state=state)
        if state == SUSPENDED:
            leading = self.node.leader is not None or self.node.role == Role.SYNCING
            if leading:
                self._stop_leading("ZooKeeper session suspended")
            self.node.session_suspended(leading)
        elif state == LOST:
            self._generation += 1
            # The session's ephemeral znodes are gone with it; a new prefix for new ones.
            self._election_path = None
            self._prefix = uuid.uuid4().hex
            self._stale_prefixes.clear()
            self._stop_leading("ZooKeeper session lost")
            self.node.session_lost()
        elif state == CONNECTED:
            self.node.session_connected()
            self._kick()

    def _kick(self) -> None:
        """Run one reconciliation now, or once more after the running one."""
        if self._busy:
            self._again = True
            return
        self._busy = True
        d = ensureDeferred(self._reconcile())
        d.addErrback(self._reconcile_failed)
        d.addBoth(self._reconciled)

    def _reconcile_failed(self, failure: Failure) -> None:
        # A ZooKeeper call failed half-way (connection loss...): try again soon,
        # whether or not the session changes state meanwhile.
        assert failure.type is not None  # a Failure always has its exception's type
        self.log.warn("Coordination step failed ({error}); retrying",
                      error=failure.getErrorMessage() or failure.type.__name__)
        self._later(1.0)

    def _reconciled(self, _: object) -> None:
        self._busy = False
        if self._again:
            self._again = False
            self._kick()

    def _later(self, delay: float = RETRY_ELECTION_SECONDS) -> None:
        self.reactor.callLater(delay, self._kick)

    # The tree, config and identity

    async def _reconcile(self) -> None:
        if not self.zk.connected:
            return
        generation = self._generation
        zk = self.zk
        for part in ("election", "members"):
            await zk.ensure_path(self.path(part))
        config = await self._config()
        await self._cluster_secret()
        await self._promise_zookeeper_epoch()
        await self._register_member()
        if not self._watching:
            self._watching = True
            children = await zk.watch_children(
                self.path("members"),
                lambda children: ensureDeferred(self._members_changed(children)))
            await self._members_changed(children)
            await zk.watch_data(self.path("leader"), self._leader_changed)
        voters = {str(i): str(inc) for i, inc in config["voters"]}
        self.node.bootstrap_voters = voters if len(voters) >= self.replicas else {}
        self.node.replicas = self.replicas
        self._voter = self.node.is_voter()
        if not self.node.is_voter():
            if self._election_path is not None:
                # A committed change took this node out of the voter set: it no
                # longer stands (a learner creates no election znode).
                self.log.info("No longer a voter: leaving the election")
                path, self._election_path = self._election_path, None
                await self._delete_if_present(path)
            if len(voters) < self.replicas:
                self.node.learner_waiting(f"waiting for voters to join "
                                          f"({len(voters)} of {self.replicas})")
                self._later(1.0)
            return
        if generation != self._generation or self.node.leader is not None:
            return
        await self._delete_stale_election_znodes()
        if self._election_path is None:
            self._election_path = await self._stand()
        await self._evaluate(generation)

    async def _stand(self) -> str:
        """Our election znode, created protectedly (rule 16).

        A create that failed with ConnectionLoss may have been applied: look
        for a znode with our prefix before creating another, or the ghost
        would hold a place in the queue that no one leads from.
        """
        mine = await self._own_election_znodes(self._prefix)
        if mine:
            for extra in mine[1:]:
                await self._delete_if_present(self.path("election", extra))
            return self.path("election", mine[0])
        return str(await self.zk.create(
            self.path("election", f"{self._prefix}-n_"),
            _dumps({"node_id": self.node.node_id, "url": self.node.settings.url,
                    "peer_url": self.node.peer_url}),
            ephemeral=True, sequence=True,
        ))

    async def _own_election_znodes(self, prefix: str) -> list[str]:
        children = await self.zk.get_children(self.path("election"))
        return sorted((c for c in children if c.startswith(f"{prefix}-")), key=_sequence)

    async def _delete_if_present(self, path: str) -> None:
        try:
            await self.zk.delete(path)
        except NoNodeError:
            pass

    async def _delete_stale_election_znodes(self) -> None:
        """Finish a resignation whose delete failed: no znode of ours may linger."""
        for prefix in sorted(self._stale_prefixes):
            for name in await self._own_election_znodes(prefix):
                await self._delete_if_present(self.path("election", name))
            self._stale_prefixes.discard(prefix)

    async def _config(self) -> dict[str, Any]:
        """Read (creating on first start) the config znode; join the voters if there is room."""
        path = self.path("config")
        me = [self.node.node_id, self.node.identity.incarnation]
        while True:
            try:
                data, stat = await self.zk.get(path)
            except NoNodeError:
                initial = {"replicas": self.replicas, "write_quorum": self.write_quorum,
                           "voters": [me]}
                try:
                    await self.zk.create(path, _dumps(initial), makepath=True)
                    self.log.info("Created the cluster config {config}", config=initial)
                    return initial
                except NodeExistsError:
                    continue
            config = json.loads(data)
            if (config["replicas"], config["write_quorum"]) != (self.replicas,
                                                                 self.write_quorum):
                self.log.warn(
                    "Flags say N={n} W={w} but the cluster's stored config says N={sn} W={sw}; "
                    "following the stored config",
                    n=self.replicas, w=self.write_quorum, sn=config["replicas"],
                    sw=config["write_quorum"],
                )
                self.replicas, self.write_quorum = config["replicas"], config["write_quorum"]
            ids = {i: inc for i, inc in config["voters"]}
            if self.node.node_id in ids:
                if ids[self.node.node_id] != self.node.identity.incarnation:
                    self.log.warn("This node id was a voter with another data dir: joining "
                                  "as a learner (safety rule 5)")
                return config
            if len(ids) >= config["replicas"] or not self.node.identity.fresh \
                    and self.node.rlog.last_index > 0:
                return config
            config["voters"].append(me)
            try:
                await self.zk.set(path, _dumps(config), stat.version)
                self.log.info("Joined the voters: {voters}", voters=config["voters"])
                return config
            except Exception as e:
                self.log.info("Config changed while joining ({error}); retrying", error=e)

    async def _cluster_secret(self) -> None:
        """The peer secret from the ``secret`` znode, created by the first node.

        Only when no ``--peer-secret-file`` was given: then every node of the
        cluster reads the same secret from the cluster tree.
        """
        if self.auth is None:
            return
        path = self.path("secret")
        try:
            # A node that already holds the secret puts it back if ZooKeeper lost
            # its data: a fresh one would split the cluster into two that 401 each other.
            await self.zk.create(path, self.auth.secret or generate_secret(),
                                 acl=self.zk.private_acl)
            self.log.info("Wrote the cluster's peer secret to {path}", path=path)
        except NodeExistsError:
            pass
        data, _ = await self.zk.get(path)
        if self.auth.secret is None:
            self.auth.secret = bytes(data)
        elif bytes(data) != self.auth.secret:
            self.log.error("The peer secret in {path} is not the one this node uses; peers "
                           "with the other one are refused (401). Restart the nodes that "
                           "disagree, or give every node --peer-secret-file.", path=path)

    async def _promise_zookeeper_epoch(self) -> None:
        """promised_epoch := max(own, ZooKeeper's epoch) (safety rule 5)."""
        path = self.path("epoch")
        try:
            data, _ = await self.zk.get(path)
        except NoNodeError:
            try:
                await self.zk.create(path, b"0")
            except NodeExistsError:
                pass
            return
        epoch = int(data or b"0")
        if epoch > self.node.rlog.promised_epoch:
            self.node.saw_epoch(epoch)  # a leader of an older epoch stops first (rule 1)
            await self.node.rlog.promise(epoch)

    def _member_data(self) -> bytes:
        self._published_index = self.node.rlog.last_index
        return _dumps({"node_id": self.node.node_id, "url": self.node.settings.url,
                       "peer_url": self.node.peer_url,
                       "incarnation": self.node.identity.incarnation,
                       "voter": self.node.is_voter(),
                       "last_index": self._published_index})

    async def _exchange_progress(self) -> None:
        """Publish our last logged index if it moved, and read everyone's, so that
        any node can say how far each member is (DESIGN section 4)."""
        if not self.zk.connected or not self._watching:
            return
        try:
            if self.node.rlog.last_index != self._published_index:
                await self.zk.set(self.path("members", self.node.node_id), self._member_data())
            for node_id in list(self.members):
                member = await self._read_member(node_id)
                if member is not None and node_id in self.members:
                    self.members[node_id] = member
        except Exception as e:
            # The znode may be gone (a new session re-registers it), or ZooKeeper away.
            self.log.debug("Progress not exchanged: {error}", error=e)

    async def _register_member(self) -> None:
        path = self.path("members", self.node.node_id)
        data = self._member_data()
        try:
            await self.zk.create(path, data, ephemeral=True)
        except NodeExistsError:
            stat = await self.zk.exists(path)
            session = self.zk.client_id
            if stat is not None and session is not None and stat.ephemeralOwner == session[0]:
                # Ours, from this session: refresh it without making it vanish.
                await self.zk.set(path, data)
                return
            # Left by an earlier session of ours that has not expired yet.
            await self.zk.delete(path)
            await self.zk.create(path, data, ephemeral=True)

    async def _read_member(self, node_id: str) -> dict[str, Any] | None:
        """A member's znode, None if it is gone."""
        try:
            data, _ = await self.zk.get(self.path("members", node_id))
        except NoNodeError:
            return None
        member: dict[str, Any] = json.loads(data)
        return member

    async def _members_changed(self, children: list[str] | None) -> None:
        members: dict[str, dict[str, Any]] = {}
        for child in children or []:
            member = await self._read_member(child)
            if member is not None:
                members[child] = member
        self.members = members
        self._update_streams()

    def _leader_changed(self, value: Any) -> None:
        self.node.leader_announced(None if value is None else json.loads(value[0]))

    # Election

    async def _evaluate(self, generation: int) -> None:
        assert self._election_path is not None
        mine = self._election_path.rsplit("/", 1)[1]
        children = sorted(await self.zk.get_children(self.path("election")), key=_sequence)
        if mine not in children:
            self._election_path = None
            self._later()
            return
        position = children.index(mine)
        if position == 0:
            if await self._handed_to_another(children):
                self.log.info("Leadership is being handed to another node: standing back")
                await self._resign()
                return
            await self._lead(generation)
            return
        predecessor = self.path("election", children[position - 1])

        def changed(value: Any) -> bool:
            if value is None:
                self._kick()
                return False
            return True

        if await self.zk.watch_data(predecessor, changed) is None:
            self._later(0)

    # Hand-over

    async def transfer(self, target: str | None) -> str:
        """Hand leadership to ``target`` (default: the most caught-up voter).

        New writes are refused (503, certainly not applied) while the target
        catches up; every write already taken is committed and answered first.
        Then a ``transfer`` znode names the target for the current epoch and
        this node resigns: a candidate that finds itself first in the election
        queue stands back while the named target is in it, so the target leads
        next. The hint dies with the next epoch, or with the target's election
        znode. Liveness only: whoever leads, sync keeps every committed write.
        """
        node, leader = self.node, self.node.leader
        if leader is None or node.role != Role.LEADER:
            raise NotReady("only the leader hands leadership over")
        voters = {i: s for i, s in self.streams.items() if s.voter}
        if target is None:
            if not voters:
                raise NotReady("no voter to hand leadership to")
            target = max(voters, key=lambda i: voters[i].match_index)
        elif target == node.node_id:
            return target
        elif target not in voters:
            raise BadRequest(f"{target} is not a voter this leader replicates to")
        stream, rlog = voters[target], node.rlog
        leader.paused = "leadership is being handed over; retry"
        try:
            deadline = self.reactor.seconds() + TRANSFER_TIMEOUT
            while not (rlog.commit_index == rlog.last_index == node.store.applied_index
                       and stream.match_index >= rlog.last_index and leader.idle):
                if not leader.active or self.reactor.seconds() > deadline:
                    raise NotReady(f"{target} did not catch up within {TRANSFER_TIMEOUT:g}s")
                stream.wake(force=True)
                await deferLater(self.reactor, 0.002, lambda: None)
            epoch, _ = await self.zk.get(self.path("epoch"))
            hint = _dumps({"target": target, "epoch": int(epoch or b"0")})
            try:
                await self.zk.create(self.path("transfer"), hint)
            except NodeExistsError:
                await self.zk.set(self.path("transfer"), hint)
        except BaseException:
            leader.paused = None
            raise
        self.log.info("Handing leadership to {target} at index {index}", target=target,
                      index=rlog.last_index)
        await self._resign()
        return target

    async def _handed_to_another(self, children: list[str]) -> bool:
        """Does a live ``transfer`` hint name another node that stands in the queue?"""
        try:
            data, _ = await self.zk.get(self.path("transfer"))
            hint = json.loads(data)
            epoch, _ = await self.zk.get(self.path("epoch"))
        except (NoNodeError, ValueError):
            return False
        if not isinstance(hint, dict):
            return False
        target = hint.get("target")
        if target == self.node.node_id or hint.get("epoch") != int(epoch or b"0"):
            return False
        for child in children:
            try:
                data, _ = await self.zk.get(self.path("election", child))
            except NoNodeError:
                continue
            if json.loads(data).get("node_id") == target:
                return True
        return False

    async def _take_epoch(self, at_least: int) -> int:
        """Epoch + 1, in one transaction that checks our election znode (rule 7).

        After a ConnectionLoss the transaction may or may not have been
        applied: never assume the epoch is ours, read it again and take the next.
        """
        assert self._election_path is not None
        path = self.path("epoch")
        while True:
            data, stat = await self.zk.get(path)
            epoch = max(int(data or b"0") + 1, self.node.rlog.promised_epoch + 1, at_least)
            transaction = self.zk.transaction()
            transaction.check(self._election_path, 0)
            transaction.set_data(path, str(epoch).encode(), stat.version)
            try:
                await transaction.commit()
                return epoch
            except ConnectionLoss:
                self.log.info("Connection lost during the epoch transaction; taking a "
                              "fresh epoch (rule 7)")
                at_least = epoch + 1
            except TransactionFailed as e:
                if isinstance(e.error, NoNodeError):
                    raise SyncFailed("our election znode is gone") from None
                self.log.info("Epoch moved while taking it ({error}); again", error=e.error)

    async def _lead(self, generation: int) -> None:
        """Take an epoch, sync, commit the marker, write ``leader``, serve.

        Every way out other than serving ends in a resignation (or a fatal
        stop), so that no node sits on the lowest election znode without
        leading (bug: a node stuck in SYNCING for good).
        """
        node = self.node
        at_least = 0
        while True:
            if generation != self._generation or not self.zk.connected:
                node.step_down("the ZooKeeper session changed during the election")
                return
            try:
                epoch = await self._take_epoch(at_least)
                if epoch <= node.rlog.promised_epoch:
                    raise HigherEpoch(node.rlog.promised_epoch)
                await node.rlog.promise(epoch, node.node_id)
                node.syncing(epoch)
                self.log.info("Elected: syncing epoch {epoch}", epoch=epoch)
                urls = {i: _peer_url(m) for i, m in self.members.items()}
                await synchronise(node, self.follower, epoch, urls, self.peer,
                                  self.write_quorum)
                if not node.is_voter():
                    raise SyncFailed("the adopted log does not count this node as a voter")
            except (HigherEpoch, Superseded) as e:
                at_least = e.epoch + 1
                continue
            except LostCommits as e:
                node.fatal(str(e))
                return
            except Exception as e:
                self.log.warn("Could not lead: {error}", error=e)
                await self._resign()
                return
            break
        try:
            await self._serve(generation, epoch)
        except Exception as e:
            self.log.warn("Could not lead epoch {epoch}: {error}", epoch=epoch,
                          error=str(e) or type(e).__name__)
            await self._resign()

    async def _serve(self, generation: int, epoch: int) -> None:
        """After sync: the marker, then the ``leader`` znode, then serving."""
        node = self.node
        if generation != self._generation or not self.zk.connected:
            raise SyncFailed("the ZooKeeper session changed during sync")
        extra = [] if node.log_has_config() else [
            {"op": "config", "voters": [[i, inc] for i, inc in sorted(node.voters().items())]}
        ]
        marker = node.lead(epoch, self.write_quorum, extra)
        assert node.leader is not None
        node.leader.on_config_appended = self._update_streams
        hold = os.environ.get(HOLD_JOINT_ENV)
        if hold:  # test-only: a change interrupted between its two entries
            node.leader.hold_joint = lambda: os.path.exists(hold)
        self.streams = {}
        self._update_streams()
        committed = node.wait_applied(marker)
        committed.addTimeout(MARKER_TIMEOUT, self.reactor)
        await committed
        if node.leader is None or node.epoch != epoch:
            raise Superseded(node.rlog.promised_epoch)
        leader_path = self.path("leader")
        data = _dumps({"node_id": node.node_id, "url": node.settings.url,
                       "peer_url": node.peer_url, "epoch": epoch})
        for _ in range(3):
            try:
                await self.zk.create(leader_path, data, ephemeral=True)
                break
            except NodeExistsError:
                # A stale one (an old leader's session not expired yet): replace it.
                await self._delete_if_present(leader_path)
        else:
            raise SyncFailed("could not write the leader znode")
        if generation != self._generation:
            raise SyncFailed("the ZooKeeper session changed")
        node.serving_as_leader(epoch)
        self.log.info("Leading epoch {epoch} from index {marker}", epoch=epoch, marker=marker)
        self._liveness = LoopingCall(self._check_quorum)
        self._liveness.clock = node.clock
        self._liveness.start(0.5, now=False)

    def _update_streams(self) -> None:
        leader = self.node.leader
        if leader is None:
            return
        voters = self.node.voters()
        wanted = {i: m for i, m in self.members.items() if i != self.node.node_id}
        for voter in voters:
            if voter != self.node.node_id:
                wanted.setdefault(voter, {"url": None, "incarnation": voters[voter]})
        for node_id, member in wanted.items():
            stream = self.streams.get(node_id)
            if stream is None:
                stream = FollowerStream(leader, self.node.rlog, self.peer, node_id,
                                        _peer_url(member), voters.get(node_id),
                                        self.node.read_snapshot_file, self.node.snapshot_now)
                self.streams[node_id] = stream
                leader.links[node_id] = stream
                stream.start()
            else:
                stream.url = _peer_url(member) or stream.url
                stream.incarnation = voters.get(node_id)

    def _config_applied(self, index: int, commands: list[Any], results: list[Any]) -> None:
        """A config entry applied: this node may have become a voter (it stands for
        election now) or stopped being one (it leaves)."""
        if any(c.get("op") == "config" for c in commands if isinstance(c, dict)):
            voter = self.node.is_voter()
            if voter != self._voter:
                self._voter = voter
                self._kick()

    def _check_quorum(self) -> None:
        leader = self.node.leader
        if leader is None:
            self._stop_liveness()
            return
        rlog = self.node.rlog
        if not self.node.is_voter() and rlog.config_indexes and (
                rlog.config_indexes[-1] <= rlog.commit_index):
            # A committed change took this node out of the voter set: the new
            # voters elect a leader of their own (rule 4).
            self.log.warn("This node is no longer a voter: resigning")
            ensureDeferred(self._resign())
            return
        if self.node.clock.seconds() - leader.quorum_seen_since() > QUORUM_GRACE_SECONDS:
            self.log.warn("No write quorum for {s}s: resigning (safety rule 13)",
                          s=QUORUM_GRACE_SECONDS)
            ensureDeferred(self._resign())

    def _stop_liveness(self) -> None:
        if self._liveness is not None and self._liveness.running:
            self._liveness.stop()
        self._liveness = None

    def _stop_leading(self, reason: str) -> None:
        self._stop_liveness()
        for stream in self.streams.values():
            stream.stop()
        self.streams = {}
        self.node.step_down(reason)

    def _newer_epoch(self, epoch: int) -> None:
        if self._liveness is not None:
            # We were serving and a newer epoch exists: give our place up (sync and
            # marker failures resign on their own path).
            self.log.info("Epoch {epoch} superseded ours: resigning", epoch=epoch)
            ensureDeferred(self._resign())

    async def _resign(self) -> None:
        """Give up leadership and every election znode of ours; stand again shortly."""
        self._stop_leading("resigning")
        self.node.looking("no leader: this node resigned and stands again")
        self._election_path = None
        prefix, self._prefix = self._prefix, uuid.uuid4().hex
        self._stale_prefixes.add(prefix)
        try:
            data, _ = await self.zk.get(self.path("leader"))
            if json.loads(data).get("node_id") == self.node.node_id:
                await self.zk.delete(self.path("leader"))
        except Exception:
            pass
        try:
            await self._delete_stale_election_znodes()
        except Exception as e:
            # Kept in _stale_prefixes: the next reconciliation deletes them first.
            self.log.info("Could not delete our election znodes yet ({error})", error=e)
        self._later(RETRY_ELECTION_SECONDS)

    def describe_members(self) -> list[dict[str, Any]]:
        leader = self.node.leader
        voters = self.node.voters()
        leader_id = (self.node.leader_info or {}).get("node_id")
        # The leader knows its own log; elsewhere, what its znode last said.
        leader_last = self.node.rlog.last_index if leader is not None else _int_or_none(
            self.members.get(leader_id or "", {}).get("last_index"))
        out = []
        for node_id, member in sorted(self.members.items()):
            stream = self.streams.get(node_id)
            role = ("leader" if node_id == leader_id
                    else "follower" if voters.get(node_id) == member.get("incarnation")
                    else "learner")
            if node_id == self.node.node_id:
                last_index: int | None = self.node.rlog.last_index
            elif stream is not None:
                last_index = stream.match_index
            else:
                last_index = _int_or_none(member.get("last_index"))
            lag = None if last_index is None or leader_last is None else \
                max(0, leader_last - last_index)
            out.append({"node_id": node_id, "url": member.get("url"),
                        "peer_url": _peer_url(member), "role": role,
                        "last_index": last_index, "lag": lag})
        return out


def _int_or_none(value: Any) -> int | None:
    """An index read from a znode another node wrote: an int, or nothing."""
    return value if type(value) is int and value >= 0 else None
