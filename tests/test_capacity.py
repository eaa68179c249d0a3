"""What a process raises for itself (RLIMIT_NOFILE) and says; doctor's scale checks."""

from __future__ import annotations

import resource
import subprocess

from socktools.kernel import capacity, footprint
from socktools.kernel.doctor import DoctorConfig, run_doctor
from socktools.kernel.sysctl import read_sysctl
from tests.conftest import socktools_cmd


class FakeLimits:
    """resource.getrlimit/setrlimit for RLIMIT_NOFILE, refusing a raised hard limit unless allowed."""

    def __init__(self, soft, hard, may_raise_hard):
        self.value = (soft, hard)
        self.may_raise_hard = may_raise_hard

    def get(self, which):
        return self.value

    def set(self, which, value):
        if value[1] > self.value[1] and not self.may_raise_hard:
            raise ValueError("not allowed to raise maximum limit")
        self.value = value


def fake(monkeypatch, soft, hard, privileged, nr_open=1_048_576):
    limits = FakeLimits(soft, hard, privileged)
    monkeypatch.setattr(resource, "getrlimit", limits.get)
    monkeypatch.setattr(resource, "setrlimit", limits.set)
    monkeypatch.setattr(capacity, "privileged", lambda: privileged)
    monkeypatch.setattr(capacity, "nr_open", lambda: nr_open)
    return limits


def test_unprivileged_raises_the_soft_limit_to_what_is_wanted_and_says_so(monkeypatch):
    limits = fake(monkeypatch, 1024, 20_000, privileged=False)
    change = capacity.raise_nofile(5000)
    assert limits.value == (5000, 20_000)
    assert change.before == (1024, 20_000) and change.after == (5000, 20_000)
    assert change.line == ("raised the open-file limit (RLIMIT_NOFILE) from 1,024 (hard 20,000) to "
                           "5,000: the soft limit may be raised up to the hard one")


def test_unprivileged_stops_at_the_hard_limit(monkeypatch):
    limits = fake(monkeypatch, 1024, 20_000, privileged=False)
    capacity.raise_nofile(1_000_000)
    assert limits.value == (20_000, 20_000)
    assert capacity.raise_nofile(1_000_000) is None          # nothing more to do: nothing said


def test_privileged_raises_the_hard_limit_up_to_nr_open(monkeypatch):
    limits = fake(monkeypatch, 20_000, 20_000, privileged=True, nr_open=1_048_576)
    change = capacity.raise_nofile(1_000_064)
    assert limits.value == (1_000_064, 1_000_064)
    assert "(hard 1,000,064)" in change.line and "fs.nr_open" in change.line
    capacity.raise_nofile(5_000_000)
    assert limits.value == (1_048_576, 1_048_576)            # never past fs.nr_open


def test_privilege_is_the_capability_not_the_user_id():
    with open("/proc/self/status") as f:
        eff = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    assert capacity.privileged() == bool(eff >> capacity.CAP_SYS_RESOURCE & 1)


def test_flood_says_in_one_line_what_it_raised():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 3000:
        import pytest
        pytest.skip(f"hard open-file limit {hard} is below what the test needs")

    def low_soft_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))

    run = subprocess.run(socktools_cmd("flood", "--conns", "1500", "--duration", "0.2s", "--workers", "1"),
                         capture_output=True, text=True, timeout=60, preexec_fn=low_soft_limit)
    lines = [line for line in run.stderr.splitlines() if "RLIMIT_NOFILE" in line]
    assert lines == ["flood: raised the open-file limit (RLIMIT_NOFILE) from 1,024 (hard "
                     f"{hard:,}) to {hard:,}: the soft limit may be raised up to the hard one"], run.stderr
    assert "1,500 of 1,500 established" in run.stdout


def test_doctor_names_every_limit_in_the_way_of_a_million():
    checks = {c.key: c for c in run_doctor(DoctorConfig(conns=1_000_000)).checks}
    for key in ("rlimit_nofile", "nr_open", "file_max", "ip_local_port_range", "nf_conntrack_max",
                "tcp_mem", "memory", "epoll_watches"):
        assert key in checks
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1_000_064:
        c = checks["rlimit_nofile"]
        assert c.status == "low" and c.raw["processes_at_hard_limit"] == -(-1_000_000 // (hard - 64))
        assert f"flood --workers {c.raw['processes_at_hard_limit']}" in c.fix
    ports = checks["ip_local_port_range"]
    assert ports.status in ("ok", "warn") and "source addresses" in ports.need
    mem = checks["memory"]
    assert mem.raw["need"] >= 1_000_000 * footprint.KERNEL_BYTES_PER_CONNECTION


def test_conntrack_counts_only_when_loopback_is_tracked():
    tracks = footprint.conntrack_tracks_loopback()
    check = footprint.check_conntrack(1_000_000)
    if read_sysctl("net.netfilter.nf_conntrack_max") is None:
        assert tracks is None and check.status == "absent"
    elif tracks is False:
        assert check.status == "ok" and "not tracked" in check.need
    else:
        assert check.raw["tracks_loopback"] is True and "tracked" in check.value
