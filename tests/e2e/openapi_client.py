"""Drives a running broked-server with a client generated from its own /api/openapi.json.

Run by tests/e2e/openapi_client.rs, which starts the real server, generates the client with
openapi-python-client into CLIENT_DIR/broked_client, and runs:

    python openapi_client.py BASE_URL CLIENT_DIR TCP_PORT PASSWORD

TCP_PORT is a port the Rust test listens on (a generic connection's test is a TCP connect).
Every call goes through the generated functions and models: if the document did not say what
the server accepts, a call fails here. Exits non-zero with the reason on the first surprise.
"""

import sys

base_url, client_dir, tcp_port, password = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
sys.path.insert(0, client_dir)

from broked_client import Client  # noqa: E402
from broked_client.api.connections import (  # noqa: E402
    create_connection,
    delete_connection,
    get_connection,
    list_connections,
    patch_connection,
    put_connection,
    used_by,
)
from broked_client.api.pipelines import put_pipeline  # noqa: E402
from broked_client.api.testing import test_saved, test_unsaved  # noqa: E402
from broked_client.models import (  # noqa: E402
    ConnectionCreateGeneric,
    ConnectionCreateSqlite,
    ConnectionOut,
    ConnectionPatchGeneric,
    ConnectionPatchUntyped,
    ConnectionReplaceGeneric,
    ConnectionTestGeneric,
    ErrorBody,
    ListConnectionsType,
    PipelineIn,
    PipelineInNodesItem,
    TestOut,
)

client = Client(base_url=base_url, raise_on_unexpected_status=True)
seen = []  # every response body, to check that the password is in none


def call(fn, status, **kwargs):
    r = fn.sync_detailed(client=client, **kwargs)
    seen.append(r.content.decode("utf-8", "replace"))
    if r.status_code != status:
        sys.exit(f"{fn.__name__}: expected {status}, got {r.status_code}: {r.content!r}")
    return r.parsed


def check(cond, what):
    if not cond:
        sys.exit(what)


# Create (201), with a password and an extra object.
made = call(
    create_connection,
    201,
    body=ConnectionCreateGeneric(
        conn_id="client-tcp",
        type_="generic",
        host="127.0.0.1",
        port=tcp_port,
        password=password,
        description="made by a generated client",
    ),
)
check(isinstance(made, ConnectionOut), f"create: {made!r}")
check(made.password == "********" and made.port == tcp_port, f"create: {made!r}")

# The same conn_id again: 409, parsed as the documented ErrorBody.
again = call(
    create_connection,
    409,
    body=ConnectionCreateGeneric(conn_id="client-tcp", type_="generic", host="127.0.0.1", port=1),
)
check(isinstance(again, ErrorBody) and again.error.code == "conflict", f"409: {again!r}")

# A sqlite connection, whose type uses no port or password.
call(
    create_connection,
    201,
    body=ConnectionCreateSqlite(conn_id="client-file", type_="sqlite", host="data/app.db"),
)

# Read one, and the list filtered by the type enum.
got = call(get_connection, 200, conn_id="client-tcp")
check(got.host == "127.0.0.1" and got.description == "made by a generated client", f"get: {got!r}")
listed = call(list_connections, 200, type_=ListConnectionsType.GENERIC)
check([c.conn_id for c in listed] == ["client-tcp"], f"list: {listed!r}")

# Replace (PUT), keeping the stored password with the mask; change (PATCH), typed and untyped.
put = call(
    put_connection,
    200,
    conn_id="client-tcp",
    body=ConnectionReplaceGeneric(
        type_="generic", host="127.0.0.1", port=tcp_port, password="********", schema="svc"
    ),
)
check(put.password == "********" and put.schema == "svc" and put.description is None, f"put: {put!r}")
patched = call(
    patch_connection,
    200,
    conn_id="client-tcp",
    body=ConnectionPatchGeneric(type_="generic", description="patched"),
)
check(patched.description == "patched" and patched.schema == "svc", f"patch: {patched!r}")
# A new login is a new target: the kept password is refused (422 naming it), sent again it is taken.
moved = call(patch_connection, 422, conn_id="client-tcp", body=ConnectionPatchUntyped(login="etl"))
check([f.field for f in moved.error.fields] == ["password"], f"patch moving the password: {moved!r}")
patched = call(
    patch_connection, 200, conn_id="client-tcp", body=ConnectionPatchUntyped(login="etl", password=password)
)
check(patched.login == "etl" and patched.password == "********", f"patch untyped: {patched!r}")

# Test the saved connection and an unsaved one: the TCP connect succeeds.
outcome = call(test_saved, 200, conn_id="client-tcp")
check(isinstance(outcome, TestOut) and outcome.success and outcome.driver == "tcp", f"test: {outcome!r}")
outcome = call(
    test_unsaved,
    200,
    body=ConnectionTestGeneric(type_="generic", host="127.0.0.1", port=tcp_port),
)
check(outcome.success, f"unsaved test: {outcome!r}")

# A pipeline uses it: delete is refused (409) until forced.
call(
    put_pipeline,
    200,
    pipeline_id="client-pipe",
    body=PipelineIn(
        name="client pipe",
        nodes=[PipelineInNodesItem.from_dict({"id": "src", "type": "tcp", "config": {"conn_id": "client-tcp"}})],
    ),
)
usage = call(used_by, 200, conn_id="client-tcp")
check([p.pipeline_id for p in usage.pipelines] == ["client-pipe"], f"used-by: {usage!r}")
refused = call(delete_connection, 409, conn_id="client-tcp")
check(refused.error.code == "in_use", f"delete in use: {refused!r}")
call(delete_connection, 204, conn_id="client-tcp", force=True)
call(get_connection, 404, conn_id="client-tcp")
call(delete_connection, 204, conn_id="client-file")

leaked = [body for body in seen if password in body]
check(not leaked, f"the password came back in a response: {leaked!r}")
print("generated client: create, get, list, put, patch, test, used-by, delete all as documented")
