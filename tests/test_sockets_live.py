"""`socktools sockets` on sockets these tests open: traffic counters, families, owners, watch.

Every socket here lives on a loopback address of its own (127.x.y.z, random per test), so
the machine's other sockets (other tests, other programs) never enter the counts.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import socket
import subprocess
import threading
import time

import pytest
from click.testing import CliRunner

from conftest import socktools_cmd, wait_until
from socktools.cli import main
from socktools.kernel.socktable import SocketFilter, SocketTableUnavailable, parse_address, read_sockets
from socktools.kernel import socktable


def _need_netlink():
    try:
        socktable.resolve_source("netlink")
    except SocketTableUnavailable as exc:
        pytest.skip(f"netlink socket table not available here: {exc}")


@pytest.fixture
def addr():
    """A loopback address no other test uses: all of 127.0.0.0/8 is local on Linux."""
    host = f"127.{random.randrange(1, 255)}.{random.randrange(1, 255)}.{random.randrange(2, 255)}"
    try:
        with socket.socket() as s:
            s.bind((host, 0))
    except OSError as exc:
        pytest.skip(f"cannot bind {host} (is 127.0.0.0/8 routed to lo?): {exc}")
    return host


def _pair(lsock, host):
    """A connected pair whose client end is bound to ``host`` too."""
    client = socket.socket()
    client.bind((host, 0))
    client.connect(lsock.getsockname())
    server, _ = lsock.accept()
    return client, server


def _comm():
    with open("/proc/self/comm") as f:
        return f.read().strip()


def _mine(host, **kw):
    return read_sockets(match=SocketFilter(src=(parse_address(host),)), **kw)


def test_bytes_and_segments_match_what_was_sent(addr):
    _need_netlink()
    lsock = socket.create_server((addr, 0))
    client, server = _pair(lsock, addr)
    with lsock, client, server:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # 25 writes of 300 bytes, each read in full before the next: 25 data segments exactly
        # (each is below the MSS, NODELAY sends it at once, and the next waits for the read).
        for _ in range(25):
            client.sendall(b"s" * 300)
            got = 0
            while got < 300:
                got += len(server.recv(300 - got))
        server.sendall(b"r" * 1234)
        got = 0
        while got < 1234:
            got += len(client.recv(4096))

        def counters():
            rows = {e.local: e for e in _mine(addr, tcp_info=True)}
            return [rows.get(client.getsockname()), rows.get(server.getsockname())]

        def settled():
            c = {e.local: e for e in _mine(addr, tcp_info=True) if e.state == "ESTABLISHED"}
            cli, srv = c.get(client.getsockname()), c.get(server.getsockname())
            # The last ACK may still be in flight when we look: wait until it has landed.
            # bytes_acked counts the client's SYN too (its sequence number is acknowledged like
            # a byte); the server's end is born after its SYN-ACK was acknowledged: no +1.
            return (cli and srv and cli.tcp_info["bytes_acked"] == 7500 + 1
                    and srv.tcp_info["bytes_acked"] == 1234 and (cli, srv))
        assert wait_until(settled, timeout=15), f"counters never settled: {counters()}"
        cli, srv = settled()
        c, s = cli.tcp_info, srv.tcp_info
        assert c["bytes_received"] == 1234 and s["bytes_received"] == 7500
        assert c["data_segs_out"] == 25 and s["data_segs_in"] == 25
        assert s["data_segs_out"] >= 1 and c["data_segs_in"] == s["data_segs_out"]
        # All segments: the 25 data + SYN + the handshake's ACK at least; both ends agree.
        assert c["segs_out"] >= 27 and s["segs_in"] == c["segs_out"]
        assert c["total_retrans"] == 0 and c["rtt"] > 0 and c["snd_cwnd"] > 0
        assert cli.owners == () and cli.cookie and cli.cookie != srv.cookie


def test_udp_and_unix_sockets_are_listed_with_their_owners(addr, tmp_path):
    _need_netlink()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((addr, 0))
    path = str(tmp_path / "listen.sock")
    ux = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ux.bind(path)
    ux.listen(7)
    a, b = socket.socketpair()
    me = (os.getpid(), _comm())
    with udp, ux, a, b:
        (u,) = [e for e in read_sockets(families=("udp",), processes=True)
                if e.local == udp.getsockname()]
        assert u.proto == "udp" and u.state == "UNCONN" and u.remote == ("0.0.0.0", 0)
        assert (os.getpid(), _comm(), udp.fileno()) in u.owners and me in u.pids

        entries = read_sockets(families=("unix",), processes=True)
        (lst,) = [e for e in entries if e.local[0] == path]
        assert lst.proto == "u_str" and lst.state == "LISTEN" and lst.send_q == 7
        assert (os.getpid(), _comm(), ux.fileno()) in lst.owners
        ino_a, ino_b = os.fstat(a.fileno()).st_ino, os.fstat(b.fileno()).st_ino
        by_inode = {e.inode: e for e in entries}
        assert by_inode[ino_a].remote == ("*", ino_b) and by_inode[ino_b].remote == ("*", ino_a)
        assert by_inode[ino_a].state == "ESTABLISHED" and by_inode[ino_a].uid == os.geteuid()

        # The /proc fallback lists the same sockets (without queues or peers).
        proc = {e.inode: e for e in read_sockets(families=("unix", "udp"), source="proc")}
        assert proc[lst.inode].state == "LISTEN" and proc[lst.inode].local[0] == path
        assert proc[u.inode].local == udp.getsockname()

        # And the CLI shows them, owners with their fd.
        out = CliRunner().invoke(main, ["sockets", "--all", "--processes"]).output
        line = next(x for x in out.splitlines() if path in x)
        assert line.split()[:2] == ["u_str", "LISTEN"]
        assert f"({os.getpid()},fd={ux.fileno()})" in line
        line = next(x for x in out.splitlines() if f"{addr}:{udp.getsockname()[1]}" in x)
        assert line.split()[:2] == ["udp", "UNCONN"] and f"fd={udp.fileno()}" in line


def test_summary_counts_match_the_states_created(addr):
    lsock = socket.create_server((addr, 0))
    open_pairs = [_pair(lsock, addr) for _ in range(3)]          # 6 ESTABLISHED
    fw2, cw = _pair(lsock, addr)
    fw2.close()                                                   # FIN-WAIT-2 + CLOSE-WAIT
    tw, last = _pair(lsock, addr)
    tw.close()
    assert last.recv(1) == b""                                    # EOF seen: the peer closed
    last.close()                                                  # -> the closer's TIME-WAIT
    try:
        def summary():
            r = CliRunner().invoke(main, ["sockets", "--json", "--src", addr])
            return json.loads(r.output)["summary"]
        want = {"endpoints": 1 + 6 + 2 + 1, "established": 6, "listening": 1, "time_wait": 1,
                "close_wait": 1}
        assert wait_until(lambda: summary() == want, timeout=15), summary()
        out = CliRunner().invoke(main, ["sockets", "--watch", "--count", "1", "--interval",
                                        "0.1s", "--src", addr]).output
        assert out.splitlines()[0].startswith(
            "Endpoints: 10  Established: 6  Listening: 1  Time Wait: 1  Close Wait: 1")
        # ss's groups: connected = not LISTEN/CLOSE; bucket = TIME-WAIT (and SYN-RECV).
        connected = _mine(addr, state=["connected"])
        assert sorted({e.state for e in connected}) == ["CLOSE-WAIT", "ESTABLISHED", "FIN-WAIT-2",
                                                        "TIME-WAIT"] and len(connected) == 9
        assert [e.state for e in _mine(addr, state=["bucket"])] == ["TIME-WAIT"]
        assert len(_mine(addr, state=["big"])) == 9
    finally:
        for c, s in open_pairs:
            c.close()
            s.close()
        cw.close()
        lsock.close()


class Pacer(threading.Thread):
    """Sends CHUNK bytes every PERIOD seconds on a schedule (no drift) and logs
    ``(time.monotonic() after send returned, cumulative bytes)``."""

    CHUNK = 4096
    PERIOD = 0.02           # 200 KiB/s

    def __init__(self, sock, duration):
        super().__init__(daemon=True)
        self.sock, self.duration = sock, duration
        self.stopped = threading.Event()
        self.log = [(time.monotonic(), 0)]

    def run(self):
        start = time.monotonic()
        total, i = 0, 0
        while time.monotonic() - start < self.duration and not self.stopped.is_set():
            i += 1
            self.sock.sendall(b"p" * self.CHUNK)
            total += self.CHUNK
            self.log.append((time.monotonic(), total))
            delay = start + i * self.PERIOD - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def sent_by(self, t):
        """Bytes whose send() had returned by ``t``."""
        return max(total for when, total in self.log if when <= t)


def _drain(sock, stop):
    sock.settimeout(0.1)
    while not stop.is_set():
        try:
            if not sock.recv(65536):
                return
        except socket.timeout:
            continue
        except OSError:
            return


def test_watch_json_rates_match_the_traffic(addr):
    _need_netlink()
    lsock = socket.create_server((addr, 0))
    client, server = _pair(lsock, addr)
    sender, receiver = list(client.getsockname()), list(server.getsockname())
    stop = threading.Event()
    drain = threading.Thread(target=_drain, args=(server, stop), daemon=True)
    drain.start()
    pacer = Pacer(client, duration=60.0)         # outlives the watch; stopped right after it
    pacer.start()
    try:
        proc = subprocess.run(
            socktools_cmd("sockets", "--watch", "--count", "3", "--interval", "0.5s", "--json",
                          "--src", addr, "--state", "estab"),
            capture_output=True, text=True, timeout=120)     # a bound for a very loaded machine
    finally:
        pacer.stopped.set()
        pacer.join()
        stop.set()
        drain.join()
        for s in (client, server, lsock):
            s.close()
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert len(lines) == 3
    for line in lines:
        row = next(r for r in line["sockets"] if r["local"] == sender)
        t2, r2, dt = line["monotonic"], line["read_s"], line["interval_s"]
        t1, r1 = t2 - dt, line["previous_read_s"]
        moved = row["rate_out"] * dt          # bytes acknowledged between the two reads
        # The kernel took each counter at some instant within its read window [t, t + r].
        # A counter there lies between what had been sent by t (minus at most one chunk not
        # yet acknowledged: loopback ACKs at once, the receiver drains) and what had been sent
        # by t + r plus the chunk whose send() had not returned yet.  So the bytes moved
        # between the reads are bracketed by the pacer's own log, with two chunks of slack.
        c = Pacer.CHUNK
        lo = pacer.sent_by(t2) - pacer.sent_by(t1 + r1) - 2 * c
        hi = pacer.sent_by(t2 + r2) - pacer.sent_by(t1) + 2 * c
        assert lo <= moved <= hi, (lo, moved, hi, line["interval_s"])
        assert moved >= c                      # every window saw traffic
        # The receiving end saw the same bytes arrive.
        peer = next(r for r in line["sockets"] if r["local"] == receiver)
        assert abs(peer["rate_in"] * dt - moved) <= 2 * c
        assert row["mark"] == "" and line["summary"]["established"] == 2
    # The comparison is with the pacer's own log, not with its nominal 200 KiB/s: on a loaded
    # machine the sending thread can be starved for a while and send less than nominal, and the
    # tool must report what was sent.  On an idle machine the two agree (each window ~100 KiB).


def test_watch_ends_cleanly_on_ctrl_c(addr):
    with socket.create_server((addr, 0)):
        proc = subprocess.Popen(socktools_cmd("sockets", "--watch", "--interval", "0.2s",
                                              "--src", addr),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            first = proc.stdout.readline()
            assert first.startswith("Endpoints: 1  Established: 0  Listening: 1")
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and err == ""


def test_the_kernel_runs_the_filter(addr):
    """The bytecode is accepted by this kernel (a refusal would raise EINVAL here, where
    read_sockets would quietly fall back to filtering in Python) and keeps exactly ours."""
    _need_netlink()
    from socktools.kernel.socktable import bytecode, netlink
    lsock = socket.create_server((addr, 0))
    client, server = _pair(lsock, addr)
    with lsock, client, server:
        port = lsock.getsockname()[1]
        # (192.0.2.1, TEST-NET-1: only a filter term the kernel matches against; never connected to)
        f = SocketFilter(src=(parse_address("127.0.0.0/8"), parse_address("[::1]")),
                         dst=(parse_address(f"{addr}:{port}"), parse_address("192.0.2.1")))
        request = netlink.inet_request(socket.AF_INET, socket.IPPROTO_TCP,
                                       bytecode=bytecode.filter_bytecode(f))
        got = netlink.dump(request, netlink.inet_parser(socket.IPPROTO_TCP, extensions=False))
        assert [(e.local, e.remote) for e in got] == [(client.getsockname(), server.getsockname())]


def test_an_ipv4_filter_matches_the_v4_mapped_end_of_a_dual_stack_socket(addr):
    """A dual-stack listener's accepted sockets sit in the IPv6 table as ::ffff:127.x.y.z; an
    IPv4 prefix matches them in the kernel's filter as in ours."""
    _need_netlink()
    from socktools.kernel.socktable import bytecode, netlink
    try:
        lsock = socket.socket(socket.AF_INET6)
        lsock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        lsock.bind((f"::ffff:{addr}", 0))
    except OSError as exc:
        pytest.skip(f"no dual-stack IPv6 here: {exc}")
    lsock.listen(4)
    with lsock:
        port = lsock.getsockname()[1]
        client = socket.create_connection((addr, port), source_address=(addr, 0))
        server, _ = lsock.accept()
        with client, server:
            f = SocketFilter(dst=(parse_address(f"{addr}/32"),), sport=port)
            request = netlink.inet_request(socket.AF_INET6, socket.IPPROTO_TCP,
                                           bytecode=bytecode.filter_bytecode(f))
            got = netlink.dump(request, netlink.inet_parser(socket.IPPROTO_TCP, extensions=False))
            assert [(e.proto, e.local[0], e.remote[1]) for e in got] == \
                [("tcp6", f"::ffff:{addr}", client.getsockname()[1])]
            assert f.apply(got) == got


def test_watch_on_a_terminal_redraws_in_place_and_ctrl_c_ends_it(addr):
    """On a pseudo-terminal each refresh starts with cursor-home + clear; Ctrl-C exits 0."""
    import pty
    import select
    with socket.create_server((addr, 0)):
        pid, fd = pty.fork()
        if pid == 0:                                        # the child: the real command
            try:
                os.execvp(sys.executable, socktools_cmd("sockets", "--watch", "--interval",
                                                        "0.2s", "--src", addr))
            finally:
                os._exit(127)                               # never run the tests twice
        out = b""
        try:
            deadline = time.monotonic() + 30
            while out.count(b"\x1b[H\x1b[J") < 2 and time.monotonic() < deadline:
                if select.select([fd], [], [], 0.5)[0]:
                    out += os.read(fd, 65536)
            os.kill(pid, signal.SIGINT)
            _, status = os.waitpid(pid, 0)
        finally:
            os.close(fd)
    assert out.count(b"\x1b[H\x1b[J") >= 2, out[-500:]
    assert b"Endpoints: 1  Established: 0  Listening: 1" in out and b"Traceback" not in out
    assert os.waitstatus_to_exitcode(status) == 0


def test_json_one_shot_and_watch_lines_follow_the_schema(addr, tmp_path):
    """docs/schemas/sockets.schema.json describes both shapes, with every family and column."""
    from tests.test_json_schemas import validate
    lsock = socket.create_server((addr, 0))
    client, server = _pair(lsock, addr)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((addr, 0))
    ux = socket.socket(socket.AF_UNIX)
    ux.bind(str(tmp_path / "s"))
    ux.listen(1)
    with lsock, client, server, udp, ux:
        runner = CliRunner()
        for source in ("netlink", "proc"):
            out = runner.invoke(main, ["sockets", "--all", "-P", "-i", "-o", "-m", "--json",
                                       "--source", source]).stdout
            doc = json.loads(out)
            assert {s["proto"] for s in doc["sockets"]} >= {"tcp", "udp", "u_str"}
            validate(doc, "sockets")
        out = runner.invoke(main, ["sockets", "--watch", "--count", "2", "--interval", "0.1s",
                                   "--json", "--src", addr, "-P"]).stdout
        lines = [json.loads(x) for x in out.splitlines()]
        assert len(lines) == 2 and lines[0]["summary"]["endpoints"] == 3   # listener + 2 ends
        for line in lines:
            validate(line, "sockets", "#/$defs/watch_line")
