"""`socktools doctor` reports the machine's real limits and judges them against --conns."""

from __future__ import annotations

import json
import os
import resource

from click.testing import CliRunner

from socktools.kernel import doctor
from socktools.cli import main
from socktools.kernel.doctor import DoctorConfig, run_doctor


def _sysctl(path):
    try:
        with open(path) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return None


def _checks(n=1000):
    return {c.key: c for c in run_doctor(DoctorConfig(conns=n)).checks}


def test_reports_the_real_limits():
    checks = _checks()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert checks["rlimit_nofile"].raw == {"soft": soft, "hard": hard}

    expected = {
        "somaxconn": ("/proc/sys/net/core/somaxconn", lambda v: v[0]),
        "nr_open": ("/proc/sys/fs/nr_open", lambda v: v[0]),
    }
    for key, (path, pick) in expected.items():
        value = _sysctl(path)
        if value is None:
            assert checks[key].status == "absent"
        else:
            assert checks[key].raw == pick(value), key

    rng = _sysctl("/proc/sys/net/ipv4/ip_local_port_range")
    if rng:
        assert checks["ip_local_port_range"].raw == {"low": rng[0], "high": rng[1],
                                                     "ports": rng[1] - rng[0] + 1}
    mem = _sysctl("/proc/sys/net/ipv4/tcp_mem")
    if mem:
        assert checks["tcp_mem"].raw["pages"] == mem
    fmax = _sysctl("/proc/sys/fs/file-max")
    if fmax:
        assert checks["file_max"].raw["file_max"] == fmax[0]
    tw = _sysctl("/proc/sys/net/ipv4/tcp_tw_reuse")
    if tw:
        assert checks["tcp_tw_reuse"].raw == tw[0]
    ct = _sysctl("/proc/sys/net/netfilter/nf_conntrack_max")
    if ct is None:
        assert checks["nf_conntrack_max"].status == "absent"
    else:
        assert checks["nf_conntrack_max"].raw["max"] == ct[0]


def test_capture_privilege_matches_the_process():
    with open("/proc/self/status") as f:
        cap_eff = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    expected = os.geteuid() == 0 or bool(cap_eff & (1 << 13))
    assert _checks()["capture_privilege"].raw is expected
    assert doctor.net_raw_privilege()[0] is expected


def test_libpcap_presence_is_what_ctypes_finds():
    import ctypes.util
    lib = ctypes.util.find_library("pcap")
    c = _checks()["libpcap"]
    assert c.raw["libpcap"] == lib and c.status == ("ok" if lib else "warn")
    assert c.fix is None if lib else "libpcap" in c.fix


def test_judgement_follows_conns():
    few = run_doctor(DoctorConfig(conns=1))
    assert {c.key: c.status for c in few.checks}["ip_local_port_range"] in ("ok", "absent")
    # Ten million connections cannot fit in one source address's ports (at most 64,512).
    many = run_doctor(DoctorConfig(conns=10_000_000))
    by_key = {c.key: c for c in many.checks}
    assert not many.ok
    assert by_key["ip_local_port_range"].status == "low"
    assert "--source" in by_key["ip_local_port_range"].fix
    assert by_key["nr_open"].status == "low" and "fs.nr_open" in by_key["nr_open"].fix


def test_soft_limit_below_need_suggests_ulimit(monkeypatch):
    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, 1_048_576))
    c = _checks(5000)["rlimit_nofile"]
    assert c.status == "low" and c.fix.startswith("ulimit -n ") and int(c.fix.split()[2]) >= 5000 + doctor.FD_SLACK
    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, 4096))
    c = _checks(5000)["rlimit_nofile"]
    assert c.status == "low" and "sudo prlimit" in c.fix
    monkeypatch.setattr(resource, "getrlimit", lambda which: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    c = _checks(5000)["rlimit_nofile"]
    assert c.status == "ok" and "unlimited" in c.value


def test_cli_text_and_json():
    runner = CliRunner()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    r = runner.invoke(main, ["doctor", "--conns", "10"])
    assert r.exit_code == (0 if soft >= 10 + doctor.FD_SLACK else 1), r.output
    assert f"soft {soft:,}" in r.output or "unlimited" in r.output
    assert "limits for 10 connections" in r.output

    r = runner.invoke(main, ["doctor", "--conns", "10000000", "--json"])
    doc = json.loads(r.output)
    assert r.exit_code == 1 and doc["ok"] is False and doc["conns"] == 10_000_000
    statuses = {c["key"]: c["status"] for c in doc["checks"]}
    assert statuses["ip_local_port_range"] == "low"
    assert "LOW" in runner.invoke(main, ["doctor", "--conns", "10000000"]).output


def test_cli_rejects_zero_conns():
    r = CliRunner().invoke(main, ["doctor", "--conns", "0"])
    assert r.exit_code == 2 and "--conns" in r.output
