#!/usr/bin/env python3
"""Writes the seed corpus of each fuzz target from the project's own test inputs.

Run from anywhere: python3 fuzz/seed_corpus.py. Seeds are named seed-*, so that they are told
apart from the inputs libFuzzer adds (named by their SHA-1, and not committed).
"""
import base64
import json
import pathlib
import re

here = pathlib.Path(__file__).resolve().parent
root = here.parent


def write(target, items):
    d = here / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    for old in d.glob("seed-*"):
        old.unlink()
    seen = set()
    n = 0
    for item in items:
        data = item.encode() if isinstance(item, str) else item
        if data in seen:
            continue
        seen.add(data)
        (d / f"seed-{n:03}").write_bytes(data)
        n += 1
    print(f"{target}: {n} seeds")


# URIs: every URI in the core crate's tests and docs/uri.md.
uri_re = re.compile(r"[a-z0-9+]+://[^\s\"'`<>)]*")
uris = []
for f in [root / "crates/broked-core/src/uri/tests.rs", root / "crates/broked-core/src/uri.rs",
          root / "docs/uri.md", root / "tests/e2e/server.rs"]:
    if f.exists():
        uris += uri_re.findall(f.read_text())
uris += ["postgres://u:p%40ss@h:5432/db?sslmode=require", "sqlite:///var/lib/x.db",
         "s3://AKID:secret@bucket?region=us-east-1&endpoint_url=http%3A%2F%2F127.0.0.1%3A9000",
         "http://u:p@[::1]:8080/base?verify=false", "sftp://u@h:22/path", "generic://h:1",
         "mysql://u@h/db?charset=utf8mb4", "postgres://%2Fvar%2Frun%2Fpostgresql/db"]
write("uri", uris)

# Sealed blobs: the golden ones, and cut or flipped versions of them.
blobs = []
for line in (root / "crates/broked-crypto/tests/fixtures/golden-sealed.tsv").read_text().splitlines():
    if line.startswith("#") or not line.strip():
        continue
    blob = base64.b64decode(line.split("\t")[3])
    blobs += [blob, blob[:5], blob[:17], blob[:-1], bytes([blob[0] ^ 1]) + blob[1:],
              blob[:5] + b"\xff" * 12]
blobs += [b"", b"\x01", b"\x01\x00\x00\x00\x01", b"\x02" + b"\x00" * 40]
write("sealed_blob", blobs)

# Keyring files: the golden one and broken variants of it.
golden = (root / "crates/broked-crypto/tests/fixtures/golden-keyring.txt").read_text()
body = "\n".join(l for l in golden.splitlines() if not l.startswith("#")) + "\n"
keyrings = [golden, body, body.replace("\n", "\r\n"), body.replace("end\n", ""),
            body.replace("active k2", "active k3"), body.replace("active k2", "active k02"),
            body.replace("v1", "v2"), body.replace("=\n", "\n"), body + body,
            body.replace("key k1", "key k2"), "broked-keyring v1\nend\n", ""]
write("keyring_file", keyrings)

# Pipeline definitions: the shapes the tests use, and wrong ones.
good = {"name": "users sync", "nodes": [
    {"id": "src", "type": "source_db", "config": {"conn_id": "prod-postgres", "query": "SELECT 1"}},
    {"id": "dst", "type": "sink_db", "config": {"conn_id": "prod-postgres"}},
    {"id": "log", "type": "log"}]}
pipelines = [json.dumps(good), json.dumps({"name": "b", "nodes": [
    {"id": "n", "type": "t", "config": {"conn_id": "missing-one"}}]}),
    json.dumps({"name": "", "nodes": []}), json.dumps({"nodes": [{"id": "a"}]}),
    json.dumps({"name": "x", "nodes": [{"id": "a", "type": "t", "config": {"conn_id": 5}}]}),
    json.dumps({"name": "x", "nodes": [{"id": "a", "type": "t"}, {"id": "a", "type": "t"}]}),
    "[]", "{", "null", '{"name": "x", "nodes": {}}']
write("pipeline_def", pipelines)
