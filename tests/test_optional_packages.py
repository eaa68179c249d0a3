"""Optional packages: every install hint names a real project, and a missing one is exit 3 everywhere.

The distribution name ``socktools`` on PyPI is an unrelated 2017 library: ``pip install
'socktools[http]'`` installed it (with eventlet, Sphinx and web-py).  The hints come from one
registry (:mod:`socktools.optional`); these tests hold it to pyproject's extras and sweep the
repository for any ``pip install`` that would resolve to that project.  Offline: whether each
hinted name is the intended project on PyPI was checked by hand with ``pip download`` (see
the commit that introduced this file), since the suite must not need the network.
"""

from __future__ import annotations

import pathlib
import re
import shlex
import subprocess
import sys

import pytest
from click.testing import CliRunner
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from socktools.cli import main

ROOT = pathlib.Path(__file__).resolve().parent.parent
#: The name on PyPI that is someone else's project: no hint or doc may install it.
TAKEN = "socktools"


def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _key(requirement: str) -> tuple:
    req = Requirement(requirement)
    return canonicalize_name(req.name), frozenset(req.extras)


def _pip_install_args(text: str):
    """The package arguments of every ``pip install ...`` in ``text`` (options and paths dropped)."""
    for m in re.finditer(r"pip install ((?:'[^']*'|\"[^\"]*\"|[^\s`'\")]+)(?: +(?:'[^']*'|[^\s`'\")&;|]+))*)",
                         text):
        try:
            words = shlex.split(m.group(1), comments=True)
        except ValueError:
            continue
        for word in words:
            if word.startswith("-") or word.startswith(".") or "/" in word or "{" in word:
                continue          # -q, -e, ., '.[test]', a path: the checkout; {req}: a template
            try:
                Requirement(word)
            except InvalidRequirement:
                continue          # prose after the command, not a package
            yield word


# ----------------------------------------------------------------------- the registry

def test_the_distribution_is_not_named_after_the_taken_project():
    from socktools.optional import DISTRIBUTION
    name = pyproject()["project"]["name"]
    assert name == DISTRIBUTION
    assert canonicalize_name(name) != TAKEN


def test_every_extra_is_in_the_registry_with_the_same_requirement():
    """The registry and pyproject's extras name the same packages, so a hint installs what the
    extra would."""
    from socktools.optional import PACKAGES
    extras = pyproject()["project"]["optional-dependencies"]
    assert set(PACKAGES) == set(extras) - {"test"}
    for extra, package in PACKAGES.items():
        assert {_key(r) for r in extras[extra]} == {_key(package.requirement)}, extra


def test_every_hint_installs_the_real_dependency_by_its_own_name():
    from socktools.optional import DISTRIBUTION, PACKAGES, hint
    declared = {_key(r)[0] for rs in pyproject()["project"]["optional-dependencies"].values() for r in rs}
    hints = [hint(extra, feature) for extra, p in PACKAGES.items() for feature in p.needed_by]
    assert len(hints) == 6
    for text in hints:
        args = list(_pip_install_args(text))
        assert len(args) == 1, text
        name = canonicalize_name(Requirement(args[0]).name)
        assert name != TAKEN, text
        # a real dependency, or this distribution's own extra
        assert name in declared or (name == DISTRIBUTION and Requirement(args[0]).extras), text
    with pytest.raises(ValueError):
        hint("http", "--report")      # a feature the registry does not list for that package


def test_the_sweep_finds_what_it_looks_for():
    """Self-test: the pattern below reads each form of install command the repo writes."""
    assert list(_pip_install_args("run `pip install 'socktools[http]'` first")) == ["socktools[http]"]
    assert list(_pip_install_args("pip install -q '.[test]' && pytest")) == []
    assert list(_pip_install_args("(pip install h11 httptools).")) == ["h11", "httptools"]
    assert list(_pip_install_args("plain `pip install socktools` stays lean")) == ["socktools"]
    assert list(_pip_install_args("pip install 'dask[distributed]'   # on every host")) == ["dask[distributed]"]


def _repo_texts():
    for top in ("socktools", "docs", "examples", "benchmarks", "tests", ".ci"):
        for path in sorted((ROOT / top).rglob("*")):
            if path.is_file() and path.suffix in (".py", ".md", "") and "__pycache__" not in path.parts:
                yield path
    yield ROOT / "README.md"


def test_no_install_command_anywhere_resolves_to_the_taken_name():
    seen = 0
    for path in _repo_texts():
        if path == pathlib.Path(__file__):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for arg in _pip_install_args(text):
            seen += 1
            assert canonicalize_name(Requirement(arg).name) != TAKEN, f"{path.relative_to(ROOT)}: {arg}"
        assert "socktools[" not in text, f"{path.relative_to(ROOT)} names an extra of the taken name"
    assert seen >= 5


def test_the_product_prints_install_hints_only_from_the_registry():
    """No message in the package spells its own ``pip install``: one wording, one rule."""
    for path in sorted((ROOT / "socktools").rglob("*.py")):
        if path.name == "optional.py":
            continue
        text = path.read_text(encoding="utf-8")
        assert not list(_pip_install_args(text)), path.relative_to(ROOT)


# ----------------------------------------------------------------------- exit 3, every path

@pytest.fixture
def saved(tmp_path):
    """Any existing file: the checks run before the file is read."""
    path = tmp_path / "run.json"
    path.write_text("{}")
    return path


def _cases(saved, tmp_path):
    out = str(tmp_path / "x.html")
    return {
        "flood --mode http": ("httptools", ["flood", "--mode", "http", "--port", "9", "--conns", "1"]),
        "request --mode http": ("httptools", ["request", "--mode", "http", "127.0.0.1", "9"]),
        "sniff --decode http": ("httptools", ["sniff", "-r", str(saved), "--decode", "http"]),
        "flood --report": ("matplotlib", ["flood", "--report", out, "--conns", "1"]),
        "socktools report": ("matplotlib", ["report", str(saved), "-o", out]),
        "flood --cluster": ("distributed", ["flood", "--cluster", "local:1", "--conns", "1"]),
        "serve --tls-self-signed": ("cryptography", ["serve", "--tls-self-signed", "--port", "0"]),
    }


CASES = ["flood --mode http", "request --mode http", "sniff --decode http", "flood --report",
         "socktools report", "flood --cluster", "serve --tls-self-signed"]


@pytest.mark.parametrize("case", CASES)
def test_a_missing_package_is_exit_3_with_its_hint(case, saved, tmp_path, monkeypatch):
    module, argv = _cases(saved, tmp_path)[case]
    monkeypatch.setitem(sys.modules, module, None)      # import <module> -> ImportError
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 3, result.output
    line = result.output.strip()
    assert "Traceback" not in line and len(line.splitlines()) == 1, line
    from socktools.optional import PACKAGES, hint
    extra = next(e for e, p in PACKAGES.items() if p.module == module)
    feature = case.split(" ", 1)[1] if not case.startswith("socktools ") else case
    assert line == f"socktools: {hint(extra, feature)}"


def test_a_really_missing_package_in_a_real_process_is_exit_3():
    """The import blocked before socktools starts, as in a venv without httptools."""
    code = ("import sys; sys.modules['httptools'] = None; "
            "sys.argv = ['socktools', 'request', '--mode', 'http', '127.0.0.1', '9']; "
            "from socktools.__main__ import main; main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.strip() == "socktools: --mode http needs the httptools package: pip install httptools"
    assert proc.stdout == ""


def test_the_readme_exit_code_table_says_a_missing_package_is_3():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| 3 |"))
    assert "optional package" in row
    commands = row.split("|")[3]
    for command in ("`flood --mode http`", "`request --mode http`", "`sniff --decode http`", "`report`",
                    "`serve --tls-self-signed`"):
        assert command in commands, command
