"""What socket errors mean and what to do about them (docs/explain.md).

This table is the one source of truth: ``request``, ``serve``, ``flood`` and
``explain`` all print these words.  Pure data and lookups, no I/O.
"""

from __future__ import annotations

import difflib
import errno
import os
import re
import socket
import sys
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:    # (imported where a TLS failure is named: not on every command's start-up)
    import ssl

__all__ = ["Explanation", "EXPLANATIONS", "lookup", "lookup_text", "suggest", "explain_exception",
           "errno_name", "one_line", "PEER_CLOSED", "PROTOCOL_ERROR", "TIMEOUT", "NO_REPLY", "DATAGRAM_LOST",
           "OptionError", "SOCKET", "CONNECT", "HANDSHAKE", "SEND", "RECV", "INTERNAL", "PHASES", "OPEN", "OPENING_REFUSED", "tls_key",
           "TLS_PLAINTEXT_TO_TLS",
           "TLS_TO_PLAINTEXT", "tls_hint"]

#: Where a connection failed: the I/O core sets ``conn.failed_in`` to one of
#: these and every command tallies and reports failures as (phase, errno name).
#: They live here, below the core, so a report can name them without importing it.
SOCKET = "socket"
CONNECT = "connect"
#: The TLS handshake, after the TCP connect (or accept) and before ``connection_made``.
HANDSHAKE = "handshake"
SEND = "send"
RECV = "recv"
#: A connection ended by an exception from its protocol's own code (a bug), not the kernel.
INTERNAL = "internal"
#: The opening conversation (a greeting, a login: flood's --greeting, --setup, a plug-in's).
OPEN = "open"
PHASES = (SOCKET, CONNECT, HANDSHAKE, SEND, RECV, INTERNAL, OPEN)


class OptionError(ValueError):
    """A config value that cannot work.  ``option`` is the field's name, which is also the
    CLI option's (``rcvbuf`` is ``--rcvbuf``): the CLI turns this into a usage error."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


@dataclass(frozen=True)
class Explanation:
    name: str            # errno name (ECONNREFUSED) or a socktools pseudo-error (peer-closed)
    number: int | None   # errno number on this platform, None for pseudo-errors
    exception: str       # the Python exception it surfaces as
    meaning: str         # one line: what the kernel is telling you
    causes: tuple[str, ...]
    fix: str             # one line: what to try first

    def one_line(self) -> str:
        return f"{self.meaning}; {self.fix}"


def _e(name, exception, meaning, causes, fix):
    return Explanation(name, getattr(errno, name, None), exception, meaning, tuple(causes), fix)


# Pseudo-errors: failures that are not an errno but that a tally must name.
PEER_CLOSED = "peer-closed"
PROTOCOL_ERROR = "protocol-error"
TIMEOUT = "timeout"
NO_REPLY = "no-reply"
OPENING_REFUSED = "opening-refused"
#: flood --udp: a datagram with no reply within --reply-timeout.
DATAGRAM_LOST = "datagram-lost"

_TABLE = [
    _e("EAGAIN", "BlockingIOError",
       "a nonblocking call would block: the send buffer is full or there is nothing to read yet",
       ["the peer is not reading, so its receive queue and then our send queue filled up",
        "recv() on a nonblocking socket with no data queued"],
       "wait for the selector to report the socket writable/readable (EVENT_WRITE, keep an out-buffer)"),
    _e("EINPROGRESS", "BlockingIOError",
       "a nonblocking connect() has started and will finish later",
       ["normal for connect() on a nonblocking socket"],
       "wait for EVENT_WRITE, then read SO_ERROR to learn whether it succeeded"),
    _e("EADDRINUSE", "OSError",
       "address already in use: something else is bound to that address and port",
       ["another server (or another copy of this one) is listening on it",
        "connections of an old server linger in TIME_WAIT and SO_REUSEADDR was not set"],
       "stop the other listener (`socktools sockets --listen --port P` shows it) or pick another port (--port 0 picks a free one)"),
    _e("EADDRNOTAVAIL", "OSError",
       "no free local port for that destination (or the address is not local)",
       ["the ephemeral port range is used up by open and TIME_WAIT connections to one host:port",
        "binding to an address this machine does not have"],
       "spread connections over more source addresses (--source 127.0.0.2-127.0.0.9) or widen net.ipv4.ip_local_port_range"),
    _e("ECONNREFUSED", "ConnectionRefusedError",
       "connection refused: nothing is listening on that address and port",
       ["the server is not running, or listens on another port or address family (::1 vs 127.0.0.1)",
        "on some systems: the listen backlog is full"],
       "start the server, or check the port and address (`socktools sockets --listen`)"),
    _e("ECONNRESET", "ConnectionResetError",
       "connection reset by peer: the other side aborted the connection (RST)",
       ["the peer process crashed or was killed", "the peer closed with unread data in its receive queue",
        "the peer rejected a protocol error", "a middlebox or firewall reset it"],
       "look at the peer's log for why it dropped the connection"),
    _e("ETIMEDOUT", "TimeoutError",
       "connection timed out: the peer never answered",
       ["the host is down or unreachable", "packets are dropped by a firewall",
        "the server's accept queue overflowed and SYNs were dropped"],
       "check that the host is up and reachable (`socktools ping HOST --port P`), raise the timeout"),
    _e("EPIPE", "BrokenPipeError",
       "broken pipe: wrote to a connection the peer has already closed",
       ["the peer closed or reset the connection before reading everything we sent"],
       "stop writing after the peer closes; find out why it closed early"),
    _e("EMFILE", "OSError",
       "too many open files in this process: the per-process file-descriptor limit is reached",
       ["each socket uses a file descriptor; RLIMIT_NOFILE (ulimit -n) caps them per process"],
       "raise the limit (`ulimit -n 65536`) or spread the sockets over more processes (--workers)"),
    _e("ENFILE", "OSError",
       "too many open files in the system: the system-wide file limit is reached",
       ["fs.file-max is exhausted"],
       "raise fs.file-max (`sysctl -w fs.file-max=...`) or close sockets"),
    _e("ENOBUFS", "OSError",
       "no buffer space available: the kernel is out of socket memory",
       ["very many sockets or very large buffers; net.ipv4.tcp_mem reached"],
       "use fewer or smaller buffers, or raise net.ipv4.tcp_mem"),
    _e("ENETUNREACH", "OSError",
       "network is unreachable: no route to that network",
       ["no route for the destination address", "IPv6 address with no IPv6 configured"],
       "check the address and the routing table (`ip route`)"),
    _e("EHOSTUNREACH", "OSError",
       "no route to host: the host cannot be reached",
       ["the host is down, or an ICMP host-unreachable came back"],
       "check that the host is up and the address is right"),
    _e("ENOTCONN", "OSError",
       "the socket is not connected",
       ["using a socket after a failed connect() or after the peer disconnected"],
       "check connect()'s result (SO_ERROR) before using the socket"),
    _e("EACCES", "PermissionError",
       "permission denied",
       ["binding a port below 1024 without privilege", "a raw/packet socket without CAP_NET_RAW"],
       "use a port >= 1024, or run with the needed privilege"),
    _e("EPERM", "PermissionError",
       "operation not permitted",
       ["raw or packet sockets need root or CAP_NET_RAW", "a firewall rule rejected the packet"],
       "run as root or grant CAP_NET_RAW (`setcap cap_net_raw+ep`)"),
    _e("EINVAL", "OSError",
       "invalid argument",
       ["an option value the kernel rejects", "an address of the wrong family for the socket"],
       "check the address family and option values"),
    # Added for `socktools explain` (issue 6): the rest of what connect/accept/send can raise.
    _e("ECONNABORTED", "ConnectionAbortedError",
       "software caused connection abort: the connection was ended on this machine",
       ["a connection in the accept queue was reset before accept() took it",
        "the local stack gave up on the connection (retransmission or keepalive limit)"],
       "treat it like a reset: accept() the next one or reconnect; check why the peer gave up"),
    _e("EALREADY", "BlockingIOError",
       "a nonblocking connect() on this socket is already in progress",
       ["connect() called a second time before the first one finished"],
       "wait for EVENT_WRITE, then read SO_ERROR, instead of calling connect() again"),
    _e("EISCONN", "OSError",
       "the socket is already connected",
       ["connect() on a socket that is already connected (e.g. retried after it succeeded)"],
       "use a new socket for each connection attempt"),
    _e("EBADF", "OSError",
       "bad file descriptor: the socket is closed (its fileno() is -1)",
       ["using a socket after close(), e.g. after its with-block or from another thread",
        "a selector still registered for a socket that was closed"],
       "unregister the socket from the selector before close(), and never use it afterwards"),
    _e("ENOMEM", "MemoryError / OSError",
       "out of memory: the kernel could not allocate memory for the socket",
       ["very many sockets or large buffers on a machine short of RAM"],
       "use fewer sockets or smaller buffers; check `free -m` and net.ipv4.tcp_mem"),
    _e("ENETDOWN", "OSError",
       "network is down: the interface for that route is down",
       ["the interface was taken down (`ip link set dev X down`)"],
       "bring the interface up (`ip link set dev lo up` for loopback)"),
    _e("EHOSTDOWN", "OSError",
       "host is down",
       ["the host did not answer neighbour discovery (ARP/NDP)"],
       "check that the host is up and on the same network"),
]

# Name resolution (getaddrinfo) fails with socket.gaierror, whose errno is an
# EAI_* code (negative on Linux), not an errno: its own small table.
def _eai(name, meaning, causes, fix):
    return Explanation(name, getattr(socket, name, None), "socket.gaierror", meaning, tuple(causes), fix)


_EAI_TABLE = [
    _eai("EAI_NONAME", "the host name does not resolve to any address (name or service not known)",
         ["a typo in the name", "the name is neither in /etc/hosts nor known to DNS"],
         "check the spelling, or give an address: 127.0.0.1 or ::1 on this machine"),
    _eai("EAI_AGAIN", "temporary failure in name resolution: the resolver gave no answer",
         ["no DNS server reachable (offline machine, container without resolv.conf)"],
         "use an address instead of a name (127.0.0.1), or fix /etc/resolv.conf"),
    _eai("EAI_FAIL", "name resolution failed for good (the DNS server reported an error)",
         ["a broken DNS server or zone"],
         "use an address instead of a name (127.0.0.1)"),
    _eai("EAI_NODATA", "the host name exists but has no address",
         ["a DNS name with records of other kinds only"],
         "use another name or an address (127.0.0.1 or ::1)"),
    _eai("EAI_ADDRFAMILY", "the host name has no address of the family asked for (IPv4 or IPv6)",
         ["an IPv4-only name used where IPv6 is required, or the reverse"],
         "use an address of the right family: 127.0.0.1 (IPv4) or ::1 (IPv6)"),
    _eai("EAI_FAMILY", "the address family is not supported",
         ["IPv6 asked for on a system without IPv6"],
         "use IPv4: 127.0.0.1"),
    _eai("EAI_SERVICE", "the port (service) is not valid for this socket type",
         ["a service name that is not in /etc/services, or a port out of range"],
         "give the port as a number between 1 and 65535"),
]

EXPLANATIONS: dict[str, Explanation] = {e.name: e for e in _TABLE}
EXPLANATIONS.update((e.name, e) for e in _EAI_TABLE if e.number is not None)
_EAI_NAMES = {e.number: e.name for e in _EAI_TABLE if e.number is not None}
EXPLANATIONS[PEER_CLOSED] = Explanation(
    PEER_CLOSED, None, "(none: recv() returned b'')",
    "the peer closed the connection before the exchange was finished",
    ("the server closes after each response (one request per connection)",
     "the server hit a limit (max connections, idle timeout) or rejected a protocol error"),
    "check the server's log; use keep-alive if it supports more than one request per connection")
EXPLANATIONS[PROTOCOL_ERROR] = Explanation(
    PROTOCOL_ERROR, None, "socktools.protocol.RemoteProtocolError",
    "the peer's bytes did not follow the framed protocol (docs/protocol.md)",
    ("the peer speaks another protocol", "a bug in the peer's framing", "content over the size cap"),
    "capture the exchange (`socktools sniff --port P`); `socktools request --show-bytes` prints one exchange's bytes")
EXPLANATIONS[NO_REPLY] = Explanation(
    NO_REPLY, None, "(none: counted, one per request)",
    "requests sent that never got an answer: still owed when their connection ended or when the "
    "drain after the traffic did",
    ("the server went silent or stopped reading", "the server answers slower than the drain waits",
     "the server closed connections with requests in flight"),
    "check the server with `socktools sockets --port P` (is its Recv-Q growing?) and its log")
EXPLANATIONS[OPENING_REFUSED] = Explanation(
    OPENING_REFUSED, None, "socktools.wire.opening.OpeningFailed",
    "the server refused the opening conversation (its greeting, a login, a setup command): its own "
    "words are tallied with the count",
    ("a wrong or missing password (-NOAUTH, -WRONGPASS, password authentication failed)",
     "a setup command the server does not take", "a greeting other than --greeting-match expects",
     "the server turns connections away (421 too many connections)"),
    "read the server's words in the report; check --setup (the password, the command) and "
    "--greeting-match against what the server says")
EXPLANATIONS[DATAGRAM_LOST] = Explanation(
    DATAGRAM_LOST, None, "(none: counted, one per datagram)",
    "UDP datagrams with no reply within --reply-timeout: UDP never says a datagram was dropped, "
    "so only the missing answer tells",
    ("a receive buffer was full and the kernel dropped it (flood's 'lost where' line counts these)",
     "the server read it and did not answer (a reply after --reply-timeout is counted late instead)",
     "nobody listens on the port (ECONNREFUSED, from the ICMP port-unreachable)"),
    "a lower --rate, a server that reads faster, or a larger receive buffer on the server "
    "(SO_RCVBUF, capped by net.core.rmem_max); `socktools sockets --udp --port P` shows its drops")


def udp_words(key: str, sockaddr, timeout: float) -> str | None:
    """What a refused or unanswered datagram means, in words (request and ping --udp); None for
    other keys.  A connected UDP socket learns of the ICMP port-unreachable as ECONNREFUSED;
    silence tells nothing, and the words say so rather than guess."""
    if key == "ECONNREFUSED":
        host = sockaddr[0] if isinstance(sockaddr, (tuple, list)) else sockaddr
        port = sockaddr[1] if isinstance(sockaddr, (tuple, list)) else "?"
        return (f"nobody listens on UDP port {port} at {host}: "
                "the kernel there answered with ICMP port unreachable")
    if key == TIMEOUT:
        return (f"no reply within {timeout:g}s: UDP does not say whether the datagram or its reply "
                "was lost, or whether anyone listens")
    return None


class DatagramTimeout(TimeoutError):
    """No reply datagram within the timeout (request and ping --udp): ``TIMEOUT``, silence --
    not ETIMEDOUT, which a kernel gives for a connection."""

    socktools_key = TIMEOUT
EXPLANATIONS[TIMEOUT] = Explanation(
    TIMEOUT, None, "TimeoutError / socket.timeout",
    "no answer within the timeout",
    ("the server is overloaded or not reading", "the server expects more bytes than were sent"),
    "give it longer (request, ping: --timeout), or check the server with `socktools sockets --port P` "
    "(is its Recv-Q growing?)")


# ------------------------------------------------------------------ TLS handshakes
# A failed handshake is an ssl.SSLError whose errno is OpenSSL's error class, not a
# kernel errno: tls_key() names it by what went wrong instead -- the verification
# reason (our side refused the server's certificate) or the alert the server sent
# (its side refused us) -- so a tally and `socktools explain` share one stable key.
TLS_PLAINTEXT_TO_TLS = "tls-plaintext-to-tls-port"
TLS_TO_PLAINTEXT = "tls-to-plaintext-port"


def _tls(name, meaning, causes, fix, exception="ssl.SSLError"):
    return Explanation(name, None, exception, meaning, tuple(causes), fix)


_TLS_TABLE = [
    _tls("tls-unknown-ca", "the server's certificate is signed by a CA this client does not trust",
         ["a private or test CA (mkcert, trustme, a company CA) not in the system store",
          "the server sends its certificate without the intermediate CA"],
         "give the CA with --cafile CA.pem (or --capath DIR); --insecure skips verification (testing only)",
         "ssl.SSLCertVerificationError"),
    _tls("tls-self-signed", "the server's certificate is self-signed: it vouches for itself and no CA for it",
         ["a throwaway certificate (openssl req -x509, serve --tls-self-signed)"],
         "trust that very certificate with --cafile CERT.pem, or --insecure (testing only)",
         "ssl.SSLCertVerificationError"),
    _tls("tls-hostname-mismatch", "the server's certificate is not for the name this client checked (SNI)",
         ["connecting by address or another name than the certificate's (its SANs)",
          "the wrong virtual host answered (SNI not what the server expects)"],
         "use a name the certificate lists (--sni NAME; `openssl x509 -noout -ext subjectAltName`)",
         "ssl.SSLCertVerificationError"),
    _tls("tls-expired", "the server's certificate has expired (or the clock here is wrong)",
         ["the certificate was not renewed", "this machine's clock is ahead"],
         "renew the server's certificate, or check the clock (`date -u`)", "ssl.SSLCertVerificationError"),
    _tls("tls-not-yet-valid", "the server's certificate is not valid yet (or the clock here is behind)",
         ["a certificate issued with a future start date", "this machine's clock is behind"],
         "check the clock (`date -u`) on both machines", "ssl.SSLCertVerificationError"),
    _tls("tls-verify-failed", "the server's certificate failed verification",
         ["a revoked, malformed or wrongly used certificate"],
         "read the reason in the message; `openssl s_client -connect HOST:PORT` shows the chain",
         "ssl.SSLCertVerificationError"),
    _tls(TLS_TO_PLAINTEXT, "TLS spoken to a port that does not speak TLS: its answer is not a TLS record",
         ["the port serves plaintext (HTTP, redis without --tls-port, ...)",
          "WRONG_VERSION_NUMBER / record layer failure: OpenSSL read plaintext as a TLS header"],
         "drop --tls, or use the server's TLS port (redis: --tls-port; nginx: `listen ... ssl`)"),
    _tls(TLS_PLAINTEXT_TO_TLS, "plaintext spoken to a TLS port: the server expected a TLS handshake",
         ["nginx answers `400 The plain HTTP request was sent to HTTPS port`",
          "redis logs `wrong version number` and closes or resets",
          "other servers answer with a TLS alert record (bytes 15 03 ..)"],
         "add --tls (and --cafile CA.pem for a private CA)", "(the reply or a reset)"),
    _tls("tls-eof-in-handshake", "the server closed the connection in the middle of the TLS handshake",
         ["it wants a client certificate (mutual TLS, TLS 1.2)", "it does not speak TLS on that port",
          "it rejected the offered versions or ciphers without an alert"],
         "check the server's log; give --cert/--key if it requires a client certificate", "ssl.SSLEOFError"),
    _tls("tls-no-common-version", "no TLS version both sides allow (refused on this side)",
         ["--tls-min/--tls-max exclude every version the server offers"],
         "widen --tls-min/--tls-max (1.2 .. 1.3)"),
    _tls("tls-no-common-cipher", "no cipher suite both sides allow (refused on this side)",
         ["--ciphers names no suite the server offers"], "widen --ciphers, or leave it out"),
    _tls("tls-alert-handshake-failure", "the server sent alert handshake_failure: it could not agree on "
         "the parameters offered",
         ["no common cipher suite or version (--ciphers, --tls-min/--tls-max)",
          "it requires a client certificate (mutual TLS) and none was sent"],
         "widen --ciphers/--tls-min/--tls-max, or give --cert/--key"),
    _tls("tls-alert-protocol-version", "the server sent alert protocol_version: it does not speak the "
         "TLS versions offered",
         ["--tls-min/--tls-max exclude every version it allows"], "widen --tls-min/--tls-max (1.2 .. 1.3)"),
    _tls("tls-alert-unknown-ca", "the server sent alert unknown_ca: it does not trust the CA of the "
         "client certificate sent",
         ["the client certificate is signed by a CA the server does not list (ssl_client_certificate, "
          "tls-ca-cert-file)"],
         "use a client certificate signed by a CA the server trusts"),
    _tls("tls-alert-bad-certificate", "the server sent alert bad_certificate: it rejected the client "
         "certificate",
         ["a client certificate without clientAuth use, expired, or not matching the key"],
         "check --cert/--key (`openssl x509 -noout -text -in CERT`)"),
    _tls("tls-alert-certificate-required", "the server sent alert certificate_required: it requires a "
         "client certificate (mutual TLS) and none was sent",
         ["the server verifies clients (nginx ssl_verify_client on, redis tls-auth-clients yes)"],
         "give --cert CLIENT.pem --key CLIENT.key"),
    _tls("tls-alert-no-application-protocol", "the server sent alert no_application_protocol: it "
         "speaks none of the --alpn protocols offered",
         ["an --alpn list without the server's protocol (e.g. h2 only to a server with http/1.1)"],
         "offer what it speaks (--alpn http/1.1), or leave --alpn out"),
    _tls("tls-alert", "the server ended the handshake with a TLS alert",
         ["see the alert name in the message (RFC 8446, 6.2)"],
         "check the server's log for why it refused the handshake"),
    _tls("tls-error", "the TLS layer failed", ["see OpenSSL's reason in the message"],
         "rerun with --show-bytes, or check the server's log"),
]
EXPLANATIONS.update((e.name, e) for e in _TLS_TABLE)

# OpenSSL verify codes (X509_V_ERR_*, `man 1 openssl-verify`) -> key.
_VERIFY = {10: "tls-expired", 9: "tls-not-yet-valid", 18: "tls-self-signed", 19: "tls-unknown-ca",
           20: "tls-unknown-ca", 21: "tls-unknown-ca", 2: "tls-unknown-ca",
           62: "tls-hostname-mismatch", 64: "tls-hostname-mismatch"}
# OpenSSL reasons for "this is not TLS" and "nothing in common" (refused on this side).
_REASONS = {"WRONG_VERSION_NUMBER": TLS_TO_PLAINTEXT, "RECORD_LAYER_FAILURE": TLS_TO_PLAINTEXT,
            "PACKET_LENGTH_TOO_LONG": TLS_TO_PLAINTEXT, "UNKNOWN_PROTOCOL": TLS_TO_PLAINTEXT,
            "UNEXPECTED_EOF_WHILE_READING": "tls-eof-in-handshake",
            "UNSUPPORTED_PROTOCOL": "tls-no-common-version", "NO_PROTOCOLS_AVAILABLE": "tls-no-common-version",
            "NO_CIPHERS_AVAILABLE": "tls-no-common-cipher",
            # a TLS server's side (serve --tls): the client spoke plain HTTP to it
            "HTTP_REQUEST": TLS_PLAINTEXT_TO_TLS, "HTTPS_PROXY_REQUEST": TLS_PLAINTEXT_TO_TLS}


#: nginx's words when plaintext HTTP reaches its ``ssl`` listener (its 400 page).
_NGINX_PLAIN_TO_TLS = b"The plain HTTP request was sent to HTTPS port"
#: nginx's words (a 400 after the handshake) when ``ssl_verify_client on`` and no certificate came.
_NGINX_NO_CLIENT_CERT = b"No required SSL certificate was sent"


def tls_hint(received: bytes, key: str | None, *, tls: bool) -> str:
    """Words for the mistakes users make first, from what came back: ``""`` when nothing
    points at one.  ``tls`` says whether this client spoke TLS."""
    if tls:
        if _NGINX_NO_CLIENT_CERT in received[:4096]:
            exp = EXPLANATIONS["tls-alert-certificate-required"]
            return f"the server requires a client certificate (mutual TLS) and none was sent; {exp.fix}"
        if key == TIMEOUT:      # a plaintext server waiting for the rest of a "line" it will never get
            return ("if that port does not speak TLS, it may still be waiting: "
                    + EXPLANATIONS[TLS_TO_PLAINTEXT].fix)
        return ""
    exp = EXPLANATIONS[TLS_PLAINTEXT_TO_TLS]
    if received[:1] in (b"\x15", b"\x16") and received[1:2] == b"\x03":     # a TLS alert/handshake record
        return f"the server answered with a TLS record: {exp.meaning}; {exp.fix}"
    if _NGINX_PLAIN_TO_TLS in received[:4096]:
        return f"{exp.meaning}; {exp.fix}"
    if not received and key in ("ECONNRESET", PEER_CLOSED):
        return f"if that port speaks TLS, as a redis --tls-port resets plaintext: {exp.fix}"
    return ""


def tls_key(exc: ssl.SSLError) -> str:
    """The stable key for a failed handshake: ``tls-unknown-ca``, ``tls-hostname-mismatch``,
    ``tls-alert-unknown-ca``, ``tls-to-plaintext-port``... (``tls-alert``/``tls-error`` when
    OpenSSL's reason is one this table does not name)."""
    import ssl
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _VERIFY.get(exc.verify_code, "tls-verify-failed")
    if isinstance(exc, ssl.SSLEOFError):
        return "tls-eof-in-handshake"
    return _reason_key((exc.reason or "").upper(), str(exc)) or "tls-error"


def _reason_key(reason: str, text: str) -> str:
    """The key for OpenSSL's reason code (``WRONG_VERSION_NUMBER``) or, failing that, an alert
    named in its text; ``""`` when neither is one of ours."""
    if reason in _REASONS:
        return _REASONS[reason]
    alert = _alert_name(reason, text)
    if alert:
        key = "tls-alert-" + alert.replace("_", "-")
        return key if key in EXPLANATIONS else "tls-alert"
    return ""


def _alert_name(reason: str, text: str) -> str:
    """The alert the server sent, by its RFC name (``unknown_ca``), from OpenSSL's reason
    (``TLSV1_ALERT_UNKNOWN_CA``) or, when Python gives no reason (alerts OpenSSL has no
    code for), from its text (``tlsv1 alert no application protocol``)."""
    m = re.match(r"^(?:SSLV3|TLSV1|TLSV13)_ALERT_(\w+)$", reason)
    if m:
        return m.group(1).lower()
    m = re.search(r"\b(?:sslv3|tlsv1|tlsv13) alert ([a-z ]+)", text.lower())
    return m.group(1).strip().replace(" ", "_") if m else ""


# ------------------------------------------------------------------ TLS handshakes, the server's side
# serve --tls sees the same failures from the other end: the client spoke plaintext, left,
# sent no certificate or one --client-ca does not vouch for, or refused ours (its alert).
# tls_server_key() names them so; the keys a client uses would blame "the server".
_TLS_SERVER_TABLE = [
    _tls("tls-client-left-in-handshake", "a client closed the connection in the middle of the TLS "
         "handshake (or before it began)",
         ["a plaintext client that connected and closed without sending", "a port scanner or health check "
          "that only connects", "a client that gave up on this server's certificate without an alert"],
         "nothing to do on the server; the client's own output says why it left", "ssl.SSLEOFError"),
    _tls("tls-client-sent-no-certificate", "a client sent no certificate, and this server requires one "
         "(--client-ca: mutual TLS)",
         ["the client was not given --cert/--key (curl: --cert/--key; openssl s_client: -cert/-key)"],
         "give the client a certificate signed by a --client-ca CA, or drop --client-ca"),
    _tls("tls-client-certificate-rejected", "a client's certificate failed verification against --client-ca",
         ["it is signed by a CA not in the --client-ca file", "it expired, or is not valid yet"],
         "issue the client a certificate from a --client-ca CA (the message says why this one failed)",
         "ssl.SSLCertVerificationError"),
    _tls("tls-client-refused-certificate", "a client refused this server's certificate (its alert: "
         "unknown_ca, bad_certificate, certificate_unknown...)",
         ["the client does not trust the CA (with --tls-self-signed: the certificate itself)",
          "the client checked a name the certificate does not list"],
         "give the client the CA file (serve --tls-self-signed prints the path for --cafile) and a name "
         "the certificate lists"),
    _tls("tls-client-alert", "a client ended the handshake with a TLS alert",
         ["see the alert name in the message (RFC 8446, 6.2)"], "check the client's own output"),
]
EXPLANATIONS.update((e.name, e) for e in _TLS_SERVER_TABLE)

#: OpenSSL reasons a TLS server sees when the first bytes are not a ClientHello.
_PLAINTEXT_REASONS = {"HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL",
                      "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE"}
#: The alerts a client sends when it refuses the server's certificate.
_REFUSED_ALERTS = {"unknown_ca", "bad_certificate", "certificate_unknown", "certificate_expired",
                   "unsupported_certificate", "certificate_revoked"}
_SERVER_REASONS = {"PEER_DID_NOT_RETURN_A_CERTIFICATE": "tls-client-sent-no-certificate",
                   "UNSUPPORTED_PROTOCOL": "tls-no-common-version",
                   "NO_PROTOCOLS_AVAILABLE": "tls-no-common-version",
                   "NO_SHARED_CIPHER": "tls-no-common-cipher"}


__all__ += ["tls_server_key"]     # here, not in the list above: the server's side stays one block


def tls_server_key(exc: ssl.SSLError) -> str:
    """The stable key for a handshake a TLS *server* failed (``serve --tls``), worded from its
    side: ``tls-plaintext-to-tls-port``, ``tls-client-sent-no-certificate``,
    ``tls-client-refused-certificate``... (``tls-error`` for a reason not named here)."""
    import ssl
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "tls-client-certificate-rejected"
    if isinstance(exc, ssl.SSLEOFError):
        return "tls-client-left-in-handshake"
    reason = (exc.reason or "").upper()
    if reason in _PLAINTEXT_REASONS:
        return TLS_PLAINTEXT_TO_TLS
    if reason in _SERVER_REASONS:
        return _SERVER_REASONS[reason]
    alert = _alert_name(reason, str(exc))
    if alert:
        return "tls-client-refused-certificate" if alert in _REFUSED_ALERTS else "tls-client-alert"
    return "tls-error"


#: OpenSSL's verification messages (``X509_verify_cert_error_string``) -> key, for text pasted
#: into ``explain``; the longer phrase first, since "self-signed certificate" ends both.
_VERIFY_TEXT = (("self-signed certificate in certificate chain", "tls-unknown-ca"),
                ("self signed certificate in certificate chain", "tls-unknown-ca"),
                ("unable to get local issuer certificate", "tls-unknown-ca"),
                ("self-signed certificate", "tls-self-signed"), ("self signed certificate", "tls-self-signed"),
                ("certificate has expired", "tls-expired"), ("certificate is not yet valid", "tls-not-yet-valid"),
                ("hostname mismatch", "tls-hostname-mismatch"), ("ip address mismatch", "tls-hostname-mismatch"))


def _tls_text_key(text: str) -> str:
    """A TLS key from a message as Python prints it (``[SSL: WRONG_VERSION_NUMBER] wrong version
    number``, ``certificate verify failed: certificate has expired``) or a bare reason code."""
    low = text.lower()
    for phrase, key in _VERIFY_TEXT:
        if phrase in low:
            return key
    m = re.search(r"\[SSL: (\w+)\]", text) or re.fullmatch(r"\s*([A-Z][A-Z0-9_]{5,})\s*", text)
    return _reason_key(m.group(1).upper() if m else "", text)


def _tls_detail(exc: ssl.SSLError) -> str:
    """OpenSSL's own words: the verification message, or the alert by its RFC name, or the reason."""
    import ssl
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return exc.verify_message
    alert = _alert_name((exc.reason or "").upper(), str(exc))
    if alert:
        return f"alert {alert}"
    return exc.reason or str(exc)


# Advice that depends on the command that met the error: each names only options
# that command has.  (key, command) -> fix.
_FIX_FOR = {
    (TIMEOUT, "flood"): "raise --connect-timeout (the time from connect() to the first reply), or check "
                        "the server with `socktools sockets --port P` (is its Recv-Q growing?)",
    (TIMEOUT, "request"): "raise --timeout, or check the server with `socktools sockets --port P` "
                          "(is its Recv-Q growing?)",
    (PROTOCOL_ERROR, "flood"): "capture the exchange (`socktools sniff --port P`) to see what the server sent",
    (PROTOCOL_ERROR, "request"): "rerun with --show-bytes, or capture it (`socktools sniff --port P`)",
    (PEER_CLOSED, "flood"): "check the server's log: it closed connections flood was still using "
                            "(a limit such as max connections or an idle timeout, a crash, or a server "
                            "that closes after each answer)",
    ("ETIMEDOUT", "flood"): "check that the host is up and reachable (`socktools ping HOST --port P`), "
                            "or raise --connect-timeout",
    ("ETIMEDOUT", "request"): "check that the host is up and reachable (`socktools ping HOST --port P`), "
                              "or raise --timeout",
    # proxy --upstream-tls: the upstream's certificate, checked by the proxy (its options' names)
    ("tls-unknown-ca", "proxy"): "give the upstream's CA with --upstream-cafile CA.pem (config: upstream_tls "
                                 "cafile); --upstream-insecure skips verification (testing only)",
    ("tls-self-signed", "proxy"): "trust that very certificate with --upstream-cafile CERT.pem, or "
                                  "--upstream-insecure (testing only)",
    ("tls-hostname-mismatch", "proxy"): "check against a name the certificate lists (--upstream-sni NAME; config: "
                                        "upstream_tls sni)",
    (TLS_TO_PLAINTEXT, "proxy"): "the upstream does not speak TLS there: drop --upstream-tls, or point --to "
                                 "at its TLS port",
}

# Where the error happened changes what it means: EADDRNOTAVAIL from connect() is
# the ephemeral port range running out; from bind() it is an address this
# machine does not have (man 2 bind).  (key, during) -> (meaning, fix).
_DURING = {
    ("EADDRNOTAVAIL", "bind"): ("that address is not on this machine",
                                "bind an address this machine has (127.0.0.1, ::1; `ip addr` lists them)"),
    ("ECONNREFUSED", "udp"): ("nobody listens on that UDP port: the kernel there answered with ICMP port "
                              "unreachable (a connected UDP socket hears of it as ECONNREFUSED)",
                              "start the server, or check the port and address (`socktools sockets --udp` "
                              "lists UDP sockets)"),
    (TIMEOUT, "udp"): ("no reply within the timeout: UDP does not say whether the datagram or its reply was "
                       "lost, or whether anyone listens",
                       "check that a server is bound there (`socktools sockets --udp --port P`) and that it "
                       "answers; give it longer (--timeout)"),
}

# Aliases: EWOULDBLOCK is EAGAIN on Linux; exceptions map to their errno.
_ALIASES = {
    "EWOULDBLOCK": "EAGAIN",
    "BlockingIOError": "EAGAIN",
    "ConnectionRefusedError": "ECONNREFUSED",
    "ConnectionResetError": "ECONNRESET",
    "ConnectionAbortedError": "ECONNABORTED",
    "BrokenPipeError": "EPIPE",
    "TimeoutError": "ETIMEDOUT",
    "socket.timeout": "TIMEOUT",
    "PermissionError": "EACCES",
}


def errno_name(number: int) -> str:
    """``111`` -> ``"ECONNREFUSED"`` (falls back to ``"errno 111"``)."""
    return errno.errorcode.get(number, f"errno {number}")


def lookup(key: str | int, *, command: str | None = None, during: str | None = None) -> Explanation | None:
    """Find an explanation by errno name, number, exception name or pseudo-error.

    ``command`` (``"flood"``, ``"request"``...) picks advice that names only that
    command's options; ``during`` (``"bind"``) the meaning in that context.
    """
    exp = _lookup(key)
    if exp is None:
        return None
    if (exp.name, during) in _DURING:
        meaning, fix = _DURING[(exp.name, during)]
        exp = replace(exp, meaning=meaning, fix=fix)
    elif (exp.name, command) in _FIX_FOR:
        exp = replace(exp, fix=_FIX_FOR[(exp.name, command)])
    return exp


def _lookup(key: str | int) -> Explanation | None:
    if isinstance(key, str) and key.strip().lstrip("-").isdigit():
        key = int(key)
    if isinstance(key, int):
        # getaddrinfo's EAI_* codes are negative on Linux, errnos positive.
        key = _EAI_NAMES.get(key, "") if key < 0 else errno.errorcode.get(key, "")
    key = key.strip()
    upper = key.upper()
    for candidate in (key, upper, _ALIASES.get(key, ""), _ALIASES.get(upper, "")):
        if candidate in EXPLANATIONS:
            return EXPLANATIONS[candidate]
        if candidate.lower() in EXPLANATIONS:
            return EXPLANATIONS[candidate.lower()]
    if upper.startswith("E") and hasattr(errno, upper):
        num = getattr(errno, upper)
        return Explanation(upper, num, "OSError", os.strerror(num), (), "see `man 7 socket` / `man 2 connect`")
    return None


def exception_key(exc: BaseException) -> str:
    """The tally key for an exception: its errno name, or a pseudo-error.

    An exception may name its own key with a ``socktools_key`` attribute
    (e.g. a "peer closed early" condition, which has no errno).
    """
    own = getattr(exc, "socktools_key", None)
    if own:
        return own
    if _is_tls_error(exc):
        return tls_key(exc)
    if isinstance(exc, TimeoutError) and getattr(exc, "errno", None) is None:
        return TIMEOUT
    num = getattr(exc, "errno", None)
    if isinstance(exc, socket.gaierror):
        return _EAI_NAMES.get(num, f"EAI {num}")
    if isinstance(num, int):
        return errno_name(num)
    return type(exc).__name__


def _is_tls_error(exc: BaseException) -> bool:
    """An ``ssl.SSLError``?  Asked of every failure, so without importing ``ssl`` (this module
    is on every command's start-up path): a program that never loaded ``ssl`` has none."""
    ssl = sys.modules.get("ssl")
    return ssl is not None and isinstance(exc, ssl.SSLError)


def explain_exception(exc: BaseException) -> Explanation | None:
    return lookup(exception_key(exc))


def one_line(exc: BaseException, what: str = "", *, command: str | None = None,
             during: str | None = None) -> str:
    """``connect to 127.0.0.1:9 failed: ECONNREFUSED (errno 111) - connection refused: ...; start the server``"""
    key = exception_key(exc)
    exp = lookup(key, command=command, during=during)
    num = getattr(exc, "errno", None)
    if _is_tls_error(exc):                     # its errno is OpenSSL's error class, not the kernel's
        num, key = None, f"{key} ({_tls_detail(exc)})"
    label = f"{key} ({'gai error' if isinstance(exc, socket.gaierror) else 'errno'} {num})" \
        if isinstance(num, int) else key
    prefix = f"{what} failed: " if what else ""
    if exp is None:
        return f"{prefix}{label}: {exc}"
    return f"{prefix}{label} - {exp.meaning}; {exp.fix}"


# ------------------------------------------------------------- free text (explain)

# Python's own words for errors that carry no errno: ``socket.timeout`` /
# ``TimeoutError('timed out')`` from a socket timeout, and the messages of
# exceptions people paste with their class name.
_PHRASES = {"timed out": TIMEOUT, "timeout": TIMEOUT, "socket.timeout": TIMEOUT,
            "connection closed": PEER_CLOSED, "peer closed": PEER_CLOSED}
_EXC_PREFIX = re.compile(r"^\s*(?:[\w.]+\.)?(\w*(?:Error|Exception|timeout))\s*:\s*(.*)$", re.S)


def _strerror_names() -> dict:
    """Each table errno's system text (``"connection refused"``) -> its name."""
    out = {}
    for exp in _TABLE:
        if exp.number is not None:
            out.setdefault(os.strerror(exp.number).lower(), exp.name)
    return out


def lookup_text(text: str) -> Explanation | None:
    """Explain a whole message as Python prints it.

    ``"TimeoutError: timed out"``, ``"timed out"``, ``"Connection refused"``,
    ``"[Errno 111] Connection refused"``, ``"ConnectionResetError: [Errno 104] ..."``.
    """
    text = text.strip()
    tls = _tls_text_key(text)
    if tls:
        return lookup(tls)
    m = re.search(r"\berrno\s*(-?\d+)", text, re.IGNORECASE)
    if m:
        return lookup(m.group(1))
    exp = lookup(text)
    if exp is not None:
        return exp
    m = _EXC_PREFIX.match(text)
    message = text
    if m:
        cls, message = m.group(1), m.group(2).strip()
        if not message:
            return lookup(cls)
    words = message.lower().rstrip(".")
    if words in _PHRASES:
        return lookup(_PHRASES[words])
    name = _strerror_names().get(words)
    if name:
        return lookup(name)
    return lookup(m.group(1)) if m else None


def suggest(text: str, n: int = 3) -> list:
    """The nearest entries to an unknown ``text``: names first, then the system texts."""
    text = text.strip()
    names = list(EXPLANATIONS) + list(_ALIASES)
    by_upper = {k.upper(): k for k in names}
    hits = [by_upper[h] for h in difflib.get_close_matches(text.upper(), list(by_upper), n=n, cutoff=0.6)]
    if not hits:
        phrases = {**_strerror_names(), **_PHRASES}
        hits = [phrases[h] for h in difflib.get_close_matches(text.lower(), list(phrases), n=n, cutoff=0.6)]
    seen: list = []
    for h in hits:
        exp = lookup(h)
        if exp is not None and exp.name not in seen:
            seen.append(exp.name)
    return seen
