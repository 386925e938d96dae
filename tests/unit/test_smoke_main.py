from __future__ import annotations

import subprocess

from tests.helpers.common import PYTHON, REPO_ROOT


def test_check_config_accepts_the_example_file() -> None:
    r = subprocess.run(
        [PYTHON, "main.py", "--config", "config/ems.example.yaml", "--check-config"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "config ok" in r.stdout
