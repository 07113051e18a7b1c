"""Installing the module beside a Synapse leaves that Synapse, and all it needs, alone;
and what the module imports, it declares.

pip itself is asked, in the environment of the Synapse under test (the oldest and the
newest supported, in turn), what installing this checkout would change.
"""

from __future__ import annotations

import ast
import configparser
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "synapse_tchap_guard"
# Imported, never required: the module runs inside the Synapse it finds.
NOT_REQUIRED = {"synapse"}


def test_pip_install_changes_nothing_but_the_module() -> None:
    report = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--quiet",
            "--report",
            "-",
            str(REPO),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    would_install = [
        item["metadata"]["name"] for item in json.loads(report.stdout)["install"]
    ]
    assert would_install == ["synapse-tchap-guard"]


def imported_distributions() -> dict[str, set[str]]:
    """The distributions the package's own modules import, by name, with where."""
    stdlib = set(sys.stdlib_module_names)
    provides = importlib.metadata.packages_distributions()
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in stdlib or top == PACKAGE.name or top in NOT_REQUIRED:
                    continue
                for distribution in provides.get(top, [top]):
                    where = str(path.relative_to(REPO))
                    found.setdefault(canonicalize_name(distribution), set()).add(where)
    return found


def test_every_distribution_the_module_imports_is_declared() -> None:
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    declared = {
        canonicalize_name(Requirement(line).name)
        for line in setup["options"]["install_requires"].splitlines()
        if line.strip() and not line.strip().startswith("#")
    }
    imported = imported_distributions()
    assert "packaging" in imported  # the check can see what it is looking for
    undeclared = {name: sorted(where) for name, where in imported.items()}
    for name in declared:
        undeclared.pop(name, None)
    assert undeclared == {}
