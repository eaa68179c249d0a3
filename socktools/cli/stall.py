"""``socktools stall``: reproduce BlockingIOError against a peer that does not read, and explain it."""

from __future__ import annotations

import json

import click

from socktools.cli._common import (BYTESIZE, DURATION, EXIT_FAILED, EXIT_UNAVAILABLE, PORT, LazyChoice,
                                   LazyOption, build_config, check_target, die, unix_option, warn_target)
from socktools.cli._tls import tls_config, tls_options
from socktools.cli._wire import given_params, option_name, wire_options, wire_spec

EPILOG = """\b
Examples:
  socktools stall                              # against its own sink on 127.0.0.1
  socktools stall --drain                      # ...then let the sink read: the resume half
  socktools stall --sndbuf 4096 --rcvbuf 4096  # tiny buffers: blocks after KB, not MB
  socktools stall --host ::1 --json            # IPv6, every figure as JSON
  socktools stall --port 65432                 # stall a server you suspect of not reading

\b
Speak the server's protocol (the payload repeated, request after request):
  socktools stall --port 6379 --mode redis --command 'SET k v'
  socktools stall --port 8080 --mode http --path /
  socktools stall --port 7000 --mode line --send 'PING' --eol crlf
  socktools stall --port 7000 --send 'hello\\n'          # these bytes, as they are
  socktools stall --port 7000 --send @request.bin        # a file's bytes

\b
Over TLS and Unix sockets (TLS options as request's):
  socktools stall --tls --drain              # its own sink over TLS (a throwaway certificate)
  socktools stall --port 6380 --tls --cafile ca.pem --mode redis --command 'SET k v'
  socktools stall --unix /run/redis/redis.sock --mode redis --command 'SET k v'

\b
Datagrams (--udp): send() never blocks, the receiver's kernel drops and counts:
  socktools stall --udp                      # 10,000 x 1 KiB to its own socket that never reads
  socktools stall --udp --rcvbuf 1 --chunk 65507 --count 100 --json
  socktools stall --udp --port 9000          # a UDP server there (its sockets seen by sock_diag)

\b
Without --port or --unix, stall starts `socktools serve --mode sink` on --host
(a free loopback port; with --tls, `--tls-self-signed` too, which needs the
cryptography package) and stops it afterwards. A peer that answers and then
closes or resets (nginx's 400, redis' protocol error or its output buffer
limit) is said as such: what it answered, and that this is not a full buffer.
Exit codes: 0 send() blocked and the report was printed; 1
connect/handshake/send failed, the peer closed or reset, or send() never
blocked (the peer reads); 2 bad options; 3 --tls without a target and no
cryptography package (the message says how to get it). With --udp: 0 the
receiver's kernel dropped datagrams; 1 nothing was dropped (they fit, or the
server read them), the receiver's counts could not be read, or nobody is
bound at --port. With --json, one object on stdout every time, failures
included ("ok", "outcome").
"""


@click.command(epilog=EPILOG)
@click.option("--host", default="127.0.0.1", show_default=True, metavar="HOST",
              help="Where the embedded sink listens (127.0.0.1 or ::1), or with --port the server to stall.")
@click.option("--port", "-p", type=PORT, default=None,
              help="Stall this server instead of starting a sink.  [default: start a sink on a free port]")
@unix_option("  The server must be running: stall starts no sink there.")
@click.option("--chunk", type=BYTESIZE, default=None,
              help="Bytes per send(); with --udp the datagram's size (at most 65,507).  [default: 64k; "
                   "with --udp 1024]")
@click.option("--sndbuf", type=BYTESIZE, default=None,
              help="Our SO_SNDBUF, set before connect (Linux doubles it).  [default: autotuned]")
@click.option("--rcvbuf", type=BYTESIZE, default=None,
              help="The embedded sink's SO_RCVBUF (Linux doubles it).  [default: net.ipv4.tcp_rmem]")
@click.option("--settle", type=DURATION, default="0.5s", show_default=True, metavar="DURATION",
              help="After the first EAGAIN, retry until the queues stand still this long.")
@click.option("--drain", is_flag=True, help="Then let the sink read, and show the queues empty and the socket "
                                            "become writable again.")
@click.option("--timeout", type=DURATION, default="10s", show_default=True, metavar="DURATION",
              help="Give up on each phase (fill, settle, drain) after this long.")
@click.option("--udp", is_flag=True,
              help="Datagrams instead of a stream: --count datagrams of --chunk bytes to a UDP receiver "
                   "that never reads (its own socket, or the server at --port); send() never blocks, "
                   "the receiver's kernel drops them, and stall shows its count: sent = held + dropped.")
@click.option("--count", type=click.IntRange(min=1), default=None, metavar="N",
              help="With --udp: datagrams to send (at most 1,000,000; --timeout bounds the time too).  "
                   "[default: 10000]")
@click.option("--json", "as_json", is_flag=True, help="Print every figure as JSON (failures too).")
@click.option("--quiet", "-q", is_flag=True, help="Figures only, without the explanation at the end.")
@click.option("--mode", "-m", type=LazyChoice("socktools.wire.modes:REQUEST_MODES"), default=None,
              cls=LazyOption, lazy_help="socktools.stall.config:MODE_HELP")
@wire_options
@tls_options
@click.pass_context
def command(ctx, host, port, unix, chunk, sndbuf, rcvbuf, settle, drain, timeout, udp, count, as_json, quiet,
            mode, **wire_params):
    """Reproduce the full socket buffer: send() until BlockingIOError, and show why.

    Connects a nonblocking socket to a peer that does not read, sends until
    send() raises BlockingIOError (EAGAIN; over TLS, ssl.SSLWantWriteError),
    waits for the queues to settle, then reports the kernel's own numbers for
    both ends: SO_SNDBUF/SO_RCVBUF, Send-Q and Recv-Q as netstat/ss show them,
    TCP_INFO (rtt, cwnd, the peer's zero window, the persist timer) and how
    the bytes add up.  Read by Python from the kernel (Linux); no ss or
    netstat needed.  --send/--mode make the payload the server's own
    requests (--send @FILE: a file's bytes).
    """
    from socktools.core.embedded import EmbeddedServerError
    from socktools.errors import exception_key, one_line
    from socktools.stall.config import StallConfig
    from socktools.stall.report import render_report
    from socktools.stall.steps import StallError, run_stall

    tls = tls_config(wire_params)
    check_target(ctx, host, unix)
    if udp:
        _no_exchange(ctx, mode)
    spec = _spec(ctx, mode, host, port, unix, wire_params)
    config = build_config(StallConfig, host=host, port=port, chunk=chunk, sndbuf=sndbuf, rcvbuf=rcvbuf,
                          settle=settle, drain=drain, timeout=timeout, unix=unix,
                          tls=tls if tls.enabled else None, spec=spec, udp=udp, count=count)
    if port is not None and unix is None:
        warn_target("stall", host)

    def failed(phase: str, key: str, message: str, code: int = EXIT_FAILED):
        if as_json:
            from socktools.cli._common import stamped
            click.echo(json.dumps(stamped({"ok": False, "outcome": "failed", "phase": phase, "error": key,
                                           "message": message, "config": config.to_dict()}), indent=2))
        die(message, code)

    if udp:
        _run_udp(config, as_json, quiet, failed)
        return
    try:
        report = run_stall(config)
    except StallError as exc:
        phase = exc.what.split()[0] if exc.what else "stall"
        phase = {"TLS": "handshake", "tell": "drain"}.get(phase, phase)
        if exc.cause is None:
            failed(phase, "stall-error", str(exc))
        failed(phase, exception_key(exc.cause), one_line(exc.cause, exc.what))
    except EmbeddedServerError as exc:
        # the sink exits 3 when an optional package it needs is missing (--tls-self-signed:
        # cryptography); its message names the pip install, and stall exits 3 as it did
        if exc.returncode == EXIT_UNAVAILABLE:
            failed("sink", "missing-package", str(exc), EXIT_UNAVAILABLE)
        failed("sink", "sink-failed", str(exc))
    except KeyboardInterrupt:
        failed("interrupted", "interrupted", "interrupted; connection closed and the embedded sink stopped", 130)
    _show(report, as_json, lambda: render_report(report, quiet=quiet))
    if report.answer is not None:
        from socktools.stall.report import answer_line
        die(answer_line(report), EXIT_FAILED)
    if not report.fill.blocked:
        die(f"send() never blocked in {timeout:g} s: the peer at {report.remote} is reading "
            f"({report.fill.bytes:,} bytes accepted)", EXIT_FAILED)


def _show(report, as_json: bool, render) -> None:
    """The report on stdout: its JSON object, or ``render()``'s text."""
    if as_json:
        from socktools.cli._common import stamped
        click.echo(json.dumps(stamped(report.to_dict()), indent=2, ensure_ascii=False))
    else:
        click.echo(render())


def _run_udp(config, as_json, quiet, failed) -> None:
    """``stall --udp``: run, print the report (or the JSON object), exit 1 when nothing was dropped."""
    from socktools.errors import exception_key, one_line, udp_words
    from socktools.stall.steps import StallError
    from socktools.stall.udp import run_udp_stall
    from socktools.stall.udpreport import render_udp_report, udp_failure_line
    try:
        report = run_udp_stall(config)
    except StallError as exc:
        key = exception_key(exc.cause) if exc.cause is not None else "stall-error"
        words = udp_words(key, (config.host, config.port), config.timeout) if exc.what == "send" else None
        failed(exc.what.split()[0], key, words or one_line(exc.cause, exc.what))
    except KeyboardInterrupt:
        failed("interrupted", "interrupted", "interrupted; the sockets are closed", 130)
    _show(report, as_json, lambda: render_udp_report(report, quiet=quiet))
    if not report.ok:
        die(udp_failure_line(report), EXIT_FAILED)


def _no_exchange(ctx, mode) -> None:
    """--udp sends datagrams of --chunk bytes: a wire mode's option is a usage error naming it."""
    given = given_params(ctx)
    if mode is not None:
        given = ["mode", *given]
    if given:
        raise click.BadParameter("not with --udp: stall --udp sends datagrams of --chunk bytes, no wire "
                                 "mode's requests", param_hint=option_name(given[0]))


def _spec(ctx, mode, host, port, unix, params):
    """The exchange to repeat (a WireSpec), or None for zeros.  ``--send @FILE`` is the file's
    bytes; --send without --mode is those bytes as they are (raw, no reply awaited)."""
    from socktools.addresses import format_addr
    sends = list(params.get("sends") or ())
    given = given_params(ctx)
    if any(s.startswith("@") for s in sends):
        if len(sends) > 1 or params.get("send_file"):
            raise click.BadParameter("--send @FILE is the whole payload: give it once, without --send-file",
                                     param_hint="'--send'")
        path = sends[0][1:]
        try:
            with open(path, "rb"):
                pass
        except (OSError, ValueError) as exc:
            raise click.BadParameter(f"cannot read {path!r}: {getattr(exc, 'strerror', None) or exc}",
                                     param_hint="'--send'") from None
        params["send_file"], params["sends"] = path, ()
        given = [g for g in given if g != "sends"] + ["send_file"]     # --send @FILE is the file
    if mode is None and params.get("plugin"):
        mode = "plugin"                 # --protocol is the mode, as for flood and request
    if mode is None:
        if not given:
            return None
        if not set(given) <= {"sends", "send_file"}:
            raise click.BadParameter("shapes a wire mode's requests: give --mode", param_hint=option_name(
                next(g for g in given if g not in ("sends", "send_file"))))
        mode = "raw"
    if mode == "raw" and not any(params.get(k) for k in ("reply_until", "reply_bytes", "reply_prefix",
                                                        "reply_until_close", "no_reply")):
        params["no_reply"] = True       # stall reads no replies: raw needs no framing here
    target = "localhost" if unix is not None else format_addr((host, port or 0))
    from socktools import wire
    spec = wire_spec(mode, target, params)
    build_config(wire.build, spec=spec)     # a bad exchange option: a usage error naming it, now
    return spec
