"""`socktools request`: one request (framed, or any flood mode), decoded."""

from __future__ import annotations

import json

import click

from socktools.cli._common import (DURATION, EXIT_FAILED, PORT, LazyChoice, LazyOption, build_config,
                                   check_target, die, refuse_path_as_host, unix_option, warn_target)
from socktools.cli._tls import tls_config, tls_options
from socktools.cli._wire import given_params, opening_options, option_name, wire_options, wire_spec

EPILOG = """\b
Examples:
  socktools request search morpheus               # to 127.0.0.1:65432
  socktools request --port 43567 binary hello --show-bytes
  socktools request 127.0.0.1 65432 search ring   # the tutorial's HOST PORT ACTION VALUE
  socktools request --host ::1 search 🐶 --json

\b
Any server, one exchange (the modes of flood):
  socktools request --port 6379 --mode redis --command 'INFO server'
  socktools request --port 8080 --mode http --path / --show-bytes
  socktools request --port 7000 --mode raw --send 'PING\\r\\n' --reply-until '\\r\\n'
  socktools request --port 7000 --mode line --send 'HELLO' --eol crlf
  socktools request --port 8080 --mode raw --send 'GET / HTTP/1.0\\r\\n\\r\\n' --reply-until-close
  socktools request --port 11211 --protocol socktools.examples.memcached:Memcached --command 'get k'

\b
A conversation on one connection (each reply in order, with its time):
  socktools request --port 6379 --mode redis --command 'SET k v' --command 'GET k'
  socktools request --port 21 --mode line --eol crlf --greeting --send NOOP --send QUIT

\b
A login first (the opening conversation flood holds; its steps shown, never a setup's text):
  socktools request --port 6379 --mode redis --setup 'AUTH s3cret' --command PING
  socktools request --port 5432 --protocol socktools.examples.postgres:Postgres \\
      --protocol-option user=bob --protocol-option password=s3cret --command 'SELECT 1'

\b
Over a Unix-domain socket (no host, no port; HTTP's Host header says localhost):
  socktools request --unix /run/redis/redis.sock --mode redis --command PING
  socktools request --unix /run/nginx.sock --mode http --path /

\b
Over TLS (verified against the CA in ca.pem; the version, cipher, ALPN and the
certificate chain the server sent on stderr; --show-bytes adds the TLS records):
  socktools request --port 6380 --mode redis --tls --cafile ca.pem
  socktools request --host localhost --port 8443 --mode http --tls --cafile ca.pem --alpn http/1.1
  socktools request --port 8443 --mode http --tls --insecure --keylog keys.log
  socktools request --port 8443 --mode http --tls --cafile ca.pem --tls-max 1.2 --show-bytes

\b
Over UDP (one datagram each way per --send; each reply with its size, time, sender):
  socktools request --udp --port 53 --mode raw --send-file query.bin
  socktools request --udp --port 9000 --send 'ping\\n' --send 'again\\n'
  socktools request --udp --port 514 --send '<13>hello' --no-reply

\b
Exit codes: 0 answered; 1 refused, reset, timed out, closed early or a
protocol error, or a failed TLS handshake (one line says which, with the
errno name or TLS reason, what it means and what to do); 2 a bad option;
3 an optional package is missing (--mode http: httptools); 130 Ctrl-C.
With --udp, 1 also for nobody listening (ECONNREFUSED: the ICMP port
unreachable), no reply within --timeout, or a truncated reply.
"""


def _content_text(message) -> str:
    if message.value is not None:
        return json.dumps(message.value, ensure_ascii=False)
    return message.content.decode("utf-8", "backslashreplace")


def _before_reply(result, show_bytes: bool, as_json: bool) -> None:
    """The wire trace (--show-bytes), or else the TLS lines (what the handshake settled, the
    certificate chain) on stderr: stdout stays the reply.  --json says it all in the document."""
    from socktools.request.report import chain_lines, tls_text
    if as_json:
        return
    if show_bytes:
        _trace(result)
    elif result.tls:
        click.echo("\n".join([tls_text(result), *chain_lines(result)]), err=True)


def _trace(result) -> None:
    from socktools.addresses import format_addr
    from socktools.request.report import chain_lines, is_conversation, record_lines, reply_text, step_head, tls_text
    click.echo(f"connected to {format_addr(result.address)} in {result.connect_s * 1000:.3f} ms")
    if result.tls:
        click.echo("\n".join([tls_text(result), *chain_lines(result), *record_lines(result)]))
    if not is_conversation(result):
        _bytes(result.sent, len(result.sent), result.received, result.received_bytes, result.recv_calls)
        return
    # a conversation: each step's bytes, then its reply decoded (a step that failed has none yet);
    # the opening's own messages are counted, not shown (a setup or a login may carry a password)
    from socktools.request.report import opening_head, opening_reply
    for step in ([result.greeting] if result.greeting is not None else []) + result.opening:
        click.echo(opening_head(step))
        if step.sent_bytes:
            click.echo(f">>> sent {step.sent_bytes} bytes (not shown: an opening may carry a password)")
        _bytes(b"", 0, step.received, step.received_bytes, step.recv_calls)
        if step.received_bytes:
            click.echo(opening_reply(step))
    for i, step in enumerate(result.steps, 1):
        click.echo(step_head(step, i))
        _bytes(step.sent, step.sent_bytes, step.received, step.received_bytes, step.recv_calls)
        if step.reply is not None:
            click.echo(reply_text(step))


def _bytes(sent: bytes, sent_bytes: int, received: bytes, received_bytes: int, recv_calls: int) -> None:
    """One direction's bytes each way, as Python literals (plaintext, over TLS too)."""
    if sent:
        click.echo(f">>> sent {sent_bytes} bytes")
        click.echo(repr(sent))
    if received:
        click.echo(f"<<< received {received_bytes} bytes in {recv_calls} recv() call(s)")
        click.echo(repr(received))
        if received_bytes > len(received):
            click.echo(f"(the first {len(received):,} shown; the other "
                       f"{received_bytes - len(received):,} were counted, not kept)")


def _message_dict(message) -> dict:
    d = {"header": message.header, "wire_size": message.wire_size}
    if message.value is not None:
        d["value"] = message.value
    else:
        d["content"] = message.content.decode("utf-8", "backslashreplace")
    return d


@click.command(epilog=EPILOG)
@click.argument("words", nargs=-1, metavar="[HOST PORT] ACTION VALUE")
@click.option("--host", default="127.0.0.1", show_default=True, metavar="HOST", help="Server address; ::1 for IPv6.")
@click.option("--port", "-p", type=PORT, default=65432, show_default=True, help="Server port.")
@unix_option()
@click.option("--timeout", type=DURATION, default="5s", show_default=True, metavar="DURATION",
              help="For the whole exchange (connect, send, receive).")
@click.option("--show-bytes", is_flag=True, help="Print the exact bytes sent and received (a wire trace).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole exchange as JSON.")
@click.option("--greeting", is_flag=True,
              help="Wait for the server's first message (SMTP's 220, FTP's banner), framed as the mode frames "
                   "replies, and show it as the greeting before the first request.")
@opening_options(greeting=False)
@click.option("--mode", "-m", type=LazyChoice("socktools.wire.modes:REQUEST_MODES"), default="framed",
              show_default=True, cls=LazyOption, lazy_help="socktools.wire.modes:REQUEST_HELP")
@click.option("--udp", is_flag=True,
              help="One UDP datagram each way per --send (raw, the default with --udp, or line): the reply "
                   "is the whole datagram, shown with its size, time and sender; --timeout is each "
                   "datagram's wait; --reply-bytes N reads into an N-byte buffer (a longer reply is "
                   "truncated).")
@wire_options
@tls_options
@click.pass_context
def command(ctx, words, host, port, unix, timeout, show_bytes, as_json, greeting, mode, udp, **wire_params):
    """Send one request and print the decoded response.

    In framed mode (the default), ACTION "search" sends a text/json request;
    any other action a binary one (content ACTION+VALUE), as docs/protocol.md
    describes.  --mode raw/line/redis/http or --protocol send one request of
    that protocol and print its reply, framed by the same parser flood uses;
    several --command/--send/--path are a conversation on one connection, each
    reply shown in order with its own time.  --tls shows the certificates the
    server sent; with --show-bytes, the TLS records as well as the plaintext.
    --udp sends each request as one datagram and shows each reply datagram.
    """
    from socktools.request.client import RequestError, request

    tls = tls_config(wire_params)
    if udp:
        _udp(ctx, words, host, port, unix, timeout, show_bytes, as_json, mode, greeting, wire_params, tls)
        return
    check_target(ctx, host, unix)
    if mode != "framed" or wire_params.get("plugin"):
        _exchange(ctx, words, host, port, unix, timeout, show_bytes, as_json, mode, wire_params, tls, greeting)
        return
    if greeting:
        raise click.BadParameter("a framed server answers and never speaks first: --greeting is for "
                                 "--mode raw, line, redis, http or --protocol", param_hint="'--greeting'")
    given = given_params(ctx)
    if given:
        raise click.BadParameter("not for the framed protocol: give --mode", param_hint=option_name(given[0]))
    if not words:
        raise click.UsageError("expected ACTION VALUE or HOST PORT ACTION VALUE (or a --mode)")

    if len(words) == 4 and unix is not None:
        raise click.UsageError("--unix names the whole target: give ACTION VALUE, not HOST PORT")
    if len(words) == 4:
        host, port_text, action, value = words
        refuse_path_as_host(host, "HOST")
        port = PORT.convert(port_text, None, click.get_current_context())
    elif len(words) == 2:
        action, value = words
    else:
        raise click.UsageError(f"expected ACTION VALUE or HOST PORT ACTION VALUE, got {len(words)} word(s)")
    if unix is None:
        warn_target("request", host)
    try:
        result = request(host, port, action, value, timeout=timeout, tls=tls, unix=unix)
    except RequestError as err:
        _failed(err, show_bytes, as_json)
    message = result.message
    _before_reply(result, show_bytes, as_json)
    if as_json:
        from socktools.addresses import format_addr
        from socktools.cli._common import stamped
        from socktools.request.report import tls_json
        click.echo(json.dumps(stamped({"ok": True, "address": format_addr(result.address),
                               "connect_ms": round(result.connect_s * 1000, 3),
                               "total_ms": round(result.total_s * 1000, 3),
                               "bytes_sent": len(result.sent), "bytes_received": result.received_bytes,
                               "response": _message_dict(message), **tls_json(result, show_bytes)}),
                               ensure_ascii=False))
        return
    value_obj = message.value
    if isinstance(value_obj, dict) and "error" in value_obj and "result" not in value_obj:
        die(f"server answered with an error: {value_obj['error']}", EXIT_FAILED)
    if isinstance(value_obj, dict) and "result" in value_obj:
        click.echo(value_obj["result"])
    else:
        click.echo(_content_text(message))


def _failed(err, show_bytes: bool, as_json: bool) -> None:
    """A request that failed, either kind: the bytes so far, the JSON verdict, one line, exit 1."""
    if show_bytes and err.result:
        _trace(err.result)
    if as_json:
        from socktools.cli._common import stamped
        click.echo(json.dumps(stamped({"ok": False, "phase": err.phase, "error": err.key,
                                       "message": str(err)})))
    die(str(err), EXIT_FAILED)


def _exchange(ctx, words, host, port, unix, timeout, show_bytes, as_json, mode, wire_params, tls, greeting) -> None:
    """A conversation in a wire protocol: build each request as flood would, send them in
    order on one connection (after the greeting, with --greeting), print each reply."""
    from socktools import wire
    from socktools.addresses import format_addr
    from socktools.wire import modes
    from socktools.request.client import MAX_EXCHANGES, RequestError, converse
    from socktools.cli._common import stamped
    from socktools.request.report import conversation_text, exchange_json, is_conversation, reply_text

    if words and unix is not None:
        raise click.UsageError("--unix names the whole target: give no HOST PORT")
    host, port = _host_port(ctx, words, host, port, f"--mode {mode}")
    if greeting and not wire_params.get("plugin") and "--greeting" in modes.get(mode).options:
        # the mode's opening waits for the greeting, as flood's does (a 5xx greeting refuses,
        # continuation lines are one greeting): request's own wait is for http and plug-ins
        wire_params, greeting = {**wire_params, "greeting": True}, False
    # a Unix socket has no host name: HTTP's Host header (required by HTTP/1.1) says localhost
    spec = wire_spec(mode, "localhost" if unix is not None else format_addr((host, port)), wire_params)
    proto = build_config(wire.build, spec=spec)
    labels = _labels(spec)
    if len(labels) > MAX_EXCHANGES:
        raise click.UsageError(f"{len(labels):,} exchanges: one conversation holds at most {MAX_EXCHANGES:,}")
    if greeting and proto.opening() is not None:
        raise click.BadParameter("the plug-in's opening() holds the whole opening conversation, its "
                                 "greeting too", param_hint="'--greeting'")
    if greeting and not proto.replies:      # (the modes with an opening say so when it is built)
        raise click.BadParameter("not with --no-reply: a greeting is read as a reply is",
                                 param_hint="'--greeting'")
    if len(labels) > 1 and proto.until_close:
        raise click.BadParameter("the server closes after each reply: one exchange per connection, "
                                 f"not {len(labels)}", param_hint="'--reply-until-close'")
    if unix is None:
        warn_target("request", host)
    try:
        result = converse(host, port, proto, count=len(labels), labels=labels, greeting=greeting,
                          timeout=timeout, tls=tls, unix=unix)
    except RequestError as err:
        _failed(err, show_bytes, as_json)
    _before_reply(result, show_bytes, as_json)
    if as_json:
        click.echo(json.dumps(stamped(exchange_json(result, spec.name, show_bytes)), ensure_ascii=False))
    elif not is_conversation(result):
        click.echo(reply_text(result))
    elif not show_bytes:                    # --show-bytes showed each reply under its bytes
        click.echo(conversation_text(result))
    if result.failures:
        from socktools.errors import tls_hint
        steps = [s for s in ([result.greeting] if result.greeting else []) + result.steps if s.failures]
        step = steps[0] if steps else None
        f = step.failures[0] if step else result.failures[0]
        where = ""
        if step is not None and is_conversation(result):
            where = "the greeting: " if step is result.greeting else \
                f"exchange {result.steps.index(step) + 1} ({step.label}): "
        hint = tls_hint(result.received, None, tls=result.tls is not None)
        die(f"{where}the reply is a failure ({f.kind}): {f.detail}" + (f"; {hint}" if hint else ""), EXIT_FAILED)


def _host_port(ctx, words, host: str, port: int, with_what: str) -> tuple:
    """The target from the HOST PORT words (or --host/--port when there are none)."""
    if len(words) == 2:
        host, port_text = words
        refuse_path_as_host(host, "HOST")
        return host, PORT.convert(port_text, None, ctx)
    if words:
        raise click.UsageError(f"with {with_what}, give HOST PORT or nothing, not {len(words)} word(s)")
    return host, port


#: Reply framings a datagram does not need (it is one whole message); refused with --udp.
_STREAM_FRAMINGS = ("reply_until", "reply_prefix", "reply_prefix_adjust", "reply_until_close")


def _udp(ctx, words, host, port, unix, timeout, show_bytes, as_json, mode, greeting, wire_params, tls) -> None:
    """request --udp: each request one datagram on a connected UDP socket, each reply one datagram."""
    import dataclasses

    from click.core import ParameterSource

    from socktools import wire
    from socktools.addresses import format_addr
    from socktools.request.report import datagram_head, datagram_line, datagram_text, udp_json
    from socktools.request.udp import REPLY_BUFFER, UdpError, datagrams
    from socktools.wire.datagram import MAX_DATAGRAM
    from socktools.wire.options import reply_match

    def refuse(option: str, why: str):
        raise click.BadParameter(why, param_hint=f"'{option}'")

    if unix is not None:
        refuse("--unix", "--udp is UDP over IP: a Unix-domain socket is not a UDP port")
    if tls.enabled:
        refuse("--tls", "no TLS over UDP (that is DTLS, which socktools does not speak)")
    if greeting:
        refuse("--greeting", "a UDP server cannot speak first: it knows no peer until a datagram arrives")
    if wire_params.get("plugin"):
        refuse("--protocol", "plug-ins frame replies in a stream: not with --udp")
    for param in ("greeting_match", "setups"):
        if wire_params.get(param):
            refuse(option_name(param), "no opening conversation over UDP: each datagram stands alone")
    if ctx.get_parameter_source("mode") is ParameterSource.DEFAULT:
        mode = "raw"
    if mode not in ("raw", "line"):
        refuse("--mode", f"{mode} runs over TCP; with --udp: raw or line (a DNS query is a raw datagram)")
    for param in _STREAM_FRAMINGS:
        if ctx.get_parameter_source(param) is not ParameterSource.DEFAULT:
            refuse(option_name(param), "a datagram is one whole reply: it needs no framing (--reply-match "
                                       "checks it; --reply-bytes sets the buffer it is read into)")
    if timeout <= 0:
        refuse("--timeout", "a reply timeout must be above 0")
    buffer = REPLY_BUFFER
    if wire_params.get("reply_bytes") is not None:
        buffer = wire_params["reply_bytes"]
        if not 1 <= buffer <= REPLY_BUFFER:
            refuse("--reply-bytes", f"the reply buffer is 1 to {REPLY_BUFFER:,} bytes (more than any datagram)")
    host, port = _host_port(ctx, words, host, port, "--udp")
    spec = wire_spec(mode, format_addr((host, port)), wire_params)
    replies = not spec.no_reply
    match = build_config(reply_match, spec=spec)
    # The requests, built by the mode as over TCP (escapes, placeholders, --eol); the reply
    # framing the builder asks for is a stream's, so it builds them as write-only.
    if mode == "raw" and replies:
        spec = dataclasses.replace(spec, no_reply=True, reply_bytes=None, reply_match=None)
    proto = build_config(wire.build, spec=spec)
    labels = _labels(spec)
    payloads = [proto.request(seq, 0) for seq in range(len(labels))]
    for payload in payloads:
        if len(payload) > MAX_DATAGRAM:
            refuse("--send-file" if spec.send_file is not None else "--send",
                   f"a {len(payload):,}-byte request: a UDP datagram holds at most {MAX_DATAGRAM:,} bytes")
    warn_target("request", host)
    try:
        result = datagrams(host, port, payloads, labels=labels, timeout=timeout, replies=replies,
                           buffer=buffer, match=match)
    except UdpError as err:
        if as_json:
            from socktools.cli._common import stamped
            click.echo(json.dumps(stamped(udp_json(err.result, mode, replies, err)), ensure_ascii=False))
        elif len(err.result.steps) > 1 or show_bytes:
            _udp_steps(err.result, show_bytes, datagram_head, datagram_text, done_only=True)
        die(str(err), EXIT_FAILED)
    if as_json:
        from socktools.cli._common import stamped
        click.echo(json.dumps(stamped(udp_json(result, mode, replies)), ensure_ascii=False))
    elif len(result.steps) == 1 and not show_bytes:
        step = result.steps[0]
        click.echo(datagram_text(step))
        if step.reply is not None:
            click.echo(datagram_line(step), err=True)     # stdout stays the reply
    else:
        _udp_steps(result, show_bytes, datagram_head, datagram_text)
    failed = [(i, s) for i, s in enumerate(result.steps, 1) if s.failures]
    if failed:
        i, step = failed[0]
        f = step.failures[0]
        where = f"datagram {i} ({step.label}): " if len(result.steps) > 1 else ""
        die(f"{where}the reply is a failure ({f.kind}): {f.detail}", EXIT_FAILED)


def _udp_steps(result, show_bytes: bool, head, text, done_only: bool = False) -> None:
    """Each datagram under its head (with --show-bytes: the bytes each way first)."""
    from socktools.addresses import format_addr
    if show_bytes and result.local is not None:
        click.echo(f"UDP {format_addr(result.local)} -> {format_addr(result.address)} (a connected socket: "
                   "connect() sent nothing; the kernel takes only that peer's datagrams)")
    for i, step in enumerate(result.steps, 1):
        if done_only and step.reply is None:
            break
        click.echo(head(step, i))
        if show_bytes:
            click.echo(f">>> sent {len(step.sent):,} bytes in one datagram")
            click.echo(repr(step.sent))
            if step.reply is not None:
                click.echo(f"<<< received {step.size:,} bytes in one datagram from {format_addr(step.peer)}")
        click.echo(text(step))


def _labels(spec) -> tuple:
    """What the user typed for each exchange, in order: every --command, --send or --path
    (or the one default request)."""
    if spec.mode == "http" and spec.paths:
        return tuple(f"{spec.method} {p}" for p in spec.paths)
    texts = spec.commands or spec.sends
    if texts:
        return tuple(texts)
    return ("",)
