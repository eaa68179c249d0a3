"""socktools.kernel.sysctl: the one /proc/sys reader, on a directory the test writes and on the real one."""

from __future__ import annotations

import os

import pytest

from socktools.flood import limits
from socktools.kernel import doctor, sysctl
from socktools.serve import supervisor


@pytest.fixture
def fake_sys(tmp_path, monkeypatch):
    """A /proc/sys of the test's own: ``fake_sys("net.core.somaxconn", "4096\\n")``."""
    monkeypatch.setattr(sysctl, "PROC_SYS", str(tmp_path))

    def write(name: str, text: str) -> None:
        path = tmp_path.joinpath(*name.split("."))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return write


def test_values_are_read_and_parsed(fake_sys):
    fake_sys("net.core.somaxconn", "4096\n")
    fake_sys("net.ipv4.ip_local_port_range", "32768\t60999\n")
    fake_sys("net.ipv4.tcp_mem", "1 2 3\n")
    assert sysctl.read_sysctl("net.core.somaxconn") == "4096"
    assert sysctl.somaxconn() == 4096 and sysctl.sysctl_int("net.core.somaxconn") == 4096
    assert sysctl.port_range() == (32768, 60999)
    assert sysctl.sysctl_ints("net.ipv4.tcp_mem") == [1, 2, 3]
    assert sysctl.sysctl_int("net.ipv4.tcp_mem") == 1


def test_absent_or_garbled_knobs_are_none_not_errors(fake_sys):
    assert sysctl.read_sysctl("net.core.somaxconn") is None
    assert sysctl.somaxconn() is None and sysctl.port_range() is None
    fake_sys("net.core.somaxconn", "lots\n")
    fake_sys("net.ipv4.ip_local_port_range", "1024\n")
    fake_sys("fs.file-max", "")
    assert sysctl.somaxconn() is None
    assert sysctl.port_range() is None            # one number is not a range
    assert sysctl.sysctl_int("fs.file-max") is None


def test_every_user_reads_through_it(fake_sys):
    """doctor, flood's planner and serve's backlog cap all see the same (fake) kernel."""
    fake_sys("net.core.somaxconn", "77\n")
    fake_sys("net.ipv4.ip_local_port_range", "40000 40009\n")
    assert doctor.read_sysctl("net.core.somaxconn") == "77"
    assert supervisor.somaxconn() == 77
    assert limits.port_range() == (40000, 40009)
    checks = {c.key: c for c in doctor.run_doctor(doctor.DoctorConfig(conns=100)).checks}
    assert checks["somaxconn"].raw == 77
    # 10 ports for 100 connections: they fit only spread over source addresses (flood does it)
    assert checks["ip_local_port_range"].status == "warn"
    assert "--source" in checks["ip_local_port_range"].fix


@pytest.mark.skipif(not os.path.exists("/proc/sys/net/core/somaxconn"), reason="needs Linux /proc/sys")
def test_the_real_kernel():
    with open("/proc/sys/net/core/somaxconn") as f:
        assert sysctl.somaxconn() == int(f.read())
    lo, hi = sysctl.port_range()
    assert 0 < lo <= hi <= 65535
