"""The careful ``selectors`` echo server, in its smallest form: what plain Python can do.

bench_serve.py runs it with ``--only careful,...`` as a yardstick for
socktools: the same selectors loop with nothing around it, so the gap between
the two is the cost of socktools' layers (Loop/Connection/Protocol, statistics,
back-pressure), and the gap between this and the C server is CPython's.

* sockets are registered for EVENT_READ only (never WRITE while nothing is
  owed), so an idle connection costs nothing;
* accept() is called until BlockingIOError on each listener wake-up;
* recv(65536), then send() at once; only what the kernel refuses is kept, and
  only then is EVENT_WRITE requested (reading pauses until it is flushed).

    python benchmarks/servers/careful_selectors_echo.py --port 0
"""

import argparse
import selectors
import signal
import socket
import sys

EVENT_READ, EVENT_WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=65432)
    parser.add_argument("--backlog", type=int, default=4096)
    args = parser.parse_args()

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_sigterm)

    sel = selectors.DefaultSelector()
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((args.host, args.port))
    lsock.listen(args.backlog)
    lsock.setblocking(False)
    host, port = lsock.getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)
    sel.register(lsock, EVENT_READ, None)
    pending = {}  # socket -> bytes the kernel refused

    def close(sock):
        sel.unregister(sock)
        pending.pop(sock, None)
        sock.close()

    try:
        while True:
            for key, mask in sel.select():
                sock = key.fileobj
                if key.data is None:
                    while True:
                        try:
                            conn, _ = sock.accept()
                        except BlockingIOError:
                            break
                        conn.setblocking(False)
                        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        sel.register(conn, EVENT_READ, 1)
                    continue
                try:
                    if mask & EVENT_WRITE:
                        out = pending[sock]
                        out = out[sock.send(out):]
                        if out:
                            pending[sock] = out
                        else:
                            del pending[sock]
                            sel.modify(sock, EVENT_READ, 1)
                        continue
                    data = sock.recv(65536)
                    if not data:
                        close(sock)
                        continue
                    try:
                        sent = sock.send(data)
                    except BlockingIOError:
                        sent = 0
                    if sent < len(data):
                        pending[sock] = data[sent:]
                        sel.modify(sock, EVENT_WRITE, 1)
                except BlockingIOError:
                    pass
                except OSError:
                    close(sock)
    except KeyboardInterrupt:
        pass
    finally:
        sel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
