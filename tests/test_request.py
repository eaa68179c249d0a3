"""`socktools request`: answers and every failure as one line with the errno name."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import threading

import pytest
from click.testing import CliRunner

from socktools.cli import main
from socktools.request.client import RequestError, request
from tests.conftest import socktools_cmd


class OneShotPeer:
    """A loopback listener whose single connection is handled by ``behave(conn)`` in a thread."""

    def __init__(self, behave):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.behave = behave
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            self.behave(conn)

    def close(self):
        self.sock.close()
        self.thread.join(5)


@pytest.fixture
def peer():
    made = []

    def make(behave):
        p = OneShotPeer(behave)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def _read_some(conn):
    conn.settimeout(5)
    try:
        conn.recv(65536)
    except OSError:
        pass


def test_refused_names_the_errno():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    result = CliRunner().invoke(main, ["request", "--port", str(port), "search", "morpheus"])
    assert result.exit_code == 1
    assert "ECONNREFUSED (errno 111)" in result.output
    assert f"connect to 127.0.0.1:{port}" in result.output


def test_timeout_when_the_peer_never_answers(peer):
    p = peer(lambda conn: (_read_some(conn), threading.Event().wait(3)))
    with pytest.raises(RequestError) as info:
        request("127.0.0.1", p.port, "search", "morpheus", timeout=0.5)
    assert info.value.key == "timeout" and info.value.phase == "recv"
    result = CliRunner().invoke(main, ["request", "--port", str(p.port), "--timeout", "300ms", "search", "x"])
    assert result.exit_code == 1 and "timeout" in result.output


def test_reset_by_peer(peer):
    def reset(conn):
        _read_some(conn)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST

    p = peer(reset)
    with pytest.raises(RequestError) as info:
        request("127.0.0.1", p.port, "search", "morpheus", timeout=5)
    assert info.value.key == "ECONNRESET"
    assert "connection reset by peer" in str(info.value)


def test_peer_closing_without_an_answer(peer):
    p = peer(_read_some)  # reads the request, then closes cleanly
    with pytest.raises(RequestError) as info:
        request("127.0.0.1", p.port, "search", "morpheus", timeout=5)
    assert info.value.key == "peer-closed"


def test_protocol_error_in_the_response(peer):
    def garbage(conn):
        _read_some(conn)
        conn.sendall(b"\x00\x03[1]")

    p = peer(garbage)
    out = subprocess.run(socktools_cmd("request", "--port", str(p.port), "search", "morpheus"),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert "protocol error (header-not-object)" in out.stderr
    assert "Traceback" not in out.stderr


def test_json_output_and_the_tutorial_argument_form(start_server):
    srv = start_server("--mode", "framed")
    result = CliRunner().invoke(main, ["request", "--json", "127.0.0.1", str(srv.port), "search", "\U0001f436"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["ok"] and doc["response"]["value"] == {"result": "\U0001f43e Playing ball! \U0001f3d0"}
    assert doc["bytes_sent"] == doc["bytes_received"] == 142


def test_wrong_number_of_words_is_a_usage_error():
    result = CliRunner().invoke(main, ["request", "search"])
    assert result.exit_code == 2 and "ACTION VALUE" in result.output


# ------------------------------------------------------------- hostile and unusual servers

def _answer(reply: bytes):
    """A peer that reads the request, then sends ``reply``."""
    def behave(conn):
        _read_some(conn)
        conn.sendall(reply)
    return behave


def test_a_reply_nested_past_the_cap_is_one_line_and_exit_1(peer):
    p = peer(_answer(b"*1\r\n" * 5000 + b"+x\r\n"))
    out = subprocess.run(socktools_cmd("request", "--mode", "redis", "--port", str(p.port)),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stderr and "RecursionError" not in out.stderr
    assert "protocol error (protocol-error)" in out.stderr and "nested deeper than" in out.stderr


def test_a_long_reply_is_counted_whole_and_only_its_head_kept(peer):
    from socktools import wire
    from socktools.request.client import KEEP_RECEIVED, exchange
    from socktools.wire.redis import KEEP_REPLY
    from socktools.wire.spec import WireSpec
    body = b"v" * (8 << 20)
    reply = b"$%d\r\n%s\r\n" % (len(body), body)
    p = peer(_answer(reply))
    result = exchange("127.0.0.1", p.port, wire.build(WireSpec(mode="redis")), timeout=30)
    assert result.received_bytes == len(reply) and result.received == reply[:KEEP_RECEIVED]
    assert result.reply.size == len(reply) and result.reply.fields["not_kept"] > len(body) - KEEP_REPLY


def test_what_is_shown_of_a_long_reply_says_the_rest_was_counted(peer):
    reply = b"$%d\r\n%s\r\n" % (1 << 20, b"w" * (1 << 20))
    p = peer(_answer(reply))
    result = CliRunner().invoke(main, ["request", "--mode", "redis", "--port", str(p.port), "--show-bytes"])
    assert result.exit_code == 0, result.output
    assert f"<<< received {len(reply)} bytes" in result.output
    assert "counted, not kept" in result.output
    assert len(result.output) < 300_000


def test_bytes_the_server_sent_before_the_request_are_unsolicited_not_the_answer(peer, monkeypatch):
    """The rule flood follows: an answer comes after its request.  request looks before it
    sends; the test lets it look until the greeting is there, so the order is certain."""
    from socktools.request import client
    monkeypatch.setattr(client, "SPOKE_FIRST_WAIT", 30.0, raising=False)

    def greets(conn):
        conn.sendall(b"+hello\r\n")
        _answer(b"+PONG\r\n")(conn)

    p = peer(greets)
    result = CliRunner().invoke(main, ["request", "--mode", "redis", "--port", str(p.port)])
    assert result.exit_code == 1, result.output
    assert "unsolicited" in result.output and "the server spoke first" in result.output
    assert "8 byte(s) arrived before the request was sent" in result.output
    assert "hello" not in result.output.replace("+hello", "")   # not shown as the answer
    shown = CliRunner().invoke(main, ["request", "--mode", "redis", "--port", str(peer(greets).port),
                                      "--show-bytes"])
    assert shown.exit_code == 1 and "<<< received 8 bytes in 1 recv() call(s)\nb'+hello\\r\\n'" in shown.output
    assert ">>> sent" not in shown.output                       # the request was not sent
