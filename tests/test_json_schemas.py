"""Every command's --json, from real runs, validated against its schema in docs/schemas/."""

from __future__ import annotations

import json
import pathlib
import socket
import struct
import subprocess

import pytest
from click.testing import CliRunner

from socktools.cli import main
from tests.conftest import socktools_cmd, wait_until

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema not installed (pip install jsonschema)")
from referencing import Registry, Resource  # noqa: E402  (comes with jsonschema >= 4.18)

pytestmark = pytest.mark.timeout(120)

SCHEMAS = pathlib.Path(__file__).resolve().parent.parent / "docs" / "schemas"


def _registry() -> Registry:
    resources = []
    for path in SCHEMAS.glob("*.schema.json"):
        schema = json.loads(path.read_text(encoding="utf-8"))
        resources.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources)


REGISTRY = _registry()


def validate(doc, command: str, ref: str = "") -> None:
    schema = {"$ref": f"urn:socktools:schema:{command}{ref}"}
    validator = jsonschema.Draft202012Validator(schema, registry=REGISTRY)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:5])


def invoke(*args: str):
    result = CliRunner().invoke(main, list(args))
    return result, result.stdout


def test_every_schema_is_valid_draft_2020_12():
    names = sorted(p.name for p in SCHEMAS.glob("*.schema.json"))
    assert names == sorted(f"{c}.schema.json" for c in ("run", "flood", "serve", "sniff", "sockets", "stall",
                                                         "doctor", "explain", "ping", "request"))
    for path in SCHEMAS.glob("*.schema.json"):
        schema = json.loads(path.read_text(encoding="utf-8"))
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        jsonschema.Draft202012Validator.check_schema(schema)


def test_the_schemas_reject_a_document_without_metadata():
    _, out = invoke("explain", "ECONNRESET", "--json")
    doc = json.loads(out)
    validate(doc, "explain")
    del doc["started"]
    with pytest.raises(AssertionError, match="started"):
        validate(doc, "explain")
    doc = json.loads(out)
    doc["system"]["cpus"] = "two"
    with pytest.raises(AssertionError, match="cpus"):
        validate(doc, "explain")


@pytest.mark.parametrize("spec", [
    dict(mode="echo", size=10), dict(mode="framed", action="search", value="x"),
    dict(mode="raw", sends=("a\\r\\n",), reply_until="\\n"), dict(mode="raw", send_file=b"\xff\x00", no_reply=True),
    dict(mode="line", sends=("PING",), eol="crlf"), dict(mode="redis"), dict(mode="redis", commands=("GET k",)),
    dict(mode="http", paths=("/a",), headers=("Host: h",), body=b"x"), dict(plugin="a.b:C", commands=("get k",)),
], ids=lambda d: d.get("plugin") and "plugin" or d["mode"])
def test_flood_config_wire_of_every_mode_follows_the_schema(spec):
    from socktools.wire.spec import WireSpec
    summary = WireSpec(**spec).summary()
    assert summary["mode"] == WireSpec(**spec).name
    validate(summary, "flood", "#/properties/config/properties/wire")


def test_flood_json_and_its_interval_lines():
    proc = subprocess.run(socktools_cmd("flood", "--conns", "3", "--workers", "1", "--duration", "0.6s",
                                        "--interval", "0.2s", "--json", "--threshold", "errors==0"),
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    validate(lines[-1], "flood")
    assert lines[:-1], "no interval line"
    for line in lines[:-1]:
        validate(line, "flood", "#/$defs/interval_event")


def test_a_staged_flood_json_follows_the_schema():
    proc = subprocess.run(socktools_cmd("flood", "--stages", "0.3s:3:300,0.3s:0:0", "--workers", "1",
                                        "--interval", "0.1s", "--json"),
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout.splitlines()[-1])
    validate(doc, "flood")
    assert doc["config"]["stages"] == [{"duration": 0.3, "conns": 3, "rate": 300.0},
                                       {"duration": 0.3, "conns": 0, "rate": 0.0}]
    traffic = [r for r in doc["intervals"] if r["phase"] == "traffic"]
    assert traffic and all(r["target_conns"] is not None and r["target_rps"] is not None for r in traffic)


def test_serve_json_lines(start_server):
    srv = start_server("--stats-interval", "0.1s", json_events=True)
    with socket.create_connection(srv.address, timeout=5) as s:
        s.sendall(b"hello")
        assert s.recv(16) == b"hello"
    seen = []      # stats lines come every 0.1 s: each readline returns soon

    def got_stats() -> bool:
        seen.append(json.loads(srv.proc.stdout.readline()))
        return seen[-1]["event"] == "stats"
    assert wait_until(got_stats, timeout=20)
    srv.stop()
    lines = [json.loads(srv.first_line), *seen] + [json.loads(x) for x in srv.stdout.splitlines()]
    stats = seen[-1]
    kinds = {line["event"] for line in lines}
    assert {"listening", "stats", "summary"} <= kinds
    for line in lines:
        validate(line, "serve")
    assert "socktools_version" in lines[0] and "T" in stats["time"]


def _syn_pcap(path) -> None:
    """A classic pcap with one TCP SYN 127.0.0.1:40000 -> 127.0.0.1:65432 (Ethernet)."""
    lo = socket.inet_aton("127.0.0.1")
    tcp = struct.pack("!HHIIBBHHH", 40000, 65432, 1, 0, 5 << 4, 0x02, 512, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, lo, lo) + tcp
    frame = b"\x00" * 12 + struct.pack("!H", 0x0800) + ip
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        f.write(struct.pack("<IIII", 1_700_000_000, 0, len(frame), len(frame)) + frame)


def test_sniff_json_lines(tmp_path):
    path = tmp_path / "one.pcap"
    _syn_pcap(path)
    result, out = invoke("sniff", "-r", str(path), "--json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["event"] for line in lines] == ["packet", "summary"]
    for line in lines:
        validate(line, "sniff")


def test_sockets_json(start_server):
    """One server's port: the whole table of a busy test machine is thousands of TIME-WAITs."""
    srv = start_server()
    with socket.create_connection(srv.address, timeout=5):
        result, out = invoke("sockets", "--port", str(srv.port), "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(out)
    assert {e["state"] for e in doc["sockets"]} >= {"LISTEN", "ESTABLISHED"}
    validate(doc, "sockets")


def test_stall_json():
    result, out = invoke("stall", "--settle", "0.2", "--json")
    assert result.exit_code == 0, result.output
    validate(json.loads(out), "stall")


def test_doctor_json():
    result, out = invoke("doctor", "--json")
    validate(json.loads(out), "doctor")


def test_explain_json_one_and_all():
    _, out = invoke("explain", "98", "--json")
    validate(json.loads(out), "explain")
    _, out = invoke("explain", "--list", "--json")
    validate(json.loads(out), "explain")


def test_ping_json(start_server, closed_port):
    srv = start_server()
    for port in (srv.port, closed_port[1]):
        _, out = invoke("ping", "127.0.0.1", "-p", str(port), "-c", "2", "-i", "10ms", "--json")
        validate(json.loads(out), "ping")


def test_request_json_ok_and_failed(start_server, closed_port):
    srv = start_server("--mode", "framed")
    result, out = invoke("request", "--json", "127.0.0.1", str(srv.port), "search", "morpheus")
    assert result.exit_code == 0, result.output
    validate(json.loads(out), "request")
    result, out = invoke("request", "--json", "127.0.0.1", str(closed_port[1]), "search", "morpheus")
    assert result.exit_code == 1
    validate(json.loads(out.splitlines()[0]), "request")
