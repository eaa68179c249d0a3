"""Real servers for tests and benchmarks: redis-server, nginx and memcached on free loopback ports.

Each is started with a config the caller controls (files under a temporary
directory), waited for until it accepts a connection, and stopped by PID.
``skip_unless(binary)`` skips with a plain reason when the Debian package is
missing.  Helpers read each server's own request counts, so a test can hold
flood's count against the server's.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

import pytest

from tests.threadserver import read_until

__all__ = ["free_port", "skip_unless", "greets", "Redis", "Nginx", "Memcached", "NGINX_BIG", "Certs", "Vsftpd"]

_PACKAGES = {"redis-server": "redis-server", "nginx": "nginx", "memcached": "memcached",
             "redis-benchmark": "redis-tools", "wrk": "wrk", "vsftpd": "vsftpd"}
_SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")


def which(binary: str) -> Optional[str]:
    return shutil.which(binary) or next((os.path.join(d, binary) for d in _SBIN
                                         if os.access(os.path.join(d, binary), os.X_OK)), None)


def skip_unless(binary: str) -> str:
    path = which(binary)
    if path is None:
        pytest.skip(f"{binary} not installed (apt-get install {_PACKAGES.get(binary, binary)})")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepts(port: int, unix: Optional[Path] = None) -> bool:
    """Does the server take a connection (on its Unix socket ``unix`` when given)?"""
    try:
        if unix is not None:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(0.5)
                s.connect(str(unix))
                return True
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def greets(port: int, prefix: bytes = b"220") -> bool:
    """Does a server that speaks first (FTP, SMTP) take a connection and greet with ``prefix``?"""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.settimeout(2)
            return s.recv(200).startswith(prefix)
    except OSError:
        return False


class _Peer:
    cmd: list
    name = "server"
    unix: Optional[Path] = None      # the Unix socket it listens on instead of a TCP port

    def start(self, timeout: float = 10.0) -> "_Peer":
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     preexec_fn=getattr(self, "preexec", None))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace")
                raise RuntimeError(f"{self.name} exited at once ({self.proc.returncode}): {err[-500:]}")
            if _accepts(self.port, self.unix):
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.name} did not listen on {self.unix or self.port} within {timeout:g}s")

    def stop(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stderr:
            proc.stderr.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class Certs:
    """A throwaway CA (trustme), a server certificate for 127.0.0.1 and localhost (``expired``:
    one that expired in 2020; ``not_after``: one valid until then, a UTC datetime;
    ``intermediate``: issued by an intermediate CA, which the server file carries after the
    leaf), and a client certificate, written as PEM files under ``tmp`` for servers and clients
    to name."""

    def __init__(self, tmp: Path, *, expired: bool = False, not_after=None, intermediate: bool = False) -> None:
        import datetime
        trustme = pytest.importorskip("trustme", reason="trustme not installed (pip install trustme)")
        self.ca_obj = trustme.CA()
        # expired: valid for January 2020 only, to test what a client says about it
        span = {"not_before": datetime.datetime(2020, 1, 1), "not_after": datetime.datetime(2020, 2, 1)} \
            if expired else {"not_after": not_after} if not_after else {}
        issuer = self.ca_obj.create_child_ca() if intermediate else self.ca_obj
        server = issuer.issue_cert("127.0.0.1", "localhost", **span)
        client = self.ca_obj.issue_cert("client.socktools.test")
        self.ca, self.cert, self.key = tmp / "ca.pem", tmp / "server.pem", tmp / "server.key"
        self.client_cert, self.client_key = tmp / "client.pem", tmp / "client.key"
        self.ca_obj.cert_pem.write_to_path(str(self.ca))
        server.private_key_pem.write_to_path(str(self.key))
        with open(self.cert, "wb") as f:                      # the chain: leaf first
            for pem in server.cert_chain_pems:
                f.write(pem.bytes())
        client.private_key_pem.write_to_path(str(self.client_key))
        client.cert_chain_pems[0].write_to_path(str(self.client_cert))

    def client_context(self, *, client_cert: bool = False):
        import ssl
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if client_cert:
            ctx.load_cert_chain(str(self.client_cert), str(self.client_key))
        return ctx


def _exchange(port: int, request: bytes, parser, tls=None, unix: Optional[Path] = None, replies: int = 1) -> list:
    """One blocking request through a wire parser (over TLS with ``tls``, an SSLContext; to the
    Unix socket ``unix`` when given); its decoded replies (``replies`` of them awaited)."""
    parser.keep = []
    if unix is not None:
        raw = socket.socket(socket.AF_UNIX)
        raw.settimeout(5)
        raw.connect(str(unix))
    else:
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    with raw:
        s = tls.wrap_socket(raw, server_hostname="127.0.0.1") if tls is not None else raw
        s.sendall(request)
        while len(parser.keep) < replies:
            data = s.recv(65536)
            if not data:
                break
            parser.feed(data)
    return parser.keep


class Redis(_Peer):
    """With ``tls`` (a :class:`Certs`), only a TLS port (``port``): no plaintext one;
    ``auth_clients`` requires client certificates signed by the CA (mutual TLS).  With
    ``unix``, only a Unix socket, ``tmp/redis.sock`` (mode 700), and no TCP port.  With
    ``password``, ``requirepass``: :meth:`command` logs in (AUTH) before each command."""

    name = "redis-server"

    def __init__(self, tmp: Path, port: Optional[int] = None, tls: Optional[Certs] = None,
                 auth_clients: bool = False, unix: bool = False, password: Optional[str] = None) -> None:
        binary = skip_unless("redis-server")
        self.password = password
        self.port = port or free_port()
        self.tls, self.auth_clients = tls, auth_clients
        listen = ["--port", str(self.port)]
        if unix:
            self.unix = tmp / "redis.sock"
            listen = ["--port", "0", "--unixsocket", str(self.unix), "--unixsocketperm", "700"]
        if tls is not None:
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(tls.cert),
                      "--tls-key-file", str(tls.key), "--tls-ca-cert-file", str(tls.ca),
                      "--tls-auth-clients", "yes" if auth_clients else "no"]
        self.cmd = [binary, *listen, "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--dir", str(tmp), "--daemonize", "no", "--loglevel", "warning"]
        if password is not None:
            self.cmd += ["--requirepass", password]

    def command(self, *args: str):
        from socktools.wire.redis import RespParser, encode_command
        ctx = self.tls.client_context(client_cert=self.auth_clients) if self.tls else None
        request = encode_command([a.encode() for a in args])
        login = encode_command([b"AUTH", self.password.encode()]) if self.password is not None else b""
        replies = _exchange(self.port, login + request, RespParser(), ctx, self.unix, 2 if login else 1)
        return replies[-1].fields["value"]

    def calls(self) -> dict:
        """``{"ping": 120, "set": 7}`` from INFO commandstats (the server's own count)."""
        out = {}
        for line in self.command("INFO", "commandstats").splitlines():
            if line.startswith("cmdstat_"):
                name, _, rest = line.partition(":")
                fields = dict(kv.split("=") for kv in rest.split(","))
                out[name[len("cmdstat_"):]] = int(fields["calls"])
        return out

    def reset(self) -> None:
        self.command("CONFIG", "RESETSTAT")


#: Size of nginx's larger body (a static file): more than one 64 KiB read.
NGINX_BIG = 100_000


class Nginx(_Peer):
    """One worker; ``/`` returns 200 "ok", ``/big`` a 100 kB file (Content-Length),
    ``/chunked`` an SSI page (length unknown: chunked), ``/fail`` 500, ``/status`` stub_status,
    ``/close`` answers with ``Connection: close`` (``keepalive_timeout 0``).  With ``tls`` (a
    :class:`Certs`) the port is an ``ssl`` listener; ``verify_client`` requires a client
    certificate signed by the CA (``ssl_verify_client on``).  With ``unix``, it listens on
    ``tmp/nginx.sock`` instead of a TCP port."""

    name = "nginx"

    def __init__(self, tmp: Path, port: Optional[int] = None, tls: Optional[Certs] = None,
                 verify_client: bool = False, unix: bool = False) -> None:
        binary = skip_unless("nginx")
        self.port = port or free_port()
        self.tmp = tmp
        root = tmp / "www"
        root.mkdir(exist_ok=True)
        (root / "big.bin").write_bytes(b"b" * NGINX_BIG)
        (root / "page.html").write_text("<p>one</p><!--# echo var=\"ssi_var\" default=\"two\" --><p>three</p>\n")
        self.access_log = tmp / "access.log"
        self.connection_log = tmp / "connections.log"    # $connection: one number per connection
        user = "user root;\n" if os.geteuid() == 0 else ""
        listen, ssl = f"127.0.0.1:{self.port}", ""
        if unix:
            self.unix = tmp / "nginx.sock"
            listen = f"unix:{self.unix}"
        if tls is not None:
            listen += " ssl"
            ssl = (f"ssl_certificate {tls.cert};\n        ssl_certificate_key {tls.key};"
                   f"\n        ssl_protocols TLSv1.2 TLSv1.3;")
            if verify_client:
                ssl += f"\n        ssl_verify_client on;\n        ssl_client_certificate {tls.ca};"
        conf = tmp / "nginx.conf"
        conf.write_text(f"""{user}worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {self.access_log};
    log_format conn '$connection';
    access_log {self.connection_log} conn;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 1000000;
    server {{
        listen {listen};
        {ssl}
        root {root};
        location = / {{ default_type text/plain; return 200 "ok\\n"; }}
        location = /big {{ default_type application/octet-stream; try_files /big.bin =404; }}
        location = /chunked {{ ssi on; default_type text/html; try_files /page.html =404; }}
        location = /fail {{ default_type text/plain; return 500 "fail\\n"; }}
        location = /status {{ stub_status; }}
        location = /close {{ keepalive_timeout 0; default_type text/plain; return 200 "bye\\n"; }}
    }}
}}
""")
        self.cmd = [binary, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "error.log")]

    def log_lines(self) -> int:
        """Requests nginx logged (its own count); the log is written as each request ends."""
        try:
            with open(self.access_log, "rb") as f:
                return sum(1 for _ in f)
        except FileNotFoundError:
            return 0

    def connections(self) -> int:
        """Distinct connections nginx logged requests on (its ``$connection`` numbers)."""
        with open(self.connection_log) as f:
            return len({line.strip() for line in f if line.strip()})

    def statuses(self) -> dict:
        out: dict = {}
        with open(self.access_log) as f:
            for line in f:
                code = line.split('"')[2].split()[0]
                out[code] = out.get(code, 0) + 1
        return out


class Memcached(_Peer):
    name = "memcached"

    def __init__(self, tmp: Path, port: Optional[int] = None, threads: int = 1) -> None:
        binary = skip_unless("memcached")
        self.port = port or free_port()
        self.cmd = [binary, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-t", str(threads), "-m", "64"]
        if os.geteuid() == 0:
            self.cmd += ["-u", "root"]   # memcached refuses to run as root without it

    def stats(self) -> dict:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(b"stats\r\n")
            buf = read_until(s, b"END\r\n")
        out = {}
        for line in buf.decode().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "STAT":
                out[parts[1]] = parts[2]
        return out


class Vsftpd(_Peer):
    """vsftpd, a server that speaks first (``220 (vsFTPd 3.0.3)``), anonymous only, on a free
    loopback port (the recipe in /work/shared/REAL-SERVERS.md)."""

    name = "vsftpd"

    def __init__(self, tmp: Path, port: Optional[int] = None) -> None:
        binary = skip_unless("vsftpd")
        self.port = port or free_port()
        empty = tmp / "empty"
        empty.mkdir(exist_ok=True)
        os.chmod(empty, 0o555)          # vsftpd refuses a writable chroot
        conf = tmp / "vsftpd.conf"
        conf.write_text(f"""listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port={self.port}
background=NO
anonymous_enable=YES
no_anon_password=YES
anon_root={empty}
local_enable=NO
seccomp_sandbox=NO
max_clients=200
max_per_ip=200
secure_chroot_dir={empty}
vsftpd_log_file={tmp}/vsftpd.log
log_ftp_protocol=YES
xferlog_enable=YES
xferlog_std_format=NO
""")
        self.log = tmp / "vsftpd.log"    # every command and every answer (log_ftp_protocol)
        self.cmd = [binary, str(conf)]

    def logged(self, text: str) -> int:
        """Lines of its protocol log holding ``text`` (``'"NOOP"'``: the NOOPs it read)."""
        try:
            return sum(1 for line in self.log.read_text(errors="replace").splitlines() if text in line)
        except FileNotFoundError:
            return 0
def _service_dir(prefix: str, owner: str) -> Path:
    """A directory under the system temp dir that the service user ``owner`` can reach:
    PostgreSQL and Exim drop root for their own user, which cannot traverse pytest's 0700
    ``tmp_path``.  The peer removes it when it stops."""
    import pwd
    import tempfile
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    entry = pwd.getpwnam(owner)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


class Postgres(_Peer):
    """PostgreSQL (Debian's ``postgresql``), initdb'd into a fresh directory and started on a
    free loopback port and a socket directory, as the ``postgres`` user (it refuses root).
    ``users``: (name, password, method) logins over TCP, method ``scram-sha-256``, ``md5`` or
    ``password`` (cleartext); each also owns a database of its name.  ``sql()`` runs a query
    as the superuser over the Unix socket (trust) and returns psql's unaligned output."""

    name = "postgres"

    def __init__(self, tmp: Path, port: Optional[int] = None,
                 users: tuple = (("bob", "s3cret", "scram-sha-256"), ("carol", "md5secret", "md5"),
                                 ("dave", "plain", "password"))) -> None:
        import glob
        import pwd
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
        if not found:
            pytest.skip("postgres not installed (apt-get install postgresql)")
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("no postgres user (apt-get install postgresql creates it)")
        self.bin = Path(found[-1]).parent
        self.port = port or free_port()
        self.users = users
        self.dir = _service_dir("socktools-pg-", "postgres")
        self.data, self.sock = self.dir / "data", self.dir / "sock"
        self.sock.mkdir()
        os.chown(self.sock, pwd.getpwnam("postgres").pw_uid, -1)
        self.as_postgres = {"user": "postgres", "group": "postgres", "extra_groups": []} if os.geteuid() == 0 else {}
        subprocess.run([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                        "--no-sync", "--no-instructions"], check=True, capture_output=True, timeout=120,
                       **self.as_postgres)
        hba = [f"host all {name} 127.0.0.1/32 {method}" for name, _, method in users]
        (self.data / "pg_hba.conf").write_text("local all postgres trust\n" + "\n".join(hba) + "\n")
        self.cmd = [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.sock),
                    "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200",
                    "-c", "log_destination=stderr", "-c", "logging_collector=off"]

    def start(self, timeout: float = 30.0) -> "Postgres":
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     preexec_fn=getattr(self, "preexec", None), **self.as_postgres)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:      # ready: the superuser's query answers
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace")
                raise RuntimeError(f"postgres exited at once ({self.proc.returncode}): {err[-500:]}")
            if _accepts(self.port) and self._psql("SELECT 1", check=False).returncode == 0:
                break
            time.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError(f"postgres did not answer on {self.port} within {timeout:g}s")
        try:
            for name, password, method in self.users:
                encryption = "md5" if method == "md5" else "scram-sha-256"
                self.sql(f"SET password_encryption = '{encryption}'; CREATE ROLE {name} LOGIN PASSWORD '{password}'")
                self.sql(f"CREATE DATABASE {name} OWNER {name}")      # not in a transaction block
        except BaseException:
            self.stop()
            raise
        return self

    def _psql(self, query: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin / "psql"), "-h", str(self.sock), "-p", str(self.port), "-U", "postgres",
                               "-d", "postgres", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", query],
                              capture_output=True, text=True, timeout=30, check=check)

    def sql(self, query: str) -> str:
        return self._psql(query).stdout.strip()

    def xact_commit(self, database: str) -> int:
        """Transactions the server committed in ``database`` (pg_stat_database), flushed first."""
        return self.stat(database)[0]

    def stat(self, database: str) -> tuple:
        """``(xact_commit, sessions)`` of ``database`` (pg_stat_database): transactions committed
        -- a query each, and one per backend's start -- and sessions (logins) established."""
        self.sql("SELECT pg_stat_force_next_flush()")
        row = self.sql(f"SELECT xact_commit, sessions FROM pg_stat_database WHERE datname = '{database}'")
        return tuple(int(x) for x in row.split("|"))

    def pgbench_env(self, user: str, password: str) -> dict:
        """The environment for libpq tools (pgbench, psql) logging in as ``user`` over TCP."""
        return {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(self.port), "PGUSER": user,
                "PGDATABASE": user, "PGPASSWORD": password}

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Exim(_Peer):
    """exim4 (``exim4-daemon-light``) as a foreground daemon on a free loopback port, with a
    config this writes: recipients accepted, messages queued (``queue_only``: never
    delivered), spool and log in a fresh directory owned by Debian-exim.  ``mainlog()`` is
    the server's own log, to count what it received (``<=`` lines) and dropped."""

    name = "exim"

    def __init__(self, tmp: Path, port: Optional[int] = None, nonmail: int = 10,
                 refuse_connections: bool = False) -> None:
        import pwd
        binary = which("exim4")
        if binary is None:
            pytest.skip("exim4 not installed (apt-get install exim4-daemon-light)")
        if os.geteuid() != 0:
            pytest.skip("exim's daemon must start as root (it then hands its spool to Debian-exim); "
                        "this run is unprivileged")
        try:
            pwd.getpwnam("Debian-exim")
        except KeyError:
            pytest.skip("no Debian-exim user (apt-get install exim4-daemon-light creates it)")
        self.port = port or free_port()
        self.dir = _service_dir("socktools-exim-", "Debian-exim")
        for sub in ("spool", "log"):
            (self.dir / sub).mkdir()
            shutil.chown(self.dir / sub, "Debian-exim")
        conf = self.dir / "exim.conf"
        conf.write_text(f"""primary_hostname = test.invalid
daemon_smtp_ports = {self.port}
local_interfaces = 127.0.0.1
host_lookup =
rfc1413_hosts =
rfc1413_query_timeout = 0s
smtp_accept_max = 500
smtp_accept_max_per_host = 500
smtp_accept_max_nonmail = {nonmail}
tls_advertise_hosts =
queue_only = true
log_selector = +smtp_connection
spool_directory = {self.dir}/spool
log_file_path = {self.dir}/log/%slog
pid_file_path = {self.dir}/exim.pid
acl_smtp_connect = acl_check_connect
acl_smtp_mail = acl_check_mail
acl_smtp_rcpt = acl_check_rcpt
begin acl
acl_check_connect:
  {"deny message = no SMTP service here" if refuse_connections else "accept"}
acl_check_mail:
  deny senders = refused@test.invalid
  accept
acl_check_rcpt:
  deny recipients = nobody@test.invalid
  accept
""")
        self.cmd = [binary, "-bdf", "-C", str(conf)]

    def mainlog(self) -> str:
        path = self.dir / "log" / "mainlog"
        return path.read_text(errors="replace") if path.exists() else ""

    def connections(self) -> int:
        """Connections exim logged as it took them, before its greeting (``+smtp_connection``)."""
        return self.mainlog().count("(TCP/IP connection count")

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.dir, ignore_errors=True)
