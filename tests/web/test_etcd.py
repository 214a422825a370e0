"""etcd's v3 JSON gateway over a real node on real files, through StubTreq.

Expected answers were taken from etcd 3.4's gateway given the same request
(ids and revisions aside).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from treq import collect
from treq.testing import StubTreq

from kvd.web.etcd import EtcdGateway, uint64_id
from kvd.web.public import ClientAPI, Limits
from kvd.web.site import Root
from tests.support import replica_of
from tests.web.test_auth import AuthClient
from tests.web.test_public import Client


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def over_root(client: Client, api: ClientAPI) -> StubTreq:
    """The client API and the gateway behind one Root, as a node serves them."""
    node = client.node
    assert node is not None
    gateway = EtcdGateway(api, "test-cluster")
    etcd = gateway.resource()
    return StubTreq(Root(api.resource(), {b"v3": etcd, b"v3beta": etcd, b"version": etcd}))


class Etcd(Client):
    def __init__(self, path: str, max_body_bytes: int = 4096) -> None:
        super().__init__(path, max_body_bytes=max_body_bytes)
        node = self.node
        assert node is not None
        self.api = ClientAPI(lambda: self.node, Limits(max_key_bytes=64, max_value_bytes=64,
                                                        max_body_bytes=max_body_bytes),
                             leases=lambda: replica_of(node).expiry)
        self.treq = over_root(self, self.api)

    def post(self, path: str, body: Any = None, raw: bytes | None = None,
             headers: dict[bytes, list[bytes]] | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else json.dumps({} if body is None else body).encode()
        code, answer, _ = self.call("POST", path, data, headers)
        return code, answer

    def ok(self, path: str, body: Any = None) -> Any:
        code, answer = self.post(path, body)
        assert code == 200, answer
        return answer

    def put(self, key: str | bytes, value: str | bytes, **fields: Any) -> Any:
        return self.ok("/v3/kv/put", {"key": b64(key), "value": b64(value), **fields})

    def range(self, key: str | bytes, **fields: Any) -> Any:
        return self.ok("/v3/kv/range", {"key": b64(key), **fields})

    def keys(self, answer: Any) -> list[bytes]:
        return [unb64(kv["key"]) for kv in answer.get("kvs", [])]


@pytest.fixture
def etcd(tmp_path: Any) -> Etcd:
    return Etcd(str(tmp_path))


def test_version_and_header(etcd: Etcd) -> None:
    code, answer, _ = etcd.call("GET", "/version")
    assert (code, answer) == (200, {"etcdserver": "3.4.0", "etcdcluster": "3.4.0"})
    answer = etcd.put("a", "1")
    assert etcd.node is not None
    assert answer == {"header": {
        "cluster_id": str(uint64_id("test-cluster")),
        "member_id": str(uint64_id(etcd.node.node_id)), "revision": "1",
        "raft_term": str(etcd.node.epoch)}}


def test_put_then_range_carries_binary_keys_and_values_and_leaves_zeros_out(
        etcd: Etcd) -> None:
    etcd.put(b"\xff\x00k", b"\x80\x81")
    answer = etcd.range(b"\xff\x00k")
    assert answer["count"] == "1"
    assert answer["kvs"] == [{"key": b64(b"\xff\x00k"), "value": b64(b"\x80\x81"),
                              "create_revision": "1", "mod_revision": "1", "version": "1"}]
    assert "more" not in answer and "lease" not in answer["kvs"][0]
    # Absent: no kvs and no count at all, as etcd answers.
    assert set(etcd.range("missing")) == {"header"}
    # The native API shows a value that is not UTF-8 as value_b64, and such a key
    # as key_b64.
    etcd.put("bin", b"\x80\x81")
    code, native, _ = etcd.call("GET", "/api/v1/keys/bin")
    assert (code, native["value_b64"], "value" in native) == (200, b64(b"\x80\x81"), False)
    code, listed, _ = etcd.call("GET", "/api/v1/keys")
    assert listed["kvs"][1]["key_b64"] == b64(b"\xff\x00k")


def test_range_ends_limits_sorts_and_counts(etcd: Etcd) -> None:
    for key in ("a", "b1", "b2", "b3", "c"):
        etcd.put(key, key.upper())
    prefix = {"range_end": b64("c")}
    assert etcd.keys(etcd.range("b", **prefix)) == [b"b1", b"b2", b"b3"]
    assert etcd.keys(etcd.range("b", range_end=b64(b"\x00"))) == [b"b1", b"b2", b"b3", b"c"]
    page = etcd.range("b", **prefix, limit=2)
    assert (etcd.keys(page), page["more"], page["count"]) == ([b"b1", b"b2"], True, "3")
    assert etcd.keys(etcd.range("b", **prefix, sort_order="DESCEND")) == [b"b3", b"b2", b"b1"]
    # A sort target alone ascends; numbers stand for enum names.
    assert etcd.keys(etcd.range("a", range_end=b64(b"\x00"), sort_target="MOD",
                                sort_order=2, limit="1")) == [b"c"]
    counted = etcd.range("b", **prefix, count_only=True)
    assert "kvs" not in counted and counted["count"] == "3"
    bare = etcd.range("b", **prefix, keys_only=True)
    assert all("value" not in kv for kv in bare["kvs"])
    assert etcd.keys(etcd.range("a", range_end=b64(b"\x00"), min_mod_revision="3",
                                max_mod_revision=4)) == [b"b2", b"b3"]


def test_range_at_other_revisions_answers_etcds_errors(etcd: Etcd) -> None:
    etcd.put("a", "1")
    etcd.put("a", "2")
    assert etcd.keys(etcd.range("a", revision=2)) == [b"a"]
    for revision, message in ((3, "required revision is a future revision"),
                              (1, "required revision has been compacted")):
        code, answer = etcd.post("/v3/kv/range", {"key": b64("a"), "revision": revision})
        assert (code, answer["code"], answer["error"]) == (400, 11, f"etcdserver: mvcc: {message}")


def test_put_options(etcd: Etcd) -> None:
    etcd.put("k", "old")
    answer = etcd.put("k", "new", prev_kv=True)
    assert unb64(answer["prev_kv"]["value"]) == b"old"
    etcd.put("k", "", ignore_value=True)
    assert unb64(etcd.range("k")["kvs"][0]["value"]) == b"new"
    code, answer = etcd.post("/v3/kv/put", {"key": b64("nokey"), "ignore_value": True})
    assert (code, answer["code"], answer["error"]) == (400, 3, "etcdserver: key not found")
    code, answer = etcd.post("/v3/kv/put", {"value": b64("v")})
    assert (code, answer["error"]) == (400, "etcdserver: key is not provided")


def test_deleterange_counts_and_returns_previous_values(etcd: Etcd) -> None:
    for key in ("p1", "p2", "q"):
        etcd.put(key, "v" + key)
    answer = etcd.ok("/v3/kv/deleterange", {"key": b64("p"), "range_end": b64("q"),
                                             "prev_kv": True})
    assert answer["deleted"] == "2"
    assert [unb64(kv["value"]) for kv in answer["prev_kvs"]] == [b"vp1", b"vp2"]
    assert answer["header"]["revision"] == "4"
    # Nothing deleted: no count, and no revision spent.
    answer = etcd.ok("/v3/kv/deleterange", {"key": b64("p1")})
    assert "deleted" not in answer and answer["header"]["revision"] == "4"
    assert etcd.keys(etcd.range("a", range_end=b64(b"\x00"))) == [b"q"]


def test_txn_compares_and_branches(etcd: Etcd) -> None:
    etcd.put("k", "v")
    txn = {"compare": [{"key": b64("k"), "result": "EQUAL", "target": "VALUE",
                        "value": b64("v")},
                       {"key": b64("k"), "result": "GREATER", "target": "MOD",
                        "mod_revision": "0"}],
           "success": [{"request_put": {"key": b64("k2"), "value": b64("x")}},
                       {"request_range": {"key": b64("k")}}],
           "failure": [{"request_delete_range": {"key": b64("k")}}]}
    # etcd3gw sends a txn without a Content-Type.
    code, answer = etcd.post("/v3/kv/txn", raw=json.dumps(txn).encode())
    assert code == 200, answer
    assert answer["succeeded"] is True
    put, got = answer["responses"]
    assert put == {"response_put": {"header": {"revision": "2"}}}
    assert got["response_range"]["count"] == "1"
    assert unb64(got["response_range"]["kvs"][0]["value"]) == b"v"
    txn["compare"][0]["result"] = 3  # NOT_EQUAL, by number
    answer = etcd.ok("/v3/kv/txn", txn)
    assert "succeeded" not in answer
    assert answer["responses"] == [{"response_delete_range": {
        "header": {"revision": "3"}, "deleted": "1"}}]
    nested = {"success": [{"request_txn": {}}]}
    code, answer = etcd.post("/v3/kv/txn", nested)
    assert (code, answer["code"]) == (501, 12)


def test_txn_compare_on_lease_and_over_a_range(etcd: Etcd) -> None:
    lease = etcd.ok("/v3/lease/grant", {"TTL": 60, "ID": 7})["ID"]
    etcd.put("r1", "a", lease=lease)
    etcd.put("r2", "b")
    on_lease = {"compare": [{"key": b64("r1"), "target": "LEASE", "result": "EQUAL",
                             "lease": "7"}]}
    assert etcd.ok("/v3/kv/txn", on_lease)["succeeded"] is True
    over = {"compare": [{"key": b64("r"), "range_end": b64("s"), "target": "VERSION",
                         "result": "EQUAL", "version": 1}]}
    assert etcd.ok("/v3/kv/txn", over)["succeeded"] is True
    etcd.put("r2", "c")
    assert "succeeded" not in etcd.ok("/v3/kv/txn", over)


def test_leases_grant_attach_list_and_revoke_in_one_revision(etcd: Etcd) -> None:
    granted = etcd.ok("/v3/lease/grant", {"TTL": 1})
    assert granted["TTL"] == "2"  # etcd's minimum
    lease = int(granted["ID"])
    assert lease > 0
    etcd.put("l1", "a", lease=str(lease))
    etcd.put("l2", "b", lease=lease)
    etcd.put("other", "c")
    assert etcd.range("l1")["kvs"][0]["lease"] == str(lease)
    live = etcd.ok("/v3/lease/timetolive", {"ID": lease, "keys": True})
    assert (live["grantedTTL"], live["TTL"]) == ("2", "2")
    assert [unb64(k) for k in live["keys"]] == [b"l1", b"l2"]
    assert etcd.ok("/v3/kv/lease/leases")["leases"] == [{"ID": str(lease)}]
    code, answer = etcd.post("/v3/lease/grant", {"TTL": 5, "ID": lease})
    assert (code, answer["code"], answer["error"]) == (412, 9,
                                                       "etcdserver: lease already exists")
    assert etcd.ok("/v3/lease/revoke", {"ID": lease})["header"]["revision"] == "4"
    assert etcd.keys(etcd.range("a", range_end=b64(b"\x00"))) == [b"other"]
    assert etcd.node is not None
    deletes = [e for e in etcd.node.store.events_since(4)]
    assert [(e.key, e.revision) for e in deletes] == [(b"l1", 4), (b"l2", 4)]
    assert etcd.ok("/v3/lease/timetolive", {"ID": lease})["TTL"] == "-1"
    assert "leases" not in etcd.ok("/v3/lease/leases")


def test_unknown_leases_answer_404_and_a_keepalive_without_ttl(etcd: Etcd) -> None:
    for path, body in (("/v3/lease/revoke", {"ID": 5}),
                       ("/v3/kv/put", {"key": b64("k"), "lease": 5})):
        code, answer = etcd.post(path, body)
        assert (code, answer) == (404, {"error": "etcdserver: requested lease not found",
                                        "message": "etcdserver: requested lease not found",
                                        "code": 5})
    answer = etcd.ok("/v3/lease/keepalive", {"ID": 5})
    assert set(answer["result"]) == {"header", "ID"}


def test_a_lease_expires_on_the_leaders_clock_unless_kept_alive(etcd: Etcd) -> None:
    lease = etcd.ok("/v3/lease/grant", {"TTL": 10})["ID"]
    etcd.put("held", "v", lease=lease)
    etcd.reactor.advance(8)
    kept = etcd.ok("/v3/lease/keepalive", {"ID": lease})["result"]
    assert kept["TTL"] == "10"
    etcd.reactor.advance(8)
    assert etcd.ok("/v3/lease/timetolive", {"ID": lease})["TTL"] == "2"
    assert etcd.keys(etcd.range("held")) == [b"held"]
    etcd.reactor.advance(2.5)
    assert etcd.keys(etcd.range("held")) == []
    assert etcd.ok("/v3/lease/timetolive", {"ID": lease})["TTL"] == "-1"


@pytest.mark.parametrize(("body", "message"), [
    (b"{bad", None),
    (b"[]", None),
    (json.dumps({"key": "not base64!"}).encode(), "'key' is not valid base64"),
    (json.dumps({"key": b64("a"), "limit": "x"}).encode(), None),
    (json.dumps({"key": b64("a"), "sort_order": "UP"}).encode(), None),
    (json.dumps({"key": b64("a"), "serializable": "yes"}).encode(), None),
    (json.dumps({"key": b64("a" * 65)}).encode(), None),
])
def test_bad_requests_get_etcds_error_shape(etcd: Etcd, body: bytes, message: str | None,
                                            ) -> None:
    code, answer = etcd.post("/v3/kv/range", raw=body)
    assert code in (400, 413)
    assert set(answer) == {"error", "message", "code"}
    assert answer["code"] in (3, 8)
    if message is not None:
        assert answer["error"] == message
    assert etcd.state() == []


def test_unknown_paths_and_methods(etcd: Etcd) -> None:
    assert etcd.post("/v3/kv/nothing")[0] == 404
    code, answer, _ = etcd.call("GET", "/v3/kv/range")
    assert (code, answer["code"]) == (405, 12)
    # The older alias serves the same routes.
    etcd.put("a", "1")
    code, answer = etcd.post("/v3beta/kv/range", {"key": b64("a")})
    assert (code, answer["count"]) == (200, "1")


def test_status_and_members(etcd: Etcd) -> None:
    status = etcd.ok("/v3/maintenance/status")
    assert etcd.node is not None
    assert status["leader"] == str(uint64_id(etcd.node.node_id))
    assert status["version"] == "3.4.0"
    members = etcd.ok("/v3/cluster/member/list")["members"]
    assert members == [{"ID": str(uint64_id(etcd.node.node_id)), "name": etcd.node.node_id,
                        "peerURLs": ["http://127.0.0.1:1"], "clientURLs": ["http://127.0.0.1:1"]}]


def watch(etcd: Etcd, create: dict[str, Any]) -> tuple[list[Any], Any]:
    """Open a watch; its messages, one per chunk, land in the returned list."""
    messages: list[Any] = []
    d = etcd.treq.request("POST", "http://kvd/v3/watch",
                          data=json.dumps({"create_request": create}).encode())
    etcd.reactor.advance(0)
    etcd.treq.flush()
    responses: list[Any] = []
    d.addCallback(responses.append)
    assert responses and responses[0].code == 200
    done = collect(responses[0], lambda chunk: messages.append(json.loads(chunk)))
    etcd.treq.flush()
    return messages, done


def test_watch_streams_one_message_per_revision(etcd: Etcd) -> None:
    etcd.put("w0", "before")
    messages, _ = watch(etcd, {"key": b64("w"), "range_end": b64("x"),
                               "start_revision": 1})
    assert messages[0]["result"]["created"] is True
    assert [unb64(e["kv"]["value"]) for e in messages[1]["result"]["events"]] == [b"before"]
    etcd.ok("/v3/kv/txn", {"success": [
        {"request_put": {"key": b64("w1"), "value": b64("a")}},
        {"request_put": {"key": b64("w2"), "value": b64("b")}}]})
    etcd.ok("/v3/kv/deleterange", {"key": b64("w1")})
    etcd.put("elsewhere", "z")
    etcd.treq.flush()
    together, deleted = messages[2]["result"], messages[3]["result"]
    assert together["header"]["revision"] == "2"
    assert [(e.get("type", "PUT"), unb64(e["kv"]["key"])) for e in together["events"]] == [
        ("PUT", b"w1"), ("PUT", b"w2")]
    assert [(e["type"], unb64(e["kv"]["key"]), e["kv"]["mod_revision"])
            for e in deleted["events"]] == [("DELETE", b"w1", "3")]
    assert len(messages) == 4


def test_watch_filters_and_compaction(etcd: Etcd) -> None:
    messages, _ = watch(etcd, {"key": b64("f"), "filters": ["NOPUT"]})
    etcd.put("f", "1")
    etcd.ok("/v3/kv/deleterange", {"key": b64("f")})
    etcd.treq.flush()
    assert [e["type"] for m in messages[1:] for e in m["result"]["events"]] == ["DELETE"]
    assert etcd.node is not None
    etcd.node.store.history_start = 1  # as if the history before 2 were dropped
    gone, done = watch(etcd, {"key": b64("f"), "start_revision": 1})
    assert gone[1]["result"]["canceled"] is True
    assert gone[1]["result"]["compact_revision"] == "2"
    assert done.called


class SecuredEtcd(AuthClient):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.treq = over_root(self, self.api)


def test_authenticate_maps_onto_users_and_roles(tmp_path: Any) -> None:
    client = SecuredEtcd(str(tmp_path))
    client.setup()
    code, answer = client.json("POST", "/v3/kv/range", {"key": b64("app/a")})
    assert (code, answer["code"]) == (401, 16)
    code, answer = client.json("POST", "/v3/auth/authenticate",
                               {"name": "ann", "password": "wrong"})
    assert code == 401
    code, answer = client.json("POST", "/v3/auth/authenticate",
                               {"name": "ann", "password": "annpw"})
    assert code == 200
    token = answer["token"]
    # etcd's gateway takes the bare token in Authorization.
    bare = {b"Authorization": [token.encode()]}
    code, answer, _ = client.call("POST", "/v3/kv/range",
                                  json.dumps({"key": b64("app/a")}).encode(), bare)
    assert (code, answer["count"]) == (200, "1")
    code, answer, _ = client.call("POST", "/v3/kv/put",
                                  json.dumps({"key": b64("other"), "value": b64("x")}).encode(),
                                  bare)
    assert (code, answer["code"]) == (403, 7)
    code, answer, _ = client.call("POST", "/v3/kv/range",
                                  json.dumps({"key": b64("a"), "range_end": b64(b"\x00")})
                                  .encode(), bare)
    assert code == 403


_ROUTES = ["kv/range", "kv/put", "kv/deleterange", "kv/txn", "kv/compaction", "lease/grant",
           "lease/revoke", "lease/keepalive", "lease/timetolive", "lease/leases",
           "maintenance/status", "cluster/member/list", "auth/authenticate"]
_FIELDS = ["key", "value", "range_end", "limit", "revision", "sort_order", "sort_target",
           "serializable", "keys_only", "count_only", "lease", "prev_kv", "ignore_value",
           "ignore_lease", "compare", "success", "failure", "ID", "TTL", "keys", "target",
           "result", "request_put", "request_range", "request_delete_range", "name",
           "password", "min_mod_revision", "version", "mod_revision"]
_leaves = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
           | st.sampled_from(["", "AA==", "YQ==", "Yg==", "EQUAL", "VALUE", "LEASE", "abc",
                              "1", "-5", "99999999999999999999999"]))
_json_values = st.recursive(_leaves, lambda inner: st.lists(inner, max_size=3)
                            | st.dictionaries(st.sampled_from(_FIELDS), inner, max_size=4),
                            max_leaves=10)


# Fails if: a gateway route lets a wrong type or range reach the store or a lookup
# unchecked (an exception becomes a 500).
@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(_ROUTES),
       body=st.dictionaries(st.sampled_from(_FIELDS), _json_values, max_size=5))
def test_any_body_gets_an_answer_or_an_etcd_error_never_a_500(
        etcd: Etcd, route: str, body: dict[str, Any]) -> None:
    code, answer = etcd.post(f"/v3/{route}", body)
    assert code in (200, 400, 404, 412, 413, 501), (code, answer)
    if code != 200:
        assert set(answer) == {"error", "message", "code"}


def test_txn_limits_and_duplicate_keys_as_etcd_answers_them(tmp_path: Any) -> None:
    etcd = Etcd(str(tmp_path), max_body_bytes=65536)
    put = {"request_put": {"key": b64("d"), "value": b64("v")}}
    # etcd bounds each list at 128, not the three together.
    many = {"compare": [{"key": b64(f"c{i}"), "target": "VERSION", "result": "EQUAL"}
                        for i in range(100)],
            "success": [{"request_range": {"key": b64(f"r{i}")}} for i in range(100)]}
    assert etcd.ok("/v3/kv/txn", many)["succeeded"] is True
    code, answer = etcd.post("/v3/kv/txn", {"success": [{"request_range": {"key": b64("r")}}]
                                            * 129})
    assert (code, answer["code"]) == (400, 3)
    assert answer["error"] == "etcdserver: too many operations in txn request"
    for branch in ([put, put],
                   [put, {"request_delete_range": {"key": b64("a"), "range_end": b64("e")}}],
                   [{"request_delete_range": {"key": b64("d")}}, put]):
        code, answer = etcd.post("/v3/kv/txn", {"success": branch})
        assert (code, answer["error"]) == (400, "etcdserver: duplicate key given in txn "
                                                "request"), branch
    # One put in each branch is not a duplicate, nor are two deletes of one key.
    assert etcd.ok("/v3/kv/txn", {"success": [put], "failure": [put]})["succeeded"] is True
    twice = {"request_delete_range": {"key": b64("d")}}
    assert etcd.ok("/v3/kv/txn", {"success": [twice, twice]})["succeeded"] is True
    # etcd 3.4 builds a delete to the end ("\0") backwards: it overlaps no put.
    to_the_end = {"request_delete_range": {"key": b64("a"), "range_end": b64(b"\x00")}}
    assert etcd.ok("/v3/kv/txn", {"success": [to_the_end, put]})["succeeded"] is True
    etcd.ok("/v3/kv/deleterange", {"key": b64("d")})
    assert etcd.state() == []


def test_a_value_compare_on_a_missing_key_fails_whatever_its_result(etcd: Etcd) -> None:
    for result in ("EQUAL", "NOT_EQUAL", "GREATER", "LESS"):
        answer = etcd.ok("/v3/kv/txn", {"compare": [
            {"key": b64("missing"), "target": "VALUE", "result": result,
             "value": b64("x")}]})
        assert "succeeded" not in answer, result
    etcd.put("there", "y")
    assert etcd.ok("/v3/kv/txn", {"compare": [
        {"key": b64("there"), "target": "VALUE", "result": "NOT_EQUAL",
         "value": b64("x")}]})["succeeded"] is True


@pytest.mark.parametrize("text", ["--5", "²", "٣", "1_000", "+5", "0x10", "5x", "007",
                                  "-00", "99999999999999999999"])
def test_an_int64_field_takes_what_etcd_takes_and_nothing_else(etcd: Etcd, text: str,
                                                               ) -> None:
    code, answer = etcd.post("/v3/kv/range", {"key": b64("a"), "limit": text})
    assert (code, answer["code"]) == (400, 3), text
    for taken in ("7", " 5", "5 ", "0", "-0"):
        assert etcd.post("/v3/kv/range", {"key": b64("a"), "limit": taken})[0] == 200


def test_a_key_or_value_over_the_limit_is_etcds_request_too_large(etcd: Etcd) -> None:
    for body in ({"key": b64("k" * 65), "value": b64("v")},
                 {"key": b64("k"), "value": b64("v" * 65)}):
        code, answer = etcd.post("/v3/kv/put", body)
        assert (code, answer) == (400, {"error": "etcdserver: request is too large",
                                        "message": "etcdserver: request is too large",
                                        "code": 3})


def test_timetolive_rounds_down_as_etcd_does(etcd: Etcd) -> None:
    lease = etcd.ok("/v3/lease/grant", {"TTL": 10})["ID"]
    etcd.reactor.advance(0.5)
    assert etcd.ok("/v3/lease/timetolive", {"ID": lease})["TTL"] == "9"


def test_watch_nodelete_future_start_revision_prev_kv_and_leases(etcd: Etcd) -> None:
    etcd.put("f", "0")
    lease = etcd.ok("/v3/lease/grant", {"TTL": 60, "ID": 9})["ID"]
    no_deletes, _ = watch(etcd, {"key": b64("f"), "filters": ["NODELETE"]})
    # A start revision still to come: revisions 2 and 3 are not asked for.
    future, _ = watch(etcd, {"key": b64("f"), "start_revision": 4, "prev_kv": True})
    etcd.put("f", "1", lease=lease)                    # revision 2
    etcd.ok("/v3/kv/deleterange", {"key": b64("f")})   # revision 3
    etcd.put("f", "2")                                 # revision 4
    etcd.put("f", "3")                                 # revision 5
    etcd.treq.flush()
    events = [e for m in no_deletes[1:] for e in m["result"]["events"]]
    # PUT is etcd's zero event type: its JSON leaves "type" out.
    assert [("type" in e, unb64(e["kv"]["value"]), e["kv"].get("lease")) for e in events] == [
        (False, b"1", "9"), (False, b"2", None), (False, b"3", None)]
    later = [e for m in future[1:] for e in m["result"]["events"]]
    assert [e["kv"]["mod_revision"] for e in later] == ["4", "5"]
    # prev_kv: nothing before the put that re-created the key, then the value it replaced.
    assert ["prev_kv" in later[0], unb64(later[1]["prev_kv"]["value"])] == [False, b"2"]
    # Deleting a key attached to a lease, seen with prev_kv, shows the lease it had.
    with_prev, _ = watch(etcd, {"key": b64("g"), "prev_kv": True})
    etcd.put("g", "v", lease=lease)
    etcd.ok("/v3/lease/revoke", {"ID": lease})
    etcd.treq.flush()
    put_event, delete_event = [e for m in with_prev[1:] for e in m["result"]["events"]]
    assert delete_event["type"] == "DELETE"
    assert delete_event["prev_kv"]["lease"] == "9"
    assert unb64(delete_event["prev_kv"]["value"]) == b"v"


# Fails if: the gateway checks a put or delete asking for prev_kv for write access
# alone (the store would refuse it when it applies, but only after it was logged).
def test_a_write_only_user_gets_no_previous_values_and_nothing_is_logged(
        tmp_path: Any) -> None:
    client = SecuredEtcd(str(tmp_path))
    client.setup()
    root = client.login("root", "rootpw")
    grants: list[tuple[str, Any]] = [("/api/v1/auth/users/wo", {"password": "wopw"}),
                      ("/api/v1/auth/roles/drop", None),
                      ("/api/v1/auth/roles/drop/permissions", {"prefix": "drop/",
                                                               "permission": "write"}),
                      ("/api/v1/auth/users/wo/roles/drop", None)]
    for url, grant in grants:
        assert client.json("PUT", url, grant, root)[0] == 200, url
    token = {b"Authorization": [client.login("wo", "wopw").encode()]}

    def post(path: str, body: dict[str, Any]) -> tuple[int, Any]:
        code, answer, _ = client.call("POST", path, json.dumps(body).encode(), token)
        return code, answer

    assert post("/v3/kv/put", {"key": b64("drop/a"), "value": b64("secret")})[0] == 200
    assert client.node is not None
    logged = client.node.rlog.last_index
    refused: list[tuple[str, dict[str, Any]]] = [
            ("/v3/kv/put", {"key": b64("drop/a"), "value": b64("x"), "prev_kv": True}),
            ("/v3/kv/deleterange", {"key": b64("drop/"), "range_end": b64("drop0"),
                                    "prev_kv": True}),
            ("/v3/kv/txn", {"success": [{"request_put": {
                "key": b64("drop/a"), "value": b64("x"), "prev_kv": True}}]})]
    for path, body in refused:
        code, answer = post(path, body)
        assert (code, answer["code"]) == (403, 7), path
    assert client.node.rlog.last_index == logged
