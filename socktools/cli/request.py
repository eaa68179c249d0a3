"""`socktools request`: one request (framed, or any flood mode), decoded."""

from __future__ import annotations

import json

import click

from socktools.cli._common import (DURATION, EXIT_FAILED, PORT, LazyChoice, LazyOption, build_config,
                                   check_target, die, refuse_path_as_host, unix_option, warn_target)
from socktools.cli._tls import tls_config, tls_options
from socktools.cli._wire import given_params, option_name, wire_options, wire_spec

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
Exit codes: 0 answered; 1 refused, reset, timed out, closed early or a
protocol error, or a failed TLS handshake (one line says which, with the
errno name or TLS reason, what it means and what to do); 2 a bad option;
3 an optional package is missing (--mode http: httptools); 130 Ctrl-C.
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
    # a conversation: each step's bytes, then its reply decoded (a step that failed has none yet)
    steps = ([result.greeting] if result.greeting is not None else []) + result.steps
    first = 0 if result.greeting is not None else 1
    for i, step in enumerate(steps, first):
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
@click.option("--mode", "-m", type=LazyChoice("socktools.wire.modes:REQUEST_MODES"), default="framed",
              show_default=True, cls=LazyOption, lazy_help="socktools.wire.modes:REQUEST_HELP")
@wire_options
@tls_options
@click.pass_context
def command(ctx, words, host, port, unix, timeout, show_bytes, as_json, greeting, mode, **wire_params):
    """Send one request and print the decoded response.

    In framed mode (the default), ACTION "search" sends a text/json request;
    any other action a binary one (content ACTION+VALUE), as docs/protocol.md
    describes.  --mode raw/line/redis/http or --protocol send one request of
    that protocol and print its reply, framed by the same parser flood uses;
    several --command/--send/--path are a conversation on one connection, each
    reply shown in order with its own time.  --tls shows the certificates the
    server sent; with --show-bytes, the TLS records as well as the plaintext.
    """
    from socktools.request.client import RequestError, request

    tls = tls_config(wire_params)
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
    from socktools.request.client import MAX_EXCHANGES, RequestError, converse
    from socktools.cli._common import stamped
    from socktools.request.report import conversation_text, exchange_json, is_conversation, reply_text

    if words and unix is not None:
        raise click.UsageError("--unix names the whole target: give no HOST PORT")
    if len(words) == 2:
        host, port_text = words
        refuse_path_as_host(host, "HOST")
        port = PORT.convert(port_text, None, ctx)
    elif words:
        raise click.UsageError(f"with --mode {mode}, give HOST PORT or nothing, not {len(words)} word(s)")
    # a Unix socket has no host name: HTTP's Host header (required by HTTP/1.1) says localhost
    spec = wire_spec(mode, "localhost" if unix is not None else format_addr((host, port)), wire_params)
    proto = build_config(wire.build, spec=spec)
    labels = _labels(spec)
    if len(labels) > MAX_EXCHANGES:
        raise click.UsageError(f"{len(labels):,} exchanges: one conversation holds at most {MAX_EXCHANGES:,}")
    if greeting and not proto.replies:
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


def _labels(spec) -> tuple:
    """What the user typed for each exchange, in order: every --command, --send or --path
    (or the one default request)."""
    if spec.mode == "http" and spec.paths:
        return tuple(f"{spec.method} {p}" for p in spec.paths)
    texts = spec.commands or spec.sends
    if texts:
        return tuple(texts)
    return ("",)
