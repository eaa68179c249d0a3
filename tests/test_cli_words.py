"""What the CLI says about a bad option, a bad variable, an output path, and how it ends (issue 21, 13-15)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading

import pytest
from click.testing import CliRunner

from socktools.cli import main
from tests.conftest import socktools_cmd


def _run(args, env=None):
    return CliRunner().invoke(main, args, env=env)


# ------------------------------------------------------------------ environment variables (14)

def test_a_bad_variable_names_the_variable_and_the_option():
    r = _run(["flood"], env={"SOCKTOOLS_FLOOD_CONNS": "abc"})
    assert r.exit_code == 2
    assert "SOCKTOOLS_FLOOD_CONNS=abc (for '--conns'" in r.output, r.output


def test_a_bad_variable_checked_by_the_config_names_the_variable(closed_port):
    # --pipeline's upper bound is the config's: the error comes after click parsed the value.
    r = _run(["flood", "--port", str(closed_port[1]), "--requests", "1"],
             env={"SOCKTOOLS_FLOOD_PIPELINE": "5000"})
    assert r.exit_code == 2
    assert "SOCKTOOLS_FLOOD_PIPELINE=5000 (for '--pipeline'" in r.output, r.output


def test_the_same_bad_value_typed_is_blamed_on_the_option_alone():
    r = _run(["flood", "--conns", "abc"])
    assert r.exit_code == 2 and "'--conns'" in r.output and "SOCKTOOLS_" not in r.output


def test_a_mistyped_variable_is_warned_about_once_with_the_closest_name():
    r = _run(["explain", "EPIPE"], env={"SOCKTOOLS_FLOOD_CONN": "5"})
    assert r.exit_code == 0
    lines = [x for x in r.stderr.splitlines() if "SOCKTOOLS_FLOOD_CONN" in x]
    assert len(lines) == 1, r.stderr
    assert "SOCKTOOLS_FLOOD_CONN:" in lines[0] and "SOCKTOOLS_FLOOD_CONNS" in lines[0]


def test_known_variables_are_not_warned_about():
    r = _run(["explain", "EPIPE"], env={"SOCKTOOLS_FLOOD_CONNS": "5", "SOCKTOOLS_EXPLAIN_JSON": "0"})
    assert r.exit_code == 0 and "SOCKTOOLS_" not in r.stderr, r.stderr


def test_the_boolean_error_lists_no_empty_value():
    r = _run(["flood"], env={"SOCKTOOLS_FLOOD_JSON": "maybe"})
    assert r.exit_code == 2 and "SOCKTOOLS_FLOOD_JSON=maybe" in r.output
    # click 8.4 said "Recognized values: , 0, 1, f, ...": the empty string first
    assert ": ," not in r.output and ", ," not in r.output, r.output
    assert "yes" in r.output and "off" in r.output


# ------------------------------------------------------------------ messages that name the wrong thing (13)

def test_a_header_without_colon_is_blamed_on_header(closed_port):
    r = _run(["request", "--port", str(closed_port[1]), "--mode", "http", "--header", "NoColon"])
    assert r.exit_code == 2
    assert "'--header'" in r.output and "'--path'" not in r.output, r.output


def test_workers_asked_for_get_a_note_not_a_refusal(monkeypatch):
    from socktools.flood import limits
    from socktools.flood.config import FloodConfig
    from socktools.flood.limits import CPU_OVERSUBSCRIPTION, plan
    monkeypatch.setattr(limits, "cpu_count", lambda: 2)            # the 2-CPU machine
    monkeypatch.setattr(limits, "mem_available", lambda: 8 << 30)
    workers = CPU_OVERSUBSCRIPTION * 2 + 1
    cfg = FloodConfig(conns=workers + 1, workers=workers, embedded=True, duration=1.0)
    p = plan(cfg)
    assert not p.refusals, p.refusals
    note = [n for n in p.notes if "--workers" in n]
    assert note and "fewer --conns" not in note[0], p.notes
    # --server-workers asked for: a note too, advising fewer of those
    served = plan(FloodConfig(conns=workers + 1, workers=0, embedded=True, server_workers=workers,
                              duration=1.0))
    assert not served.refusals and any("fewer --server-workers" in n for n in served.notes), served.notes
    # flood's own choice of too many processes is still refused (a low descriptor limit)
    monkeypatch.setattr(limits, "fd_limits", lambda: (1000, 1000))
    chosen = plan(FloodConfig(conns=20_000, workers=0, embedded=True, duration=1.0))
    assert any("CPU" in r for r in chosen.refusals), chosen.refusals


@pytest.mark.parametrize("option", ["--csv", "--hgrm", "--hlog", "--report"])
def test_an_unwritable_output_path_is_refused_before_the_run(option, closed_port):
    path = "/proc/x.out"
    r = _run(["flood", "--port", str(closed_port[1]), "--requests", "1", option, path])
    assert r.exit_code == 2, r.output
    assert f"'{option}'" in r.output and path in r.output, r.output
    assert "man 7 socket" not in r.output and "connections" not in r.output   # nothing ran


def test_report_output_path_is_checked_before_reading(tmp_path):
    src = tmp_path / "run.json"
    src.write_text("{}")
    r = _run(["report", str(src), "-o", "/proc/x.html"])
    assert r.exit_code == 2 and "'--output'" in r.output and "/proc/x.html" in r.output, r.output


def test_sniff_write_path_is_checked_before_capture(tmp_path):
    src = tmp_path / "in.pcap"
    src.write_bytes(b"")
    r = _run(["sniff", "-w", "/proc/x.pcap", "-r", str(src)])
    assert r.exit_code == 2 and "/proc/x.pcap" in r.output, r.output


#: Arguments after the value tried that end the command before it does anything lasting,
#: should the value pass: a body-level check that fails, or a run that ends at once.
_SENTINEL = {"flood": ["--duration", "100ms"], "ping": ["--interval", "1ms"], "stall": ["--rcvbuf", "4k"],
             "sniff": ["-r", "/nonexistent.pcap"], "serve": ["--max-buffered", "1"]}


@pytest.mark.parametrize("args, option", [
    (["flood", "--conns", "99999999999999999999"], "--conns"),
    (["flood", "--workers", "99999999999999999999"], "--workers"),
    (["flood", "--requests", "99999999999999999999"], "--requests"),
    (["flood", "--server-workers", "99999999999999999999"], "--server-workers"),
    (["flood", "--pipeline", "99999999999999999999"], "--pipeline"),
    (["doctor", "--conns", "99999999999999999999"], "--conns"),
    (["ping", "--count", "99999999999999999999"], "--count"),
    (["sockets", "--count", "99999999999999999999"], "--count"),
    (["sniff", "--count", "99999999999999999999"], "--count"),
    (["serve", "--max-conns", "99999999999999999999"], "--max-conns"),
    (["serve", "--backlog", "99999999999999999999"], "--backlog"),
    (["stall", "--chunk", "99999999999999999999"], "--chunk"),
    (["stall", "--sndbuf", "99999999999999999999"], "--sndbuf"),
    (["flood", "--size", "99999999999999999999"], "--size"),
    (["ping", "--timeout", "99999999999999999999h"], "--timeout"),
    (["stall", "--timeout", "99999999999999999999h"], "--timeout"),
    (["flood", "--rate", "nan"], "--rate"),
    (["flood", "--connect-rate", "1e999"], "--connect-rate"),
])
def test_out_of_range_integers_are_usage_errors_naming_the_range(args, option, closed_port):
    extra = _SENTINEL.get(args[0], [])
    if args[0] in ("flood", "ping", "stall"):
        extra = extra + ["--port", str(closed_port[1])]
    r = _run(args + extra)
    assert r.exit_code == 2, r.output
    assert f"'{option}'" in r.output and "ulimit" not in r.output, r.output
    assert "<=" in r.output or " to " in r.output or "at most" in r.output, r.output


# ------------------------------------------------------------------ exit codes (15)

def _pipe_closed_run(args):
    r, w = os.pipe()
    os.close(r)
    try:
        return subprocess.run(socktools_cmd(*args), stdout=w, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, timeout=60)
    finally:
        os.close(w)


@pytest.mark.parametrize("args", [["sockets"], ["sockets", "--all"], ["explain", "--list"], ["--help"]],
                         ids=" ".join)
def test_a_closed_stdout_pipe_ends_quietly(args):
    proc = _pipe_closed_run(args)
    assert proc.stderr == b"", proc.stderr
    assert proc.returncode == 128 + signal.SIGPIPE


@contextlib.contextmanager
def _running(*args):
    """``socktools ARGS`` with unbuffered pipes; killed on the way out if the test left it running,
    and after 60 s in any case (a read of its output that never comes then ends too)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(socktools_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=env, text=True)
    deadline = threading.Timer(60, proc.kill)
    deadline.start()
    with proc:
        try:
            yield proc
        finally:
            deadline.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def test_request_on_ctrl_c_exits_130_without_aborted():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(30)
        with _running("request", "--port", str(listener.getsockname()[1]), "--timeout", "60s",
                      "search", "x") as proc:
            conn, _ = listener.accept()          # it connected...
            with conn:
                conn.settimeout(30)
                assert conn.recv(65536)          # ...and sent: it now waits for the answer
                proc.send_signal(signal.SIGINT)
                out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, (out, err)
    assert "Aborted" not in err and "Traceback" not in err, err


def test_ping_on_sigterm_prints_the_summary_and_exits_143(closed_port):
    with _running("ping", "127.0.0.1", "-p", str(closed_port[1]), "--count", "0",
                  "--interval", "50ms") as proc:
        lines = []
        for line in proc.stdout:                 # wait until a probe has been shown
            lines.append(line)
            if "seq=" in line:
                break
        assert any("seq=" in x for x in lines), lines
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, (out, err)
    assert "ping statistics" in out and "probe" in out, out
    assert "Traceback" not in err, err


def test_a_scheduler_address_without_port_is_a_usage_error(closed_port):
    # dask raised "ValueError: missing port number" from inside the run: a traceback
    r = _run(["flood", "--cluster", "abc", "--port", str(closed_port[1]), "--requests", "1"])
    assert r.exit_code == 2, (r.output, r.exception)
    assert "--cluster" in r.output and "8786" in r.output, r.output


def test_a_result_file_that_fails_after_the_run_is_named_without_socket_advice(tmp_path, capsys):
    from socktools.cli._outputs import Outputs, write_outputs
    path = str(tmp_path / "gone" / "x.csv")          # its directory went away during the run
    with pytest.raises(SystemExit) as info:
        write_outputs({"latency_us": {}, "intervals": []}, Outputs(csv=path))
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert path in err and "man 7 socket" not in err, err
