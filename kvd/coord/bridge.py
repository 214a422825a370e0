"""
Bridge kazoo (a threaded ZooKeeper client) into the Twisted reactor.

Everything kvd does with ZooKeeper goes through ``ZooKeeperService``:

* kazoo's ``*_async`` results become Deferreds, fired on the reactor thread
  (``async_result.rawlink`` + ``reactor.callFromThread``) with the value, or
  with the kazoo exception (``BadVersionError``, ``NoNodeError``...) as a
  Failure;
* watch callbacks and session-state changes are delivered on the reactor
  thread too, so consumers never need locks;
* nothing blocks the reactor: the client is started with ``start_async`` and
  stopped/closed in a worker thread.

Session states are kazoo's simplified ones: ``CONNECTED``; ``SUSPENDED``
(connection lost, the session may survive: stop acting on what ZooKeeper
told you, e.g. leadership); ``LOST`` (session expired or client closed:
ephemeral nodes are gone and must be recreated after the next CONNECTED).

About watches: ZooKeeper watches are one-shot, and kazoo drops every
registered watch whenever the connection is lost, firing each one with an
``EventType.NONE`` event. A consumer that sets its own watches through the
raw ``client`` must therefore re-read (and so re-arm) on every event and
again on each CONNECTED. ``watch_data``/``watch_children`` do exactly that
for you and deliver only real changes.

With a chroot in the connection string (``"h1:2181,h2:2181/kvd"``) every
path is relative to the chroot, which is created on first connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Generic, Literal, Protocol, TypeVar, cast

from kazoo.client import KazooClient, TransactionRequest
from kazoo.exceptions import (
    ConnectionClosedError,
    ConnectionLoss,
    NoNodeError,
    RolledBackError,
    SessionExpiredError,
)
from kazoo.hosts import collect_hosts
from kazoo.interfaces import IAsyncResult
from kazoo.protocol.states import WatchedEvent, ZnodeStat
from kazoo.retry import KazooRetry
from kazoo.security import make_acl, make_digest_acl
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

__all__ = [
    "CONNECTED",
    "LOST",
    "SUSPENDED",
    "ChildrenCallback",
    "DataCallback",
    "DataValue",
    "SessionState",
    "StateListener",
    "Transaction",
    "TransactionFailed",
    "ZooKeeperService",
    "default_connection_retry",
    "deferred_from_async",
]

T = TypeVar("T")

SessionState = Literal["CONNECTED", "SUSPENDED", "LOST"]
CONNECTED: Final = "CONNECTED"
SUSPENDED: Final = "SUSPENDED"
LOST: Final = "LOST"

#: A znode's data and stat, as ``get`` returns them.
DataValue = tuple[bytes, ZnodeStat]
#: Called with the new (data, stat), or None once the node does not exist.
DataCallback = Callable[[DataValue | None], object]
#: Called with the new sorted child names, or None once the node does not exist.
ChildrenCallback = Callable[[list[str] | None], object]
#: Called with the new session state on the reactor thread.
StateListener = Callable[[SessionState], object]

#: Errors that mean "not connected right now"; watches retry on CONNECTED.
_CONNECTION_ERRORS: Final = (ConnectionLoss, SessionExpiredError, ConnectionClosedError)

_UNSET: Final = object()


class _Reactor(Protocol):
    """The reactor interfaces the bridge uses (time, threads, callFromThread)."""

    def callFromThread(
        self, callable: Callable[..., object], *args: object, **kwargs: object
    ) -> None: ...

    def callLater(
        self, delay: float, callable: Callable[..., object], *args: object, **kwargs: object
    ) -> IDelayedCall: ...

    def seconds(self) -> float: ...

    def getThreadPool(self) -> ThreadPool: ...


def _from_threads(reactor: _Reactor) -> IReactorFromThreads:
    """``reactor`` as ``deferToThreadPool`` types it (it only calls ``callFromThread``)."""
    # A zope interface is nominal: our structural _Reactor cannot be checked against it.
    return cast(IReactorFromThreads, reactor)


def default_connection_retry(max_delay: float = 2.0) -> KazooRetry:
    """Retry the connection forever, backing off from 0.1 s to ``max_delay``.

    A short cap matters: after a ZooKeeper restart the client reconnects
    within ``max_delay`` instead of kazoo's default of up to a minute.
    """
    return KazooRetry(max_tries=-1, delay=0.1, backoff=2, max_delay=max_delay)


def deferred_from_async(reactor: _Reactor, async_result: IAsyncResult) -> Deferred[Any]:
    """Turn a kazoo IAsyncResult into a Deferred fired on the reactor thread.

    kazoo completes results in its own threads; ``rawlink`` runs our
    callback there and ``callFromThread`` hops to the reactor. Cancelling
    the Deferred only stops waiting: the ZooKeeper operation still happens.
    """
    d: Deferred[Any] = Deferred(lambda _: None)

    def fire(ok: bool, value: Any) -> None:
        if d.called:  # cancelled meanwhile
            return
        if ok:
            d.callback(value)
        else:
            d.errback(Failure(value))

    def on_complete(result: IAsyncResult) -> None:
        if result.successful():
            reactor.callFromThread(fire, True, result.value)
        else:
            reactor.callFromThread(fire, False, result.exception)

    async_result.rawlink(on_complete)
    return d


class TransactionFailed(Exception):
    """A multi-op transaction was rolled back.

    ``results`` is kazoo's per-operation list (an exception instance for
    every operation, ``RolledBackError`` for the innocent ones); ``error``
    is the exception of the operation that actually failed.
    """

    def __init__(self, results: list[object]) -> None:
        self.results = results
        self.index: int
        self.error: Exception
        self.index, self.error = next(
            (
                (i, r)
                for i, r in enumerate(results)
                if isinstance(r, Exception) and not isinstance(r, RolledBackError)
            ),
            (-1, RolledBackError()),
        )
        super().__init__(f"transaction failed at operation {self.index}: {self.error!r}")


class Transaction:
    """Builder for an atomic multi-op (ZooKeeper ``multi``), committed with ``commit()``.

    Operations are recorded and handed to kazoo's ``TransactionRequest`` only
    at commit time, so building one never touches the client.
    """

    def __init__(self, service: ZooKeeperService) -> None:
        self._service = service
        self._ops: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self._committed = False

    def create(
        self,
        path: str,
        value: bytes = b"",
        *,
        ephemeral: bool = False,
        sequence: bool = False,
        acl: list[Any] | None = None,
    ) -> Transaction:
        """Add a create; returns self so calls can be chained."""
        kwargs = {"acl": acl, "ephemeral": ephemeral, "sequence": sequence}
        self._ops.append(("create", (path, value), kwargs))
        return self

    def set_data(self, path: str, value: bytes, version: int = -1) -> Transaction:
        """Add a (conditional, unless version is -1) data update."""
        self._ops.append(("set_data", (path, value, version), {}))
        return self

    def delete(self, path: str, version: int = -1) -> Transaction:
        """Add a (conditional, unless version is -1) delete."""
        self._ops.append(("delete", (path, version), {}))
        return self

    def check(self, path: str, version: int) -> Transaction:
        """Add a version check: the transaction fails unless ``path`` has ``version``."""
        self._ops.append(("check", (path, version), {}))
        return self

    def commit(self) -> Deferred[list[object]]:
        """Commit atomically; fires with kazoo's result list, or fails with TransactionFailed."""
        if self._committed:
            return fail(ValueError("transaction already committed"))
        self._committed = True
        try:
            client = self._service._require_client()
            request: TransactionRequest = client.transaction()
            for name, args, kwargs in self._ops:
                getattr(request, name)(*args, **kwargs)
            async_result = request.commit_async()
        except Exception:
            return fail()
        d = deferred_from_async(self._service._reactor, async_result)

        def check(results: list[object]) -> list[object]:
            if any(isinstance(r, Exception) for r in results):
                raise TransactionFailed(results)
            return results

        return d.addCallback(check)


class _RearmingWatch(Generic[T]):
    """A watch that re-reads (and so re-arms) on every event and on every CONNECTED.

    Reads are coalesced (one in flight, at most one more queued) and a
    change is delivered only if it differs from the last one delivered, so
    reconnects and ``EventType.NONE`` events do not produce duplicates.
    """

    log = Logger()

    def __init__(
        self, service: ZooKeeperService, path: str, callback: Callable[[T | None], object]
    ) -> None:
        self.service = service
        self.path = path
        self.callback = callback
        self._first: Deferred[T | None] | None = Deferred()
        self._last_key: object = _UNSET
        self._reading = False
        self._dirty = False
        self._stopped = False

    def start(self) -> Deferred[T | None]:
        """Arm the watch; the returned Deferred fires with the current value."""
        first = cast("Deferred[T | None]", self._first)
        self.service._watches.add(self)
        self._read()
        return first

    def stop(self, reason: Exception | None = None) -> None:
        """Stop re-arming (kazoo may still fire once; that is ignored)."""
        self._stopped = True
        self.service._watches.discard(self)
        first, self._first = self._first, None
        if first is not None:
            first.errback(reason or ConnectionClosedError("watch stopped"))

    def rearm(self) -> None:
        """Called on CONNECTED: kazoo dropped our watch with the connection."""
        self._read()

    def kazoo_watcher(self, event: WatchedEvent) -> None:
        """kazoo's watch callback (kazoo thread); one bound method, so kazoo dedupes it."""
        self.service._reactor.callFromThread(self._on_event, event)

    def _on_event(self, event: WatchedEvent) -> None:
        if self._stopped:
            return
        self.log.debug("Watch event {event_type} on {path}", event_type=event.type, path=self.path)
        self._read()

    def _read(self) -> None:
        if self._stopped:
            return
        if self._reading:
            self._dirty = True
            return
        client = self.service._client
        if client is None:
            return
        self._reading = True
        self._dirty = False
        d = self._fetch(client)
        d.addCallbacks(self._got, self._failed)
        d.addBoth(self._read_done)

    def _fetch(self, client: KazooClient) -> Deferred[tuple[object, T | None]]:
        raise NotImplementedError

    def _fetch_missing(
        self, failure: Failure, client: KazooClient
    ) -> Deferred[tuple[object, T | None]]:
        """On NoNode, arm an ``exists`` watch so the node's creation wakes us."""
        failure.trap(NoNodeError)
        reactor = self.service._reactor
        d = deferred_from_async(reactor, client.exists_async(self.path, watch=self.kazoo_watcher))

        def on_exists(stat: ZnodeStat | None) -> Any:
            if stat is None:
                return (None, None)
            return self._fetch(client)  # created in between: read it

        return d.addCallback(on_exists)

    def _got(self, keyed: tuple[object, T | None]) -> None:
        key, value = keyed
        if self._stopped:
            return
        first, self._first = self._first, None
        if first is not None:
            self._last_key = key
            first.callback(value)
            return
        if key == self._last_key:
            return
        self._last_key = key
        try:
            keep = self.callback(value)
        except Exception:
            self.log.failure("Watch callback for {path} raised", path=self.path)
            return
        if keep is False:
            self.stop()

    def _failed(self, failure: Failure) -> None:
        if failure.check(*_CONNECTION_ERRORS):
            # Re-read on the next CONNECTED (rearm).
            self.log.debug("Watch read on {path} deferred until reconnect", path=self.path)
            return
        self.log.failure("Reading watched {path} failed", failure, path=self.path)
        first, self._first = self._first, None
        if first is not None:
            self.stop()
            first.errback(failure)

    def _read_done(self, _: object) -> None:
        self._reading = False
        if self._dirty:
            self._read()


class _DataWatch(_RearmingWatch[DataValue]):
    """Re-arming data watch; value is (data, stat) or None for a missing node."""

    def _fetch(self, client: KazooClient) -> Deferred[tuple[object, DataValue | None]]:
        reactor = self.service._reactor
        d = deferred_from_async(reactor, client.get_async(self.path, watch=self.kazoo_watcher))

        def keyed(result: DataValue) -> tuple[object, DataValue]:
            data, stat = result
            return ((stat.czxid, stat.mzxid), (data, stat))

        return d.addCallbacks(keyed, self._fetch_missing, errbackArgs=(client,))


class _ChildrenWatch(_RearmingWatch[list[str]]):
    """Re-arming children watch; value is the sorted names or None for a missing node."""

    def _fetch(self, client: KazooClient) -> Deferred[tuple[object, list[str] | None]]:
        reactor = self.service._reactor
        async_result = client.get_children_async(
            self.path, watch=self.kazoo_watcher, include_data=True
        )
        d = deferred_from_async(reactor, async_result)

        def keyed(result: tuple[list[str], ZnodeStat]) -> tuple[object, list[str]]:
            children, stat = result
            names = sorted(children)
            return ((stat.czxid, stat.cversion, tuple(names)), names)

        return d.addCallbacks(keyed, self._fetch_missing, errbackArgs=(client,))


class ZooKeeperService(Service):
    """A Twisted service owning one kazoo client, with Deferred-returning calls.

    The client is created and started in ``startService`` (never at import
    or construction) and retries the connection forever; while ZooKeeper is
    unreachable a warning naming the address is logged with backing-off
    frequency. Every method must be called on the reactor thread, and every
    Deferred, watch callback and state listener fires on it.
    """

    log = Logger()

    def __init__(
        self,
        hosts: str,
        *,
        timeout: float = 10.0,
        connection_retry: KazooRetry | None = None,
        unreachable_warning_after: float = 2.0,
        ensure_chroot: bool = True,
        reactor: _Reactor | None = None,
        client_factory: Callable[..., KazooClient] = KazooClient,
        digest: tuple[str, str] | None = None,
    ) -> None:
        """Configure the service; ``hosts`` is kazoo's ``"h1:p1,h2:p2[/chroot]"``.

        ``timeout`` is the requested session timeout in seconds (the server
        clamps it). ``unreachable_warning_after`` is the delay before the
        first "unreachable" warning; later ones back off up to a minute.
        ``digest`` (user, password) authenticates the session and makes every
        znode it creates changeable by that identity only (``private_acl``:
        readable by it only, too).
        """
        servers, chroot = collect_hosts(hosts)
        self.hosts = hosts
        self.servers = ",".join(f"{host}:{port}" for host, port in servers)
        self.chroot = chroot or ""
        self._timeout = timeout
        self._connection_retry = connection_retry or default_connection_retry()
        self._unreachable_after = unreachable_warning_after
        self._ensure_chroot = ensure_chroot
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = cast(_Reactor, global_reactor)
        self._reactor = reactor
        self._client_factory = client_factory
        #: The ACL of a znode only this identity may read (None without a digest).
        self.private_acl: list[Any] | None = None
        self._security: dict[str, Any] = {}
        if digest is not None:
            self.private_acl = [make_digest_acl(digest[0], digest[1], all=True)]
            self._security = {
                "auth_data": [("digest", f"{digest[0]}:{digest[1]}")],
                # Anyone may read the tree (to debug it); only this identity changes it.
                "default_acl": [*self.private_acl, make_acl("world", "anyone", read=True)],
            }

        self._client: KazooClient | None = None
        self._state: SessionState = LOST
        self._listeners: list[StateListener] = []
        self._connected_waiters: list[Deferred[None]] = []
        self._watches: set[_RearmingWatch[Any]] = set()
        self._state_chain: Deferred[None] = succeed(None)
        self._chroot_ready = False
        self._stopping = False
        self._unreachable_call: IDelayedCall | None = None
        self._unreachable_since = 0.0
        self._unreachable_delay = unreachable_warning_after

    # -- state --------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        """The current session state, as last delivered on the reactor thread."""
        return self._state

    @property
    def connected(self) -> bool:
        """Whether the session is CONNECTED right now."""
        return self._state == CONNECTED

    @property
    def client(self) -> KazooClient | None:
        """The underlying kazoo client while running (escape hatch).

        Never call its blocking methods on the reactor thread; its watches
        and listeners run in kazoo's threads, not the reactor's.
        """
        return self._client

    @property
    def client_id(self) -> tuple[int, bytes] | None:
        """(session id, password) while connected, else None (for forced expiry in tests)."""
        if self._client is None:
            return None
        client_id = self._client.client_id
        return None if client_id is None else (client_id[0], client_id[1])

    def add_state_listener(self, listener: StateListener) -> None:
        """Call ``listener(state)`` on the reactor thread on each state change."""
        self._listeners.append(listener)

    def remove_state_listener(self, listener: StateListener) -> None:
        """Stop calling ``listener``; unknown listeners are ignored."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def when_connected(self) -> Deferred[None]:
        """Fire now if CONNECTED, else at the next CONNECTED.

        Fails with ConnectionClosedError if the service is stopped first.
        """
        if self._state == CONNECTED:
            return succeed(None)

        def cancel(d: Deferred[None]) -> None:
            if d in self._connected_waiters:
                self._connected_waiters.remove(d)

        d: Deferred[None] = Deferred(cancel)
        self._connected_waiters.append(d)
        return d

    # -- service lifecycle -------------------------------------------------

    def startService(self) -> Deferred[None]:
        """Create and start the kazoo client without blocking.

        Returns a Deferred that fires once first connected (or with None if
        the service is stopped before that); it is fine to ignore it.
        """
        if self._client is not None:
            raise RuntimeError("ZooKeeperService is already started (or still stopping)")
        super().startService()
        self._stopping = False
        self._chroot_ready = False
        client = self._client_factory(
            hosts=self.hosts,
            timeout=self._timeout,
            connection_retry=self._connection_retry.copy(),
            **self._security,
        )
        client.add_listener(lambda state: self._on_kazoo_state(client, state))
        self._client = client
        self.log.info(
            "Connecting to ZooKeeper at {zk_hosts} (chroot {zk_chroot!r})",
            zk_hosts=self.servers,
            zk_chroot=self.chroot,
        )
        self._schedule_unreachable_warning(reset=True)
        client.start_async()  # spawns kazoo's threads; the connect itself is theirs

        def stopped_first(failure: Failure) -> None:
            failure.trap(ConnectionClosedError)

        return self.when_connected().addErrback(stopped_first)

    def stopService(self) -> Deferred[None]:
        """Close the session (ephemeral nodes vanish) in a worker thread."""
        super().stopService()
        self._cancel_unreachable_warning()
        for watch in list(self._watches):
            watch.stop(ConnectionClosedError("ZooKeeperService stopped"))
        waiters, self._connected_waiters = self._connected_waiters, []
        for waiter in waiters:
            waiter.errback(ConnectionClosedError("ZooKeeperService stopped"))
        client = self._client
        if client is None:
            return succeed(None)
        self._stopping = True

        def stop_client() -> None:
            try:
                client.stop()
            finally:
                client.close()

        d = deferToThreadPool(
            _from_threads(self._reactor), self._reactor.getThreadPool(), stop_client
        )

        def stopped(result: object) -> object:
            if self._client is client:
                self._client = None
                self._publish_state(LOST)
            self._stopping = False
            if isinstance(result, Failure):
                self.log.failure("Error closing ZooKeeper client", result)
            else:
                self.log.info("ZooKeeper client for {zk_hosts} closed", zk_hosts=self.servers)
            return None

        return d.addBoth(stopped)

    # -- state plumbing -----------------------------------------------------

    def _on_kazoo_state(self, client: KazooClient, state: str) -> None:
        """kazoo's listener (kazoo connection thread): hop to the reactor."""
        self._reactor.callFromThread(self._state_changed, client, state)

    def _state_changed(self, client: KazooClient, state: str) -> None:
        # Serialized, so a chroot check on the first CONNECTED delays the
        # states after it rather than reordering them.
        def apply(_: object) -> Deferred[None] | None:
            return self._apply_state(client, cast(SessionState, str(state)))

        self._state_chain.addCallback(apply)
        self._state_chain.addErrback(
            lambda f: self.log.failure("Error handling ZooKeeper state", f)
        )

    def _apply_state(self, client: KazooClient, state: SessionState) -> Deferred[None] | None:
        if client is not self._client:
            return None
        if state == CONNECTED and self.chroot and self._ensure_chroot and not self._chroot_ready:
            d = self._create_chroot(client)

            def ensured(result: object) -> None:
                if isinstance(result, Failure):
                    self.log.warn(
                        "Could not create chroot {zk_chroot} on {zk_hosts}: {error!r}",
                        zk_chroot=self.chroot,
                        zk_hosts=self.servers,
                        error=result.value,
                    )
                else:
                    self._chroot_ready = True
                if client is self._client:
                    self._publish_state(state)

            return d.addBoth(ensured)
        self._publish_state(state)
        return None

    def _create_chroot(self, client: KazooClient) -> Deferred[None]:
        """Make sure the chroot znode exists (kazoo cannot create it from inside).

        A chrooted client cannot create a nested chroot's parents, so when it
        is missing a short-lived un-chrooted client creates it, in a thread.
        """
        d = deferred_from_async(self._reactor, client.exists_async("/"))

        def check(stat: ZnodeStat | None) -> Deferred[None] | None:
            if stat is not None:
                return None
            self.log.info(
                "Creating chroot {zk_chroot} on {zk_hosts}",
                zk_chroot=self.chroot,
                zk_hosts=self.servers,
            )

            def create() -> None:
                helper = self._client_factory(hosts=self.servers, timeout=self._timeout,
                                              **self._security)
                try:
                    helper.start(timeout=self._timeout)
                    helper.ensure_path(self.chroot)
                finally:
                    helper.stop()
                    helper.close()

            return deferToThreadPool(
                _from_threads(self._reactor), self._reactor.getThreadPool(), create
            )

        return d.addCallback(check)

    def _publish_state(self, state: SessionState) -> None:
        if state == self._state:
            return
        previous, self._state = self._state, state
        client_id = self.client_id
        session = f"{client_id[0]:#x}" if client_id else None
        if state == CONNECTED:
            self._cancel_unreachable_warning()
            self.log.info(
                "Connected to ZooKeeper at {zk_hosts}, session {zk_session}",
                zk_hosts=self.servers,
                zk_session=session,
                previous=previous,
            )
        elif self._stopping or not self.running:
            self.log.info("ZooKeeper session to {zk_hosts} closed", zk_hosts=self.servers)
        elif state == SUSPENDED:
            self.log.warn(
                "Connection to ZooKeeper at {zk_hosts} lost; retrying, session may survive",
                zk_hosts=self.servers,
            )
            self._schedule_unreachable_warning(reset=True)
        else:
            self.log.warn(
                "ZooKeeper session at {zk_hosts} expired; ephemeral nodes are gone,"
                " reconnecting with a new session",
                zk_hosts=self.servers,
            )
            self._schedule_unreachable_warning(reset=False)

        # Snapshot first: code run by a listener or waiter may register more,
        # and those must not see a state they registered after.
        listeners = list(self._listeners)
        watches = list(self._watches) if state == CONNECTED else []
        waiters: list[Deferred[None]] = []
        if state == CONNECTED:
            waiters, self._connected_waiters = self._connected_waiters, []
        for listener in listeners:
            try:
                listener(state)
            except Exception:
                self.log.failure("ZooKeeper state listener raised", state=state)
        for watch in watches:
            watch.rearm()  # kazoo dropped every watch with the connection
        for waiter in waiters:
            waiter.callback(None)

    def _schedule_unreachable_warning(self, reset: bool) -> None:
        if reset or self._unreachable_call is None:
            self._cancel_unreachable_warning()
            self._unreachable_since = self._reactor.seconds()
            self._unreachable_delay = self._unreachable_after
            self._unreachable_call = self._reactor.callLater(
                self._unreachable_delay, self._warn_unreachable
            )

    def _cancel_unreachable_warning(self) -> None:
        call, self._unreachable_call = self._unreachable_call, None
        if call is not None and call.active():
            call.cancel()

    def _warn_unreachable(self) -> None:
        self._unreachable_call = None
        if self._state == CONNECTED or self._client is None or self._stopping:
            return
        self.log.warn(
            "ZooKeeper at {zk_hosts} unreachable for {elapsed:.1f}s (state {state});"
            " still retrying",
            zk_hosts=self.servers,
            elapsed=self._reactor.seconds() - self._unreachable_since,
            state=self._state,
        )
        self._unreachable_delay = min(self._unreachable_delay * 2, 60.0)
        self._unreachable_call = self._reactor.callLater(
            self._unreachable_delay, self._warn_unreachable
        )

    # -- operations ---------------------------------------------------------

    def _require_client(self) -> KazooClient:
        if self._client is None or self._stopping:
            raise ConnectionClosedError("ZooKeeperService is not running")
        return self._client

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """Run ``client.<method>_async(...)`` as a Deferred; argument errors fail it too."""
        try:
            client = self._require_client()
            async_result = getattr(client, method + "_async")(*args, **kwargs)
        except Exception:
            return fail()
        return deferred_from_async(self._reactor, async_result)

    def create(
        self,
        path: str,
        value: bytes = b"",
        *,
        ephemeral: bool = False,
        sequence: bool = False,
        makepath: bool = False,
        acl: list[Any] | None = None,
    ) -> Deferred[str]:
        """Create a znode; fires with its actual path (sequence suffix included)."""
        return self._call(
            "create",
            path,
            value,
            acl=acl,
            ephemeral=ephemeral,
            sequence=sequence,
            makepath=makepath,
        )

    def get(self, path: str) -> Deferred[DataValue]:
        """Read (data, stat); fails with NoNodeError if absent."""
        return self._call("get", path)

    def set(self, path: str, value: bytes, version: int = -1) -> Deferred[ZnodeStat]:
        """Write data; with ``version`` != -1 fails with BadVersionError on a mismatch."""
        return self._call("set", path, value, version)

    def delete(self, path: str, version: int = -1, *, recursive: bool = False) -> Deferred[None]:
        """Delete a znode (versioned unless -1); ``recursive`` deletes children first.

        Recursive deletion is not atomic and has no async form in kazoo, so
        it runs kazoo's blocking version in a worker thread.
        """
        if recursive:
            try:
                client = self._require_client()
            except ConnectionClosedError:
                return fail()
            pool = self._reactor.getThreadPool()
            d = deferToThreadPool(
                _from_threads(self._reactor), pool, client.delete, path, version, recursive=True
            )
        else:
            d = self._call("delete", path, version)
        return d.addCallback(lambda _: None)

    def get_children(self, path: str) -> Deferred[list[str]]:
        """List child names (unordered, as ZooKeeper returns them)."""
        return self._call("get_children", path)

    def exists(self, path: str) -> Deferred[ZnodeStat | None]:
        """Fire with the stat, or None if the node does not exist."""
        return self._call("exists", path)

    def ensure_path(self, path: str) -> Deferred[None]:
        """Create ``path`` and any missing parents (empty data)."""
        return self._call("ensure_path", path).addCallback(lambda _: None)

    def transaction(self) -> Transaction:
        """Start building an atomic multi-op; see ``Transaction``."""
        return Transaction(self)

    # -- watches ------------------------------------------------------------

    def watch_data(self, path: str, callback: DataCallback) -> Deferred[DataValue | None]:
        """Watch a znode's data and existence, re-arming forever.

        The Deferred fires with the current (data, stat), or None if the node
        does not exist; afterwards ``callback`` gets each change (None on
        deletion) on the reactor thread, including changes made while
        disconnected (seen on reconnect). Return False from the callback to
        stop watching. Changes in quick succession may be coalesced.
        """
        if self._client is None or self._stopping:
            return fail(ConnectionClosedError("ZooKeeperService is not running"))
        return _DataWatch(self, path, callback).start()

    def watch_children(self, path: str, callback: ChildrenCallback) -> Deferred[list[str] | None]:
        """Watch a znode's children, re-arming forever; like ``watch_data``.

        Values are sorted child names, or None while the node does not exist.
        """
        if self._client is None or self._stopping:
            return fail(ConnectionClosedError("ZooKeeperService is not running"))
        return _ChildrenWatch(self, path, callback).start()
