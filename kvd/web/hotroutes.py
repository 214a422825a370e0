"""
Klein's resource, with the routes that carry the load found by a dict lookup.

For each request Klein works out the URL's host, port and scheme, binds
werkzeug's map to them and runs its matcher before the endpoint starts; on
a key read that is about a sixth of a node's reactor thread (py-spy, stale
reads). ``HotRouteResource`` knows the routes it is given (static paths, or
a static prefix and one last segment) by method and path, and runs their
Klein endpoint with the app's own error handlers; every other request, and
any path the table is not sure of, goes through Klein's matcher as before.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from klein import Klein
from klein.resource import KleinResource
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.server import NOT_DONE_YET

log = Logger()

#: ``/prefix/<key:name>``: a last segment of any characters (one, without "/",
#: is all the table takes; werkzeug matches the rest).
_LAST_SEGMENT = re.compile(r"^(?P<prefix>/(?:[^<>]*/)?)<(?:key:)?(?P<name>\w+)>$")


class HotRouteResource(KleinResource):
    """A ``KleinResource`` that finds the rules named in ``hot`` without werkzeug.

    A rule is named by its path as routed (``"/api/v1/keys/<key:key>"``); each
    must be in the app, static or a static prefix and one ``key`` (or string)
    argument at the end, and no other rule may begin with that prefix (werkzeug
    would weigh it against ours). The table takes a request only when werkzeug
    would give the same rule and arguments: the method is one the rule names,
    and the last segment is a single non-empty segment in UTF-8.
    """

    def __init__(self, app: Klein, hot: Iterable[str]) -> None:
        super().__init__(app)
        wanted = set(hot)
        rules = list(app.url_map.iter_rules())
        #: (method, path without its leading "/") -> endpoint
        self._static: dict[tuple[bytes, bytes], str] = {}
        #: (method, prefix without its leading "/") -> (endpoint, argument name)
        self._prefixed: dict[tuple[bytes, bytes], tuple[str, str]] = {}
        found = set()
        for rule in rules:
            if rule.rule not in wanted:
                continue
            found.add(rule.rule)
            methods = [m.encode("ascii") for m in rule.methods or () if m != "HEAD"]
            if "<" not in rule.rule:
                for method in methods:
                    self._static[method, rule.rule[1:].encode()] = rule.endpoint
                continue
            shape = _LAST_SEGMENT.match(rule.rule)
            if shape is None:
                raise ValueError(f"{rule.rule}: only a static path, or a static prefix and "
                                 "one argument at the end, can be a hot route")
            prefix = shape["prefix"]
            others = [r.rule for r in rules if r.rule.startswith(prefix)
                      and r.rule not in (rule.rule, prefix)]
            if others:
                raise ValueError(f"{rule.rule}: werkzeug would weigh {others[0]} against it")
            for method in methods:
                self._prefixed[method, prefix[1:].encode()] = (rule.endpoint, shape["name"])
        if wanted - found:
            raise ValueError(f"no such routes: {', '.join(sorted(wanted - found))}")
        self._error_handlers = app._error_handlers

    def render(self, request: IRequest) -> Any:
        path = b"/".join(request.postpath)
        endpoint = self._static.get((request.method, path))
        if endpoint is not None:
            return self._run(request, endpoint, {})
        cut = path.rfind(b"/") + 1
        segment = path[cut:]
        found = self._prefixed.get((request.method, path[:cut]))
        if found is None or not segment:
            return super().render(request)
        try:
            argument = segment.decode("utf-8")
        except UnicodeDecodeError:
            return super().render(request)
        return self._run(request, found[0], {found[1]: argument})

    def _run(self, request: IRequest, endpoint: str, arguments: dict[str, str]) -> Any:
        """What ``KleinResource.render`` does once werkzeug has matched."""
        outcome: Deferred[Any] = maybeDeferred(
            self._app.execute_endpoint, endpoint, request, **arguments)
        finished = _Finished(outcome)
        request.notifyFinish().addBoth(finished)  # type: ignore[attr-defined]
        outcome.addCallback(_renderable)
        outcome.addErrback(self._failed, request, finished, self._error_handlers)
        outcome.addCallback(_write, request, finished)
        outcome.addErrback(_unwritten)
        return NOT_DONE_YET

    def _failed(self, failure: Failure, request: IRequest, finished: _Finished,
                handlers: list[tuple[list[type[Exception]], Any]]) -> Any:
        """The first of the app's error handlers that takes ``failure``, as Klein
        runs them (a handler's own failure goes to the handlers after it)."""
        if finished.done:
            # Nobody to answer; a cancellation is what a dropped client causes.
            if not failure.check(CancelledError):
                log.failure("Unhandled error processing a request", failure)
            return None
        for n, (types, handler) in enumerate(handlers):
            if failure.check(*types):
                d = maybeDeferred(self._app.execute_error_handler, handler, request, failure)
                d.addCallback(_renderable)
                return d.addErrback(self._failed, request, finished, handlers[n + 1:])
        request.processingFailed(failure)  # type: ignore[attr-defined]
        return None


class _Finished:
    """Whether the request ended (answered, or its client gone: then the
    endpoint's Deferred is cancelled, as Klein does)."""

    __slots__ = ("done", "_outcome")

    def __init__(self, outcome: Deferred[Any]) -> None:
        self.done = False
        self._outcome = outcome

    def __call__(self, result: object) -> None:
        self.done = True
        if isinstance(result, Failure):
            self._outcome.cancel()


def _renderable(body: object) -> bytes | None:
    """What an endpoint answered, as bytes to write (None: nothing more).

    Klein would also render a ``Response``, a resource or an element; a hot
    route answers bytes, and anything else is a bug its error handlers report.
    """
    if body is None or isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    raise TypeError(f"a hot route answered {type(body).__name__}, not bytes")


def _unwritten(failure: Failure) -> None:
    log.failure("Unhandled error writing a response", failure)


def _write(body: bytes | None, request: IRequest, finished: _Finished) -> None:
    if body is not None:
        request.write(body)
    if not finished.done:
        request.finish()


__all__ = ["HotRouteResource"]
