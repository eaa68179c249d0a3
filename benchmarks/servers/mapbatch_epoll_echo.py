"""The least Python an echo server can run per event: a yardstick for CPython's ceiling.

bench_serve.py runs it with ``--only ...,mapbatch,...``.  One ``epoll.poll()``
gives the ready sockets; all their reads run as one ``map(os.read, ...)`` and
all the answers as one ``map(os.write, ...)``, so no Python bytecode runs per
event -- only the C calls that any Python server must make (two syscalls, the
GIL released and taken around each, one bytes object).  No statistics, no
back-pressure, no idle timeouts, and a partial write is simply dropped: not a
server to use, a bound on what one written in Python can reach on this
machine.  socktools' batch path (iocore ``data_batch``) is this loop with
those jobs done.

    python benchmarks/servers/mapbatch_epoll_echo.py --port 0
"""

import argparse
import os
import select
import signal
import socket
import sys
from itertools import repeat
from operator import itemgetter


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=65432)
    parser.add_argument("--backlog", type=int, default=4096)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((args.host, args.port))
    lsock.listen(args.backlog)
    lsock.setblocking(False)
    host, port = lsock.getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)
    ep = select.epoll()
    lfd = lsock.fileno()
    ep.register(lfd, select.EPOLLIN)
    socks = {}
    read, write, first, sizes = os.read, os.write, itemgetter(0), repeat(65536)
    try:
        while True:
            fds = list(map(first, ep.poll(-1, 1024)))
            if lfd in fds:
                fds.remove(lfd)
                while True:
                    try:
                        conn, _ = lsock.accept()
                    except BlockingIOError:
                        break
                    conn.setblocking(False)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    socks[conn.fileno()] = conn
                    ep.register(conn.fileno(), select.EPOLLIN)
            datas, reads = [], map(read, fds, sizes)
            while True:
                try:
                    datas.extend(reads)  # a failed read leaves the ones before it in datas
                    break
                except OSError:
                    datas.append(b"")  # treated as EOF: closed below
            if all(datas):
                writes = map(write, fds, datas)
                while True:
                    try:
                        list(writes)
                        break
                    except OSError:
                        pass  # that one is closed when its read says so
                continue
            for fd, data in zip(fds, datas):
                if data:
                    try:
                        write(fd, data)
                    except OSError:
                        pass
                else:
                    ep.unregister(fd)
                    socks.pop(fd).close()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
