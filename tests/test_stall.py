"""socktools stall: real loopback stalls, checked against the kernel by independent routes."""

from __future__ import annotations

import array
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from click.testing import CliRunner

from socktools.cli import main
from tests.conftest import skip_without_ipv6, socktools_cmd
from socktools.stall.steps import Arithmetic, StallConfig, StallError, Staller, run_stall

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="stall reads Linux's TCP_INFO, queue ioctls and socket table")

FAMILIES = [pytest.param("127.0.0.1", id="ipv4"), pytest.param("::1", id="ipv6")]


def _skip_without(host: str) -> None:
    if ":" in host:
        skip_without_ipv6()


class ThreadSink:
    """An in-process peer that accepts and never reads, until ``drain()``.

    Unlike the embedded ``serve --mode sink`` its accepted socket is reachable from the test,
    so the receiver's Recv-Q can be checked by ioctl - a route independent of the socket table
    that stall reads it from.
    """

    def __init__(self, host: str = "127.0.0.1", rcvbuf: int | None = None, reading: bool = False,
                 read_size: int = 1 << 20, pause: float = 0.0):
        self.read_size, self.pause = read_size, pause
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family)
        if rcvbuf:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.listener.bind((host, 0))
        self.listener.listen()
        self.address = self.listener.getsockname()[:2]
        self.rcvbuf = self.listener.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self.conn: socket.socket | None = None
        self._accepted = threading.Event()
        self._read = threading.Event()
        if reading:
            self._read.set()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.conn, _ = self.listener.accept()
        except OSError:
            return
        self._accepted.set()
        self._read.wait()
        try:
            while self.conn.recv(self.read_size):
                if self.pause:
                    time.sleep(self.pause)   # a deliberately slow reader
        except OSError:
            pass

    def drain(self) -> None:
        self._read.set()

    def accepted(self) -> socket.socket:
        assert self._accepted.wait(10), "the sink never accepted"
        return self.conn

    def close(self) -> None:
        self.listener.close()
        self._read.set()
        if self.conn is not None:
            self.conn.close()
        self._thread.join(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _ioctl(sock: socket.socket, request: int) -> int:
    buf = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), request, buf, True)
    return buf[0]


SIOCINQ, SIOCOUTQ = 0x541B, 0x5411


def _proc_queues(local, remote) -> tuple[int, int]:
    """(tx_queue, rx_queue) from /proc/net/tcp{,6}, matched by both ports (loopback-unique)."""
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(path):
            continue
        for line in open(path).read().splitlines()[1:]:
            f = line.split()
            if (int(f[1].split(":")[1], 16), int(f[2].split(":")[1], 16)) == (local[1], remote[1]):
                tx, rx = f[4].split(":")
                return int(tx, 16), int(rx, 16)
    raise AssertionError(f"{local} -> {remote} not in /proc/net/tcp*")


def _ss_queues(local_port: int, remote_port: int) -> tuple[int, int] | None:
    """(Recv-Q, Send-Q) as `ss` prints them, or None when ss is not installed."""
    if not shutil.which("ss"):
        return None
    out = subprocess.run(["ss", "-tnH", "state", "established", f"( sport = :{local_port} )"],
                         capture_output=True, text=True, timeout=10).stdout
    for line in out.splitlines():
        f = line.split()
        if f[-1].rsplit(":", 1)[1] == str(remote_port):
            return int(f[0]), int(f[1])
    return None


def _stall(sink: ThreadSink, **cfg) -> Staller:
    cfg.setdefault("settle", 0.5)
    staller = Staller(StallConfig(host=sink.address[0], **cfg), sink)
    staller.connect()
    staller.fill()
    staller.settle()
    return staller


# ------------------------------------------------------------------ core, real sockets
@pytest.mark.parametrize("host", FAMILIES)
def test_reported_queues_equal_the_kernels_by_independent_routes(host):
    _skip_without(host)
    with ThreadSink(host) as sink, _stall(sink) as st:
        assert st.fill_result.blocked
        assert st.fill_result.errno_name == "EAGAIN" and st.fill_result.exception == "BlockingIOError"
        assert st.settle_result.steady
        snap = st.snapshot()
        sender, receiver = snap.sender, snap.receiver
        conn = sink.accepted()
        # Receiver: stall read it from the socket table; the test asks the socket itself.
        assert receiver.found and receiver.recv_q == _ioctl(conn, SIOCINQ) > 0
        # Sender: stall read it by ioctl; the test reads /proc/net/tcp.
        tx, rx = _proc_queues(st.local, st.remote)
        assert sender.send_q == tx > 0 and sender.recv_q == rx == 0
        assert _proc_queues(conn.getsockname(), conn.getpeername())[1] == receiver.recv_q
        assert snap.table_sender_send_q == sender.send_q
        ss = _ss_queues(st.local[1], st.remote[1])
        if ss is not None:
            assert ss == (0, sender.send_q)
        # At a true stall every accepted byte is in one of the two queues.
        assert snap.arithmetic.accepted == st.accepted == receiver.recv_q + sender.send_q
        assert snap.arithmetic.difference == 0
        # The peer's window is closed and the rest of our queue waits, unsent.
        info = sender.tcp_info
        if "snd_wnd" in info:
            assert info["snd_wnd"] == 0 and sender.persist.zero_window and sender.persist.probing
        if "notsent_bytes" in info:
            assert info["notsent_bytes"] == sender.notsent_bytes
        roles = [row.role for row in snap.table]
        assert roles == ["receiver", "sender", "listener"]


def test_small_buffers_block_far_sooner_than_defaults():
    with ThreadSink() as sink, _stall(sink, settle=0.3) as default:
        big = default.accepted
    with ThreadSink(rcvbuf=4096) as sink, _stall(sink, sndbuf=4096, settle=0.3) as small:
        assert small.fill_result.blocked
        snap = small.snapshot()
        assert snap.sender.sndbuf == 8192           # Linux doubles what you set
        assert snap.arithmetic.difference == 0
        tiny = small.accepted
    assert tiny * 20 < big, (tiny, big)
    assert tiny <= 2 * (8192 + 8192)                # bounded by both (doubled) buffers


@pytest.mark.parametrize("host", FAMILIES)
def test_drain_ends_writable_with_both_queues_empty(host):
    _skip_without(host)
    with ThreadSink(host, rcvbuf=16384) as sink, _stall(sink, sndbuf=16384, settle=0.3, drain=True) as st:
        st.snapshot()
        d = st.drain()
        assert d.completed and d.final_writable
        assert d.samples[0].sender_send_q > 0 and not d.samples[0].writable
        last = d.samples[-1]
        assert last.sender_send_q == 0 and last.receiver_recv_q == 0 and last.writable
        assert d.writable_after is not None and d.writable_after <= d.seconds
        # Independently: the kernel says both queues are empty.
        assert _ioctl(st.sock, SIOCOUTQ) == 0
        assert _ioctl(sink.accepted(), SIOCINQ) == 0


def test_a_peer_that_keeps_up_never_blocks_and_the_fill_is_bounded():
    # 1-byte sends are far slower than a reader taking up to 1 MiB per recv(): never full.
    with ThreadSink(reading=True) as sink:
        with Staller(StallConfig(chunk=1, timeout=0.3), sink) as st:
            st.connect()
            fill = st.fill()
    assert not fill.blocked and fill.errno is None and fill.bytes == fill.sends > 0


def test_a_slow_reader_never_settles_and_the_report_says_it_reads():
    with ThreadSink(reading=True, read_size=4096, pause=0.005) as sink:
        with Staller(StallConfig(timeout=0.6, settle=0.3), sink) as st:
            st.connect()
            assert st.fill().blocked            # we write faster than it reads
            settle = st.settle()
            assert not settle.steady and settle.extra_bytes > 0
            snap = st.snapshot()
    assert snap.arithmetic.difference < 0       # bytes it read are in neither queue


def test_a_fast_reader_is_said_to_keep_up_and_no_difference_is_negative():
    """issue 21: a peer that read 1.7 GB in 2 s was "a peer that reads a little", with a negative
    difference printed under "steady state"."""
    from socktools.stall.report import render_report
    with ThreadSink() as sink:                  # not reading yet: the first send() blocks for sure
        with Staller(StallConfig(timeout=1.0, settle=0.3), sink) as st:
            st.connect()
            assert st.fill().blocked
            sink.drain()                        # now it reads as fast as it can, 1 MiB per recv()
            settle = st.settle()
            st.snapshot()
            report = st.report()
    snap = report.snapshot
    assert not settle.steady
    # what it read in a second is many times what both queues hold: it keeps up
    assert -snap.arithmetic.difference > 4 * (snap.sender.sndbuf + sink.rcvbuf)
    text = render_report(report)
    assert "reads a little" not in text and "at the steady state" not in text, text
    assert not re.search(r"-\d", text.split("2. The kernel", 1)[1]), text      # no negative figure
    assert "keeps up" in text, text


def test_refused_connect_names_the_errno():
    with socket.socket() as s:          # bound, never listening: connecting to it is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(StallError) as info, \
                Staller(StallConfig(port=port), type("P", (), {"address": ("127.0.0.1", port)})()) as st:
            st.connect()
    assert isinstance(info.value.cause, ConnectionRefusedError)
    assert info.value.what == f"connect to 127.0.0.1:{port}"


def test_arithmetic_difference_and_its_sign():
    assert Arithmetic.of(100, 40, 60).difference == 0
    assert Arithmetic.of(100, 45, 60).difference == 5        # ACK not yet processed: counted twice
    assert Arithmetic.of(100, 10, 60).difference == -30      # read by the peer, or in flight
    unknown = Arithmetic.of(100, None, 60)
    assert unknown.in_queues is None and unknown.difference is None


def test_run_stall_with_an_injected_peer_reports_json_ready_data():
    with ThreadSink(rcvbuf=4096) as sink:
        report = run_stall(StallConfig(sndbuf=4096, settle=0.2, drain=True), peer=sink)
    d = json.loads(json.dumps(report.to_dict()))
    assert d["fill"]["errno_name"] == "EAGAIN" and d["peer"]["kind"] == "injected"
    assert d["snapshot"]["arithmetic"]["difference"] == 0
    assert d["snapshot"]["sender"]["tcp_info"]["values"]["state"] == 1
    assert d["drain"]["completed"] is True


# ------------------------------------------------------------------ CLI
def test_cli_embedded_sink_json():
    result = CliRunner().invoke(main, ["stall", "--sndbuf", "4096", "--rcvbuf", "4k",
                                       "--settle", "0.2", "--json"])
    assert result.exit_code == 0, result.output
    d = json.loads(result.output)
    assert d["peer"]["kind"] == "embedded" and "--rcvbuf 4096" in d["peer"]["command"]
    assert d["peer"]["rcvbuf"] == 8192 == d["snapshot"]["receiver"]["rcvbuf"]
    a = d["snapshot"]["arithmetic"]
    assert a["accepted"] == a["receiver_recv_q"] + a["sender_send_q"]


@pytest.mark.parametrize("host", FAMILIES)
def test_cli_human_report_and_quiet(host):
    _skip_without(host)
    args = ["stall", "--host", host, "--sndbuf", "8k", "--rcvbuf", "8k", "--settle", "0.2"]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    for text in ("BlockingIOError", "EAGAIN, errno 11", "Proto  Recv-Q", "ESTABLISHED",
                 "receiver Recv-Q", "What happened", "EVENT_WRITE"):
        assert text in out.output
    quiet = CliRunner().invoke(main, args + ["--quiet"])
    assert quiet.exit_code == 0 and "What happened" not in quiet.output
    assert "Proto  Recv-Q" in quiet.output


def test_cli_refused_target_is_one_line_with_the_errno_name():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        result = CliRunner().invoke(main, ["stall", "--port", str(port)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("socktools: connect to")
    assert "ECONNREFUSED" in lines[0]


@pytest.mark.parametrize("args, option", [
    (["--port", "5000", "--rcvbuf", "4096"], "--rcvbuf"),
    (["--port", "5000", "--drain"], "--drain"),
    (["--host", "192.0.2.1"], "--host"),
    (["--chunk", "0"], "--chunk"),
    (["--settle", "soon"], "--settle"),
    (["--timeout", "0"], "--timeout"),
])
def test_cli_bad_options_are_usage_errors_naming_the_option(args, option):
    result = CliRunner().invoke(main, ["stall", *args])
    assert result.exit_code == 2
    assert option in result.output


@pytest.mark.parametrize("fields, option", [
    ({"port": 5000, "rcvbuf": 4096}, "rcvbuf"),
    ({"port": 5000, "drain": True}, "drain"),
    ({"host": "192.0.2.1"}, "host"),
    ({"chunk": 0}, "chunk"),
    ({"settle": -1.0}, "settle"),
    ({"timeout": 0.0}, "timeout"),
])
def test_config_validates_and_names_the_option(fields, option):
    """The CLI's usage errors above come from here: the config is the one validator."""
    from socktools.errors import OptionError
    with pytest.raises(OptionError) as caught:
        StallConfig(**fields)
    assert caught.value.option == option and isinstance(caught.value, ValueError)
    assert StallConfig(port=5000, host="192.0.2.1").port == 5000      # a named server may be anywhere


def _run_cli(*args, **kw):
    return subprocess.run(socktools_cmd("stall", *args),
                          capture_output=True, text=True, timeout=60, **kw)


def test_end_to_end_drain():
    proc = _run_cli("--drain", "--sndbuf", "16k", "--rcvbuf", "16k", "--settle", "0.2")
    assert proc.returncode == 0, proc.stderr
    assert "3. Drain: the sink starts reading" in proc.stdout
    assert re.search(r"writable again \(EVENT_WRITE\) [\d.]+ ms", proc.stdout)
    assert proc.stderr == ""


def _stall_connection(pid: int) -> tuple[int, int] | None:
    """(port, sink pid) once process ``pid`` has an ESTABLISHED connection to its sink."""
    from socktools.kernel.socktable import read_sockets
    entries = read_sockets(state="ESTABLISHED", processes=True)
    for mine in (e for e in entries if any(p == pid for p, _ in e.pids)):
        for peer in entries:
            if peer.local == mine.remote and peer.remote == mine.local and peer.pids:
                return mine.remote[1], peer.pids[0][0]
    return None


def test_ctrl_c_stops_cleanly_and_stops_the_sink():
    # A long settle keeps stall busy after the connection is made; interrupt it there.
    proc = subprocess.Popen(socktools_cmd("stall", "--settle", "60s",
                             "--timeout", "60s"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        found = None
        deadline = time.monotonic() + 30
        while found is None and time.monotonic() < deadline and proc.poll() is None:
            found = _stall_connection(proc.pid)
            time.sleep(0.05)
        assert found is not None, "stall never connected to its sink"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130
    assert err.strip().splitlines() == ["socktools: interrupted; connection closed and the embedded sink stopped"]
    port, sink_pid = found
    with pytest.raises(ProcessLookupError):     # stopped and reaped by stall itself
        os.kill(sink_pid, 0)
    from socktools.kernel.socktable import read_sockets
    assert not [e for e in read_sockets(port=port) if e.state in ("LISTEN", "ESTABLISHED")]


def test_unavailable_figures_are_reported_as_such_not_invented(monkeypatch):
    from socktools.kernel import tcpinfo
    from socktools.stall.report import render_report
    monkeypatch.setattr(tcpinfo, "IS_LINUX", False)      # as on macOS: no TCP_INFO layout, no ioctls
    with ThreadSink(rcvbuf=4096) as sink:
        with Staller(StallConfig(sndbuf=4096, settle=0.1), sink,
                     find_socket=lambda *a, **k: None) as st:   # receiver not in the table
            st.connect()
            st.fill()
            st.settle()
            st.snapshot()
            report = st.report()
    snap = report.snapshot
    assert snap.sender.send_q is None and snap.sender.tcp_info is None
    assert not snap.receiver.found and snap.arithmetic.difference is None
    text = render_report(report)
    assert "unavailable on this platform" in text
    assert "Recv-Q        unavailable: not in this machine's socket table" in text
    assert "the sum cannot be checked" in text


def test_end_to_end_against_a_named_sink_server(start_server):
    srv = start_server("--mode", "sink", "--rcvbuf", "8192")
    proc = _run_cli("--port", str(srv.port), "--settle", "0.2", "--json")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert d["peer"]["kind"] == "target" and d["peer"]["command"] is None
    receiver = d["snapshot"]["receiver"]
    assert receiver["found"] and receiver["recv_q"] > 0
    assert [pid for pid, _ in receiver["pids"]] == [srv.pid]      # found by 4-tuple, owner shown
    assert d["snapshot"]["arithmetic"]["difference"] == 0
    srv.stop()
