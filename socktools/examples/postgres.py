"""A socktools exchange plug-in for PostgreSQL: it logs in, then measures simple queries.

Load a PostgreSQL server with it (a user with a password; ``SELECT 1`` by default)::

    PGPASSWORD=s3cret socktools flood --port 5432 --protocol socktools.examples.postgres:Postgres \\
        --protocol-option user=bob --protocol-option database=bench --command 'SELECT 1'

Each connection first holds the opening conversation (:class:`PostgresOpening`, sans-I/O):
the startup message, then whatever login the server asks for -- none (``trust``), a
cleartext password, md5, or SCRAM-SHA-256 (RFC 5802 and 7677, the server's signature
checked) -- through ParameterStatus and BackendKeyData up to ReadyForQuery.  A refusal
(``FATAL 28P01 password authentication failed for user "bob"``) ends the connection with the
server's own words.  Then every request is a simple Query; the parser counts one reply per
ReadyForQuery and turns an ErrorResponse into a ``server-error`` failure named by its
SQLSTATE.  Options (``--protocol-option KEY=VALUE``) are this class's keyword arguments;
``user``, ``database`` and ``password`` fall back to libpq's PGUSER, PGDATABASE and
PGPASSWORD, so pgbench and socktools share one environment.

The wire format is PostgreSQL's protocol 3.0 (its docs, "Frontend/Backend Protocol",
"Message Formats"): a type byte, then a 4-byte length that counts itself, then the body.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import os
import stringprep
import unicodedata
from typing import Optional

from socktools.wire import Failure, Parser, Reply, WireError, WireProtocol
from socktools.wire.base import WholeReplies, WHOLE_REPLY_BYTES
from socktools.wire.opening import Opening, OpeningFailed

__all__ = ["Postgres", "PostgresOpening", "PostgresParser", "ScramSha256", "md5_password", "saslprep",
           "PostgresRequests", "PostgresResponses"]

#: The protocol version of the startup message: 3.0, what every server since 7.4 speaks.
PROTOCOL_3_0 = 196608
#: Longest message of a type that is never long (authentication requests, ParameterStatus,
#: ReadyForQuery...): libpq refuses the same types past 30000 bytes (fe-protocol3.c), so a
#: length past it is a peer that is not PostgreSQL, or one that lies to make us buffer.
MAX_SHORT_MESSAGE = 30000
#: Longest message of any type: the server builds each in one allocation, capped at
#: MaxAllocSize (1 GiB - 1).  A length of 2**31 is refused at once, before any of it is read.
MAX_MESSAGE = (1 << 30) - 1
#: Types that may be long (libpq's VALID_LONG_MESSAGE_TYPE): rows, their description, COPY
#: data, errors and notices (which quote the statement), notifications.
LONG_TYPES = frozenset(b"TDdVENA")
#: Bytes of one message's body the parser keeps; the rest of a longer one (a wide row, an
#: error that quotes a huge statement) is skipped as it arrives, so a reply costs at most
#: this much memory whatever its size.  64 KiB holds every error and notice text in full.
MAX_BODY = 64 << 10
#: SCRAM iterations a server may ask for.  PostgreSQL uses 4096 (its scram_iterations
#: default); PBKDF2 costs about a microsecond per iteration here, so 2**31 from a hostile
#: server would hold a worker for half an hour.  A million is 250 times the default and
#: about a second, once: the salted password is computed once per salt and remembered.
MAX_SCRAM_ITERATIONS = 1_000_000
#: Salted passwords remembered per protocol object (one per user and salt: a flood logs in
#: as one user, so one entry; a few more cover a server that changed its salt mid-run).
SALTED_CACHE = 8
#: ParameterStatus values kept from a login: PostgreSQL 15 reports 14 (server_version,
#: client_encoding, TimeZone...); a server that sends thousands costs no more memory than this.
MAX_PARAMETERS = 64
#: Bytes of random client nonce (libpq uses 18, base64 to 24 characters).
NONCE_BYTES = 18

#: Authentication request codes (message 'R') and the login each names.
AUTH_NAMES = {0: "ok", 2: "KerberosV5", 3: "cleartext password", 5: "md5", 7: "GSSAPI", 8: "GSSAPI",
              9: "SSPI", 10: "SASL", 11: "SASL", 12: "SASL"}


def _message(kind: bytes, body: bytes) -> bytes:
    return kind + (len(body) + 4).to_bytes(4, "big") + body


def _header(buf, pos: int, long_types: frozenset = LONG_TYPES) -> tuple:
    """The type and length of the message at ``buf[pos:]`` (5 bytes there); WireError if the
    length cannot be PostgreSQL's (``long_types``: the server's types that may be long)."""
    kind = buf[pos]
    length = int.from_bytes(buf[pos + 1:pos + 5], "big")
    limit = MAX_MESSAGE if kind in long_types else MAX_SHORT_MESSAGE
    if length < 4 or length > limit:
        raise WireError(f"a message {chr(kind)!r} of {length} bytes: not PostgreSQL "
                        f"(at most {limit} for this type)", "protocol-error")
    return kind, length


def error_words(body: bytes) -> tuple:
    """An ErrorResponse's (or NoticeResponse's) body as ``(sqlstate, "FATAL 28P01 message")``."""
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields.setdefault(part[:1], part[1:].decode("utf-8", "replace"))
    severity = fields.get(b"V") or fields.get(b"S") or "ERROR"
    code = fields.get(b"C", "?????")
    return code, f"{severity} {code} {fields.get(b'M', '(no message)')}"


def md5_password(user: str, password: str, salt: bytes) -> bytes:
    """The md5 login's answer: ``"md5" + md5(md5(password + user) + salt)``, hex digests."""
    inner = hashlib.md5(password.encode() + user.encode()).hexdigest().encode()
    return b"md5" + hashlib.md5(inner + salt).hexdigest().encode()


def saslprep(password: str) -> str:
    """RFC 4013 SASLprep, as PostgreSQL applies it to SCRAM passwords; like the server, a
    password it prohibits is used as it is (so the two sides still agree)."""
    mapped = "".join(" " if stringprep.in_table_c12(c) else c for c in password
                     if not stringprep.in_table_b1(c))
    text = unicodedata.normalize("NFKC", mapped)
    prohibited = (stringprep.in_table_c12, stringprep.in_table_c21_c22, stringprep.in_table_c3,
                  stringprep.in_table_c4, stringprep.in_table_c5, stringprep.in_table_c6,
                  stringprep.in_table_c7, stringprep.in_table_c8, stringprep.in_table_c9,
                  stringprep.in_table_a1)
    if any(check(c) for c in text for check in prohibited):
        return password
    rand = [stringprep.in_table_d1(c) for c in text]
    if any(rand) and (any(stringprep.in_table_d2(c) for c in text) or not (rand[0] and rand[-1])):
        return password
    return text


class ScramSha256:
    """The client side of SCRAM-SHA-256 without channel binding (RFC 5802, RFC 7677), sans-I/O:
    ``first()``, then ``final(server_first)``, then ``verify(server_final)``.  ``salted`` is a
    dict remembering PBKDF2's result per (salt, iterations), shared by connections."""

    def __init__(self, password: str, nonce: Optional[str] = None, user: str = "",
                 salted: Optional[dict] = None) -> None:
        self.password = saslprep(password).encode()
        self.nonce = nonce or base64.b64encode(os.urandom(NONCE_BYTES)).decode()
        self.first_bare = f"n={user},r={self.nonce}"
        self.salted = {} if salted is None else salted
        self.server_signature = b""

    def first(self) -> bytes:
        return ("n,," + self.first_bare).encode()

    def final(self, server_first: bytes) -> bytes:
        try:
            text = server_first.decode("ascii")
            attrs = dict(part.split("=", 1) for part in text.split(","))
            nonce, salt, iterations = attrs["r"], base64.b64decode(attrs["s"], validate=True), int(attrs["i"])
        except (ValueError, KeyError, UnicodeDecodeError) as exc:
            raise WireError(f"a SCRAM server-first-message that cannot be read ({exc}): "
                            f"{server_first[:60]!r}", "protocol-error") from None
        if not nonce.startswith(self.nonce) or len(nonce) == len(self.nonce):
            raise WireError("the server's SCRAM nonce does not extend ours", "protocol-error")
        if not 1 <= iterations <= MAX_SCRAM_ITERATIONS:
            raise WireError(f"the server asks for {iterations} SCRAM iterations (at most "
                            f"{MAX_SCRAM_ITERATIONS})", "protocol-error")
        key = (self.password, salt, iterations)
        salted = self.salted.get(key)
        if salted is None:
            salted = hashlib.pbkdf2_hmac("sha256", self.password, salt, iterations)
            if len(self.salted) >= SALTED_CACHE:
                self.salted.clear()
            self.salted[key] = salted
        without_proof = f"c=biws,r={nonce}"          # biws: base64 of "n,,", no channel binding
        auth = f"{self.first_bare},{text},{without_proof}".encode()
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        signature = hmac.digest(hashlib.sha256(client_key).digest(), auth, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        self.server_signature = hmac.digest(hmac.digest(salted, b"Server Key", "sha256"), auth, "sha256")
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> None:
        """Raise OpeningFailed unless the server proved it knows the password's verifier."""
        text = server_final.decode("ascii", "replace")
        if text.startswith("e="):
            raise OpeningFailed(f"SCRAM error {text[2:]}", "SCRAM-SHA-256")
        if not text.startswith("v=") or not hmac.compare_digest(text[2:].split(",")[0].encode(),
                                                                  base64.b64encode(self.server_signature)):
            raise OpeningFailed("the server's SCRAM signature is wrong: it does not hold this password's "
                                "verifier", "SCRAM-SHA-256")


class PostgresOpening(Opening):
    """Startup and login, up to the first ReadyForQuery (see the module's docstring)."""

    done = False

    def __init__(self, user: str, database: str, password: Optional[str], options: tuple = (),
                 salted: Optional[dict] = None, nonce: Optional[str] = None) -> None:
        self.user, self.database, self.password = user, database, password
        self.salted, self.nonce = salted, nonce
        params = b"".join(k.encode() + b"\0" + v.encode() + b"\0"
                          for k, v in (("user", user), ("database", database), *options))
        body = PROTOCOL_3_0.to_bytes(4, "big") + params + b"\0"
        self.out = bytearray((len(body) + 4).to_bytes(4, "big") + body)   # the one untyped message
        self.buf = bytearray()
        self.step = "startup"
        self.scram: Optional[ScramSha256] = None
        self.parameters: dict = {}
        self.rest = b""

    def data_to_send(self) -> bytes:
        out, self.out = bytes(self.out), bytearray()
        return out

    def leftover(self) -> bytes:
        return self.rest

    def describe(self) -> str:
        return f"startup, login as {self.user} to database {self.database}"

    def receive_data(self, data: bytes) -> None:
        if self.done:
            self.rest += data
            return
        buf = self.buf
        buf += data
        pos = 0
        while len(buf) - pos >= 5:
            kind, length = _header(buf, pos)
            if length > MAX_SHORT_MESSAGE:     # an error text this long is not a login's
                raise WireError(f"a {length}-byte message {chr(kind)!r} during the login "
                                f"(at most {MAX_SHORT_MESSAGE})", "protocol-error")
            end = pos + 1 + length
            if len(buf) < end:
                break
            self._message(kind, bytes(buf[pos + 5:end]))
            pos = end
            if self.done:
                self.rest = bytes(buf[pos:])
                pos = len(buf)
                break
        del buf[:pos]

    def _message(self, kind: int, body: bytes) -> None:
        if kind == 0x52:                                   # 'R': an authentication request
            self._auth(body)
        elif kind == 0x45:                                 # 'E': refused, in the server's words
            raise OpeningFailed(error_words(body)[1], self.step)
        elif kind == 0x53:                                 # 'S': ParameterStatus
            name, _, value = body.rstrip(b"\0").partition(b"\0")
            if len(self.parameters) < MAX_PARAMETERS:
                self.parameters[name.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
        elif kind == 0x5A:                                 # 'Z': ReadyForQuery
            if self.step != "session":
                raise WireError("ReadyForQuery before the login ended", "protocol-error")
            self.done = True
        elif kind in (0x4B, 0x4E, 0x76):                   # BackendKeyData, a notice, NegotiateProtocolVersion
            pass
        else:
            raise WireError(f"an unexpected message {chr(kind)!r} during the login", "protocol-error")

    def _auth(self, body: bytes) -> None:
        if len(body) < 4:
            raise WireError("an authentication request without its code", "protocol-error")
        code = int.from_bytes(body[:4], "big")
        rest = body[4:]
        if code == 0:
            if self.scram is not None and self.step != "SCRAM-SHA-256 verified":
                # libpq refuses this too: a server that skips SCRAM's last message never
                # proved it holds the password's verifier (it may be anyone's).
                raise OpeningFailed("the server said AuthenticationOk without proving it knows the "
                                    "password (no SCRAM final message)", "SCRAM-SHA-256")
            self.step = "session"
        elif code == 3:
            self.out += _message(b"p", self._password("password").encode() + b"\0")
        elif code == 5:
            if len(rest) != 4:
                raise WireError("an md5 request without its 4-byte salt", "protocol-error")
            self.out += _message(b"p", md5_password(self.user, self._password("md5"), rest) + b"\0")
        elif code == 10:
            mechanisms = rest.split(b"\0")
            if b"SCRAM-SHA-256" not in mechanisms:
                raise OpeningFailed("the server offers only SASL "
                                    f"{', '.join(m.decode('ascii', 'replace') for m in mechanisms if m)}",
                                    "SCRAM-SHA-256")
            self.scram = ScramSha256(self._password("SCRAM-SHA-256"), self.nonce, salted=self.salted)
            first = self.scram.first()
            self.out += _message(b"p", b"SCRAM-SHA-256\0" + len(first).to_bytes(4, "big") + first)
        elif code == 11 and self.scram is not None and not self.scram.server_signature:
            self.out += _message(b"p", self.scram.final(rest))
        elif code == 12 and self.scram is not None and self.scram.server_signature:
            self.scram.verify(rest)
            self.step = "SCRAM-SHA-256 verified"
        elif code in AUTH_NAMES and code not in (10, 11, 12):
            raise OpeningFailed(f"the server asks for a {AUTH_NAMES[code]} login ({code}), which this plug-in "
                                "does not do", "startup")
        else:
            raise WireError(f"an authentication request {code} out of place or unknown", "protocol-error")

    def _password(self, step: str) -> str:
        self.step = step
        if self.password is None:
            raise OpeningFailed(f"the server asks for a password ({step}) and none was given "
                                "(--protocol-option password=... or PGPASSWORD)", step)
        return self.password


class Postgres(WireProtocol):
    """Simple queries after a login.  ``--command`` texts are the queries (rotated; ``{seq}``
    and ``{conn}`` are replaced); options: ``user``, ``database``, ``password``,
    ``application_name``."""

    name = "postgres"

    def __init__(self, commands: tuple, user: Optional[str] = None, database: Optional[str] = None,
                 password: Optional[str] = None, application_name: str = "socktools") -> None:
        self.queries = tuple(commands) or ("SELECT 1",)
        for q in self.queries:
            if "\0" in q:
                raise ValueError(f"{q!r}: a query cannot hold a NUL byte")
        self.user = user or os.environ.get("PGUSER") or getpass.getuser()
        self.database = database or os.environ.get("PGDATABASE") or self.user
        self.password = password if password is not None else os.environ.get("PGPASSWORD")
        self.options = (("application_name", application_name),) if application_name else ()
        self.salted: dict = {}           # PBKDF2 results, shared by this object's connections
        self.whole = WholeReplies()
        rendered = [self._render(q, 0, 0) for q in self.queries]
        self.shared_requests = not any("{conn}" in q for q in self.queries)
        if len(self.queries) == 1 and "{seq}" not in self.queries[0] and self.shared_requests:
            self.fixed_request = rendered[0]

    @staticmethod
    def _render(query: str, seq: int, conn: int) -> bytes:
        text = query.replace("{seq}", str(seq)).replace("{conn}", str(conn))
        return _message(b"Q", text.encode() + b"\0")

    def request(self, seq: int, conn: int) -> bytes:
        return self._render(self.queries[seq % len(self.queries)], seq, conn)

    def opening(self) -> PostgresOpening:
        return PostgresOpening(self.user, self.database, self.password, self.options, self.salted)

    def parser(self) -> "PostgresParser":
        return PostgresParser(self.whole)

    def stream_parser(self, role: str) -> Parser:
        """``proxy --decode``: a client's messages (``request``) or a server's (``response``),
        one Reply per answer a client waits for (see :class:`PostgresResponses`)."""
        return PostgresRequests() if role == "request" else PostgresResponses()

    def describe(self) -> str:
        return f"postgres {self.user}@{self.database}, " + " / ".join(f"`{q}`" for q in self.queries)


class PostgresParser(Parser):
    """Replies to simple queries: every message up to ReadyForQuery is one reply."""

    def __init__(self, whole: Optional[WholeReplies] = None) -> None:
        super().__init__()
        self.buf = bytearray()
        self.whole = WholeReplies() if whole is None else whole
        self.skip = 0               # bytes still to come of a message longer than MAX_BODY
        self.in_reply = 0           # bytes of the reply in progress already consumed
        self.error: Optional[tuple] = None
        self.rows = 0
        self.tag = ""
        self.first_row: Optional[list] = None

    @property
    def buffered(self) -> int:
        return self.in_reply + len(self.buf) + self.skip

    def feed(self, data: bytes) -> int:
        buf = self.buf
        if not buf and not self.in_reply and not self.skip:
            # One whole reply in one read, seen before: a set lookup (the hot path).
            if len(data) <= WHOLE_REPLY_BYTES and self.keep is None and data in self.whole:
                return 1
            fresh = True
        else:
            fresh = False
        if self.skip:
            cut = min(self.skip, len(data))
            self.skip -= cut
            self.in_reply += cut
            data = data[cut:]
        buf += data
        n = 0
        pos = 0
        while len(buf) - pos >= 5:
            kind, length = _header(buf, pos)
            body_end = pos + 1 + min(length, 4 + MAX_BODY)
            if len(buf) < body_end:
                break
            body = bytes(buf[pos + 5:body_end])
            self.skip = pos + 1 + length - body_end
            if self.skip:                                 # the rest of a long message: not kept
                available = len(buf) - body_end
                cut = min(self.skip, available)
                self.skip -= cut
                body_end += cut
            self.in_reply += body_end - pos
            pos = body_end
            if kind == 0x5A:                              # 'Z': ReadyForQuery ends the reply
                n += 1
                self._reply_done()
            elif kind == 0x44:                            # 'D': a row
                self.rows += 1
                if self.keep is not None and self.first_row is None:
                    self.first_row = _row_values(body)
            elif kind == 0x45:                            # 'E': the query failed
                if self.error is None:
                    self.error = error_words(body) + (body[:64],)
            elif kind == 0x43:                            # 'C': CommandComplete
                self.tag = body.rstrip(b"\0").decode("utf-8", "replace")
            elif kind in (0x47, 0x57):                    # COPY FROM STDIN: the server waits for data
                raise WireError("the query started COPY FROM STDIN, which this plug-in cannot feed",
                                "protocol-error")
            elif kind not in _QUIET:
                raise WireError(f"an unexpected message {chr(kind)!r} in a query's reply", "protocol-error")
        if pos:
            del buf[:pos]
        if fresh and n == 1 and not buf and not self.skip and not self.failures and self.keep is None:
            self.whole.learn(data)
        return n

    def eof(self) -> int:
        """The server closed: after an error it sent (a FATAL: the session was ended, the
        server shuts down) the close is named by the server's words."""
        if self.error is not None:
            raise WireError(f"the server closed the connection after: {self.error[1]}", "truncated")
        return super().eof()

    def _reply_done(self) -> None:
        if self.error is not None:
            code, words, sample = self.error
            self.failures.append(Failure("server-error", words, sample))
            summary = words
        else:
            summary = self.tag or "(empty query)"
            if self.first_row is not None:
                summary += " · " + " | ".join(self.first_row)
        if self.keep is not None:
            self.keep.append(Reply(self.in_reply, summary, {"tag": self.tag, "rows": self.rows,
                                                            "first_row": self.first_row,
                                                            "sqlstate": self.error and self.error[0]}))
        self.in_reply = 0
        self.error = None
        self.rows = 0
        self.tag = ""
        self.first_row = None


#: Messages a simple query's reply may hold that change no count: RowDescription, an empty
#: query, a notice, ParameterStatus (after SET), a notification, COPY TO STDOUT's messages.
_QUIET = frozenset(b"TINSAHdc")
#: Values of a row's first columns shown by ``request`` (a row of a thousand columns stays one line).
SHOWN_VALUES = 8


def _row_values(body: bytes) -> list:
    """The first values of a DataRow (text format) as strings; NULL as ``NULL``."""
    values = []
    count = int.from_bytes(body[:2], "big")
    pos = 2
    for _ in range(min(count, SHOWN_VALUES)):
        if len(body) < pos + 4:
            break
        size = int.from_bytes(body[pos:pos + 4], "big", signed=True)
        pos += 4
        values.append("NULL" if size < 0 else body[pos:pos + size].decode("utf-8", "replace")[:80])
        pos += max(size, 0)
    return values



# ------------------------------------------------------------------ stream decoders (proxy --decode)
#: Start-up messages (the first a client sends: no type byte) by their code.
SSL_REQUEST, GSSENC_REQUEST, CANCEL_REQUEST = 80877103, 80877104, 80877102
#: Longest start-up message: the server refuses a longer one (postmaster.c's
#: MAX_STARTUP_PACKET_LENGTH), so past it the client is not speaking PostgreSQL.
MAX_STARTUP = 10000
#: A client's message types that may be long (the server reads them with its large-message
#: limit): Query, Parse, Bind, FunctionCall, CopyData, and a password or SASL token.
FRONTEND_LONG = frozenset(b"QPBFdp")
#: A client's message types (protocol 3.0, "Message Formats").
FRONTEND_NAMES = {"Q": "Query", "P": "Parse", "B": "Bind", "E": "Execute", "D": "Describe", "C": "Close",
                  "S": "Sync", "H": "Flush", "F": "FunctionCall", "d": "CopyData", "c": "CopyDone",
                  "f": "CopyFail", "p": "PasswordMessage", "X": "Terminate"}
#: A server's message types; the authentication requests by their code.
BACKEND_NAMES = {"R": "Authentication", "E": "ErrorResponse", "S": "ParameterStatus", "K": "BackendKeyData",
                 "Z": "ReadyForQuery", "T": "RowDescription", "D": "DataRow", "C": "CommandComplete",
                 "I": "EmptyQueryResponse", "N": "NoticeResponse", "A": "NotificationResponse",
                 "1": "ParseComplete", "2": "BindComplete", "3": "CloseComplete", "n": "NoData",
                 "s": "PortalSuspended", "t": "ParameterDescription", "G": "CopyInResponse",
                 "H": "CopyOutResponse", "W": "CopyBothResponse", "d": "CopyData", "c": "CopyDone",
                 "V": "FunctionCallResponse", "v": "NegotiateProtocolVersion"}
AUTH_REQUESTS = {0: "AuthenticationOk", 2: "AuthenticationKerberosV5", 3: "AuthenticationCleartextPassword",
                 5: "AuthenticationMD5Password", 7: "AuthenticationGSS", 8: "AuthenticationGSSContinue",
                 9: "AuthenticationSSPI", 10: "AuthenticationSASL", 11: "AuthenticationSASLContinue",
                 12: "AuthenticationSASLFinal"}
#: Messages named in one summary before the rest are only counted: a reply of a million rows
#: is "DataRow ×1000000" (runs are counted), one whose messages keep changing stays one line.
MAX_PARTS = 12
#: Characters of a query shown (a screen line; the statement's text is the client's business).
QUERY_CHARS = 80


class _Messages:
    """One direction's messages, one at a time: ``next()`` gives ``(type, body, size)`` (type
    None for a start-up message, while ``untyped``) or None for "need more".  Of a body past
    MAX_BODY only the first MAX_BODY bytes are kept and the rest is skipped as it arrives, so
    a message of any size costs at most that much memory."""

    def __init__(self, long_types: frozenset, untyped: bool = False) -> None:
        self.long_types = long_types
        self.untyped = untyped
        self.buf = bytearray()
        self.pos = 0                    # start of the unread bytes in buf
        self.skip = 0                   # bytes still to come of the message held
        self.held: Optional[tuple] = None

    @property
    def buffered(self) -> int:
        return len(self.buf) - self.pos + (self.held[2] - self.skip if self.held else 0)

    def receive(self, data: bytes) -> None:
        if self.skip:
            cut = min(self.skip, len(data))
            self.skip -= cut
            data = data[cut:]
        if self.pos:
            del self.buf[:self.pos]
            self.pos = 0
        self.buf += data

    def peek(self) -> Optional[int]:
        return self.buf[self.pos] if self.held is None and self.pos < len(self.buf) else None

    def take(self, n: int) -> None:
        self.pos += n

    def next(self) -> Optional[tuple]:
        if self.held is not None:
            if self.skip:
                return None
            out, self.held = self.held, None
            return out
        buf, pos = self.buf, self.pos
        if len(buf) == pos:
            return None
        if self.untyped:
            if buf[pos] == 0x16:        # a TLS record where a start-up message belongs
                raise WireError("the client started TLS (after SSLRequest): the rest is encrypted", "tls")
            if len(buf) - pos < 8:
                return None
            kind, head = None, 4
            size = int.from_bytes(buf[pos:pos + 4], "big")
            if not 8 <= size <= MAX_STARTUP:
                raise WireError(f"a startup message of {size} bytes: not PostgreSQL (at most {MAX_STARTUP})",
                                "protocol-error")
        else:
            if len(buf) - pos < 5:
                return None
            kind, length = _header(buf, pos, self.long_types)
            head, size = 5, length + 1
        kept = min(size - head, MAX_BODY)
        if len(buf) - pos < head + kept:
            return None
        body = bytes(buf[pos + head:pos + head + kept])
        rest = size - head - kept
        cut = min(rest, len(buf) - pos - head - kept)
        self.pos = pos + head + kept + cut
        self.skip = rest - cut
        if self.skip:
            self.held = (kind, body, size)
            return None
        return kind, body, size


class _Parts:
    """The messages of one request or reply named in order, runs counted ("DataRow ×3")."""

    def __init__(self) -> None:
        self.parts: list = []
        self.more = 0

    def add(self, name: str) -> None:
        if self.more:                            # past the cap every message is only counted
            self.more += 1
        elif self.parts and self.parts[-1][0] == name:
            self.parts[-1][1] += 1
        elif len(self.parts) < MAX_PARTS:
            self.parts.append([name, 1])
        else:
            self.more += 1

    def close(self, last: str) -> str:
        words = [name if count == 1 else f"{name} ×{count}" for name, count in self.parts]
        if self.more:
            words.append(f"+{self.more} more")
        self.parts, self.more = [], 0
        return " · ".join(words + [last])


def _quoted(raw: bytes) -> str:
    text = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
    return "'" + (text if len(text) <= QUERY_CHARS else text[:QUERY_CHARS - 1] + "…") + "'"


class PostgresRequests(Parser):
    """A client's messages for ``proxy --decode``: one Reply per message the server answers --
    a start-up message, a password or SASL token (never shown), a Query, an extended query's
    messages up to its Sync, COPY data up to CopyDone; Terminate is answered by nobody."""

    def __init__(self) -> None:
        super().__init__()
        self.keep = []
        self.stream = _Messages(FRONTEND_LONG, untyped=True)
        self.parts = _Parts()
        self.size = 0                   # bytes of the request in progress
        self.sasl = False               # a SASL exchange began: the next tokens are its

    @property
    def buffered(self) -> int:
        return self.stream.buffered + self.size

    def feed(self, data: bytes) -> int:
        self.stream.receive(data)
        n = 0
        while True:
            message = self.stream.next()
            if message is None:
                return n
            kind, body, size = message
            self.size += size
            summary = self._untyped(body) if kind is None else self._typed(chr(kind), body)
            if summary is not None:
                self.keep.append(Reply(self.size, summary, {}))
                self.size = 0
                n += 1

    def _untyped(self, body: bytes) -> Optional[str]:
        code = int.from_bytes(body[:4], "big")
        if code == SSL_REQUEST:
            return "SSLRequest"
        if code == GSSENC_REQUEST:
            return "GSSENCRequest"
        if code == CANCEL_REQUEST:              # answered by the server's close alone
            return None
        if code >> 16 != 3:
            raise WireError(f"a startup message for protocol {code >> 16}.{code & 0xFFFF}: not PostgreSQL 3",
                            "protocol-error")
        self.stream.untyped = False
        fields = body[4:].split(b"\0")
        pairs = [f"{k.decode('utf-8', 'replace')}={v.decode('utf-8', 'replace')}"
                 for k, v in zip(fields[::2], fields[1::2]) if k][:SHOWN_VALUES]
        return " ".join(["StartupMessage", *pairs])

    def _typed(self, kind: str, body: bytes) -> Optional[str]:
        name = FRONTEND_NAMES.get(kind)
        if name is None:
            raise WireError(f"an unknown client message {kind!r}: not PostgreSQL", "protocol-error")
        if kind == "Q":
            return self.parts.close(f"Query {_quoted(body)}")
        if kind == "p":
            mechanism, _, rest = body.partition(b"\0")
            if not self.sasl and mechanism.startswith(b"SCRAM-") and len(rest) >= 4:
                self.sasl = True
                return f"SASLInitialResponse {mechanism.decode('ascii', 'replace')}"
            return "SASLResponse" if self.sasl else "PasswordMessage"
        if kind in "ScfF":                     # Sync, CopyDone, CopyFail, FunctionCall: answered
            return self.parts.close(name)
        if kind == "X":
            return None
        if kind == "P":                        # Parse: the statement's name, then its text
            name = f"Parse {_quoted(body.partition(bytes(1))[2])}"
        self.parts.add(name)
        return None


class PostgresResponses(Parser):
    """A server's messages for ``proxy --decode``: one Reply per answer a client waits for --
    up to ReadyForQuery; during the login also an authentication request that asks the client
    for something, and an ErrorResponse (the server then closes); CopyInResponse (the client
    then sends data).  The one-byte answer to SSLRequest/GSSENCRequest is a reply of its own.
    The summary names the messages in order ("RowDescription · DataRow ×3 · CommandComplete
    SELECT 3 · ReadyForQuery I")."""

    def __init__(self) -> None:
        super().__init__()
        self.keep = []
        self.stream = _Messages(LONG_TYPES)
        self.parts = _Parts()
        self.started = False            # a typed message came: no more one-byte answers
        self.session = False            # the login ended (a ReadyForQuery came)
        self.size = 0
        self.rows = 0
        self.tag = ""
        self.sqlstate: Optional[str] = None

    @property
    def buffered(self) -> int:
        return self.stream.buffered + self.size

    def feed(self, data: bytes) -> int:
        stream = self.stream
        stream.receive(data)
        n = 0
        while True:
            if not self.started:
                first = stream.peek()
                if first is None:
                    return n
                if first in b"SG":    # 'S'/'G' here: encryption accepted (never a first message)
                    how = "TLS (SSLRequest)" if first == 0x53 else "GSSAPI encryption (GSSENCRequest)"
                    raise WireError(f"the server accepted {how}: the rest is encrypted", "tls")
                if first == 0x4E:     # 'N': refused (a notice never comes before the login)
                    stream.take(1)
                    self.keep.append(Reply(1, "N (no encryption)", {}))
                    n += 1
                    continue
                self.started = True
            message = stream.next()
            if message is None:
                return n
            kind, body, size = message
            self.size += size
            last = self._message(chr(kind), body)
            if last is not None:
                self.keep.append(Reply(self.size, self.parts.close(last),
                                       {"rows": self.rows, "tag": self.tag, "sqlstate": self.sqlstate}))
                self.size = self.rows = 0
                self.tag, self.sqlstate = "", None
                n += 1

    def _message(self, kind: str, body: bytes) -> Optional[str]:
        """The message's name if it ends a reply, else None (it is added to the reply's parts)."""
        name = BACKEND_NAMES.get(kind)
        if name is None:
            raise WireError(f"an unknown server message {kind!r}: not PostgreSQL", "protocol-error")
        if kind == "R":
            code = int.from_bytes(body[:4], "big") if len(body) >= 4 else -1
            name = AUTH_REQUESTS.get(code, f"Authentication {code}")
            if code == 10:
                name += " " + ",".join(m.decode("ascii", "replace") for m in body[4:].split(b"\0") if m)
            if code in (0, 12):                # the server goes on without the client
                self.parts.add(name)
                return None
            return name
        if kind == "Z":
            self.session = True
            return f"ReadyForQuery {body[:1].decode('ascii', 'replace')}"
        if kind == "E":
            self.sqlstate, words = error_words(body)
            name = f"ErrorResponse {words}"
            if not self.session:               # a login refused: the server closes after it
                return name
        elif kind in "GW":
            return name
        elif kind == "D":
            self.rows += 1
        elif kind == "C":
            self.tag = body.rstrip(b"\0").decode("utf-8", "replace")
            name = f"CommandComplete {self.tag}"
        self.parts.add(name)
        return None
