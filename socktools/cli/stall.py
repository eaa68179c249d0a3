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
Without --port or --unix, stall starts `socktools serve --mode sink` on --host
(a free loopback port; with --tls, `--tls-self-signed` too, which needs the
cryptography package) and stops it afterwards. A peer that answers and then
closes or resets (nginx's 400, redis' protocol error or its output buffer
limit) is said as such: what it answered, and that this is not a full buffer.
Exit codes: 0 send() blocked and the report was printed; 1
connect/handshake/send failed, the peer closed or reset, or send() never
blocked (the peer reads); 2 bad options; 3 --tls without a target and no
cryptography package (the message says how to get it). With --json, one object
on stdout every time, failures included ("ok", "outcome").
"""


@click.command(epilog=EPILOG)
@click.option("--host", default="127.0.0.1", show_default=True, metavar="HOST",
              help="Where the embedded sink listens (127.0.0.1 or ::1), or with --port the server to stall.")
@click.option("--port", "-p", type=PORT, default=None,
              help="Stall this server instead of starting a sink.  [default: start a sink on a free port]")
@unix_option("  The server must be running: stall starts no sink there.")
@click.option("--chunk", type=BYTESIZE, default="64k", show_default=True, help="Bytes per send().")
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
@click.option("--json", "as_json", is_flag=True, help="Print every figure as JSON (failures too).")
@click.option("--quiet", "-q", is_flag=True, help="Figures only, without the explanation at the end.")
@click.option("--mode", "-m", type=LazyChoice("socktools.wire.modes:REQUEST_MODES"), default=None,
              cls=LazyOption, lazy_help="socktools.stall.config:MODE_HELP")
@wire_options
@tls_options
@click.pass_context
def command(ctx, host, port, unix, chunk, sndbuf, rcvbuf, settle, drain, timeout, as_json, quiet, mode,
            **wire_params):
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
    spec = _spec(ctx, mode, host, port, unix, wire_params)
    config = build_config(StallConfig, host=host, port=port, chunk=chunk, sndbuf=sndbuf, rcvbuf=rcvbuf,
                          settle=settle, drain=drain, timeout=timeout, unix=unix,
                          tls=tls if tls.enabled else None, spec=spec)
    if port is not None and unix is None:
        warn_target("stall", host)

    def failed(phase: str, key: str, message: str, code: int = EXIT_FAILED):
        if as_json:
            from socktools.cli._common import stamped
            click.echo(json.dumps(stamped({"ok": False, "outcome": "failed", "phase": phase, "error": key,
                                           "message": message, "config": config.to_dict()}), indent=2))
        die(message, code)

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
    if as_json:
        from socktools.cli._common import stamped
        click.echo(json.dumps(stamped(report.to_dict()), indent=2, ensure_ascii=False))
    else:
        click.echo(render_report(report, quiet=quiet))
    if report.answer is not None:
        from socktools.stall.report import answer_line
        die(answer_line(report), EXIT_FAILED)
    if not report.fill.blocked:
        die(f"send() never blocked in {timeout:g} s: the peer at {report.remote} is reading "
            f"({report.fill.bytes:,} bytes accepted)", EXIT_FAILED)


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
