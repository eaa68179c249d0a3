"""A socktools exchange plug-in for SMTP: the greeting and EHLO once per connection, then
NOOPs (or any simple command), or whole mail transactions, as the measured requests.

Load an SMTP server with it::

    socktools flood --port 25 --protocol socktools.examples.smtp:Smtp             # NOOP
    socktools flood --port 25 --protocol socktools.examples.smtp:Smtp \\
        --command 'MAIL FROM:<a@test.invalid> RCPT TO:<b@test.invalid>'

Each connection first holds the opening conversation (:class:`SmtpOpening`): the server's
greeting must be ``220`` (anything else -- ``554 no SMTP service here``, ``421 too busy`` --
refuses the connection with the server's own words), then ``EHLO`` and its multi-line
``250`` reply.  A request is one command line (``NOOP`` by default) or a whole mail
transaction, sent at once and answered by one reply per command.

Why a transaction goes as ``RSET``, ``MAIL``, ``RCPT``, ``BDAT <size> LAST`` + the message
(CHUNKING, RFC 3030) and not ``DATA``: after ``DATA`` a client must wait for ``354`` before sending the
message (RFC 2920 3.1), and a request is sent whole.  Exim answers a message sent on the
heels of ``DATA`` with ``554 SMTP synchronization error`` and hangs up; ``BDAT`` carries the
message's length, so the server never mistakes it for commands, even when it refused the
sender.  So a transaction needs a server that offers PIPELINING and CHUNKING (Exim 4.88+,
Postfix 3.4+): the opening checks the EHLO reply.  The leading ``RSET`` keeps transactions
apart: when Exim refuses a ``BDAT`` (no valid recipient) the sender stays given, and the
next ``MAIL`` would be answered ``503 sender already given`` -- its message then sent with
the previous sender.  Exim does not count an RSET among a mail flow as a non-mail command.

Replies are framed by SMTP's rules (RFC 5321 4.2: ``250-`` continues, ``250 `` ends).  A
``4xx``/``5xx`` reply is a failure named by its code (``smtp-5xx``, ``550 5.1.1 ...``).
A server's close after some commands is a reconnect, not a failure: ``421`` always means
it closes (RFC 5321 3.8), and Exim answers ``554 Too many nonmail commands`` to the 11th
NOOP of a connection (its smtp_accept_max_nonmail) before hanging up.  Both count as a
reply, set the parser's ``closing`` (flood then opens a new connection, greeting and EHLO
included) and are tallied as ``closed: <code> <text>``.
"""

from __future__ import annotations

import re
from typing import Optional

from socktools.wire import Failure, Parser, Reply, WireError, WireProtocol
from socktools.wire.base import WholeReplies, WHOLE_REPLY_BYTES
from socktools.wire.opening import Opening, OpeningFailed

__all__ = ["Smtp", "SmtpOpening", "SmtpParser", "SmtpReplies", "SmtpCommands", "SmtpReplyStream"]

#: Longest reply line: RFC 5321 4.5.3.1.5 says 512 octets; twice that is room for servers
#: that overstep it, and a line without an end past it is not SMTP.
MAX_LINE = 1024
#: Lines of one multi-line reply: an EHLO reply has about a dozen (Exim 9, Postfix 11), HELP
#: a few dozen; a reply that goes on past this is a peer that never finishes it.
MAX_REPLY_LINES = 100
#: Characters of a reply's text kept for a failure's detail or a close's tally: the tallies
#: stay small however chatty the server.
TEXT_CHARS = 60
#: Distinct ``closed: ...`` classes in the tally before the rest count as ``closed: (other)``.
MAX_CLOSE_CLASSES = 8
#: Commands that change how the bytes after them are framed (a message, a TLS handshake, the
#: end of the session): not requests this plug-in can count.
FRAMING_COMMANDS = ("DATA", "BDAT", "QUIT", "STARTTLS", "AUTH")

#: Characters of a command or reply line ``proxy --decode`` shows: a screen line (RFC 5321
#: allows 512 octets; the rest of a longer one is in the bytes, not in the summary).
SHOWN_CHARS = 100
#: SMTP's commands (RFC 5321, with ESMTP's BDAT, STARTTLS, AUTH, ETRN): after AUTH, a line
#: that starts with none of them is the client's answer to the server's challenge.
VERBS = frozenset(("HELO", "EHLO", "LHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "VRFY", "EXPN", "HELP",
                   "NOOP", "QUIT", "STARTTLS", "AUTH", "ETRN"))

#: ``MAIL FROM:<a@x> RCPT TO:<b@y> [RCPT TO:<c@z> ...]``: a whole transaction.
_TRANSACTION = re.compile(r"MAIL FROM:<([^<>\s]*)>((?:\s+RCPT TO:<[^<>\s]+>)+)\s*$", re.IGNORECASE)
_RCPT = re.compile(r"RCPT TO:<([^<>\s]+)>", re.IGNORECASE)

DEFAULT_MESSAGE = "From: <{from}>\r\nTo: {to}\r\nSubject: socktools {seq}\r\n\r\nA message from socktools.\r\n"


class SmtpReplies:
    """SMTP replies from a byte stream: ``feed(data)`` returns the replies it completed, each
    ``(code, text of its last line, bytes, lines)`` (``lines``: every line's text with
    ``collect``, else None); raises WireError for bytes that are not SMTP."""

    def __init__(self, collect: bool = False) -> None:
        self.collect = collect
        self.texts: list = []    # the lines of the reply in progress, with collect
        self.buf = bytearray()
        self.code = 0            # the code of the multi-line reply in progress
        self.lines = 0
        self.size = 0            # bytes of it consumed so far

    @property
    def buffered(self) -> int:
        return len(self.buf) + self.size

    def feed(self, data: bytes) -> list:
        buf = self.buf
        buf += data
        out = []
        pos = 0
        while True:
            end = buf.find(b"\n", pos)
            if end < 0:
                if len(buf) - pos > MAX_LINE:
                    raise WireError(f"a reply line longer than {MAX_LINE} bytes", "protocol-error")
                break
            line = bytes(buf[pos:end]).rstrip(b"\r")
            if len(line) < 3 or not line[:3].isdigit() or line[:1] not in b"2345" or line[3:4] not in (b"", b" ", b"-"):
                raise WireError(f"not an SMTP reply line: {line[:60]!r}", "protocol-error")
            code = int(line[:3])
            if self.lines and code != self.code:
                raise WireError(f"a multi-line reply changed its code from {self.code} to {code}", "protocol-error")
            self.code = code
            self.lines += 1
            if self.lines > MAX_REPLY_LINES:
                raise WireError(f"a reply of more than {MAX_REPLY_LINES} lines", "protocol-error")
            self.size += end + 1 - pos
            pos = end + 1
            text = line[4:].decode("utf-8", "replace")
            if self.collect:
                self.texts.append(text)
            if line[3:4] != b"-":
                out.append((code, text[:TEXT_CHARS].strip(), self.size, self.texts if self.collect else None))
                self.lines = self.size = 0
                self.texts = []
        del buf[:pos]
        return out


class SmtpOpening(Opening):
    """The greeting (220), then EHLO (250); ``needs``: extensions the EHLO reply must offer."""

    done = False

    def __init__(self, helo: str, needs: tuple = ()) -> None:
        self.helo = helo
        self.needs = needs
        self.replies = SmtpReplies(collect=True)
        self.step = "greeting"
        self.out = b""
        self.asked = False       # EHLO handed out to be sent: a reply before that is unsolicited
        self.rest = b""
        self.extensions: set = set()

    def data_to_send(self) -> bytes:
        out, self.out = self.out, b""
        self.asked = self.asked or bool(out)
        return out

    def leftover(self) -> bytes:
        return self.rest

    def describe(self) -> str:
        return f"greeting, EHLO {self.helo}"

    def receive_data(self, data: bytes) -> None:
        if self.done:
            self.rest += data
            return
        for code, text, _, lines in self.replies.feed(data):
            if self.done:
                raise WireError(f"a reply nobody asked for after EHLO: {code} {text}", "unsolicited")
            if self.step == "greeting":
                if code != 220:
                    raise OpeningFailed(f"{code} {text}", "greeting")
                self.step = "EHLO"
                self.out += f"EHLO {self.helo}\r\n".encode()
            elif not self.asked:
                raise WireError(f"a second reply before EHLO was sent: {code} {text}", "unsolicited")
            else:
                if code != 250:
                    raise OpeningFailed(f"{code} {text}", "EHLO")
                self._extensions(lines)
                self.done = True
        if self.done:
            self.rest, self.replies.buf = bytes(self.replies.buf), bytearray()

    def _extensions(self, lines: list) -> None:
        # the first line greets ("test.invalid Hello localhost"); each other names an extension
        self.extensions.update(line.split(" ", 1)[0].strip().upper() for line in lines[1:])
        missing = [n for n in self.needs if n not in self.extensions]
        if missing:
            raise OpeningFailed(f"the EHLO reply offers no {' and no '.join(missing)}, which a mail "
                                "transaction sent as one request needs", "EHLO")


class Smtp(WireProtocol):
    """``--command`` texts: simple commands (``NOOP`` by default, ``RSET``, ``VRFY bob``) or mail
    transactions (``MAIL FROM:<a@x> RCPT TO:<b@y>``), not both.  Options: ``helo`` (the EHLO
    name) and ``message`` (the message's text; ``{from}``, ``{to}``, ``{seq}``, ``{conn}``
    replaced; ``\\n`` becomes CRLF)."""

    name = "smtp"
    may_close = True

    def __init__(self, commands: tuple, helo: str = "localhost", message: str = DEFAULT_MESSAGE) -> None:
        self.texts = tuple(commands) or ("NOOP",)
        self.helo = helo
        self.message = message.replace("\r\n", "\n").replace("\n", "\r\n")
        self.templates = []
        for text in self.texts:
            if "\r" in text or "\n" in text or "\0" in text:
                raise ValueError(f"{text!r}: one command line, without CR, LF or NUL")
            found = _TRANSACTION.match(text.strip())
            if found:
                self.templates.append((found.group(1), tuple(_RCPT.findall(found.group(2)))))
            elif text.split(" ", 1)[0].upper() in FRAMING_COMMANDS or text.upper().startswith("MAIL"):
                raise ValueError(f"{text!r}: give a simple command (NOOP, RSET, VRFY x) or a whole "
                                 "transaction, 'MAIL FROM:<a@x> RCPT TO:<b@y>'")
            else:
                self.templates.append(text)
        transactions = [t for t in self.templates if isinstance(t, tuple)]
        if transactions and (len(transactions) != len(self.templates)
                             or len({len(t[1]) for t in transactions}) != 1):
            raise ValueError("rotate either simple commands or transactions with as many recipients each: "
                             "a reply is counted by how many replies each request owes")
        #: SMTP replies per request: one per simple command; RSET, MAIL, each RCPT and BDAT.
        self.group = len(transactions[0][1]) + 3 if transactions else 1
        self.transactions = bool(transactions)
        self.tally: dict = {}
        self.whole = WholeReplies()
        dynamic = any("{conn}" in str(t) for t in self.templates) or (self.transactions and "{conn}" in self.message)
        self.shared_requests = not dynamic
        if len(self.templates) == 1 and not self.transactions and "{seq}" not in self.texts[0] and not dynamic:
            self.fixed_request = self.request(0, 0)

    def request(self, seq: int, conn: int) -> bytes:
        template = self.templates[seq % len(self.templates)]
        if isinstance(template, str):
            text = template.replace("{seq}", str(seq)).replace("{conn}", str(conn))
            return text.encode("utf-8") + b"\r\n"
        sender, recipients = template
        fill = {"{from}": sender, "{to}": ", ".join(f"<{r}>" for r in recipients),
                "{seq}": str(seq), "{conn}": str(conn)}
        body = self.message
        for key, value in fill.items():
            body = body.replace(key, value)
        data = body.encode("utf-8")
        lines = ["RSET", f"MAIL FROM:<{sender}>", *(f"RCPT TO:<{r}>" for r in recipients), f"BDAT {len(data)} LAST"]
        return ("\r\n".join(lines) + "\r\n").encode("utf-8") + data

    def opening(self) -> SmtpOpening:
        return SmtpOpening(self.helo, ("PIPELINING", "CHUNKING") if self.transactions else ())

    def parser(self) -> "SmtpParser":
        return SmtpParser(self.group, not self.transactions, self.whole, self.tally)

    def stream_parser(self, role: str) -> Parser:
        """``proxy --decode``: a client's commands (``request``) or a server's replies."""
        return SmtpCommands() if role == "request" else SmtpReplyStream()

    def describe(self) -> str:
        return "smtp, " + " / ".join(f"`{t}`" for t in self.texts)


class SmtpParser(Parser):
    """One reply per request: ``group`` SMTP replies (1 for a simple command; RSET, MAIL, RCPTs,
    BDAT for a transaction).  The group's first 4xx/5xx is its failure; a close ends it early."""

    def __init__(self, group: int = 1, simple: bool = True, whole: Optional[WholeReplies] = None,
                 tally: Optional[dict] = None) -> None:
        super().__init__()
        self.group = group
        self.simple = simple
        self.replies = SmtpReplies()
        self.whole = WholeReplies() if whole is None else whole
        self.tally = {} if tally is None else tally
        self.got = 0                 # SMTP replies of the request in progress
        self.got_bytes = 0
        self.failed: Optional[tuple] = None

    @property
    def buffered(self) -> int:
        return self.replies.buffered + self.got_bytes

    def feed(self, data: bytes) -> int:
        fresh = not self.got and not self.replies.buffered and self.keep is None
        if fresh and len(data) <= WHOLE_REPLY_BYTES and data in self.whole:
            self.tally["2xx"] = self.tally.get("2xx", 0) + 1
            return 1
        n = 0
        for code, text, size, _ in self.replies.feed(data):
            if self.closing:
                raise WireError(f"a reply after the server said it closes: {code} {text}", "unsolicited")
            self.got += 1
            self.got_bytes += size
            if code == 421 or (code == 554 and self.simple):
                # The server hangs up after this reply: a reconnect, not a failure.
                self.closing = True
                key = f"closed: {code} {text}"
                if key not in self.tally and sum(k.startswith("closed:") for k in self.tally) >= MAX_CLOSE_CLASSES:
                    key = "closed: (other)"
                self.tally[key] = self.tally.get(key, 0) + 1
            elif code >= 400 and self.failed is None:
                self.failed = (code, text)
            if self.got == self.group or self.closing:
                n += 1
                self._request_done(code, text)
        if fresh and n == 1 and not self.failures and not self.closing and not self.buffered and data[:1] == b"2":
            self.whole.learn(data)
        return n

    def _request_done(self, code: int, text: str) -> None:
        if self.failed is not None:
            fcode, ftext = self.failed
            self.failures.append(Failure(f"smtp-{fcode // 100}xx", f"{fcode} {ftext}",
                                         f"{fcode} {ftext}".encode()))
            cls = f"{fcode // 100}xx"
        else:
            cls = f"{code // 100}xx"
        if not self.closing:
            self.tally[cls] = self.tally.get(cls, 0) + 1
        if self.keep is not None:
            shown = self.failed or (code, text)
            self.keep.append(Reply(self.got_bytes, f"{shown[0]} {shown[1]}",
                                   {"replies": self.got, "closing": self.closing}))
        self.got = self.got_bytes = 0
        self.failed = None


# ------------------------------------------------------------------ stream decoders (proxy --decode)
def _shown(text: str) -> str:
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 1] + "…"


class SmtpCommands(Parser):
    """A client's side for ``proxy --decode``: one Reply per thing the server answers -- a
    command line, the message after DATA (up to its lone ``.``; counted as it passes, never
    held), a BDAT chunk with its bytes.  AUTH's arguments and the answers to its challenges
    are never shown."""

    def __init__(self) -> None:
        super().__init__()
        self.keep = []
        self.buf = bytearray()          # a command line in progress (at most MAX_LINE)
        self.mode = "commands"          # commands | data (after DATA) | bdat (a chunk's bytes)
        self.size = 0                   # bytes of the message or chunk in progress
        self.left = 0                   # bdat: bytes of the chunk still to come
        self.what = ""                  # bdat: the chunk's summary
        self.line = b""                 # data: the first bytes of the line in progress
        self.auth = False               # after AUTH: lines that are no command answer a challenge
        self.starttls = False           # after STARTTLS: a TLS record next is the handshake

    @property
    def buffered(self) -> int:
        return len(self.buf) + self.size

    def feed(self, data: bytes) -> int:
        before = len(self.keep)
        pos, end = 0, len(data)
        while pos < end:
            if self.mode == "data":
                pos = self._data(data, pos)
            elif self.mode == "bdat":
                take = min(self.left, end - pos)
                self.left -= take
                self.size += take
                pos += take
                if not self.left:
                    self._done(self.what)
            else:
                if self.starttls and not self.buf and data[pos] == 0x16:
                    raise WireError("the client started TLS (STARTTLS): the rest is encrypted", "tls")
                newline = data.find(b"\n", pos)
                if newline < 0:
                    self.buf += data[pos:]
                    if len(self.buf) > MAX_LINE:
                        raise WireError(f"a command line longer than {MAX_LINE} bytes", "protocol-error")
                    break
                line = bytes(self.buf) + data[pos:newline + 1]
                self.buf.clear()
                pos = newline + 1
                if len(line) > MAX_LINE:
                    raise WireError(f"a command line longer than {MAX_LINE} bytes", "protocol-error")
                self._command(line)
        return len(self.keep) - before

    def _done(self, summary: str) -> None:
        self.keep.append(Reply(self.size, summary, {}))
        self.size = 0
        self.mode = "commands"

    def _command(self, line: bytes) -> None:
        text = line.rstrip(b"\r\n").decode("utf-8", "replace")
        words = text.split()
        verb = words[0].upper() if words else ""
        self.size += len(line)
        self.starttls = verb == "STARTTLS"
        if self.auth and verb not in VERBS:
            return self._done("(AUTH data)")
        self.auth = verb == "AUTH"
        if verb == "AUTH":
            return self._done(" ".join(words[:2]) + (" (hidden)" if len(words) > 2 else ""))
        if verb == "BDAT":
            if len(words) < 2 or not words[1].isdigit() or len(words[1]) > 18:
                raise WireError(f"BDAT without a chunk size: {text[:60]!r}", "protocol-error")
            self.left = int(words[1])
            self.what = f"{_shown(text)} ({self.left:,} bytes)"
            if self.left:
                self.mode = "bdat"
                return None
            return self._done(self.what)
        self._done(_shown(text))
        if verb == "DATA":
            self.mode, self.line = "data", b""
        return None

    def _data(self, data: bytes, pos: int) -> int:
        """The message after DATA, up to a line that is a lone ``.``: only each line's first
        bytes are looked at (is it the end?), nothing is kept."""
        end = len(data)
        while pos < end:
            newline = data.find(b"\n", pos)
            stop = end if newline < 0 else newline + 1
            self.size += stop - pos
            if len(self.line) < 3:
                self.line += data[pos:min(stop, pos + 3 - len(self.line))]
            pos = stop
            if newline < 0:
                break
            if self.line in (b".\r\n", b".\n"):
                self._done(f"(message, {self.size:,} bytes)")
                return pos
            self.line = b""
        return pos


class SmtpReplyStream(Parser):
    """A server's side for ``proxy --decode``: one Reply per SMTP reply, multi-line ones whole
    (``250 test.invalid Hello localhost (+8 lines)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.keep = []
        self.replies = SmtpReplies(collect=True)

    @property
    def buffered(self) -> int:
        return self.replies.buffered

    def feed(self, data: bytes) -> int:
        done = self.replies.feed(data)
        for code, _, size, lines in done:
            more = f" (+{len(lines) - 1} lines)" if len(lines) > 1 else ""
            self.keep.append(Reply(size, _shown(f"{code} {lines[0]}".rstrip()) + more,
                                   {"code": code, "lines": len(lines)}))
        return len(done)
