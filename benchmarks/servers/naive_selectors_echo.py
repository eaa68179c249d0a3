"""The naive echo server from the well-known Python socket tutorial ("multiconn-server.py").

Kept deliberately faithful, because bench_serve.py measures what that pattern
costs:

* every accepted socket is registered for ``EVENT_READ | EVENT_WRITE`` for its
  whole life, so ``select()`` reports every connection as writable on every
  call: with any connection open, the loop never sleeps (one core at 100 %
  even when nobody sends anything);
* ``recv(1024)`` per readiness event; one ``accept()`` per listener event;
* out-data kept as ``bytes`` and re-sliced after each ``send()``.

Changes from the tutorial, each so the benchmark measures the pattern and not
something else: no ``print()`` per message (a terminal write per echo would
dominate), the listen backlog comes from ``--backlog`` (the same for every
server in the benchmark; the tutorial calls ``listen()`` with the default),
``--port 0`` prints the chosen port, an ``OSError`` on one connection closes
that connection instead of crashing the server, and SIGTERM stops it.

    python benchmarks/servers/naive_selectors_echo.py --port 0
"""

import argparse
import selectors
import signal
import socket
import sys
import types

sel = selectors.DefaultSelector()


def accept_wrapper(sock):
    conn, addr = sock.accept()  # Should be ready to read
    conn.setblocking(False)
    data = types.SimpleNamespace(addr=addr, inb=b"", outb=b"")
    events = selectors.EVENT_READ | selectors.EVENT_WRITE
    sel.register(conn, events, data=data)


def close(sock):
    sel.unregister(sock)
    sock.close()


def service_connection(key, mask):
    sock = key.fileobj
    data = key.data
    if mask & selectors.EVENT_READ:
        recv_data = sock.recv(1024)  # Should be ready to read
        if recv_data:
            data.outb += recv_data
        else:
            close(sock)
            return
    if mask & selectors.EVENT_WRITE:
        if data.outb:
            sent = sock.send(data.outb)  # Should be ready to write
            data.outb = data.outb[sent:]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=65432)
    parser.add_argument("--backlog", type=int, default=4096)
    args = parser.parse_args()

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_sigterm)

    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((args.host, args.port))
    lsock.listen(args.backlog)
    host, port = lsock.getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)
    lsock.setblocking(False)
    sel.register(lsock, selectors.EVENT_READ, data=None)
    try:
        while True:
            events = sel.select(timeout=None)
            for key, mask in events:
                if key.data is None:
                    accept_wrapper(key.fileobj)
                else:
                    try:
                        service_connection(key, mask)
                    except OSError:
                        close(key.fileobj)
    except KeyboardInterrupt:
        pass
    finally:
        sel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
