"""The optional packages: what needs which, and the one line that says how to get it.

Every install hint socktools prints comes from :data:`PACKAGES`, so there is
one wording and one rule: a hint names the real project by its own name on
PyPI (``pip install httptools``), never an extra of ``socktools``.  The name
``socktools`` on PyPI belongs to an unrelated project (a 2017 library,
``socktools 0.2``); this distribution is :data:`DISTRIBUTION`, and its extras
(``pip install '.[http]'`` from a checkout) install the same packages.

A missing package is exit 3 in every command, like a missing privilege or
platform feature: the switchboard turns :class:`MissingPackage`, wherever it is
raised, into its hint on one line.  The import itself stays where the package
is used (``tests/test_layers.py`` confines matplotlib and Dask to their
modules); those modules raise :class:`MissingPackage` when it fails.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["DISTRIBUTION", "Package", "PACKAGES", "MissingPackage", "hint"]

#: This project's distribution name (pyproject's ``[project] name``).  The import
#: package and the command stay ``socktools``.
DISTRIBUTION = "socktools-cli"


class Package(NamedTuple):
    extra: str          # the extra in pyproject's [project.optional-dependencies] that holds it
    module: str         # what socktools imports
    requirement: str    # what pip installs: the project's own name on PyPI
    what: str           # how a message names it
    needed_by: tuple    # the features (options, commands) that need it, as the hint names them

    @property
    def install(self) -> str:
        """The command a user types (quoted when the requirement has shell characters)."""
        req = self.requirement
        return f"pip install '{req}'" if any(c in req for c in "[]<>=") else f"pip install {req}"


#: extra -> the optional package behind it.
PACKAGES = {
    p.extra: p for p in (
        Package("http", "httptools", "httptools", "the httptools package",
                ("--mode http", "--decode http")),
        Package("report", "matplotlib", "matplotlib", "matplotlib to draw its plots",
                ("--report", "socktools report")),
        Package("dask", "distributed", "dask[distributed]", "Dask",
                ("--cluster",)),
        Package("tls", "cryptography", "cryptography", "the cryptography package",
                ("--tls-self-signed",)),
    )
}


def hint(extra: str, feature: str) -> str:
    """``"--mode http needs the httptools package: pip install httptools"``."""
    package = PACKAGES[extra]
    if feature not in package.needed_by:
        raise ValueError(f"{feature!r} is not listed as needing {package.module} ({package.needed_by})")
    return f"{feature} needs {package.what}: {package.install}"


class MissingPackage(ImportError):
    """An optional package is not installed; ``str()`` is the hint (exit 3 in the CLI)."""

    def __init__(self, extra: str, feature: str) -> None:
        super().__init__(hint(extra, feature), name=PACKAGES[extra].module)
        self.extra = extra
        self.feature = feature
