"""Installing the module beside a Synapse leaves that Synapse, and all it needs, alone.

pip itself is asked, in the environment of the Synapse under test (the oldest and the
newest supported, in turn), what installing this checkout would change.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


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
