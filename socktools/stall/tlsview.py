"""What TLS changes in stall's figures: the record bytes our kernel took, and what OpenSSL holds.

Over TLS the kernels' queues hold records (ciphertext), not the plaintext ``send()`` accepted.
:func:`ciphertext_written` counts the record bytes our kernel took (TCP_INFO's ``bytes_acked`` +
Send-Q); :func:`tls_view` sets them against the plaintext and, over TLS 1.3 (one record
overhead for every suite), infers how much of the refused ``send()`` is in the kernel and how
much OpenSSL still holds -- which a nonblocking ``ssl.SSLSocket`` does not expose.
"""

from __future__ import annotations

from typing import Any, Optional

from socktools.kernel import tcpinfo
from socktools.stall.results import TlsView

__all__ = ["ciphertext_written", "tls_view", "TLS_HELD", "RECORD_PLAINTEXT", "TLS13_RECORD_OVERHEAD",
           "STABLE_READS", "SYN_ACKED"]

#: What stall can and cannot see of the bytes OpenSSL itself holds (checked by
#: tests/test_stall_tls.py against a peer that never reads).
TLS_HELD = ("not exposed by ssl.SSLSocket: a refused send() leaves the records it already "
            "encrypted in OpenSSL's write buffer (part of one may be in the kernel), and Python "
            "gives no count of them (SSLSocket.pending() is the read side; over TLS 1.3 stall "
            "infers them from the kernel's count); retry send() with the same bytes and OpenSSL "
            "writes them first")
#: Plaintext bytes per TLS record: OpenSSL cuts a write into records of at most 2**14 bytes
#: (the TLS maximum; Python sets no smaller max_fragment_length).
RECORD_PLAINTEXT = 1 << 14
#: Bytes a TLS 1.3 record adds to its plaintext: 5 of header, 1 of inner content type and 16
#: of AEAD tag (every TLS 1.3 cipher suite has a 16-byte tag; OpenSSL adds no padding).
#: TLS 1.2's overhead depends on the cipher, so stall infers nothing there.
TLS13_RECORD_OVERHEAD = 22
#: What tcpi_bytes_acked counts beyond data: the SYN's one sequence number (Linux adds the
#: SYN-ACK's advance of snd_una to it), taken off to tell the handshake's record bytes.
SYN_ACKED = 1
#: Tries at reading acked + Send-Q without an ACK landing between the two reads.
STABLE_READS = 100


def ciphertext_written(sock: Any) -> Optional[int]:
    """Bytes our kernel took from this socket so far: acknowledged + still in Send-Q.

    Two syscalls: an ACK arriving between them would move bytes from Send-Q to acked
    unseen, so Send-Q is read before and after TCP_INFO and the pair kept only when it
    did not change (at most STABLE_READS tries: on loopback an ACK lands in microseconds)."""
    for _ in range(STABLE_READS):
        before = tcpinfo.read_queues(sock).send_q
        info, _ = tcpinfo.read_tcp_info(sock)
        after = tcpinfo.read_queues(sock).send_q
        acked = info.get("bytes_acked") if info else None
        if acked is None or before is None:
            return None
        if before == after:
            return acked + before
    return None


def records_of(n: int) -> int:
    """TLS records one send() of ``n`` plaintext bytes makes."""
    return -(-n // RECORD_PLAINTEXT)


def tls_view(info: dict, written: Optional[int], accepted: int, records: int, refused: int,
             handshake: Optional[int] = None) -> TlsView:
    """Plaintext ``accepted`` (in ``records`` records) against the record bytes our kernel took
    after the handshake (``written``; ``handshake``: those it took for the handshake);
    ``refused``: the length of the send() that was refused."""
    overhead = TLS13_RECORD_OVERHEAD if info.get("version") == "TLSv1.3" else None
    in_kernel = held = None
    if written is not None and overhead is not None:
        # what the kernel took beyond the accepted sends' records belongs to the refused
        # send(): its records in order, the last one partly written, its rest in OpenSSL
        in_kernel = written - accepted - overhead * records
        rest, left = in_kernel, refused
        while left > 0 and rest >= 0:
            record = min(left, RECORD_PLAINTEXT) + overhead
            if rest < record:
                held = record - rest if rest > 0 else None
                break
            rest -= record
            left -= record - overhead
    return TlsView(version=info.get("version"), cipher=info.get("cipher"),
                   server_name=info.get("server_name"), plaintext_accepted=accepted,
                   ciphertext_written=written,
                   beyond_plaintext=None if written is None else written - accepted,
                   held_by_tls=TLS_HELD, records=records, record_overhead=overhead,
                   refused_in_kernel=in_kernel, held_by_openssl=held, handshake_bytes=handshake)

