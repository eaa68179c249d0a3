"""``socktools sniff``: watch TCP and UDP packets on loopback, with the framed protocol and
flood's datagrams decoded."""

from __future__ import annotations

import json
import os
import signal
import sys

import click

from socktools.cli._common import (BYTESIZE, DURATION, EXIT_FAILED, EXIT_UNAVAILABLE, EXIT_USAGE, MAX_COUNT, PORT,
                                   LazyChoice, LazyOption, die)
from socktools.cli._outputs import _writable

_EXAMPLES = """\b
Examples:
  sudo socktools sniff --port 65432 --count 10     # 10 packets of one server's traffic
  sudo socktools sniff --port 65432 -w run.pcap    # show and save (Wireshark opens it)
  socktools sniff -r run.pcap                      # read it back, no privilege needed
  sudo socktools sniff --filter 'tcp port 80 or udp port 53' --json
  sudo socktools sniff -i any --filter icmp --time a   # ping errors in words, wall clock
  socktools sniff -r run.pcap --show 4,6               # scapy's full dissection of packets 4 and 6
  sudo socktools sniff --port 6380                  # TLS: SNI, ALPN, version, cipher, alerts by name
  socktools sniff -r tls.pcapng --keylog keys.log --decode redis   # decrypted, RESP decoded
  sudo socktools sniff --udp --port 9000 -q -w udp.pcapng   # flood --udp: which seqs got no reply
  socktools sniff -r udp.pcapng --decode datagram      # each datagram's socket, seq, reply RTT
"""

#: Why sniff cannot watch a Unix-domain socket, and what can (said for --unix, or a path as --port).
_UNIX_SOCKETS = ("Unix-domain sockets carry no packets: the kernel copies the bytes from one "
                 "process's socket buffer to the other's, so no interface (lo included) sees them "
                 "and no packet capture (sniff, tcpdump, tshark) can.  To watch {path}: "
                 "strace -f -e trace=read,write,sendmsg,recvmsg -s 256 -p PID (the server's PID); or "
                 "put socat in the middle and point the client at the new path: "
                 "socat -v UNIX-LISTEN:/tmp/watch.sock,fork UNIX-CONNECT:{path}; or have the "
                 "server listen on a TCP port too and sniff --port that.")


class _SniffPort(type(PORT)):
    """--port, where a path (a Unix socket, no packets) gets the explanation, not 'not a port'."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and "/" in value:
            self.fail(_UNIX_SOCKETS.format(path=value), param, ctx)
        return super().convert(value, param, ctx)

#: Connections listed in the closing table; the rest are counted (all are in --json).
_MAX_TABLE = 20


@click.command(epilog=_EXAMPLES)
@click.option("--iface", "-i", default="lo", show_default=True, metavar="IFACE",
              help="Interface to capture on.")
@click.option("--port", "-p", type=_SniffPort(), default=None,
              help="Only TCP traffic to or from this port (kernel filter 'tcp port P'; needs no libpcap).")
@click.option("--udp", is_flag=True,
              help="UDP instead: --port P means 'udp port P', alone 'udp' (built in, no libpcap). "
                   "flood's datagrams are matched to their replies: per socket, what went out, "
                   "what came back, and which seqs never did.")
@click.option("--filter", "-f", "expression", metavar="BPF",
              help="Any pcap-filter expression, e.g. 'tcp port 80 or icmp' (compiled by libpcap).")
@click.option("--count", "-c", type=click.IntRange(1, MAX_COUNT), default=None,
              help="Stop after this many packets.")
@click.option("--timeout", "-t", type=DURATION, default=None,
              help="Stop after this long (e.g. 10s, 2m).")
@click.option("--write", "-w", "write", metavar="FILE.pcap", type=click.Path(dir_okay=False), callback=_writable,
              help="Also save the packets: nanosecond pcap, or pcapng with each decoded message "
                   "as a packet comment when FILE ends in .pcapng (tcpdump/tshark/Wireshark open "
                   "both). Never follows a symlink, never overwrites the -r file.")
@click.option("--read", "-r", "read", metavar="FILE", type=click.Path(dir_okay=False),
              help="Read packets from a pcap/pcapng file instead of an interface (no privilege needed).")
@click.option("--decode", type=LazyChoice("socktools.capture.session:SNIFF_DECODES"), default="auto",
              show_default=True, cls=LazyOption, lazy_help="socktools.capture.session:SNIFF_DECODE_HELP")
@click.option("--keylog", metavar="FILE", type=click.Path(dir_okay=False),
              help="Decrypt TLS with this NSS key log (what SSLKEYLOGFILE, curl, browsers and "
                   "socktools --keylog write) and run --decode on the plaintext (auto: whatever "
                   "parses). TLS 1.2 and 1.3, AES-GCM and ChaCha20-Poly1305. Read as it grows, so "
                   "a live capture may start before the file exists. Needs the cryptography package.")
@click.option("--unix", metavar="PATH", default=None,
              help="Refused, with the reason: Unix-domain sockets carry no packets; sniff says what "
                   "can watch one instead (strace, a socat relay).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per packet, then a summary object.")
@click.option("--quiet", "-q", is_flag=True, help="No packet lines, only the closing summary.")
@click.option("--buffer", "buffer_size", type=BYTESIZE, default="64M", show_default=True,
              help="Kernel socket buffer for live capture (absorbs bursts).")
@click.option("--backend", type=click.Choice(["auto", "ring", "socket", "scapy"]), default="auto",
              show_default=True,
              help="Live capture: ring = Linux packet socket with a TPACKET_V3 ring (auto on "
                   "Linux), socket = the same read one packet per call, scapy = scapy's capture "
                   "sockets (libpcap/BPF/Npcap; auto where Linux packet sockets are missing).")
@click.option("--time", "time_format", type=click.Choice(["r", "d", "a", "ad", "e"]), default="r",
              show_default=True,
              help="Time column, as tshark -t: r since the first packet, d since the previous "
                   "one, a local time of day, ad with the date, e seconds since the epoch.")
@click.option("--hex", "-X", "hexdump", is_flag=True,
              help="Hex and ASCII dump of each frame under its line.")
@click.option("--show", "show", is_flag=False, flag_value="all", default=None, metavar="[N,M-K]",
              help="scapy's full layered dissection (show()) under the chosen packets: all, or "
                   "a list like 5,9-12.")
@click.pass_context
def command(ctx, iface, port, udp, expression, count, timeout, write, read, decode, keylog, unix, as_json, quiet,
            buffer_size, time_format, hexdump, show, backend):
    """Capture TCP and UDP packets and show them like tshark, messages decoded.

    Each packet is one line: number, time since the first packet, source →
    destination, TCP flags, relative Seq/Ack, window, payload length, and
    marks a troubleshooter looks for ([ZeroWindow], [Window Full],
    [ZeroWindowProbe], [Retransmission], [RST]...).  Messages of the framed
    protocol are reassembled from the stream and printed under the packet that
    completed them.  A UDP datagram of flood --udp shows its socket and seq,
    and a reply its round trip.  At the end: packets captured and dropped by
    the kernel, a summary per connection, and per flood socket the datagrams
    out, the replies in and the seqs never answered.

    Live capture needs root or CAP_NET_RAW; reading a file (-r) does not.
    Loopback shows every packet once.
    """
    from socktools.capture import SniffConfig, SniffError, Sniffer
    from socktools.capture import common

    if unix is not None:
        raise click.UsageError(f"--unix {unix}: " + _UNIX_SOCKETS.format(path=unix), ctx)
    if port is not None and expression:
        raise click.UsageError("give --port or --filter, not both", ctx)
    if udp and expression:
        raise click.UsageError("give --udp or --filter, not both (say udp in the expression: "
                               "--filter 'udp port 53')", ctx)
    if read and ctx.get_parameter_source("iface") == click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("--iface has no meaning with --read (the file says where it came from)", ctx)
    if read and write and os.path.abspath(read) == os.path.abspath(write):
        raise click.UsageError("--write would overwrite the file being read", ctx)
    if buffer_size < 65536:
        raise click.BadParameter("must be at least 64k", ctx, param_hint="'--buffer'")
    for name, given in (("--show", show is not None), ("--hex", hexdump), ("--time", time_format != "r")):
        if given and (as_json or quiet):
            # They shape the text view; the JSON lines and --quiet have none to shape.
            raise click.UsageError(f"{name} shapes the text view: not with {'--json' if as_json else '--quiet'}",
                                   ctx)
    from socktools.capture.render import parse_selection
    try:
        selection = parse_selection(show) if show is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param_hint="'--show'")
    if decode == "http":
        from socktools.wire.http import require_httptools
        require_httptools("--decode http")   # missing: exit 3 with the hint (the switchboard)

    if keylog is not None:
        if decode in ("raw", "none", "datagram"):
            raise click.UsageError(f"--keylog decrypts for the decoders: not with --decode {decode}", ctx)
        if (read or os.path.exists(keylog)) and not os.access(keylog, os.R_OK):
            # live, the file may not exist yet (the client writes it as it connects)
            raise click.BadParameter(f"{keylog}: cannot be read" if os.path.exists(keylog) else
                                     f"{keylog}: no such file", ctx, param_hint="'--keylog'")
        from socktools.capture.tls_decrypt import load_aead
        load_aead()                          # missing cryptography: exit 3 with the hint, now

    config = SniffConfig(iface=iface, port=port, expression=expression, count=count,
                         timeout=timeout, write=write, read=read, decode=decode,
                         buffer_size=buffer_size, backend=backend, keylog=keylog, udp=udp)
    sniffer = Sniffer(config)
    try:
        sniffer.open()
    except SniffError as exc:
        code = EXIT_UNAVAILABLE if isinstance(exc, (common.PrivilegeError, common.LibpcapMissing)) \
            else EXIT_USAGE if isinstance(exc, (common.FilterError, common.InterfaceError,
                                                common.SameFileError)) else EXIT_FAILED
        die(str(exc), code)

    out = _Output(as_json=as_json, quiet=quiet, time_format=time_format, hexdump=hexdump,
                  show=selection, framed_port=port)
    if not read and not as_json:
        click.echo(f"Capturing on {sniffer.description} — Ctrl-C to stop", err=True)
    elif not read:
        click.echo(json.dumps({"event": "capturing", "iface": iface, "filter": sniffer.filter_text}),
                   err=True)

    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    interrupted = False
    failure = None
    try:
        if as_json and not quiet:
            for batch in sniffer.batches():
                out.packets(batch)
        else:
            for data in sniffer.rendered(out.view, quiet=quiet):
                out.write_bytes(data)
    except KeyboardInterrupt:
        interrupted = True
    except BrokenPipeError:
        out.broken = True
    except SniffError as exc:
        failure = exc
    finally:
        signal.signal(signal.SIGTERM, previous)
    try:
        summary = sniffer.close(interrupted=interrupted)
    except SniffError as exc:
        die(str(exc))
    out.summary(summary)
    if failure is not None:
        die(str(failure))
    if summary.truncated:
        # tcpdump says "truncated dump file"; a script must not take a cut file for a whole one
        # summary.truncated starts "at byte N:", so the line names the file, the offset, the cut
        die(f"{read}: {summary.truncated}: truncated capture file, read "
            f"{summary.read_packets:,} complete packet{'s' if summary.read_packets != 1 else ''}",
            EXIT_FAILED)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


class _Output:
    """Writes the view's text (or JSON), one write + flush per batch, and the summary."""

    def __init__(self, *, as_json: bool, quiet: bool, time_format: str = "r",
                 hexdump: bool = False, show=None, framed_port=None) -> None:
        from socktools.capture.lines import TextView, arrows_for
        self.as_json = as_json
        self.quiet = quiet
        self.broken = False
        self.color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        self.arrow, self.hook = arrows_for(getattr(sys.stdout, "encoding", None))
        self.view = TextView(time_format=time_format, hexdump=hexdump, show=show,
                             framed_port=framed_port, arrow=self.arrow, hook=self.hook,
                             style=click.style if self.color else None,
                             encoding=getattr(sys.stdout, "encoding", None) or "utf-8",
                             errors=getattr(sys.stdout, "errors", None) or "strict")

    def write(self, text: str) -> None:
        if self.broken:
            return
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError:
            # `sniff | head`: stop writing; point stdout at /dev/null so exit is quiet.
            self.broken = True
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise

    def write_bytes(self, data: bytes) -> None:
        """Lines the view encoded already (the fast lane's), past the text layer."""
        if self.broken:
            return
        raw = getattr(sys.stdout, "buffer", None)
        if raw is None:                       # stdout replaced by a text-only stream
            self.write(data.decode(self.view.encoding, self.view.errors))
            return
        try:
            sys.stdout.flush()
            raw.write(data)
            raw.flush()
        except BrokenPipeError:
            self.broken = True
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise

    def packets(self, batch) -> None:
        """Records as JSON lines (text goes through ``Sniffer.rendered`` and :meth:`write_bytes`)."""
        if self.quiet:
            return
        from socktools.capture.view import record_dict
        self.write("".join(json.dumps(record_dict(r), ensure_ascii=False) + "\n" for r in batch))

    def summary(self, s) -> None:
        from socktools.capture.view import drop_ratio, summary_dict
        if self.as_json:
            from socktools.cli._common import stamped
            self._safe(json.dumps(stamped(summary_dict(s)), ensure_ascii=False) + "\n")
        else:
            self._safe(self.summary_text(s))
        if s.kernel_dropped:
            warn = (f"WARNING: the kernel dropped {s.kernel_dropped:,} of {s.kernel_received:,} "
                    f"packets ({drop_ratio(s):.1%}): the capture did not keep up and the view "
                    f"above is incomplete. Narrow the filter (--port), use -q, or save with -w "
                    f"and read later with -r.")
            click.echo(click.style("socktools: " + warn, fg="red", bold=True)
                       if sys.stderr.isatty() else "socktools: " + warn, err=True)

    def _safe(self, text: str) -> None:
        try:
            self.write(text)
        except BrokenPipeError:
            pass

    def summary_text(self, s) -> str:
        where = f"'{s.source}'" + (f" (filter: {s.filter})" if s.filter else "")
        verb = "captured on" if s.live else "read from"
        lines = [f"--- {s.captured:,} packet{'s' if s.captured != 1 else ''} {verb} {where} "
                 f"in {s.elapsed:.2f} s ({_stopped(s.stopped_by)})"]
        if s.live:
            what = {"ring": "TPACKET_V3 ring", "socket": "socket buffer"}.get(s.backend, "buffer")
            buf = f", {what} {_size(s.buffer_bytes)}" if s.buffer_bytes else ""
            if s.backend == "scapy":
                buf = ", scapy backend"
            if s.kernel_received is None:     # scapy's socket off Linux: no counters to read
                lines.append(f"    kernel: drop counts not available{buf}")
            else:
                drop = f"{s.kernel_dropped:,} DROPPED" if s.kernel_dropped else "0 dropped"
                lines.append(f"    kernel: {s.kernel_received:,} received by filter, {drop}{buf}")
            if s.undrained:
                lines.append(f"    {s.undrained:,} packets the kernel took were still unread in the "
                             f"{what} when the capture stopped: not shown")
        if s.written is not None:
            lines.append(f"    wrote {s.written:,} packets to {s.write_path}")
        if s.non_tcp:
            lines.append(f"    {s.non_tcp:,} non-TCP packets")
        conns = sorted(s.connections, key=lambda c: -(c.packets_c2s + c.packets_s2c))[:_MAX_TABLE]
        conns.sort(key=lambda c: c.id)
        if conns:
            a = self.arrow
            rows = [("conn", "client", "server", "state", f"pkts {a}/←", f"bytes {a}/←",
                     "hs RTT", "duration", "RST", "0win", "retr", "msgs")]
            if a == "->":
                rows[0] = rows[0][:4] + ("pkts out/in", "bytes out/in") + rows[0][6:]
            for c in conns:
                rows.append((str(c.id), c.client, c.server, c.state,
                             f"{c.packets_c2s}/{c.packets_s2c}", f"{c.bytes_c2s}/{c.bytes_s2c}",
                             _ms(c.handshake_rtt), _ms(c.duration), str(c.resets),
                             str(c.zero_windows), str(c.retransmissions),
                             f"{c.requests}/{c.responses}"))
            lines += _table(rows, left=(1, 2, 3))
            more = len(s.connections) - len(conns)
            if more > 0:
                lines.append(f"  ... and {more:,} more connections (all are in --json)")
        if s.connections_forgotten:
            lines.append(f"  ... and {s.connections_forgotten:,} older finished connections not kept "
                         f"(memory bound)")
        lines += self.datagrams_text(s)
        return "\n".join(lines) + "\n"

    def datagrams_text(self, s) -> list:
        """flood's datagrams per socket: out, replies in, the seqs that never got one."""
        if not s.datagrams and not s.datagrams_untracked:
            return []
        socks = sorted(s.datagrams, key=lambda d: (-d.unanswered, -d.out))[:_MAX_TABLE]
        socks.sort(key=lambda d: (d.sock, d.client))
        a = self.arrow
        rows = [("sock", "client", "server", "out", "replies", "unanswered", "dup", "no request",
                 "RTT min/avg/max")]
        for d in socks:
            rtt = "-" if d.rtt_min is None else \
                f"{d.rtt_min * 1e3:.3f}/{d.rtt_avg * 1e3:.3f}/{d.rtt_max * 1e3:.3f} ms"
            rows.append((str(d.sock), d.client, d.server, f"{d.out:,}", f"{d.replies:,}",
                         f"{d.unanswered:,}", f"{d.duplicates:,}", f"{d.unmatched_replies:,}", rtt))
        out = ["  flood datagrams, per socket (request and reply matched by socket and seq; "
               "round trips from the capture's time stamps)"] + _table(rows, left=(1, 2))
        for d in socks:
            if d.unanswered:
                runs = ", ".join(str(x) if x == y else f"{x}-{y}" for x, y in d.unanswered_seqs)
                more = f" ... and {d.unanswered_unlisted:,} more" if d.unanswered_unlisted else ""
                out.append(f"    sock {d.sock} {d.client} {a} {d.server}: no reply to seq {runs}{more}")
        hidden = len(s.datagrams) - len(socks)
        if hidden > 0:
            out.append(f"  ... and {hidden:,} more sockets (all are in --json)")
        if s.datagrams_untracked:
            out.append(f"  {s.datagrams_untracked:,} flood datagrams of sockets past the bound "
                       f"(datagrams.MAX_SOCKETS) were shown but not matched")
        sent = sum(d.out for d in s.datagrams)
        lost = sum(d.unanswered for d in s.datagrams)
        if lost:
            out.append(f"  {lost:,} of {sent:,} requests seen got no reply in the capture: each "
                       f"reached the receiver's side of loopback and was lost at or after it "
                       f"(its socket's full buffer, or no answer); or is still in flight if "
                       f"the capture stopped first")
        return out


def _table(rows: list, left: tuple) -> list:
    """Rows of cells as aligned lines: the columns in ``left`` flush left, the rest right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) if i in left else cell.rjust(w)
                             for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
            for row in rows]


def _stopped(why: str) -> str:
    return {"count": "count reached", "timeout": "timeout", "end-of-file": "end of file",
            "interrupt": "stopped"}.get(why, why)


def _size(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB" if n >= 1 << 20 else f"{n / 1024:.0f} KiB"


def _ms(seconds) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.3f} ms"
    return f"{seconds:.3f} s"
