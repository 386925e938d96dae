"""interfaces/systemd.py against a real unix datagram socket: which cycle reports ping the watchdog."""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ems.controller import CycleReport
from ems.core import CoreState, Decision, step
from interfaces.systemd import SystemdNotifier, notify_stopping
from tests.helpers.core import core_cfg, make_inputs
from tests.helpers.stall import STALL_ENV, stall_hook, stall_hooks_from_env


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[socket.socket, str]]:
    """systemd's side: a bound datagram socket, named in $NOTIFY_SOCKET (sdnotify reads the environment)."""
    d = Path(tempfile.mkdtemp(prefix="ems-sd-", dir="/tmp"))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(d / "notify"))
    sock.settimeout(0.5)
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(d / "notify"))
    yield sock, str(d / "notify")
    sock.close()
    shutil.rmtree(d, ignore_errors=True)


def _decision() -> Decision:
    return step(CoreState(), make_inputs(), core_cfg())


def _recv_all(sock: socket.socket) -> list[str]:
    out: list[str] = []
    sock.settimeout(0.0)
    try:
        while True:
            out.extend(sock.recv(4096).decode().split("\n"))
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(0.5)
    return out


def test_ready_once_then_watchdog_only_for_cycles_on_time(
    notify_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, _ = notify_socket
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    n = SystemdNotifier()
    d = _decision()
    n.on_cycle(CycleReport(d, on_time=True, overruns=0))
    first = _recv_all(sock)
    assert first[0] == "READY=1" and "WATCHDOG=1" in first and first[1].startswith("STATUS=state ")
    n.on_cycle(CycleReport(d, on_time=False, overruns=1))  # late: no ping
    assert _recv_all(sock) == []
    n.on_cycle(CycleReport(d, on_time=True, overruns=1))
    assert _recv_all(sock) == ["WATCHDOG=1"]  # no second READY, no STATUS without a state change
    n.close()


def test_no_watchdog_pings_unless_systemd_asked_for_them(notify_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch) -> None:
    sock, _ = notify_socket
    for env in ({}, {"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "1"}):  # no watchdog / another process's watchdog
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        n = SystemdNotifier()
        n.on_cycle(CycleReport(_decision(), on_time=True, overruns=0))
        msgs = _recv_all(sock)
        assert "READY=1" in msgs and "WATCHDOG=1" not in msgs
        n.close()


def test_without_notify_socket_everything_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = SystemdNotifier()
    assert not n.active
    n.on_cycle(CycleReport(_decision(), on_time=True, overruns=0))
    assert n.notify("STOPPING=1") is False and n.sent == 0


def test_a_vanished_socket_counts_drops_and_never_raises(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    n = SystemdNotifier()
    sock.close()  # systemd went away
    Path(path).unlink()
    n.on_cycle(CycleReport(_decision(), on_time=True, overruns=0))
    assert n.dropped == 1 and n.sent == 0


def test_stopping(notify_socket: tuple[socket.socket, str]) -> None:
    sock, _ = notify_socket
    notify_stopping()
    assert _recv_all(sock)[0] == "STOPPING=1"


def test_stall_hook_needs_an_absolute_path_and_blocks_only_while_the_file_exists(tmp_path: Path) -> None:
    """The test-only stall hook (tests/helpers/stall.py): refuses a relative path; returns at once
    without its file; with the file, blocks until the file is gone."""
    with pytest.raises(SystemExit, match="absolute path"):
        stall_hooks_from_env({STALL_ENV: "relative/stall"})
    path = tmp_path / "stall"
    hook = stall_hook(path)
    report = CycleReport(_decision(), on_time=True, overruns=0)
    hook(report)  # no file: returns at once
    path.touch()
    released = threading.Event()
    t = threading.Thread(target=lambda: (hook(report), released.set()), daemon=True)
    t.start()
    assert not released.wait(0.3)  # still blocked while the file exists
    path.unlink()
    assert released.wait(10.0)
