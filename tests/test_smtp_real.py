"""The SMTP plug-in against a real Exim 4 (Debian's ``exim4-daemon-light``), started by the test
on a free loopback port with a config it writes: the greeting and EHLO, NOOPs across Exim's
close after 10 non-mail commands, whole transactions counted as Exim logs them (``<=``).

The conversation is the plug-in's own Opening and parser over one blocking socket
(tests/plugin_driver.py): the same objects flood and request drive from their loops.
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from peers import Exim
from tests.conftest import socktools_cmd
from plugin_driver import DEADLINE, Conversation
from socktools.examples.smtp import Smtp
from socktools.wire.opening import OpeningFailed

MAIL = "MAIL FROM:<a@test.invalid> RCPT TO:<b@test.invalid>"
PLUGIN = "socktools.examples.smtp:Smtp"


@pytest.fixture(scope="module")
def exim(tmp_path_factory):
    with Exim(tmp_path_factory.mktemp("exim")) as server:
        yield server


def log_count(exim: Exim, pattern: str, target: int) -> int:
    """Lines of Exim's main log matching ``pattern`` once there are ``target`` (Exim writes a
    line as it finishes the work it logs, a moment after its reply), or at the deadline."""
    deadline = time.monotonic() + DEADLINE
    while True:
        n = len(re.findall(pattern, exim.mainlog()))
        if n >= target or time.monotonic() > deadline:
            return n
        time.sleep(0.05)


def test_noops_go_on_across_exims_close_after_ten(exim):
    dropped = r"dropped: too many nonmail commands"
    before = log_count(exim, dropped, 0)
    proto = Smtp(())
    answered = closes = 0
    while answered < 25:                     # as flood does: reconnect when the reply says so
        with Conversation(proto, exim.port) as c:
            op = c.open()
            assert {"PIPELINING", "CHUNKING"} <= op.extensions
            while answered < 25:
                parser = c.ask(1)
                answered += 1
                if parser.closing:
                    closes += 1
                    assert c.closed_by_peer()
                    break
            assert not parser.failures
    # 10 NOOPs answered 250, the 11th 554 and the close, on each of two connections; 3 on a third
    assert (answered, closes) == (25, 2)
    assert proto.tally == {"2xx": 23, "closed: 554 Too many nonmail commands": 2}
    assert log_count(exim, dropped, before + closes) - before == closes


def test_whole_transactions_are_the_messages_exim_logs(exim):
    received = r" <= a@test\.invalid "
    before = log_count(exim, received, 0)
    proto = Smtp((MAIL,))
    with Conversation(proto, exim.port) as c:
        c.open()
        c.ask(1)
        parser = c.ask(4)                    # four whole transactions in one write
    assert not parser.failures and proto.tally == {"2xx": 5}
    assert log_count(exim, received, before + 5) - before == 5


def test_refusals_are_failures_by_code_and_the_stream_stays_in_step(exim):
    received = r" <= a@test\.invalid "
    before = log_count(exim, received, 0)
    proto = Smtp(("MAIL FROM:<a@test.invalid> RCPT TO:<nobody@test.invalid>",
                  "MAIL FROM:<refused@test.invalid> RCPT TO:<b@test.invalid>", MAIL))
    with Conversation(proto, exim.port) as c:
        c.open()
        parser = c.ask(3)
    assert [f.kind for f in parser.failures] == ["smtp-5xx", "smtp-5xx"]
    # the recipient refused; the sender refused (not "503 sender already given": RSET first)
    assert [f.detail for f in parser.failures] == ["550 Administrative prohibition"] * 2
    assert parser.keep[2].summary.startswith("250 OK id=")      # the third went through, in step
    assert log_count(exim, received, before + 1) - before == 1
    assert "rejected MAIL <refused@test.invalid>" in exim.mainlog()


def test_a_refused_greeting_is_tallied_by_exims_words(tmp_path):
    with Exim(tmp_path, refuse_connections=True) as refusing:
        with Conversation(Smtp(()), refusing.port) as c:
            with pytest.raises(OpeningFailed) as caught:
                c.open()
    assert caught.value.step == "greeting"
    assert caught.value.words == "550 no SMTP service here"     # exim refuses a connection ACL with 550


# --- flood, with the opening on every connection (flood's engine: h3's Opener) -------------------

def flood(exim: Exim, *args: str) -> dict:
    out = subprocess.run(socktools_cmd("flood", "--port", str(exim.port), "--protocol", PLUGIN, "--workers", "1",
                                       "--json", *args), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr + out.stdout[-2000:]
    return json.loads(out.stdout)


def test_flood_reconnects_through_exims_close_after_ten_noops(exim):
    dropped = r"dropped: too many nonmail commands"
    before = log_count(exim, dropped, 0)
    r = flood(exim, "--requests", "100", "--conns", "2")
    assert r["failures_total"] == 0
    assert r["requests"]["sent"] == r["requests"]["answered"] == 102
    classes = {**r["confirm_reply_classes"]}
    for k, v in r["reply_classes"].items():
        classes[k] = classes.get(k, 0) + v
    closes = classes.pop("closed: 554 Too many nonmail commands")
    assert classes == {"2xx": 102 - closes}
    # exim answers 11 NOOPs per connection (10, then the 554) and drops it: 102 answers take
    # 9 such lives and a part of one or two more (the last two connections end unfinished)
    assert 102 // 11 - 1 <= closes <= 102 // 11
    # every 554 is one of exim's drops; flood replaced each dropped connection it still needed
    assert log_count(exim, dropped, before + closes) - before == closes
    reconnects = r["connections"]["reconnects"]
    assert closes - 2 <= reconnects <= closes
    assert r["opening"]["opened"] == 2 + reconnects


def test_flood_transactions_are_the_messages_exim_logs(exim):
    received = r" <= a@test\.invalid "
    before = log_count(exim, received, 0)
    r = flood(exim, "--command", MAIL, "--requests", "60", "--conns", "2")
    assert r["failures_total"] == 0 and r["connections"]["reconnects"] == 0
    assert r["requests"]["sent"] == r["requests"]["answered"] == 62
    assert log_count(exim, received, before + 62) - before == 62


def test_flood_tallies_a_refused_greeting_by_exims_words(tmp_path):
    with Exim(tmp_path, refuse_connections=True) as refusing:
        out = subprocess.run(socktools_cmd("flood", "--port", str(refusing.port), "--protocol", PLUGIN,
                                           "--workers", "1", "--json", "--requests", "5", "--conns", "2"),
                             capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert json.loads(out.stdout)["opening"]["refusals"] == {"550 no SMTP service here": 2}
