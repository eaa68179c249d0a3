"""pytest fixtures: a real `socktools serve` and `socktools proxy` in a test, toxics as context managers.

Loaded by pytest through the ``pytest11`` entry point of the installed package
(or ``-p socktools.proxy.pytest_plugin``).  Nothing runs until a test asks
for a fixture:

``socktools_proxy(upstream)``
    A proxy in front of ``"HOST:PORT"`` (or a ``(host, port)``); the client
    connects to its ``.address`` / ``.port``.  Its toxics are context managers,
    added on entry and removed on exit (also from the connections opened
    meanwhile)::

        def test_my_client_times_out(socktools_proxy):
            proxy = socktools_proxy("127.0.0.1:6379")
            with proxy.latency(500):
                with pytest.raises(TimeoutError):
                    my_client.get(proxy.address, "key", timeout=0.2)

    ``latency(ms, jitter=0)``, ``bandwidth(kb_per_s)``, ``slow_close(ms)``,
    ``timeout(ms)``, ``reset_peer(after=ms)``, ``slicer(average_size, size_variation, delay_us)``,
    ``limit_data(n)``, ``toxic(type, **attributes)``; each takes ``stream="upstream"``
    (default ``"downstream"``) and ``toxicity=``.  ``down()``: the proxy refuses
    connections for the block.

``socktools_server(mode="echo")``
    A real `socktools serve` (``echo``, ``framed`` or ``sink``) on a free
    loopback port: ``.address`` is its ``(host, port)``.

One `socktools proxy --api` child serves the whole session (started on first
use); each test's proxies are deleted when the test ends.  The children stop
with the session, or by themselves if pytest dies (their stdin closes).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import urllib.error
import urllib.request
from typing import Any, Iterator, Optional

import pytest

from socktools.core.embedded import EmbeddedServer, socktools_argv

__all__ = ["ProxyHandle", "EmbeddedProxy", "socktools_proxy", "socktools_server"]

#: How long an API call may take before the fixture gives up: the API answers from the
#: proxy's loop between reads, in microseconds; seconds mean the child is stuck.
API_TIMEOUT = 10.0


class EmbeddedProxy(EmbeddedServer):
    """A `socktools proxy --api 127.0.0.1:0` child; ``.address`` is the API's ``(host, port)``."""

    def __init__(self, startup_timeout: float = 15.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKTOOLS_PROXY_")}
        super().__init__(startup_timeout=startup_timeout, popen_kw={"env": env})

    def _command(self) -> list:
        # --quiet: no line per connection, so the unread stdout pipe never fills
        return socktools_argv("proxy", "--json", "--quiet", "--stop-on-stdin-eof", "--api", "127.0.0.1:0")

    def _listening(self, line: str) -> Optional[tuple]:
        event = self._parse(line)
        if event and event.get("event") == "api":
            host, _, port = event["address"].rpartition(":")
            return host.strip("[]"), int(port)
        return None

    def call(self, method: str, path: str, doc: Any = None) -> Any:
        """One API request; the JSON answer (None for 204).  An error status raises
        RuntimeError with the proxy's own message."""
        host, port = self.address
        data = None if doc is None else json.dumps(doc).encode()
        req = urllib.request.Request(f"http://{host}:{port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=API_TIMEOUT) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"socktools proxy: {method} {path}: {exc.read().decode(errors='replace')}") from None
        return json.loads(body) if body else None


class ProxyHandle:
    """One proxy of a test: where to connect, and its toxics as context managers."""

    _names = itertools.count(1)

    def __init__(self, api: EmbeddedProxy, name: str, upstream: str) -> None:
        self.api = api
        self.name = name
        doc = api.call("POST", "/proxies", {"name": name, "upstream": upstream, "listen": "127.0.0.1:0"})
        host, _, port = doc["listen"].rpartition(":")
        self.address = (host.strip("[]"), int(port))
        self.port = self.address[1]
        self.upstream = upstream

    @contextlib.contextmanager
    def toxic(self, type: str, *, stream: str = "downstream", toxicity: float = 1.0,
              **attributes: int) -> Iterator[dict]:
        name = f"{type}_{stream}_{next(self._names)}"
        doc = self.api.call("POST", f"/proxies/{self.name}/toxics",
                            {"name": name, "type": type, "stream": stream, "toxicity": toxicity,
                             "attributes": attributes})
        try:
            yield doc
        finally:
            self.api.call("DELETE", f"/proxies/{self.name}/toxics/{name}")

    def latency(self, ms: int, jitter: int = 0, **kw: Any):
        return self.toxic("latency", latency=ms, jitter=jitter, **kw)

    def bandwidth(self, kb_per_s: int, **kw: Any):
        return self.toxic("bandwidth", rate=kb_per_s, **kw)

    def slow_close(self, ms: int, **kw: Any):
        return self.toxic("slow_close", delay=ms, **kw)

    def timeout(self, ms: int = 0, **kw: Any):
        return self.toxic("timeout", timeout=ms, **kw)

    def reset_peer(self, after: int = 0, **kw: Any):
        return self.toxic("reset_peer", timeout=after, **kw)

    def slicer(self, average_size: int, size_variation: int = 0, delay_us: int = 0, **kw: Any):
        return self.toxic("slicer", average_size=average_size, size_variation=size_variation, delay=delay_us, **kw)

    def limit_data(self, n: int, **kw: Any):
        return self.toxic("limit_data", bytes=n, **kw)

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        self.api.call("POST", f"/proxies/{self.name}", {"enabled": False})
        try:
            yield
        finally:
            self.api.call("POST", f"/proxies/{self.name}", {"enabled": True})

    def delete(self) -> None:
        self.api.call("DELETE", f"/proxies/{self.name}")


@pytest.fixture(scope="session")
def socktools_proxy_api() -> Iterator[EmbeddedProxy]:
    """The session's `socktools proxy --api` child."""
    proxy = EmbeddedProxy().start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def socktools_proxy(socktools_proxy_api: EmbeddedProxy):
    """``socktools_proxy("HOST:PORT")`` -> :class:`ProxyHandle`; deleted when the test ends."""
    made: list = []

    def make(upstream: Any) -> ProxyHandle:
        if not isinstance(upstream, str):
            host, port = upstream[0], upstream[1]
            upstream = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        handle = ProxyHandle(socktools_proxy_api, f"pytest{os.getpid()}-{next(ProxyHandle._names)}", upstream)
        made.append(handle)
        return handle

    yield make
    for handle in made:
        handle.delete()


@pytest.fixture
def socktools_server():
    """``socktools_server("echo")`` -> a started :class:`~socktools.core.embedded.EmbeddedServer`."""
    started: list = []

    def start(mode: str = "echo", *args: str) -> EmbeddedServer:
        server = EmbeddedServer(mode, args=args).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
