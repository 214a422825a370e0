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
    text = {400: "malformed or wrong input", 404: "no such key or path", 405: "wrong method",
            409: "compare failed", 410: "revision compacted", 413: "too large",
            503: "certainly not applied; retry later", 504: "outcome unknown"}
    return {str(s): _json(_ref("Error"), text[s]) for s in statuses}


_READ_PARAMS = [
    {"name": "consistency", "in": "query",
     "schema": {"type": "string", "enum": ["linearizable", "stale"]}},
    {"name": "min_revision", "in": "query",
     "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}},
]
_KEY_PARAM = {"name": "key", "in": "path", "required": True,
              "schema": {"type": "string", "minLength": 1}}
_KV = {"type": "object", "required": ["key", "value", "revision", "create_revision", "version"],
       "properties": {"key": {"type": "string"}, "value": {"type": "string"},
                      "revision": {"type": "integer"}, "create_revision": {"type": "integer"},
                      "version": {"type": "integer"}}}
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
                                                   "maximum": 315360000}}}}}},
                        "responses": {"200": _json(_ref("WriteResult"), "written"),
                                      **_errors(400, 409, 413, 503, 504)}},
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
            "/api/v1/cluster": {"get": {
                "summary": "This node's view of the cluster",
                "responses": {"200": _json(_ref("ClusterStatus"), "status"),
                              **_errors(503)}}},
            "/api/v1/openapi.json": {"get": {
                "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "OpenAPI document")}}},
            "/healthz": {"get": {"summary": "Liveness", "responses": {
                "200": _json({"type": "object"}, "alive")}}},
            "/readyz": {"get": {"summary": "Readiness", "responses": {
                "200": _json({"type": "object"}, "ready"),
                "503": _json({"type": "object"}, "not ready, with the reason")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
                "200": {"description": "text exposition format",
                        "content": {"text/plain": {}}}}}},
        },
        "components": {"schemas": {
            "KeyValue": _KV, "WriteResult": _WRITE, "Error": _ERROR, "TxnOp": _TXN_OP,
            "TxnCompare": _TXN_COMPARE, "TxnRequest": _TXN, "TxnResult": _TXN_RESULT,
            "ScanResult": _SCAN, "Member": _MEMBER, "ClusterStatus": _CLUSTER,
        }},
    }
