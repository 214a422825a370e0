"""
The OpenAPI 3 description of the client API, served at ``/api/v1/openapi.json``.

Written by hand, next to the routes it describes; the test suite fuzzes a live
node against it with schemathesis, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

from typing import Any

_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {400: "malformed or wrong input", 401: "auth is on: no valid token",
            403: "the user's roles do not cover it", 404: "no such key or path",
            405: "wrong method", 409: "compare failed or already exists",
            410: "revision compacted", 413: "too large", 429: "too many failed logins",
            503: "certainly not applied; retry later", 504: "outcome unknown"}
    # Every route but health and metrics needs a token once auth is on.
    return {str(s): _json(_ref("Error"), text[s]) for s in sorted({*statuses, 401, 403})}


_NAME = {"type": "string", "minLength": 1, "maxLength": 128}
_PASSWORD_BODY = {"required": True, "content": {_JSON: {"schema": {
    "type": "object", "required": ["password"],
    "properties": {"password": {"type": "string", "minLength": 1, "maxLength": 1024}}}}}}
_OK = {"200": _json({"type": "object", "required": ["ok"]}, "done")}


def _auth_change(summary: str, *statuses: int, body: Any = None,
                 parameters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary,
                                 "responses": {**_OK, **_errors(400, 503, 504, *statuses)}}
    if body is not None:
        operation["requestBody"] = body
    if parameters:
        operation["parameters"] = parameters
    return operation


def _path_names(*names: str) -> list[dict[str, Any]]:
    return [{"name": n, "in": "path", "required": True, "schema": _NAME} for n in names]


_AUTH_PATHS: dict[str, Any] = {
    "/api/v1/auth/authenticate": {"post": {
        "summary": "A token for a name and password",
        "requestBody": {"required": True, "content": {_JSON: {"schema": {
            "type": "object", "required": ["name", "password"],
            "properties": {"name": _NAME, "password": {"type": "string", "minLength": 1,
                                                       "maxLength": 1024}}}}}},
        "responses": {"200": _json({"type": "object", "required": ["token"],
                                    "properties": {"token": {"type": "string"}}}, "a token"),
                      **_errors(400, 429, 503)}}},
    "/api/v1/auth/status": {"get": {
        "summary": "Is auth on",
        "responses": {"200": _json({"type": "object", "required": ["enabled"],
                                    "properties": {"enabled": {"type": "boolean"}}},
                                   "the flag"), **_errors(503)}}},
    "/api/v1/auth/enable": {"post": _auth_change("Turn auth on (a root user must exist)")},
    "/api/v1/auth/disable": {"post": _auth_change("Turn auth off")},
    "/api/v1/auth/users": {"get": {
        "summary": "Users and their roles",
        "responses": {"200": _json({"type": "object", "required": ["users"]}, "users"),
                      **_errors(503)}}},
    "/api/v1/auth/users/{name}": {
        "parameters": _path_names("name"),
        "put": _auth_change("Create a user", 409, body=_PASSWORD_BODY),
        "delete": _auth_change("Delete a user", 404)},
    "/api/v1/auth/users/{name}/password": {
        "parameters": _path_names("name"),
        "put": _auth_change("Set a user's password", 404, body=_PASSWORD_BODY)},
    "/api/v1/auth/users/{name}/roles/{role}": {
        "parameters": _path_names("name", "role"),
        "put": _auth_change("Grant a user a role", 404),
        "delete": _auth_change("Revoke a role from a user", 404)},
    "/api/v1/auth/roles": {"get": {
        "summary": "Roles and their grants",
        "responses": {"200": _json({"type": "object", "required": ["roles"]}, "roles"),
                      **_errors(503)}}},
    "/api/v1/auth/roles/{role}": {
        "parameters": _path_names("role"),
        "put": _auth_change("Create a role", 409),
        "delete": _auth_change("Delete a role", 404)},
    "/api/v1/auth/roles/{role}/permissions": {
        "parameters": _path_names("role"),
        "put": _auth_change("Grant a role a permission on a key prefix", 404, 413, body={
            "required": True, "content": {_JSON: {"schema": {
                "type": "object", "required": ["prefix", "permission"],
                "properties": {"prefix": {"type": "string"}, "permission": {
                    "type": "string", "enum": ["read", "write", "readwrite"]}}}}}}),
        "delete": _auth_change("Take a prefix's grant from a role", 404, 413, parameters=[
            {"name": "prefix", "in": "query", "required": True,
             "schema": {"type": "string"}}])},
}


_READ_PARAMS = [
    {"name": "consistency", "in": "query",
     "schema": {"type": "string", "enum": ["linearizable", "stale"]}},
    {"name": "min_revision", "in": "query",
     "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}},
]
_KEY_PARAM = {"name": "key", "in": "path", "required": True,
              "schema": {"type": "string", "minLength": 1}}
# A key or value that is not UTF-8 comes as base64 under key_b64 / value_b64.
_KV = {"type": "object", "required": ["revision", "create_revision", "version"],
       "properties": {"key": {"type": "string"}, "value": {"type": "string"},
                      "key_b64": {"type": "string", "contentEncoding": "base64"},
                      "value_b64": {"type": "string", "contentEncoding": "base64"},
                      "revision": {"type": "integer"}, "create_revision": {"type": "integer"},
                      "version": {"type": "integer"}},
       "allOf": [{"oneOf": [{"required": ["key"]}, {"required": ["key_b64"]}]},
                 {"oneOf": [{"required": ["value"]}, {"required": ["value_b64"]}]}]}
_NODE_ID = {"name": "node_id", "in": "path", "required": True,
            "schema": {"type": "string", "minLength": 1}}
_LEASE_ID = {"name": "id", "in": "path", "required": True,
             "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}}
_LEASE = {"type": "object", "required": ["id", "ttl", "granted_ttl"], "properties": {
    "id": {"type": "integer"}, "ttl": {"type": "integer"}, "granted_ttl": {"type": "integer"},
    "keys": {"type": "array", "items": {"type": "object"}}}}
_LEASE_PATHS: dict[str, Any] = {
    "/api/v1/leases": {
        "post": {"summary": "Grant a lease of ttl seconds (id optional)",
                 "requestBody": {"required": True, "content": {_JSON: {"schema": {
                     "type": "object", "required": ["ttl"], "additionalProperties": False,
                     "properties": {"ttl": {"type": "integer", "minimum": 1,
                                            "maximum": 9_000_000_000},
                                    "id": {"type": ["integer", "null"], "minimum": 1,
                                           "maximum": 2**63 - 1}}}}}},
                 "responses": {"200": _json({"type": "object", "required": ["id", "ttl"]},
                                            "granted"), **_errors(400, 409, 413, 503, 504)}},
        "get": {"summary": "Every lease", "parameters": _READ_PARAMS,
                "responses": {"200": _json({"type": "object", "required": ["leases"],
                                            "properties": {"leases": {
                                                "type": "array", "items": _LEASE}}},
                                           "the leases"), **_errors(400, 503)}}},
    "/api/v1/leases/{id}": {
        "parameters": [_LEASE_ID],
        "get": {"summary": "A lease, its time left and its keys", "parameters": _READ_PARAMS,
                "responses": {"200": _json(_LEASE, "the lease"), **_errors(400, 404, 503)}},
        "delete": {"summary": "Revoke a lease: its keys are deleted at one revision",
                   "responses": {"200": _json({"type": "object", "required": [
                       "id", "revision", "deleted"]}, "revoked"),
                       **_errors(400, 404, 503, 504)}}},
    "/api/v1/leases/{id}/keepalive": {
        "parameters": [_LEASE_ID],
        "post": {"summary": "Renew a lease for its full TTL",
                 "responses": {"200": _json({"type": "object", "required": ["id", "ttl"]},
                                            "renewed"), **_errors(400, 404, 503, 504)}}},
}
_WRITE = {"type": "object", "required": ["key", "revision"],
          "properties": {"key": {"type": "string"}, "revision": {"type": "integer"}}}
_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["code", "message"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                   "outcome": {"type": "string", "enum": ["unknown"]}}}}}
_TXN_OP = {"oneOf": [
    {"type": "object", "required": ["op", "key", "value"], "properties": {
        "op": {"const": "put"}, "key": {"type": "string", "minLength": 1},
        "value": {"type": "string"},
        "ttl": {"type": ["integer", "null"], "minimum": 1, "maximum": 315360000}}},
    {"type": "object", "required": ["op", "key"], "properties": {
        "op": {"enum": ["delete", "get"]}, "key": {"type": "string", "minLength": 1}}},
]}
_CMP = {"type": "string", "enum": ["==", "!=", "<", ">"]}
_KEY = {"type": "string", "minLength": 1}
_TXN_COMPARE = {"oneOf": [
    {"type": "object", "required": ["key", "target", "value"], "properties": {
        "key": _KEY, "target": {"const": "value"}, "cmp": _CMP,
        "value": {"type": "string"}}},
    {"type": "object", "required": ["key", "target", "value"], "properties": {
        "key": _KEY, "target": {"enum": ["revision", "create_revision", "version"]},
        "cmp": _CMP, "value": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}}},
    {"type": "object", "required": ["key", "target", "value"], "properties": {
        "key": _KEY, "target": {"const": "exists"}, "cmp": {"enum": ["==", "!="]},
        "value": {"type": "boolean"}}},
]}
_TXN = {"type": "object", "additionalProperties": False, "properties": {
    "compare": {"type": "array", "items": _ref("TxnCompare")},
    "success": {"type": "array", "items": _ref("TxnOp")},
    "failure": {"type": "array", "items": _ref("TxnOp")}}}
_TXN_RESULT = {"type": "object", "required": ["succeeded", "revision", "results"],
               "properties": {"succeeded": {"type": "boolean"},
                              "revision": {"type": "integer"},
                              "results": {"type": "array", "items": {"type": "object"}}}}
_SCAN = {"type": "object", "properties": {
    "kvs": {"type": "array", "items": {"type": "object", "required": ["key"]}},
    "count": {"type": "integer"}, "more": {"type": "boolean"},
    "next_page_token": {"type": "string"}}, "required": ["count"]}
_MEMBER = {"type": "object", "required": ["node_id", "url", "role"], "properties": {
    "node_id": {"type": "string"}, "url": {"type": ["string", "null"]},
    "role": {"type": "string"}, "last_index": {"type": ["integer", "null"]},
    "lag": {"type": ["integer", "null"]}}}
_CLUSTER = {"type": "object",
            "required": ["node_id", "role", "leader", "epoch", "commit_index", "applied_index",
                         "members"],
            "properties": {
                "node_id": {"type": "string"},
                "role": {"type": "string", "enum": ["standalone", "looking", "syncing",
                                                    "leader", "follower"]},
                "leader": {"oneOf": [{"type": "null"}, {"type": "object"}]},
                "epoch": {"type": "integer"}, "commit_index": {"type": "integer"},
                "applied_index": {"type": "integer"},
                "members": {"type": "array", "items": _ref("Member")}}}


def spec() -> dict[str, Any]:
    """The whole document."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "kvd client API", "version": "1",
                 "description": "A replicated key-value store. Every answer carries "
                                "X-Kvd-Revision, the store revision it reflects."},
        "paths": {
            "/api/v1/": {
                "post": {"summary": "Old-style write", "requestBody": {
                    "required": True, "content": {_JSON: {"schema": {
                        "type": "object", "required": ["key", "value"],
                        "properties": {"key": {"type": "string", "minLength": 1},
                                       "value": {"type": "string"}}}}}},
                         "responses": {"200": _json(_ref("WriteResult"), "written"),
                                       **_errors(400, 413, 503, 504)}},
                "get": {"summary": "Old-style multi-read",
                        "parameters": [{"name": "keys", "in": "query", "required": True,
                                        "schema": {"type": "string", "minLength": 1}},
                                       *_READ_PARAMS],
                        "responses": {"200": _json({"type": "array", "items": {
                            "type": ["string", "null"]}}, "values, null when missing"),
                            **_errors(400, 413, 503)}},
            },
            "/api/v1/keys/{key}": {
                "parameters": [_KEY_PARAM],
                "get": {"summary": "Read a key", "parameters": _READ_PARAMS,
                        "responses": {"200": _json(_ref("KeyValue"), "the key"),
                                      **_errors(400, 404, 413, 503)}},
                "put": {"summary": "Write a key (compare-and-set with prev_revision)",
                        "requestBody": {"required": True, "content": {_JSON: {"schema": {
                            "type": "object", "required": ["value"],
                            "additionalProperties": False,
                            "properties": {"value": {"type": "string"},
                                           "prev_revision": {"type": ["integer", "null"],
                                                             "minimum": 0,
                                                             "maximum": 2**63 - 1},
                                           "ttl": {"type": ["integer", "null"], "minimum": 1,
                                                   "maximum": 315360000},
                                           "lease": {"type": ["integer", "null"],
                                                     "minimum": 1,
                                                     "maximum": 2**63 - 1}}}}}},
                        "responses": {"200": _json(_ref("WriteResult"), "written"),
                                      **_errors(400, 404, 409, 413, 503, 504)}},
                "delete": {"summary": "Delete a key",
                           "parameters": [{"name": "prev_revision", "in": "query",
                                           "schema": {"type": "integer", "minimum": 0,
                                                      "maximum": 2**63 - 1}}],
                           "responses": {"200": _json(_ref("WriteResult"), "deleted"),
                                         **_errors(400, 404, 409, 413, 503, 504)}},
            },
            "/api/v1/keys": {"get": {
                "summary": "Range scan in key order: [start, end) within prefix",
                "parameters": [
                    {"name": n, "in": "query", "schema": {"type": "string"}}
                    for n in ("prefix", "start", "end")
                ] + [
                    {"name": "page_token", "in": "query",
                     "schema": {"type": "string", "pattern": "^([0-9a-f]{2})*$"}},
                    {"name": "limit", "in": "query",
                     "schema": {"type": "integer", "minimum": 1, "maximum": 10000}},
                    {"name": "keys_only", "in": "query",
                     "schema": {"type": "string", "enum": ["true", "false", "1", "0"]}},
                    {"name": "count_only", "in": "query",
                     "schema": {"type": "string", "enum": ["true", "false", "1", "0"]}},
                    *_READ_PARAMS],
                "responses": {"200": _json(_ref("ScanResult"), "a page of keys"),
                              **_errors(400, 503)}}},
            "/api/v1/txn": {"post": {
                "summary": "Compare, then success or failure ops, atomically",
                "requestBody": {"required": True,
                                "content": {_JSON: {"schema": _ref("TxnRequest")}}},
                "responses": {"200": _json(_ref("TxnResult"), "the branch taken and results"),
                              **_errors(400, 413, 503, 504)}}},
            "/api/v1/watch": {"get": {
                "summary": "Stream of changes as newline-delimited JSON",
                "parameters": [
                    {"name": "key", "in": "query", "schema": {"type": "string"}},
                    {"name": "prefix", "in": "query", "schema": {"type": "string"}},
                    {"name": "start_revision", "in": "query",
                     "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}}],
                "responses": {"200": {"description": "events, one JSON object a line",
                                      "content": {"application/x-ndjson": {}}},
                              **_errors(400, 410, 503)}}},
            **_AUTH_PATHS,
            **_LEASE_PATHS,
            "/api/v1/leader/transfer": {"post": {
                "summary": "Hand leadership to a voter (the most caught-up by default)",
                "requestBody": {"required": False, "content": {_JSON: {"schema": {
                    "type": "object", "properties": {"target": {"type": "string"}}}}}},
                "responses": {"200": _json({"type": "object", "required": ["target"]},
                                           "handed over"), **_errors(400, 503)}}},
            "/api/v1/members": {"get": {
                "summary": "Every member: role, voter or not, last index and lag",
                "responses": {"200": _json({"type": "object", "required": ["members",
                                                                           "voters"]},
                                           "members"), **_errors(503)}}},
            "/api/v1/members/{node_id}/promote": {"post": {
                "summary": "Make a caught-up learner a voter (answers once committed)",
                "parameters": [_NODE_ID],
                "responses": {"200": _json({"type": "object", "required": ["voters"]},
                                           "the new voter set"),
                              **_errors(400, 409, 503, 504)}}},
            "/api/v1/members/{node_id}": {"delete": {
                "summary": "Take a voter out of the voter set (answers once committed)",
                "parameters": [_NODE_ID],
                "responses": {"200": _json({"type": "object", "required": ["voters"]},
                                           "the new voter set"),
                              **_errors(400, 409, 503, 504)}}},
            "/api/v1/members/replace": {"post": {
                "summary": "Replace one voter by a caught-up learner, in one change",
                "requestBody": {"required": True, "content": {_JSON: {"schema": {
                    "type": "object", "required": ["old", "new"],
                    "properties": {"old": {"type": "string"}, "new": {"type": "string"}}}}}},
                "responses": {"200": _json({"type": "object", "required": ["voters"]},
                                           "the new voter set"),
                              **_errors(400, 409, 503, 504)}}},
            "/api/v1/snapshot": {"get": {
                "summary": "A consistent backup of the store (a snapshot file)",
                "parameters": _READ_PARAMS,
                "responses": {"200": {"description": "the backup; X-Kvd-Snapshot-Sha256",
                                      "content": {"application/octet-stream": {}}},
                              **_errors(400, 503)}}},
            "/api/v1/cluster": {"get": {
                "summary": "This node's view of the cluster",
                "responses": {"200": _json(_ref("ClusterStatus"), "status"),
                              **_errors(503)}}},
            "/api/v1/openapi.json": {"get": {
                "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "OpenAPI document"),
                              **_errors(503)}}},
            "/healthz": {"get": {"summary": "Liveness", "responses": {
                "200": _json({"type": "object"}, "alive")}}},
            "/readyz": {"get": {"summary": "Readiness", "responses": {
                "200": _json({"type": "object"}, "ready"),
                "503": _json({"type": "object"}, "not ready, with the reason")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
                "200": {"description": "text exposition format",
                        "content": {"text/plain": {}}},
                **_errors(503)}}},
        },
        "components": {"schemas": {
            "KeyValue": _KV, "WriteResult": _WRITE, "Error": _ERROR, "TxnOp": _TXN_OP,
            "TxnCompare": _TXN_COMPARE, "TxnRequest": _TXN, "TxnResult": _TXN_RESULT,
            "ScanResult": _SCAN, "Member": _MEMBER, "ClusterStatus": _CLUSTER,
        }},
    }
