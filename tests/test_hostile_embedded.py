"""The embedded server starts this very socktools, whatever the current directory holds (issue 12 item 7)."""

from __future__ import annotations

import socket
import subprocess

import pytest

import socktools
from socktools.core.embedded import EmbeddedServer, socktools_argv

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def decoy_cwd(tmp_path, monkeypatch):
    """cwd (and PYTHONPATH) hold a folder named socktools that must never be imported."""
    (tmp_path / "socktools").mkdir()
    (tmp_path / "socktools" / "__init__.py").write_text("raise ImportError('imported the decoy socktools')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return tmp_path


def test_embedded_server_ignores_a_socktools_folder_in_cwd(decoy_cwd):
    with EmbeddedServer("echo") as srv:
        with socket.create_connection(srv.address, timeout=5) as c:
            c.sendall(b"ping")
            assert c.recv(4) == b"ping"
    assert srv.summary["accepted"] == 1


def test_child_imports_the_parents_package(decoy_cwd):
    code = "import socktools, sys; print(socktools.__file__)"
    argv = socktools_argv()
    argv[2] = argv[2].split("from socktools.cli")[0] + code  # same bootstrap, then report the import
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == socktools.__file__, out.stderr


def test_flood_with_its_own_server_runs_in_a_folder_named_like_the_package(decoy_cwd):
    proc = subprocess.run(socktools_argv("flood", "--conns", "10", "--duration", "0.3s", "--workers", "1"),
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert "10 of 10 established" in proc.stdout
