"""The package's import layers, checked on its own source (docs/architecture.md draws them).

Every ``import`` of ``socktools`` code is read with :mod:`ast` -- function-level
(lazy) imports included, because a lazy import is still a dependency -- and
must go down the table below, never up; and no two modules import each other,
directly or round a longer circle.  The table is the only place the allowed
directions are written; docs/architecture.md shows the same table.
"""

from __future__ import annotations

import ast
import pathlib
from typing import Iterator

import pytest

import socktools

PACKAGE = pathlib.Path(socktools.__file__).parent

#: Each top-level unit of the package (a module or a folder) and its layer,
#: bottom-up.  A module may import its own unit and any lower layer.  Within
#: the foundations, one module may use another (reference uses protocol);
#: within the commands, none may import another (a command that needs a peer
#: runs one as a subprocess through core.embedded).
LAYERS: dict[str, int] = {
    # 0. foundations: sans-I/O logic and plain data, no sockets of their own
    "__init__": 0, "protocol": 0, "reference": 0, "errors": 0, "addresses": 0, "wire": 0,
    "runinfo": 0, "_help_text": 0, "icmpnames": 0, "units": 0, "optional": 0, "tlsconf": 0, "tlsinfo": 0,
    # worked plug-in examples shipped in the package: they use the wire interface, as a user's would
    "examples": 0,
    # 1. the shared core: the I/O loop, its pollers, signals, worker processes, embedded server
    "core": 1,
    # 2. readers of the kernel's state: TCP_INFO, /proc/sys, socket tables, doctor
    "kernel": 2,
    # 3. the commands' engines
    "capture": 3, "serve": 3, "request": 3, "ping": 3, "stall": 3, "flood": 3, "sockets": 3, "demo": 3,
    # 4. views of saved results, across commands: the HTML report of a flood result
    "report": 4,
    # 5. the switchboard
    "cli": 5, "__main__": 5,
}
#: Layers whose units may not import each other.
NO_SIDEWAYS = {3}
#: Inside a command's folder, the same shape everywhere: data (config, then what a
#: run produces) below the engine and the report, which are siblings.  A module
#: not named here is engine.  The data modules import no engine (so a report or
#: a parent process can read results without starting anything), and a report
#: is a view: it reads data and the foundations, never the engine or the core.
DATA: dict[str, int] = {"config": 0, "stages": 0, "limits": 1, "stats": 1, "result": 2, "results": 2,
                        "timeline": 2, "thresholds": 2}
REPORT = "report"
#: Third-party modules allowed only inside the listed units or modules.
CONFINED: dict[str, tuple[str, ...]] = {
    "click": ("cli",),
    # scapy_layer is itself a scapy layer (for scapy users; nothing imports it unasked)
    "scapy": ("capture._scapy", "capture.scapy_layer"),
    "matplotlib": ("report.plots",),
    "numpy": ("report.plots",),
    "distributed": ("flood.cluster", "flood.cluster_run", "flood.shard"),
}
#: Known circles still being untangled: (module, module) -> why.  Keep it empty.
KNOWN_CYCLES: dict[frozenset, str] = {
}


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _is_module(name: str) -> bool:
    path = PACKAGE.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(path: pathlib.Path) -> Iterator[tuple[str, int]]:
    """(imported name, line) for every import in the file, socktools' own names relative
    to the package (``core.loop``), third-party ones as written (``click``)."""
    me = _module_name(path)
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = me.split(".") if path.name == "__init__.py" else me.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(["socktools", *base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                own = sub.startswith("socktools.") and _is_module(sub[len("socktools."):])
                yield (sub if own else module), node.lineno


def _graph() -> dict[str, dict[str, int]]:
    """module -> {socktools module it imports: line}; also checks the confined imports."""
    graph: dict[str, dict[str, int]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        me = _module_name(path)
        deps = graph.setdefault(me, {})
        for name, line in _imports(path):
            if name == "socktools" or name.startswith("socktools."):
                dep = name[len("socktools."):] if name != "socktools" else "__init__"
                if dep != me:
                    deps.setdefault(dep, line)
            else:
                deps.setdefault("!" + name, line)
    return graph


def _unit(module: str) -> str:
    return module.split(".")[0]


def _role(module: str) -> str:
    """``config``/``stats``/... for a command's data module, ``report``, or ``engine``."""
    parts = module.split(".")
    if len(parts) < 2 or LAYERS.get(parts[0]) not in NO_SIDEWAYS:
        return "engine"
    name = parts[1]
    return name if name in DATA or name == REPORT else "engine"


def _inside_a_command(me: str, dep: str, line: int) -> list[str]:
    mine, theirs = _role(me), _role(dep)
    if mine in DATA and (theirs not in DATA or DATA[theirs] > DATA[mine]):
        return [f"{me}:{line} imports {dep}: data modules ({', '.join(DATA)}) import only "
                f"lower data of their folder, never its engine or report"]
    if theirs == REPORT and dep != me:
        return [f"{me}:{line} imports {dep}: only the CLI uses a report"]
    if mine == REPORT and theirs not in DATA:
        return [f"{me}:{line} imports {dep}: a report reads data, not the engine"]
    return []


def _layer_violations(graph) -> list[str]:
    bad = []
    for me, deps in graph.items():
        mine = LAYERS.get(_unit(me))
        if mine is None:
            bad.append(f"{me}: not in LAYERS (give its folder a layer in tests/test_layers.py "
                       f"and docs/architecture.md)")
            continue
        for dep, line in deps.items():
            if dep.startswith("!"):
                top = dep[1:].split(".")[0]
                allowed = CONFINED.get(top)
                if allowed and not any(me == a or me.startswith(a + ".") for a in allowed):
                    bad.append(f"{me}:{line} imports {top}, which only {', '.join(allowed)} may")
                continue
            if _unit(dep) == _unit(me):
                if mine in NO_SIDEWAYS:
                    bad += _inside_a_command(me, dep, line)
                continue
            if _role(me) == REPORT and LAYERS.get(_unit(dep), 99) > 0:
                bad.append(f"{me}:{line} imports {dep}: a report reads data and the foundations only")
                continue
            theirs = LAYERS.get(_unit(dep), 99)
            if theirs > mine:
                bad.append(f"{me}:{line} imports {dep}, a higher layer ({theirs} > {mine})")
            elif theirs == mine and mine in NO_SIDEWAYS:
                bad.append(f"{me}:{line} imports {dep}: one command may not import another "
                           f"(run it as a subprocess, as core.embedded does)")
    return bad


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    nodes = {m: {d for d in deps if not d.startswith("!") and d in graph} for m, deps in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(nodes[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_a_higher_layer_or_a_sibling_command():
    graph = _graph()
    assert len(graph) > 40, "the walk found too few modules: is PACKAGE right?"
    assert not _layer_violations(graph), "\n".join(_layer_violations(graph))


def test_no_import_circles_between_modules():
    found = _cycles(_graph())
    cycles = [c for c in found if frozenset(c) not in KNOWN_CYCLES]
    assert not cycles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in cycles)
    gone = set(KNOWN_CYCLES) - {frozenset(c) for c in found}
    assert not gone, f"known circles no longer there, remove them from KNOWN_CYCLES: {gone}"


def test_no_import_circles_between_folders():
    """Folder-level: ``a/`` using ``b/`` while ``b/`` uses ``a/`` is a circle even if no two
    single modules close it."""
    units: dict[str, dict[str, int]] = {}
    for me, deps in _graph().items():
        mine = units.setdefault(_unit(me), {})
        for dep, line in deps.items():
            if not dep.startswith("!") and _unit(dep) != _unit(me):
                mine.setdefault(_unit(dep), line)
    cycles = _cycles(units)
    assert not cycles, "folders importing each other:\n" + "\n".join(" <-> ".join(c) for c in cycles)


# ------------------------------------------------------------- the checker itself

def _fake_graph(edges: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    return {m: {d: 1 for d in deps} for m, deps in edges.items()}


def test_the_checker_catches_what_it_is_for():
    """Each rule on a made-up graph: the checks above could not pass vacuously."""
    up = _fake_graph({"core.loop": ["serve.worker"], "serve.worker": []})
    assert any("higher layer" in b for b in _layer_violations(up))
    sideways = _fake_graph({"stall.steps": ["serve.worker"], "serve.worker": []})
    assert any("one command may not import another" in b for b in _layer_violations(sideways))
    data_up = _fake_graph({"stall.results": ["stall.steps"], "stall.steps": []})
    assert any("data modules" in b for b in _layer_violations(data_up))
    report_engine = _fake_graph({"flood.report": ["flood.runner"], "flood.runner": []})
    assert any("a report reads data" in b for b in _layer_violations(report_engine))
    report_core = _fake_graph({"flood.report": ["core.loop"], "core.loop": []})
    assert any("a report reads data and the foundations" in b for b in _layer_violations(report_core))
    click_outside = _fake_graph({"flood.report": ["!click"]})
    assert any("only cli may" in b for b in _layer_violations(click_outside))
    fine = _fake_graph({"cli.serve": ["serve.worker", "!click"], "serve.worker": ["core.loop", "errors"],
                        "stall.report": ["stall.results", "errors"], "stall.results": ["stall.config"],
                        "stall.steps": ["stall.results", "stall.config"], "stall.config": [],
                        "core.loop": [], "errors": [], "reference": ["protocol"], "protocol": []})
    assert _layer_violations(fine) == []
    assert _cycles(_fake_graph({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]})) == [["a", "b", "c"]]
    assert _cycles(fine) == []


@pytest.mark.parametrize("source,expected", [
    ("import socktools.core.loop", "socktools.core.loop"),
    ("from socktools.flood import stats as st", "socktools.flood.stats"),
    ("from socktools.flood import FloodConfig", "socktools.flood"),
    ("def f():\n    from socktools.core.embedded import EmbeddedServer", "socktools.core.embedded"),
])
def test_imports_are_read_with_function_level_and_submodule_names(tmp_path, monkeypatch, source, expected):
    fake = PACKAGE / "cli" / "_layers_probe.py"
    monkeypatch.setattr(pathlib.Path, "read_text", lambda self, *a, **k: source)
    assert [name for name, _ in _imports(fake)] == [expected]
