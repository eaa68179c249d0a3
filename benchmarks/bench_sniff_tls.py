"""sniff --keylog: our own TLS decryption against scapy's TLS layer, on the same real capture.

For TLS 1.2 and TLS 1.3: a Python ``ssl`` server and client on loopback (a throwaway CA
from trustme), the client sending MB megabytes of seeded random bytes in writes of mixed
sizes (100 B to 16 KiB, so records of every size) and writing its secrets to a key log;
``python -m socktools sniff -w`` captures it (needs root).  Then, on that one file:

- socktools: ``Sniffer(read=cap, keylog=..., decode="tls")`` run to the end (the view's
  records, as ``sniff -r cap --keylog k -q`` does), and the same without --keylog (the
  record dissection alone), so the difference is what decryption costs;
- scapy: ``sniff(offline=cap, session=TCPSession)`` with the TLS layer bound to the port,
  ``conf.tls_session_enable`` and ``conf.tls_nss_filename`` (scapy's own key log support),
  and the same without the TLS session.

Correctness: the SHA-256 of the client's plaintext as each decryptor recovered it, against
the bytes the client sent.  Speed: seconds per MB of application data, best of REPEAT.

    sudo python benchmarks/bench_sniff_tls.py [MB] [REPEAT]

All traffic is on 127.0.0.1; the server, the capture and the client stop by themselves.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MB = float(sys.argv[1]) if len(sys.argv) > 1 else 8
REPEAT = int(sys.argv[2]) if len(sys.argv) > 2 else 3
#: The capture is stopped this long after the client closed: the bench is no test, and the
#: SHA-256 check below says whether the file came out whole.
SETTLE = 1.0


def make_capture(tmp: Path, version: ssl.TLSVersion, payload: bytes) -> tuple:
    from tests.peers import Certs
    certs = Certs(tmp)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(certs.cert, certs.key)
    sctx.maximum_version = version
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def serve():
        conn, _ = srv.accept()
        with sctx.wrap_socket(conn, server_side=True) as s:
            got = 0
            while got < len(payload):
                data = s.recv(1 << 16)
                if not data:
                    break
                got += len(data)
            s.sendall(b"OK %d\n" % got)
    server = threading.Thread(target=serve)
    server.start()
    cap, keylog = tmp / "cap.pcapng", tmp / "keys.log"
    sniff = subprocess.Popen([sys.executable, "-m", "socktools", "sniff", "--port", str(port), "-w", str(cap),
                              "-q", "--buffer", "256M"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parent.parent)
    sniff.stderr.readline()                          # "Capturing on ..." : the socket is open
    ctx = certs.client_context()
    ctx.maximum_version = version
    ctx.keylog_filename = str(keylog)
    rnd = random.Random(1)
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            pos = 0
            while pos < len(payload):
                n = rnd.randint(100, 16384)
                s.sendall(payload[pos:pos + n])
                pos += n
            reply = s.recv(100)
    server.join(30)
    srv.close()
    time.sleep(SETTLE)
    sniff.send_signal(signal.SIGINT)
    sniff.wait(30)
    return cap, keylog, port, reply, ctx


def ours(cap: Path, keylog, digest: dict) -> float:
    from socktools.capture import SniffConfig, Sniffer
    from socktools.capture import tls_stream
    original = tls_stream.TlsStream._plaintext

    def hashing(self, plain, packet):               # instrumentation: the bytes recovered
        if self.role == "request":
            digest["h"].update(plain)
            digest["n"] += len(plain)
        return original(self, plain, packet)
    tls_stream.TlsStream._plaintext = hashing
    try:
        t = time.perf_counter()
        sn = Sniffer(SniffConfig(read=str(cap), keylog=str(keylog) if keylog else None, decode="tls")).open()
        for _batch in sn.batches():
            pass
        sn.close()
        return time.perf_counter() - t
    finally:
        tls_stream.TlsStream._plaintext = original


def scapys(cap: Path, keylog, port: int, digest: dict) -> float:
    from scapy.all import bind_layers, conf, load_layer, sniff, split_layers
    from scapy.layers.inet import TCP
    load_layer("tls")
    from scapy.layers.tls.record import TLS, TLSApplicationData
    from scapy.layers.tls.record_tls13 import TLS13
    from scapy.sessions import TCPSession
    # a fresh session table each run: scapy keeps its TLS sessions (and their record
    # sequence numbers) in conf.tls_sessions, and a second pass over the same capture
    # would otherwise go on from the first pass's numbers
    conf.tls_sessions.sessions.clear()
    conf.tls_session_enable = bool(keylog)
    conf.tls_nss_filename = str(keylog) if keylog else None
    bind_layers(TCP, TLS, dport=port)
    bind_layers(TCP, TLS, sport=port)
    try:
        t = time.perf_counter()
        pkts = sniff(offline=str(cap), session=TCPSession)
        for p in pkts:
            if p.haslayer(TCP) and p[TCP].dport == port:
                # each record is a TLS (or TLS13) layer, the next record its payload;
                # its messages are in .msg
                layer = p[TCP].payload
                while isinstance(layer, (TLS, TLS13)):
                    # a TLS 1.3 record's messages are in its decrypted inner plaintext
                    for msg in (getattr(layer.inner, "msg", None) or [] if isinstance(layer, TLS13) else layer.msg):
                        if isinstance(msg, TLSApplicationData):
                            digest["h"].update(msg.data)
                            digest["n"] += len(msg.data)
                    layer = layer.payload
        return time.perf_counter() - t
    finally:
        split_layers(TCP, TLS, dport=port)
        split_layers(TCP, TLS, sport=port)


def main() -> None:
    import trustme  # noqa: F401  (the certificates: fail here, before any capture starts)
    payload = random.Random(0).randbytes(int(MB * (1 << 20)))
    want = hashlib.sha256(payload).hexdigest()
    print(f"{MB:g} MB of application data client->server, best of {REPEAT}; python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs")
    for version, name in ((ssl.TLSVersion.TLSv1_2, "TLS 1.2"), (ssl.TLSVersion.TLSv1_3, "TLS 1.3")):
        with tempfile.TemporaryDirectory() as tmp:
            cap, keylog, port, reply, _ = make_capture(Path(tmp), version, payload)
            print(f"\n{name}: capture {cap.stat().st_size / (1 << 20):.1f} MiB, server said {reply!r}")
            rows = []
            for label, fn, key in (("socktools, records only", ours, None),
                                   ("socktools --keylog", ours, keylog),
                                   ("scapy, TLS layer, no session", scapys, None),
                                   ("scapy, TLS session + NSS key log", scapys, keylog)):
                best, ok = None, None
                for _ in range(REPEAT):
                    digest = {"h": hashlib.sha256(), "n": 0}
                    args = (cap, key, digest) if fn is ours else (cap, key, port, digest)
                    try:
                        took = fn(*args)
                    except Exception as exc:  # noqa: BLE001 - a contender that fails is a figure too
                        print(f"  {label}: failed: {type(exc).__name__}: {exc}")
                        break
                    best = took if best is None else min(best, took)
                    ok = digest["h"].hexdigest() == want
                    if key and not ok:
                        ok = f"plaintext WRONG: {digest['n']:,} of {len(payload):,} bytes recovered"
                if best is not None:
                    rows.append((label, best, ok if key else None))
            for label, took, ok in rows:
                verdict = "" if ok is None else ("  plaintext correct" if ok is True else f"  {ok}")
                print(f"  {label:<34} {took:8.3f} s  {took / MB * 1000:8.1f} ms/MB{verdict}")


if __name__ == "__main__":
    main()
