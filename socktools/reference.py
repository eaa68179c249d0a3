"""The tutorial's application on top of the framed protocol (docs/protocol.md).

The reference client turns ``ACTION VALUE`` into a request; the reference
server looks ``search`` values up in a small table and answers anything else
with the first ten bytes it was sent.  Sans-I/O like :mod:`socktools.protocol`,
which it builds on: bytes and messages in, bytes out.
"""

from __future__ import annotations

import sys

from socktools.protocol import (CLIENT_BINARY, SERVER_BINARY, TEXT_JSON, LocalProtocolError, Message,
                                encode_json, encode_message, error_response, escape_surrogates)

__all__ = ["SEARCH_TABLE", "make_request", "respond"]

#: Responses of the reference server to ``search`` (docs/protocol.md).
SEARCH_TABLE = {
    "morpheus": "Follow the white rabbit. \U0001f430",
    "ring": "In the caves beneath the Misty Mountains. \U0001f48d",
    "\U0001f436": "\U0001f43e Playing ball! \U0001f3d0",
}


def make_request(action: str, value: str, *, keep_alive: bool = False,
                 byteorder: str = sys.byteorder) -> bytes:
    """The request the reference client sends for ``ACTION VALUE`` (docs/protocol.md).

    ``search`` becomes a ``text/json`` request; any other action a binary one
    whose content is ``action + value``.  ``keep_alive`` adds the socktools
    extension key so the server keeps the connection open afterwards.
    """
    extra = {"keep-alive": True} if keep_alive else None
    if action == "search":
        return encode_json({"action": action, "value": value}, byteorder=byteorder, extra=extra)
    try:
        content = (action + value).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"request cannot be encoded as UTF-8: {exc}", "bad-content") from None
    return encode_message(content, CLIENT_BINARY, "binary", byteorder=byteorder, extra=extra)


def _answer(value: dict) -> str:
    action = value.get("action")
    if action == "search":
        query = value.get("value")
        answer = SEARCH_TABLE.get(query) if isinstance(query, str) else None
        return answer if answer is not None else f"No match for '{query}'."
    return f"Error: invalid action '{action}'."


def respond(request: Message, *, byteorder: str = sys.byteorder) -> bytes:
    """The reference server's answer to ``request``, as wire bytes.  Never raises.

    When the request asked for keep-alive, the response carries
    ``"keep-alive": true`` too, telling the client the connection stays open.
    The decoder refuses values UTF-8 cannot carry, but a :class:`Message`
    built by hand may hold anything: a value the answer cannot quote as UTF-8
    (a lone surrogate) is quoted with ``\\udXXX`` escapes instead, and a
    ``text/json`` message whose value is not an object gets the error reply.
    """
    extra = {"keep-alive": True} if request.keep_alive else None
    if request.content_type == TEXT_JSON:
        value = request.value
        if not isinstance(value, dict):
            return error_response("text/json content must be a JSON object", byteorder=byteorder)
        try:
            result = escape_surrogates(_answer(value))
        except (RecursionError, ValueError):  # quoting a value nested to the parser's limit
            return error_response("value too deeply nested to quote in the answer", byteorder=byteorder)
        return encode_json({"result": result}, byteorder=byteorder, extra=extra)
    content = b"First 10 bytes of request: " + bytes(request.content[:10])
    return encode_message(content, SERVER_BINARY, "binary", byteorder=byteorder, extra=extra)
