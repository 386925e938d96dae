"""The installed `emsctl` console script against the real main.py process with the API enabled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.common import free_port, wait_for
from tests.helpers.proc import LoggedProcess

pytestmark = pytest.mark.system

EMSCTL = Path(sys.executable).parent / "emsctl"
TOKEN = "tok-cli-process-5d1e"
# exec argv[1:] with SIGINT ignored (inherited across exec: Python then installs no KeyboardInterrupt handler)
IGNORING_SIGINT = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); os.execv(sys.argv[1], sys.argv[1:])"


def emsctl(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EMSCTL_URL": url, "EMSCTL_TOKEN": TOKEN}
    return subprocess.run([str(EMSCTL), *args], capture_output=True, text=True, timeout=30, env=env, check=False)


def test_emsctl_console_script_against_main_py(tmp_path: Path) -> None:
    if not EMSCTL.exists():
        pytest.skip(f"{EMSCTL} is not installed: the project is not pip-installed in this venv (make venv does it)")
    port = free_port()
    cfg = tmp_path / "ems.yaml"
    cfg.write_text(
        f"api:\n  enabled: true\n  port: {port}\n  tokens:\n    - {{name: engineer, role: operator, secret: {{env: EMS_CLI_TEST_TOKEN}}}}\n",
        encoding="utf-8",
    )
    url = f"http://127.0.0.1:{port}"
    p = LoggedProcess(["main.py", "--config", str(cfg), "--log-format", "json"], env={"EMS_CLI_TEST_TOKEN": TOKEN})
    follow: subprocess.Popen[str] | None = None
    try:
        p.wait_event(lambda e: e.get("event") == "api_started", timeout_s=30, what="api_started")
        p.wait_event(lambda e: e.get("event") == "state_changed" and e.get("to_state") == "FAULT", timeout_s=30, what="FAULT")

        r = emsctl("status", "--json", url=url)
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["state"] == "FAULT" and "stale:grid_power_w" in doc["fault_causes"]

        r = emsctl("health", url=url)  # no devices: FAULT -> unhealthy
        assert r.returncode == 1 and r.stdout.startswith("UNHEALTHY: fault:stale:grid_power_w")

        env = {**os.environ, "EMSCTL_URL": url}
        follow = subprocess.Popen(  # started with SIGINT ignored, as a background job of a script or a CI runner has it
            [sys.executable, "-c", IGNORING_SIGINT, str(EMSCTL), "events", "--follow", "--kind", "audit", "--interval", "0.2"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        r = emsctl("mode", "set", "IDLE", url=url)
        assert r.returncode == 0 and "mode accepted" in r.stdout, r.stderr
        assert follow.stdout is not None
        line = follow.stdout.readline()  # blocks until the follower prints the audit event (test timeout bounds it)
        assert "audit" in line and "who=engineer" in line and "new=IDLE" in line
        follow.send_signal(signal.SIGINT)
        assert follow.wait(10) == 0  # Ctrl-C ends --follow normally, even with SIGINT ignored when it started

        rc = p.terminate_and_wait(timeout_s=5)
    finally:
        if follow is not None and follow.poll() is None:
            follow.kill()
            follow.wait(5)
        p.kill()
    assert rc == 0
    wait_for(lambda: emsctl("status", url=url).returncode == 3, timeout_s=5, what="emsctl to report the API gone (exit 3)")
