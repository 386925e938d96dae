"""systemd integration of the real main.py: the notify protocol over a socket the test owns, and the unit file.

The test plays systemd's part: it binds a unix datagram socket, hands it to main.py as NOTIFY_SOCKET
with WATCHDOG_USEC set, and reads what the process sends: READY=1, WATCHDOG=1 while the control loop
completes its cycles on time, nothing while the loop is stalled (the test runs main.main through
tests/helpers/stall.py, which adds a cycle hook that blocks while EMS_TEST_STALL_FILE exists),
STOPPING=1 on SIGTERM.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from simulators.ctl import send
from tests.helpers.common import REPO_ROOT, wait_for
from tests.helpers.proc import LoggedProcess
from tests.helpers.site import site_configs

pytestmark = pytest.mark.system

WATCHDOG_USEC = 2_000_000  # what systemd would pass for WatchdogSec=2
UNIT = REPO_ROOT / "deploy" / "ems.service"


class NotifyListener:
    """A unix datagram socket standing in for systemd's notify socket; collects every message."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._cond = threading.Condition()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._read, name="notify-listener", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._cond:
                self.messages.extend(data.decode("utf-8").split("\n"))
                self._cond.notify_all()

    def wait(self, predicate: Callable[[list[str]], bool], *, timeout_s: float, what: str) -> list[str]:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.messages), timeout_s):
                raise AssertionError(f"no {what} on the notify socket within {timeout_s} s; got {self.messages[-20:]}")
            return list(self.messages)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory path: AF_UNIX socket paths are limited to 108 bytes."""
    d = Path(tempfile.mkdtemp(prefix="ems-sd-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _after(messages: list[str], marker: str) -> list[str]:
    return messages[messages.index(marker) + 1 :] if marker in messages else []


def _site_configs(d: Path) -> tuple[Path, Path, int]:
    """The simulators (flat 1.5 kW export) and a live EMS config driving them, written to `d`."""
    site = site_configs(d)
    (d / "sim.yaml").write_text(yaml.safe_dump(site.sim), encoding="utf-8")
    (d / "ems.yaml").write_text(yaml.safe_dump(site.ems), encoding="utf-8")
    return d / "sim.yaml", d / "ems.yaml", site.ports["control"]


def _inverter_setpoint_w(port: int) -> float:
    return float(json.loads(send("status", port=port))["setpoint_w"])


def test_ready_watchdog_only_while_the_loop_runs_on_time_stopping_and_0_w_at_the_inverter(short_dir: Path) -> None:
    sim_cfg, ems_cfg, ctl_port = _site_configs(short_dir)
    listener = NotifyListener(short_dir / "notify")
    stall_file = short_dir / "stall"
    env = {"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": str(WATCHDOG_USEC), "EMS_TEST_STALL_FILE": str(stall_file)}
    sim = LoggedProcess(["-m", "simulators", "--config", str(sim_cfg), "--log-format", "json"])
    p: LoggedProcess | None = None
    try:
        sim.wait_event(lambda e: e.get("event") == "simulator_started", timeout_s=20, what="simulator_started")
        p = LoggedProcess(["-m", "tests.helpers.stall", "--config", str(ems_cfg), "--log-format", "json"], env=env)
        armed = p.wait_event(lambda e: e.get("event") == "test_stall_hook_armed", timeout_s=30, what="test_stall_hook_armed")
        assert armed["level"] == "warning"
        msgs = listener.wait(lambda m: "READY=1" in m, timeout_s=30, what="READY=1")
        assert not [m for m in msgs[: msgs.index("READY=1")] if m == "WATCHDOG=1"], "no ping before READY"
        # healthy loop: periodic pings
        listener.wait(lambda m: _after(m, "READY=1").count("WATCHDOG=1") >= 3, timeout_s=15, what="3 WATCHDOG=1 after READY")
        status = [m for m in listener.messages if m.startswith("STATUS=")]
        assert status and status[0].startswith("STATUS=state ")

        # stall the control loop: the pings stop
        stall_file.touch()
        listener.wait(lambda m: "STATUS=test stall started" in m, timeout_s=10, what="stall start marker")
        with pytest.raises(AssertionError):  # longer than WatchdogSec: systemd would restart the process
            listener.wait(
                lambda m: "WATCHDOG=1" in _after(m, "STATUS=test stall started"),
                timeout_s=1.5 * WATCHDOG_USEC / 1e6,
                what="a ping during the stall",
            )
        stall_file.unlink()
        msgs = listener.wait(lambda m: "STATUS=test stall ended" in m, timeout_s=10, what="stall end marker")
        during = _after(msgs, "STATUS=test stall started")
        assert "WATCHDOG=1" not in during[: during.index("STATUS=test stall ended")]
        # the loop runs on time again: pings resume
        listener.wait(lambda m: "WATCHDOG=1" in _after(m, "STATUS=test stall ended"), timeout_s=10, what="WATCHDOG=1 after the stall")
        overrun = p.wait_event(lambda e: e.get("event") == "cycle_overrun", timeout_s=5, what="cycle_overrun after the stall")
        assert overrun["skipped_cycles"] >= 1

        # the battery is charging from the export when the stop comes
        wait_for(lambda: _inverter_setpoint_w(ctl_port) < -100.0, timeout_s=30, what="a charge command at the inverter")
        rc = p.terminate_and_wait(timeout_s=5)  # the contract: exit within 5 s of SIGTERM
        listener.wait(lambda m: "STOPPING=1" in m, timeout_s=5, what="STOPPING=1")
        assert _inverter_setpoint_w(ctl_port) == 0.0
    finally:
        for proc in (p, sim):
            if proc is not None:
                if proc.proc.poll() is None:
                    proc.terminate_and_wait(timeout_s=15)
                proc.kill()
        listener.close()
    assert rc == 0
    assert _after(listener.messages, "STOPPING=1").count("WATCHDOG=1") <= 1  # at most the ping of a cycle already running
    stopped = [e for e in p.events if e.get("event") == "controller_stopped"]
    assert stopped and stopped[-1]["zero_written"] is True
    assert p.events[-1]["event"] == "ems_stopped"


def test_without_notify_socket_nothing_is_sent_and_main_py_ignores_the_stall_variable(tmp_path: Path) -> None:
    stall = tmp_path / "stall"
    stall.touch()  # would block the loop if main.py read the variable: it must not
    env = {"NOTIFY_SOCKET": "", "EMS_TEST_STALL_FILE": str(stall)}
    p = LoggedProcess(["main.py", "--config", "config/ems.example.yaml", "--log-format", "json"], env=env)
    try:
        p.wait_event(lambda e: e.get("event") == "controller_started", timeout_s=30, what="controller_started")
        p.wait_event(lambda e: e.get("event") == "state_changed" and e.get("to_state") == "FAULT", timeout_s=30, what="cycles running")
        rc = p.terminate_and_wait(timeout_s=5)
    finally:
        p.kill()
    assert rc == 0
    names = {e.get("event") for e in p.events}
    assert "systemd_ready" not in names and "systemd_notify_unavailable" not in names
    assert "test_stall_hook_armed" not in names and "test_stall_started" not in names


def test_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd; `make test` installs it where it can)")
    # verify resolves ExecStart=, User= etc.; point ExecStart at binaries that exist here
    unit = tmp_path / "ems.service"
    text = UNIT.read_text(encoding="utf-8").replace("/opt/ems/current/venv/bin/python", shutil.which("python3") or "/usr/bin/python3")
    unit.write_text(text, encoding="utf-8")
    r = subprocess.run([exe, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60, check=False)
    problems = [line for line in (r.stdout + r.stderr).splitlines() if line.strip() and "ems.service" in line]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr
