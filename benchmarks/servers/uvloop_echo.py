"""An asyncio ``Protocol`` echo server on uvloop: the "fast Python" reference point.

This is the shape uvloop's own benchmarks use for echo (``vmbench``'s
``--proto`` mode): no streams, no coroutines per connection, just
``data_received`` -> ``transport.write``.  asyncio/uvloop set TCP_NODELAY on
every TCP connection by default.

    python benchmarks/servers/uvloop_echo.py --port 0
    python benchmarks/servers/uvloop_echo.py --port 0 --cert server.pem --key server.key   # TLS

With ``--cert``/``--key`` it speaks TLS through asyncio's own SSL transport (uvloop's
``SSLProtocol``, the same ``ssl.SSLObject`` + ``MemoryBIO`` machinery asyncio uses).
"""

import argparse
import asyncio
import signal
import ssl
import sys

import uvloop


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def eof_received(self):
        return False  # close our side too, after flushing what is owed


async def serve(host, port, backlog, tls=None):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(EchoProtocol, host, port, backlog=backlog, reuse_address=True, ssl=tls)
    sockname = server.sockets[0].getsockname()
    print(f"listening on {sockname[0]}:{sockname[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=65432)
    parser.add_argument("--backlog", type=int, default=4096)
    parser.add_argument("--cert", help="TLS: the server's certificate chain, PEM")
    parser.add_argument("--key", help="TLS: its private key, PEM")
    args = parser.parse_args()
    tls = None
    if args.cert:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.cert, args.key)
    uvloop.run(serve(args.host, args.port, args.backlog, tls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
