"""`socktools request`: one framed request, decoded."""

from __future__ import annotations

import json

import click

from socktools.cli._common import DURATION, EXIT_FAILED, PORT, die

EPILOG = """\b
Examples:
  socktools request search morpheus               # to 127.0.0.1:65432
  socktools request --port 43567 binary hello --show-bytes
  socktools request 127.0.0.1 65432 search ring   # the tutorial's HOST PORT ACTION VALUE
  socktools request --host ::1 search 🐶 --json

\b
Exit codes: 0 answered; 1 refused, reset, timed out, closed early or a
protocol error (one line says which, with the errno name).
"""


def _content_text(message) -> str:
    if message.value is not None:
        return json.dumps(message.value, ensure_ascii=False)
    return message.content.decode("utf-8", "backslashreplace")


def _trace(result) -> None:
    from socktools.addresses import format_addr
    click.echo(f"connected to {format_addr(result.address)} in {result.connect_s * 1000:.3f} ms")
    if result.sent:
        click.echo(f">>> sent {len(result.sent)} bytes")
        click.echo(repr(result.sent))
    if result.received:
        click.echo(f"<<< received {len(result.received)} bytes in {result.recv_calls} recv() call(s)")
        click.echo(repr(result.received))


def _message_dict(message) -> dict:
    d = {"header": message.header, "wire_size": message.wire_size}
    if message.value is not None:
        d["value"] = message.value
    else:
        d["content"] = message.content.decode("utf-8", "backslashreplace")
    return d


@click.command(epilog=EPILOG)
@click.argument("words", nargs=-1, required=True, metavar="[HOST PORT] ACTION VALUE")
@click.option("--host", default="127.0.0.1", show_default=True, metavar="HOST", help="Server address; ::1 for IPv6.")
@click.option("--port", "-p", type=PORT, default=65432, show_default=True, help="Server port.")
@click.option("--timeout", type=DURATION, default=5.0, show_default=True, metavar="DURATION",
              help="For the whole exchange (connect, send, receive).")
@click.option("--show-bytes", is_flag=True, help="Print the exact bytes sent and received (a wire trace).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole exchange as JSON.")
def command(words, host, port, timeout, show_bytes, as_json):
    """Send one framed-protocol request and print the decoded response.

    ACTION "search" sends a text/json request; any other action a binary one
    (content ACTION+VALUE), as SPEC §1 describes.
    """
    from socktools.request.client import RequestError, request

    if len(words) == 4:
        host, port_text, action, value = words
        port = PORT.convert(port_text, None, click.get_current_context())
    elif len(words) == 2:
        action, value = words
    else:
        raise click.UsageError(f"expected ACTION VALUE or HOST PORT ACTION VALUE, got {len(words)} word(s)")
    try:
        result = request(host, port, action, value, timeout=timeout)
    except RequestError as err:
        if show_bytes and err.result:
            _trace(err.result)
        if as_json:
            from socktools.cli._common import stamped
            click.echo(json.dumps(stamped({"ok": False, "phase": err.phase, "error": err.key,
                                           "message": str(err)})))
        die(str(err), EXIT_FAILED)
    message = result.message
    if show_bytes:
        _trace(result)
    if as_json:
        from socktools.addresses import format_addr
        from socktools.cli._common import stamped
        click.echo(json.dumps(stamped({"ok": True, "address": format_addr(result.address),
                               "connect_ms": round(result.connect_s * 1000, 3),
                               "total_ms": round(result.total_s * 1000, 3),
                               "bytes_sent": len(result.sent), "bytes_received": len(result.received),
                               "response": _message_dict(message)}), ensure_ascii=False))
        return
    value_obj = message.value
    if isinstance(value_obj, dict) and "error" in value_obj and "result" not in value_obj:
        die(f"server answered with an error: {value_obj['error']}", EXIT_FAILED)
    if isinstance(value_obj, dict) and "result" in value_obj:
        click.echo(value_obj["result"])
    else:
        click.echo(_content_text(message))
