"""What a proxy run is told: proxies (listen -> upstream) and their toxics, checked when built.

The toxics and their attributes are Toxiproxy 2.x's (``toxics/*.go``): the same
names, the same units (milliseconds, KB/s where 1 KB = 1000 bytes, slicer's
``delay`` in microseconds), the same defaults (stream ``downstream``, toxicity
1.0, name ``TYPE_STREAM``).  Unlike Toxiproxy, an attribute it does not know is
an error naming it, not silently ignored: a typo (``latancy``) would otherwise
leave a test running without the toxic it thinks it has.

Pure data and parsing, no sockets: the CLI, the config file and the HTTP API
all build :class:`ProxySpec` / :class:`ToxicSpec` through :func:`toxic_from_json`
and :func:`proxy_from_json`, so every door checks the same way.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Optional

from socktools.errors import OptionError
from socktools.tlsconf import ServerTlsConfig, TlsConfig

__all__ = ["TOXICS", "STREAMS", "ToxicSpec", "ProxySpec", "ProxyConfig", "SpecError", "toxic_from_json",
           "proxy_from_json", "parse_hostport", "check_address", "unix_path", "UNIX_PREFIX", "parse_toxic_option", "load_config_file",
           "MAX_ATTRIBUTE", "MAX_PROXIES", "MAX_TOXICS", "MAX_WORKERS", "DEFAULT_API", "DEFAULT_DRAIN"]

#: Each toxic's attributes and their defaults (Toxiproxy's zero values).  Units: latency,
#: jitter, delay (slow_close), timeout: ms; rate: KB/s (1000 bytes); slicer's delay: us;
#: average_size, size_variation, bytes: bytes.
TOXICS: dict[str, dict[str, int]] = {
    "latency": {"latency": 0, "jitter": 0},
    "bandwidth": {"rate": 0},
    "slow_close": {"delay": 0},
    "timeout": {"timeout": 0},
    "reset_peer": {"timeout": 0},
    "slicer": {"average_size": 0, "size_variation": 0, "delay": 0},
    "limit_data": {"bytes": 0},
    # Beyond Toxiproxy: stop reading the sender (its kernel buffers fill, its send() blocks);
    # after timeout ms (0: until the toxic is removed) everything held passes.
    "stall": {"timeout": 0},
    # Beyond Toxiproxy: act on whole messages, framed by the wire parsers: the nth (1-based;
    # 0 = every one) whose summary matches the regex `match` ("" = any) is delayed (`delay`
    # ms), or cut after `cut` bytes and the connection closed or reset.
    "message": {"protocol": "redis", "nth": 0, "match": "", "action": "reset", "delay": 0, "cut": 0},
}

#: What the message toxic does to a message it picks.
MESSAGE_ACTIONS = ("delay", "close", "reset")
#: Longest text attribute (a regex): a pattern is a line, not a document.
MAX_TEXT_ATTRIBUTE = 1000

#: upstream: client -> server; downstream: server -> client (Toxiproxy's words).
STREAMS = ("upstream", "downstream")

#: Largest attribute value: 2**31 - 1 (Toxiproxy's are int64, but 24 days in ms, or 2 GB, is
#: already beyond any test; the cap keeps timer arithmetic and slicing far from overflow).
MAX_ATTRIBUTE = 2 ** 31 - 1
#: Proxies one run may hold (each is a listening socket and a name in the API's table).
MAX_PROXIES = 1000
#: Toxics on one proxy: each is a stage every chunk passes, per direction and connection.
MAX_TOXICS = 64
#: Most worker processes of one run (--workers).  A worker is worth one CPU, and the parent
#: holds one listening socket per proxy and worker (1000 proxies x 64 workers is already
#: 64,000 descriptors): more than 64 buys nothing on any machine this runs on.
MAX_WORKERS = 64
#: Where --api listens by default: Toxiproxy's own port, on loopback.
DEFAULT_API = "127.0.0.1:8474"
#: How long the first Ctrl-C/SIGTERM lets connections with bytes in flight finish.
DEFAULT_DRAIN = 5.0
#: ``--splice``: how a link that no toxic and no decoder sees forwards (socktools.proxy.link):
#: ``auto`` copies small messages on the loop's batch path and splices a bulk transfer (as
#: haproxy's ``option splice-auto``), ``always`` splices from the start, ``never`` copies.
SPLICE_MODES = ("auto", "always", "never")


class SpecError(ValueError):
    """A proxy or toxic description that cannot work; the message names the field."""


#: A Unix-domain socket on either side is written ``unix:PATH`` -- nginx's and haproxy's
#: spelling -- in --listen, --to, a config file and the API alike (one address field each).
UNIX_PREFIX = "unix:"
#: The longest Unix socket path, in bytes: Linux's ``sockaddr_un.sun_path`` is 108 bytes with
#: its terminating NUL (man 7 unix); a longer one cannot be bound or connected to.
MAX_UNIX_PATH = 107


def unix_path(text: Any) -> Optional[str]:
    """The path of a ``unix:PATH`` address; None for ``HOST:PORT``."""
    if isinstance(text, str) and text.startswith(UNIX_PREFIX):
        return text[len(UNIX_PREFIX):]
    return None


def check_address(text: Any, what: str) -> None:
    """``HOST:PORT`` or ``unix:PATH``, or :class:`SpecError` naming ``what`` and the problem."""
    path = unix_path(text)
    if path is None:
        try:
            parse_hostport(text, what)
        except SpecError as exc:
            raise SpecError(str(exc).replace("expected HOST:PORT", "expected HOST:PORT or unix:PATH")) from None
        return
    try:
        raw = os.fsencode(path)
    except UnicodeError:
        raise SpecError(f"{what}: {text!r}: the path holds a character that is not bytes") from None
    if not raw or b"\0" in raw:
        raise SpecError(f"{what}: expected unix:PATH with a path (and no NUL byte), got {text!r}")
    if len(raw) > MAX_UNIX_PATH:
        raise SpecError(f"{what}: the path is {len(raw)} bytes long: a Unix socket path holds at most "
                        f"{MAX_UNIX_PATH} bytes; choose a shorter one")


def parse_hostport(text: str, what: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"`` / ``"[::1]:80"`` / ``"localhost:6379"`` -> (host, port)."""
    if not isinstance(text, str) or not text:
        raise SpecError(f"{what}: expected HOST:PORT, got {text!r}")
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise SpecError(f"{what}: expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        host = "127.0.0.1"   # Toxiproxy's ":PORT" shorthand; we bind loopback, not every interface
    number = int(port)
    if number > 65535:
        raise SpecError(f"{what}: port {number} is out of range 0-65535")
    return host, number


@dataclass(frozen=True)
class ToxicSpec:
    """One toxic as Toxiproxy's API shows it."""

    name: str
    type: str
    stream: str = "downstream"
    toxicity: float = 1.0
    attributes: tuple = ()      # ((name, value), ...) in TOXICS' order: hashable and picklable

    @property
    def attrs(self) -> dict:
        return dict(self.attributes)

    def to_json(self) -> dict:
        return {"name": self.name, "type": self.type, "stream": self.stream, "toxicity": self.toxicity,
                "attributes": self.attrs}


def check_fields(doc: dict, allowed: set, what: str) -> None:
    """A field ``doc`` has that ``allowed`` does not is an error naming it (a typo is not ignored)."""
    extra = sorted(set(doc) - allowed)
    if extra:
        raise SpecError(f"unknown field {extra[0]!r} in {what} (fields: {', '.join(sorted(allowed))})")


#: The fields of a toxic and of a proxy in Toxiproxy's JSON (plus a proxy's ``toxics``).
TOXIC_FIELDS = {"name", "type", "stream", "toxicity", "attributes"}
PROXY_FIELDS = {"name", "listen", "upstream", "enabled", "toxics"}
#: A proxy's TLS, either side (a config file's fields, beyond Toxiproxy's; not the API's: they
#: name files on this machine -- certificates read, a key log written -- which a caller of an
#: unauthenticated HTTP API must not choose).  Each side's fields are its options' names:
#: ``listen_tls`` is serve's server side (``--cert``...), ``upstream_tls`` the client options
#: of the commands that connect (``--cafile``, ``--sni``...).
TLS_FIELDS = {"listen_tls", "upstream_tls"}
LISTEN_TLS_FIELDS = {"cert", "key", "self_signed", "client_ca", "tls_min", "tls_max", "ciphers", "alpn"}
UPSTREAM_TLS_FIELDS = {"sni", "cafile", "capath", "insecure", "cert", "key", "tls_min", "tls_max", "ciphers",
                       "alpn", "keylog"}


def _toxicity(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0 \
            or math.isnan(value):
        raise SpecError(f"toxicity: expected a number from 0 to 1, got {value!r}")
    return float(value)


def _attributes(kind: str, given: Any, base: Optional[dict] = None) -> tuple:
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise SpecError(f"attributes: expected an object, got {type(given).__name__}")
    known = TOXICS[kind]
    values = dict(known if base is None else base)
    for key, value in given.items():
        if key not in known:
            raise SpecError(f"unknown attribute {key!r} for toxic type {kind!r} "
                            f"(it takes {', '.join(known)})")
        if isinstance(known[key], str):
            if not isinstance(value, str) or len(value) > MAX_TEXT_ATTRIBUTE:
                raise SpecError(f"attribute {key!r} of {kind}: expected text of at most "
                                f"{MAX_TEXT_ATTRIBUTE} characters, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ATTRIBUTE:
            raise SpecError(f"attribute {key!r} of {kind}: expected a whole number from 0 to "
                            f"{MAX_ATTRIBUTE}, got {value!r}")
        values[key] = value
    if kind == "slicer" and values["average_size"] < 1:
        raise SpecError("attribute 'average_size' of slicer: must be at least 1 byte")
    if kind == "message":
        _check_message(values)
    return tuple((k, values[k]) for k in known)


def _check_message(values: dict) -> None:
    from socktools.wire import modes
    # The built-in stream decoders only: a plug-in (MODULE:CLASS) would let the unauthenticated
    # API load any Python file on the machine.
    if values["protocol"] not in modes.stream_decoders():
        raise SpecError(f"attribute 'protocol' of message: no decoder for {values['protocol']!r} "
                        f"(decoders: {', '.join(modes.stream_decoders())})")
    if values["action"] not in MESSAGE_ACTIONS:
        raise SpecError(f"attribute 'action' of message: expected one of {', '.join(MESSAGE_ACTIONS)}, "
                        f"got {values['action']!r}")
    try:
        re.compile(values["match"])
    except re.error as exc:
        raise SpecError(f"attribute 'match' of message: not a regular expression: {exc}") from None


def toxic_from_json(doc: Any, *, base: Optional[ToxicSpec] = None) -> ToxicSpec:
    """A toxic from API/config JSON; with ``base``, an update of it (Toxiproxy's PATCH)."""
    if not isinstance(doc, dict):
        raise SpecError(f"a toxic must be a JSON object, got {type(doc).__name__}")
    check_fields(doc, TOXIC_FIELDS, "a toxic")
    if base is not None:
        for key in ("type", "stream"):
            if key in doc and doc[key] != getattr(base, key):
                raise SpecError(f"{key}: a toxic's {key} cannot change ({base.name} is "
                                f"{getattr(base, key)}); delete it and add a new one")
        return ToxicSpec(base.name, base.type, base.stream,
                         _toxicity(doc["toxicity"]) if "toxicity" in doc else base.toxicity,
                         _attributes(base.type, doc.get("attributes"), base.attrs))
    kind = doc.get("type")
    if kind not in TOXICS:
        raise SpecError(f"unknown toxic type {kind!r} (types: {', '.join(TOXICS)})")
    stream = doc.get("stream", "downstream")
    if stream not in STREAMS:
        raise SpecError(f"stream: expected upstream or downstream, got {stream!r}")
    name = doc.get("name") or f"{kind}_{stream}"
    if not isinstance(name, str):
        raise SpecError(f"name: expected a string, got {name!r}")
    return ToxicSpec(name, kind, stream, _toxicity(doc.get("toxicity", 1.0)),
                     _attributes(kind, doc.get("attributes")))


@dataclass(frozen=True)
class ProxySpec:
    """One proxy: its name, where it listens, where it forwards, and its toxics."""

    name: str
    listen: str
    upstream: str
    enabled: bool = True
    toxics: tuple = ()          # ToxicSpec, in the order they act
    # TLS from clients (the proxy is their TLS server) and to the upstream (its TLS client);
    # None: plaintext on that side.  Frozen configs: they pickle with the spec to a worker,
    # which makes its own contexts from them.
    listen_tls: Optional[ServerTlsConfig] = None
    upstream_tls: Optional[TlsConfig] = None

    def __post_init__(self) -> None:
        if self.upstream_tls is not None and not self.upstream_tls.enabled:
            object.__setattr__(self, "upstream_tls", None)
        if not self.name or not isinstance(self.name, str) or "/" in self.name:
            raise SpecError(f"name: a proxy needs a name without '/', got {self.name!r}")
        check_address(self.listen, "listen")
        check_address(self.upstream, "upstream")
        tls = self.upstream_tls
        if tls is not None and unix_path(self.upstream) is not None and not tls.sni and not tls.insecure:
            raise SpecError(f"upstream_tls: {self.name}: a unix:PATH upstream has no host name to check its "
                            f"certificate against: give sni (--upstream-sni NAME), or insecure")
        if len(self.toxics) > MAX_TOXICS:
            raise SpecError(f"{self.name}: more than {MAX_TOXICS} toxics")
        names = [t.name for t in self.toxics]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup is not None:
            raise SpecError(f"{self.name}: two toxics named {dup!r}")


def proxy_from_json(doc: Any, where: str = "proxy", *, tls: bool = False) -> ProxySpec:
    """A proxy from Toxiproxy's JSON (``name``, ``listen``, ``upstream``, ``enabled``) plus ``toxics``;
    with ``tls`` (a config file) also ``listen_tls`` and ``upstream_tls``."""
    if not isinstance(doc, dict):
        raise SpecError(f"{where}: a proxy must be a JSON object, got {type(doc).__name__}")
    if not tls:
        given = sorted(TLS_FIELDS & set(doc))
        if given:
            raise SpecError(f"{where}: {given[0]}: TLS is set in a --config file or on the command line, "
                            f"not through the API (it names files on this machine); a proxy the API "
                            f"creates is plaintext")
    check_fields(doc, PROXY_FIELDS | (TLS_FIELDS if tls else set()), where)
    for key in ("name", "upstream"):
        if not doc.get(key):
            raise SpecError(f"{where}: missing required field: {key}")
    enabled = doc.get("enabled", True)
    if not isinstance(enabled, bool):
        raise SpecError(f"{where}: enabled: expected true or false, got {enabled!r}")
    toxics = doc.get("toxics") or []
    if not isinstance(toxics, list):
        raise SpecError(f"{where}: toxics: expected a list")
    specs = []
    for i, t in enumerate(toxics):
        try:
            specs.append(toxic_from_json(t))
        except SpecError as exc:
            raise SpecError(f"{where} {doc['name']}: toxic {i + 1}: {exc}") from None
    return ProxySpec(str(doc["name"]), doc.get("listen") or "127.0.0.1:0", str(doc["upstream"]),
                     enabled, tuple(specs), _tls_from_json(doc, "listen_tls", where),
                     _tls_from_json(doc, "upstream_tls", where))


def _tls_from_json(doc: dict, field: str, where: str) -> Any:
    """``listen_tls`` -> a ServerTlsConfig, ``upstream_tls`` -> an enabled TlsConfig (``true``: the
    defaults -- the system's CAs, SNI the upstream's host); absent or ``false``: None."""
    value = doc.get(field)
    if value is None or value is False:
        return None
    if value is True:
        value = {}
    if not isinstance(value, dict):
        raise SpecError(f"{where}: {field}: expected an object (or true/false), got {value!r}")
    check_fields(value, LISTEN_TLS_FIELDS if field == "listen_tls" else UPSTREAM_TLS_FIELDS, f"{where}: {field}")
    values = dict(value)
    for key, v in values.items():
        if key in ("insecure", "self_signed"):
            ok = isinstance(v, bool)
        elif key == "alpn":
            ok = isinstance(v, list) and all(isinstance(p, str) for p in v)
            values[key] = tuple(v) if ok else v
        else:
            ok = isinstance(v, str)
        if not ok:
            kind = "true or false" if key in ("insecure", "self_signed") else \
                "a list of strings" if key == "alpn" else "a string"
            raise SpecError(f"{where}: {field}: {key}: expected {kind}, got {v!r}")
    try:
        if field == "upstream_tls":
            return TlsConfig(enabled=True, **values)
        if not values.get("self_signed") and not (values.get("cert") and values.get("key")):
            missing = "key" if values.get("cert") else "cert"
            raise OptionError(missing, "a TLS listener needs cert and key (PEM files), or self_signed = true")
        return ServerTlsConfig(**values)
    except OptionError as exc:
        # (The checks' words name the command line's options: here they are fields.)
        words = re.sub(r"--([a-z][a-z-]*)", lambda m: repr("self_signed" if m.group(1) == "tls-self-signed"
                                                         else m.group(1).replace("-", "_")), str(exc))
        raise SpecError(f"{where}: {field}: {exc.option}: {words}") from None


def parse_toxic_option(text: str) -> dict:
    """``--toxic TYPE[:attr=N,...,stream=S,toxicity=F,name=N]`` -> the toxic's JSON."""
    kind, _, rest = text.partition(":")
    doc: dict = {"type": kind.strip()}
    attrs: dict = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise SpecError(f"{part!r}: expected NAME=VALUE")
        key, value = key.strip(), value.strip()
        if key in ("stream", "name"):
            doc[key] = value
        elif key == "toxicity":
            try:
                doc[key] = float(value)
            except ValueError:
                raise SpecError(f"toxicity: expected a number from 0 to 1, got {value!r}") from None
        elif isinstance(TOXICS.get(kind.strip(), {}).get(key), str):
            attrs[key] = value          # a text attribute (message's protocol, action, match)
        else:
            try:
                attrs[key] = int(value)
            except ValueError:
                raise SpecError(f"attribute {key!r}: expected a whole number, got {value!r}") from None
    doc["attributes"] = attrs
    return doc


def load_config_file(path: str) -> list:
    """Proxies from a TOML (``[[proxies]]``) or JSON file (Toxiproxy's list, or ``{"proxies": [...]}``)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise SpecError(f"cannot read {path}: {exc.strerror or exc}") from None
    if path.endswith(".toml"):
        try:
            import tomllib
        except ImportError:   # Python 3.10
            raise SpecError(f"{path}: TOML needs Python 3.11 or later (tomllib); use JSON") from None
        try:
            doc: Any = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SpecError(f"{path}: not TOML: {exc}") from None
    else:
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise SpecError(f"{path}: not JSON: {exc} (a .toml name reads it as TOML)") from None
    if isinstance(doc, dict):
        doc = doc.get("proxies")
    if not isinstance(doc, list) or not doc:
        raise SpecError(f"{path}: expected a list of proxies (JSON: [...] or {{\"proxies\": [...]}}, "
                        f"TOML: [[proxies]] tables)")
    return [proxy_from_json(p, f"{path}: proxy {i + 1}", tls=True) for i, p in enumerate(doc)]


@dataclass(frozen=True)
class ProxyConfig:
    """A whole run: the proxies, the optional API address, the drain time, the decoder."""

    proxies: tuple = ()
    api: Optional[str] = None
    drain_timeout: float = DEFAULT_DRAIN
    stop_on_stdin_eof: bool = False
    seed: Optional[int] = None       # toxicity's and jitter's random numbers (tests; None: random)
    decode: Optional[str] = None     # a wire mode with a stream decoder, or a plug-in's MODULE:CLASS
    splice: str = "auto"             # SPLICE_MODES: when links no toxic or decoder sees use os.splice
    workers: int = 1                 # processes forwarding (1: this one; more: supervised children)

    def __post_init__(self) -> None:
        if not self.proxies and not self.api:
            raise OptionError("listen", "nothing to do: give --listen/--to pairs, --config FILE or --api")
        if len(self.proxies) > MAX_PROXIES:
            raise OptionError("config", f"more than {MAX_PROXIES} proxies")
        names = [p.name for p in self.proxies]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup is not None:
            raise OptionError("config", f"two proxies named {dup!r}")
        if self.api is not None:
            try:
                parse_hostport(self.api, "--api")
            except SpecError as exc:
                raise OptionError("api", str(exc)) from None
        if self.decode is not None:
            from socktools.wire.spec import stream_decoder
            stream_decoder(self.decode)   # a WireOptionError names --decode (a plug-in: flood's words)
        if self.drain_timeout < 0:
            raise OptionError("drain_timeout", "must not be negative")
        if self.splice not in SPLICE_MODES:
            raise OptionError("splice", f"{self.splice!r} is not one of {', '.join(SPLICE_MODES)}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) \
                or not 1 <= self.workers <= MAX_WORKERS:
            raise OptionError("workers", f"expected 1 to {MAX_WORKERS} worker processes, got {self.workers!r}")
