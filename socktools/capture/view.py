"""Records and summaries as plain dicts (``--json``), and the figures a report needs.

Data only: the CLI (``socktools.cli.sniff``) turns these into lines.
"""

from __future__ import annotations

from typing import Any

from socktools.capture.datagrams import SocketSummary
from socktools.capture.events import DatagramEvent
from socktools.capture.reassembly import MessageEvent, Note, TlsEvent
from socktools.capture.session import CaptureSummary
from socktools.capture.tracker import ConnectionSummary, PacketRecord

__all__ = ["record_dict", "event_dict", "summary_dict", "connection_dict", "socket_dict", "drop_ratio"]


def event_dict(ev: Any) -> dict:
    if isinstance(ev, MessageEvent):
        return {"type": "message", "role": ev.role, "index": ev.index, "header": ev.header,
                "content-type": ev.content_type, "content": ev.content_preview,
                "wire_size": ev.wire_size, "segments": ev.segments, "first_packet": ev.first_packet}
    if isinstance(ev, TlsEvent):
        return {"type": "tls", "role": ev.role, "index": ev.index, "record": ev.record,
                "length": ev.length, "text": ev.text, "segments": ev.segments,
                "first_packet": ev.first_packet, **{k: v for k, v in ev.fields.items()
                                                    if k not in ("record", "length")}}
    if isinstance(ev, DatagramEvent):
        return {"type": "datagram", "sock": ev.sock, "seq": ev.seq, "sent_ns": ev.sent_ns,
                "role": ev.role, "rtt": None if ev.rtt_ns is None else ev.rtt_ns / 1e9,
                "request_packet": ev.request_packet}
    if isinstance(ev, Note):
        return {"type": "note", "kind": ev.kind, "text": ev.text}
    raise TypeError(f"unknown event {ev!r}")


def record_dict(rec: PacketRecord) -> dict:
    """One packet as a JSON object (``"event": "packet"``)."""
    out: dict = {"event": "packet", "no": rec.number, "time": round(rec.time, 9),
                 "ts": rec.ts_ns / 1e9, "ts_ns": rec.ts_ns, "proto": rec.proto, "src": rec.src, "dst": rec.dst}
    if rec.proto == "TCP":
        out.update(sport=rec.sport, dport=rec.dport, flags=list(rec.flags), seq=rec.seq,
                   ack=rec.ack, win=rec.window, len=rec.length, marks=list(rec.marks),
                   conn=rec.conn)
        if rec.options:
            out["options"] = rec.options
        if rec.tsval is not None:
            out.update(tsval=rec.tsval, tsecr=rec.tsecr)
        if rec.events:
            out["decoded"] = [event_dict(e) for e in rec.events]
        if rec.preview is not None:
            out["preview"] = rec.preview
    else:
        out["info"] = rec.info
        if rec.sport is not None:          # UDP
            out.update(sport=rec.sport, dport=rec.dport, len=rec.length)
            if rec.events:
                out["decoded"] = [event_dict(e) for e in rec.events]
            if rec.preview is not None:
                out["preview"] = rec.preview
    return out


def connection_dict(c: ConnectionSummary) -> dict:
    return {"id": c.id, "client": c.client, "server": c.server,
            "packets": {"client_to_server": c.packets_c2s, "server_to_client": c.packets_s2c},
            "bytes": {"client_to_server": c.bytes_c2s, "server_to_client": c.bytes_s2c},
            "handshake_rtt": c.handshake_rtt, "duration": round(c.duration, 9),
            "resets": c.resets, "zero_windows": c.zero_windows,
            "retransmissions": c.retransmissions,
            "messages": {"requests": c.requests, "responses": c.responses}, "state": c.state}


def socket_dict(s: SocketSummary) -> dict:
    """One flood socket's datagrams as the capture saw them."""
    return {"sock": s.sock, "client": s.client, "server": s.server, "out": s.out,
            "replies": s.replies, "unanswered": s.unanswered,
            "unanswered_seqs": [list(run) for run in s.unanswered_seqs],
            "unanswered_unlisted": s.unanswered_unlisted, "duplicates": s.duplicates,
            "unmatched_replies": s.unmatched_replies,
            "rtt": {"min": s.rtt_min, "avg": s.rtt_avg, "max": s.rtt_max},
            "first_seq": s.first_seq, "last_seq": s.last_seq}


def drop_ratio(s: CaptureSummary) -> float:
    """Fraction of the packets the filter accepted that the kernel had to drop."""
    if not s.kernel_received:
        return 0.0
    return (s.kernel_dropped or 0) / s.kernel_received


def summary_dict(s: CaptureSummary) -> dict:
    """The closing summary as a JSON object (``"event": "summary"``)."""
    return {"event": "summary", "source": s.source, "live": s.live, "linktype": s.linktype,
            "filter": s.filter, "captured": s.captured, "kernel_received": s.kernel_received,
            "kernel_dropped": s.kernel_dropped, "buffer_bytes": s.buffer_bytes,
            "written": s.written, "write_path": s.write_path, "duration": round(s.duration, 9),
            "elapsed": round(s.elapsed, 6), "stopped_by": s.stopped_by, "non_tcp": s.non_tcp,
            "connections": [connection_dict(c) for c in s.connections],
            "connections_forgotten": s.connections_forgotten, "truncated": s.truncated,
            "read_packets": s.read_packets, "backend": s.backend, "undrained": s.undrained,
            "datagrams": [socket_dict(d) for d in s.datagrams],
            "datagrams_untracked": s.datagrams_untracked}
