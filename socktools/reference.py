"""The tutorial's application on top of the framed protocol (docs/protocol.md).

The reference client turns ``ACTION VALUE`` into a request; the reference
server looks ``search`` values up in a small table and answers anything else
with the first ten bytes it was sent.  Sans-I/O like :mod:`socktools.protocol`,
which it builds on: bytes and messages in, bytes out.
"""

from __future__ import annotations

import sys

from socktools.protocol import (CLIENT_BINARY, SERVER_BINARY, TEXT_JSON, LocalProtocolError, Message,
                                encode_json, encode_message)

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


def respond(request: Message, *, byteorder: str = sys.byteorder) -> bytes:
    """The reference server's answer to ``request``, as wire bytes.

    When the request asked for keep-alive, the response carries
    ``"keep-alive": true`` too, telling the client the connection stays open.
    """
    extra = {"keep-alive": True} if request.keep_alive else None
    if request.content_type == TEXT_JSON:
        action = request.value.get("action")
        if action == "search":
            query = request.value.get("value")
            answer = SEARCH_TABLE.get(query) if isinstance(query, str) else None
            result = answer if answer is not None else f"No match for '{query}'."
        else:
            result = f"Error: invalid action '{action}'."
        return encode_json({"result": result}, byteorder=byteorder, extra=extra)
    content = b"First 10 bytes of request: " + request.content[:10]
    return encode_message(content, SERVER_BINARY, "binary", byteorder=byteorder, extra=extra)
