"""A socktools exchange plug-in for the memcached text protocol (``get`` and ``set``).

Load memcached with it::

    socktools flood --port 11211 --protocol socktools.examples.memcached:Memcached \\
        --command 'set key:{seq} hello' --command 'get key:{seq}'
    socktools request --port 11211 --protocol socktools.examples.memcached:Memcached --command 'get key:1'

The interface (docs/plugins.md): the class is built with the ``--command``
texts; ``request(seq, conn)`` returns the bytes of request ``seq`` on
connection ``conn``; ``parser()`` returns a per-connection object whose
``feed(data)`` returns how many whole replies ``data`` completed.  A reply
that is well formed but a failure goes to ``parser.failures``; bytes that
cannot be memcached raise :class:`~socktools.wire.WireError`.  No sockets,
no clocks: socktools does the I/O, the timing and the counting.
"""

from __future__ import annotations

from socktools.wire import Failure, Parser, Reply, WireError, WireProtocol

#: Longest reply line (``VALUE <key> <flags> <bytes>``): keys are at most 250
#: bytes in memcached, so 1 KiB is ample; past it the peer is not memcached.
MAX_LINE = 1024
#: Largest value memcached stores by default (its -I item size limit, 1 MiB).
MAX_VALUE = 1 << 20


class Memcached(WireProtocol):
    name = "memcached"

    def __init__(self, commands: tuple) -> None:
        self.templates = []
        for text in commands or ("get key",):
            words = text.split(" ", 2)
            verb = words[0].lower()
            if verb == "get" and len(words) == 2:
                self.templates.append(("get", words[1], None))
            elif verb == "set" and len(words) == 3:
                self.templates.append(("set", words[1], words[2].encode()))
            else:
                raise ValueError(f"{text!r}: use 'get KEY' or 'set KEY VALUE' ({{seq}} {{conn}} allowed)")
        self.texts = tuple(commands)
        # Every request the same bytes: socktools may take its faster paths.
        fixed = [self._render(t, 0, 0) for t in self.templates if "{" not in t[1] + str(t[2])]
        self.fixed_request = fixed[0] if len(self.templates) == 1 and fixed else None

    @staticmethod
    def _render(template, seq: int, conn: int) -> bytes:
        verb, key, value = template
        key = key.replace("{seq}", str(seq)).replace("{conn}", str(conn)).encode()
        if verb == "get":
            return b"get " + key + b"\r\n"
        value = value.replace(b"{seq}", str(seq).encode()).replace(b"{conn}", str(conn).encode())
        return b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value)

    def request(self, seq: int, conn: int) -> bytes:
        return self._render(self.templates[seq % len(self.templates)], seq, conn)

    def parser(self) -> "MemcachedParser":
        return MemcachedParser()

    def describe(self) -> str:
        return "memcached, " + " / ".join(f"`{t}`" for t in self.texts or ("get key",))


class MemcachedParser(Parser):
    """Whole replies: ``STORED``, ``END`` (a miss), ``VALUE ... END`` (a hit), or an error line."""

    def __init__(self) -> None:
        super().__init__()
        self.buf = bytearray()
        self.known = b"STORED\r\n"   # the last whole reply seen: the next is often the same bytes

    @property
    def buffered(self) -> int:
        return len(self.buf)

    def feed(self, data: bytes) -> int:
        buf = self.buf
        if not buf and self.keep is None:
            # The common case first: one whole reply in one read (a plug-in is
            # on flood's hot path; this keeps it within a few bytecodes of raw).
            if data == self.known or data == b"END\r\n":
                return 1
            if data[:6] == b"VALUE " and data[-7:] == b"\r\nEND\r\n":
                head = data.find(b"\r\n")
                size = data[:head].split()[3:4]
                if size and size[0].isdigit() and head + int(size[0]) + 9 == len(data):
                    self.known = data
                    return 1
        buf += data
        n = 0
        pos = 0
        while True:
            end = buf.find(b"\r\n", pos)
            if end < 0:
                if len(buf) - pos > MAX_LINE:
                    raise WireError(f"a reply line longer than {MAX_LINE} bytes", "protocol-error")
                break
            line = bytes(buf[pos:end])
            if line.startswith(b"VALUE "):
                parts = line.split()
                if len(parts) < 4 or not parts[3].isdigit() or int(parts[3]) > MAX_VALUE:
                    raise WireError(f"a bad VALUE line: {line[:80]!r}", "protocol-error")
                # VALUE line, the data and its CRLF, then END\r\n (one key per get).
                stop = end + 2 + int(parts[3]) + 2
                if buf.find(b"END\r\n", stop) != stop:
                    if len(buf) < stop + 5:
                        break            # the rest of this reply has not arrived yet
                    raise WireError("a VALUE not followed by END", "protocol-error")
                end = stop + 5 - 2
                summary = f"hit {parts[1].decode(errors='replace')}"
            elif line in (b"STORED", b"END", b"NOT_STORED", b"EXISTS", b"NOT_FOUND", b"DELETED"):
                summary = line.decode()
            elif line == b"ERROR" or line.startswith((b"CLIENT_ERROR", b"SERVER_ERROR")):
                self.failures.append(Failure("server-error", line.decode(errors="replace")[:80], line[:64]))
                summary = line.decode(errors="replace")
            else:
                raise WireError(f"not a memcached reply: {line[:60]!r}", "protocol-error")
            if self.keep is not None:
                self.keep.append(Reply(end + 2 - pos, summary, {"bytes": bytes(buf[pos:end + 2])}))
            pos = end + 2
            n += 1
        if pos:
            del buf[:pos]
        return n
