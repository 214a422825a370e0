"""Every API test here runs twice: with the hot routes found by ``HotRouteResource``'s
table, and with every route matched by Klein and werkzeug (an empty table), so
the two paths answer the same tables of requests. Hypothesis tests run with the
table only (pytest-twisted cannot run one twice under parameters)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kvd.web import etcd, peer, public

ROUTE_MATCHING = ["hot-routes", "klein-routes"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "route_matching" in metafunc.fixturenames and \
            not getattr(metafunc.function, "is_hypothesis_test", False):
        metafunc.parametrize("route_matching", ROUTE_MATCHING, indirect=True)


@pytest.fixture(autouse=True)
def route_matching(request: pytest.FixtureRequest,
                   monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    matching = getattr(request, "param", ROUTE_MATCHING[0])
    if matching == "klein-routes":
        for module in (public, etcd, peer):
            monkeypatch.setattr(module, "HOT_ROUTES", ())
    yield matching
