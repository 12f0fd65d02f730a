"""schemathesis hooks for scripts/schemathesis (issue 23): the refusals no schema can state.

The OpenAPI document states every rule of the parser (bins/broked-server/src/openapi.rs). What
it cannot state depends on the stored rows or the path, and the server answers those with 422
(docs/api.md, "What the document cannot say"). For the operations listed in OPERATIONS the
script lets schemathesis' positive_data_acceptance take a 422, and this check takes over: a
schema-valid request answered 422 fails unless *every* error it names is one of those, for the
reason written beside it. Anything else is the document and the parser disagreeing again.

One more: JSON Schema 2020-12 makes `contentSchema` an annotation, so schemathesis draws any
JSON text for the string form of `extra`. Such a string that does not hold an object valid
against the `contentSchema` was not valid data (the document says what the string must hold):
a 422 on `extra` for it is expected. This is checked against the served document itself
(ST_DOCUMENT), with the validator schemathesis ships.
"""

import json
import os

import jsonschema_rs
import schemathesis
from hypothesis.internal import lambda_sources as _lambda_sources

# Python 3.11's ast.parse, called deep in the stack, can raise "SystemError: AST constructor
# recursion depth mismatch" (a CPython bug). Hypothesis parses a module's source that way when
# it first describes one of its lambdas, only for a strategy's repr — schemathesis then reports
# the draw as flaky. A description without the lambda's body is as good for a repr.
_describe = _lambda_sources._lambda_description


def _lambda_description(f, *args, **kwargs):
    try:
        return _describe(f, *args, **kwargs)
    except SystemError:
        return "lambda: <unknown>"


_lambda_sources._lambda_description = _lambda_description

MASK = "********"
DOCUMENT = json.load(open(os.environ["ST_DOCUMENT"], encoding="utf-8"))

# (method, path template) -> how the 422 may be explained.
OPERATIONS = {
    ("POST", "/api/connections"): "create",
    ("POST", "/api/connections/test"): "test",
    ("PUT", "/api/connections/{conn_id}"): "replace",
    ("PUT", "/api/connections/test"): "replace",
    ("PATCH", "/api/connections/{conn_id}"): "patch",
    ("PATCH", "/api/connections/test"): "patch",
    ("PUT", "/api/pipelines/{pipeline_id}"): "pipeline",
    ("POST", "/api/connections/{conn_id}/rollback"): "rollback",
    ("POST", "/api/connections/{conn_id}/rotate-password"): "rotation",
}

ROTATE = ("POST", "/api/connections/{conn_id}/rotate-password")


def _body_schema(method, path):
    op = DOCUMENT["paths"][path][method.lower()]
    ref = op["requestBody"]["content"]["application/json"]["schema"]
    return jsonschema_rs.validator_for({**ref, "components": DOCUMENT["components"]})


def _tunnel_key(extra):
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except ValueError:
            return False
    if not isinstance(extra, dict):
        return False
    return any(k.strip().lower().replace("-", "_") == "ssh_tunnel" for k in extra)


def _extra_string_not_content_valid(method, path, body):
    """The string form of extra does not hold what `contentSchema` says."""
    extra = body.get("extra")
    if not isinstance(extra, str) or extra in ("", MASK):
        return False
    try:
        parsed = json.loads(extra)
    except ValueError:
        return True
    return not _body_schema(method, path).is_valid({**body, "extra": parsed})


def _explained(kind, method, path, case, body, field):
    """Why a 422 on `field` may answer this schema-valid body, or None."""
    if field == "extra" and _extra_string_not_content_valid(method, path, body):
        return "the string form of extra holds no object its contentSchema allows"
    if field == "extra" and _tunnel_key(body.get("extra")):
        return "extra.ssh_tunnel must name existing, pinned sftp connections (stored rows)"
    kept = body.get(field, MASK) == MASK  # absent or the mask: the stored value
    path_id = (case.path_parameters or {}).get("conn_id", "test")
    if kind == "test" and field in ("password", "extra") and isinstance(body.get("conn_id"), str):
        return "a saved connection of that conn_id lends its stored secrets (the stored row)"
    if kind in ("replace", "patch"):
        if field == "conn_id" and body.get("conn_id") not in (None, path_id):
            return "conn_id must be the path's (immutable)"
        if field in ("password", "extra") and kept:
            return "a kept secret: its stored value decides (moved target, mask without one, a type that does not use it)"
    if kind == "patch":
        if body.get("type") is None:
            return "PATCH without type: the stored type's rules apply"
        if field not in body or (field == "port" and "host" not in body):
            return "PATCH: the stored row supplies that field"
    return None


@schemathesis.check
def state_explained_rejection(ctx, response, case):
    """A schema-valid request answered 422 only for a reason no schema can state."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 422:
        return None
    kind = OPERATIONS.get((case.operation.method.upper(), case.operation.path))
    if kind is None:
        return None  # positive_data_acceptance judges it
    body = case.body if isinstance(case.body, dict) else {}
    error = response.json().get("error", {})
    method, path = case.operation.method.upper(), case.operation.path
    if kind == "rollback":
        # The body is {"version": N}, whose whole form the schema states: the current
        # version, a deleted marker, or a kept version that today's rules (or tunnels) refuse
        # are the stored history's to decide.
        return True
    if kind == "rotation":
        # No body: the stored connection (its type, login, password, extra; testing enabled)
        # is all a rotation is refused for.
        return True
    if kind == "pipeline":
        message = error.get("message", "")
        parts = message.removeprefix("invalid pipeline: ").split("; ")
        unexplained = [
            p
            for p in parts
            if not (
                "do not exist" in p  # a config.conn_id that is not a stored connection
                or "appears twice" in p  # node ids unique: JSON Schema cannot say it
                or p.startswith("pipeline_id: must match")  # the path's id
            )
        ]
        if unexplained:
            raise AssertionError(f"Schema-valid pipeline rejected: {'; '.join(unexplained)}")
        return True
    fields = error.get("fields") or [{"field": "body", "message": error.get("message", "")}]
    unexplained = [
        f"{f['field']}: {f['message']}"
        for f in fields
        if _explained(kind, method, path, case, body, f["field"]) is None
    ]
    if unexplained:
        raise AssertionError(
            "Schema-valid request rejected for a reason the document could state: "
            + "; ".join(unexplained)
        )
    return True


@schemathesis.check
def remote_failure_only(ctx, response, case):
    """The one 5xx scripts/schemathesis lets through: a rotation the database server failed."""
    if (case.operation.method.upper(), case.operation.path) != ROTATE:
        return None
    if response.status_code == 502:
        code = response.json().get("error", {}).get("code")
        if code != "rotation_failed":
            raise AssertionError(f"rotate-password answered 502 {code}, not rotation_failed")
    return True
