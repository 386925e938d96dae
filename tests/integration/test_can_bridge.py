"""The loopback CAN bus between processes: the socketcand-compatible hub and our client bus."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import can
import pytest

from ems.clock import SystemClock
from ems.context import EMSContext
from ems.model import Quantity as Q
from interfaces.can.socketcand import SocketcandBus
from simulators.bms import BmsSimConfig, BmsSimulator, StaticBattery
from simulators.can_hub import SocketcandHub
from tests.helpers.can import can_counters, can_worker, ems_config
from tests.helpers.common import free_port, wait_for


@pytest.fixture
def hub() -> Iterator[SocketcandHub]:
    h = SocketcandHub(port=0).start()
    yield h
    h.stop()


def _msg(frame_id: int, data: bytes, *, extended: bool = False) -> can.Message:
    return can.Message(arbitration_id=frame_id, is_extended_id=extended, data=data, dlc=len(data))


def _joined(hub: SocketcandHub, n: int) -> None:
    wait_for(lambda: hub.clients >= n, what=f"{n} clients in raw mode, past the handshake grace")


def test_the_hub_listens_on_loopback_only(hub: SocketcandHub) -> None:
    assert hub._server is not None and hub._server.getsockname()[0] == "127.0.0.1"
    with pytest.raises(ValueError, match="loopback"):
        SocketcandHub(host="0.0.0.0")


def test_a_frame_reaches_every_other_client_and_not_its_sender(hub: SocketcandHub) -> None:
    a, b, c = (SocketcandBus("can0", port=hub.port) for _ in range(3))
    try:
        _joined(hub, 3)
        a.send(_msg(0x351, bytes([0x30, 0x02, 0xE8, 0x03, 0x74, 0x0E, 0xCC, 0x01])))
        a.send(_msg(0x1ABCDEF0, b"\x01", extended=True))
        a.send(_msg(0x123, b""))
        for bus in (b, c):
            got = [bus.recv(2.0) for _ in range(3)]
            assert [(m.arbitration_id, m.is_extended_id, bytes(m.data)) for m in got if m is not None] == [
                (0x351, False, bytes([0x30, 0x02, 0xE8, 0x03, 0x74, 0x0E, 0xCC, 0x01])),
                (0x1ABCDEF0, True, b"\x01"),
                (0x123, False, b""),
            ]
        assert a.recv(0.2) is None
    finally:
        for bus in (a, b, c):
            bus.shutdown()


def test_python_cans_own_socketcand_client_talks_to_the_hub(hub: SocketcandHub) -> None:
    ours = SocketcandBus("can0", port=hub.port)
    theirs = can.Bus(interface="socketcand", channel="can0", host="127.0.0.1", port=hub.port)
    try:
        _joined(hub, 2)
        ours.send(_msg(0x355, bytes([57, 0, 98, 0])))
        m = theirs.recv(2.0)
        assert m is not None and (m.arbitration_id, bytes(m.data)) == (0x355, bytes([57, 0, 98, 0]))
        theirs.send(_msg(0x305, bytes(8)))
        m = ours.recv(2.0)
        assert m is not None and (m.arbitration_id, bytes(m.data)) == (0x305, bytes(8))
    finally:
        ours.shutdown()
        theirs.shutdown()


def test_malformed_lines_are_rejected_and_the_hub_keeps_serving(hub: SocketcandHub) -> None:
    listener = SocketcandBus("can0", port=hub.port)
    raw = socket.create_connection(("127.0.0.1", hub.port), timeout=2)
    try:
        assert raw.recv(64) == b"< hi >"
        raw.sendall(b"< open can0 >")
        assert raw.recv(64) == b"< ok >"
        raw.sendall(b"< rawmode >")
        assert raw.recv(64) == b"< ok >"
        raw.sendall(b"< send 999999 9 >< send 351 2 1 >junk without brackets< bogus >< send 356 2 zz 1 >")
        wait_for(lambda: hub.lines_rejected == 4, what="four bad lines rejected")
        _joined(hub, 2)
        raw.sendall(b"< send 355 4 39 0 62 0 >")
        m = listener.recv(2.0)
        assert m is not None and (m.arbitration_id, bytes(m.data)) == (0x355, bytes([0x39, 0, 0x62, 0]))
    finally:
        raw.close()
        listener.shutdown()


def test_the_client_raises_when_the_hub_goes_away() -> None:
    h = SocketcandHub(port=0).start()
    bus = SocketcandBus("can0", port=h.port)
    try:
        _joined(h, 1)
        h.stop()
        with pytest.raises(can.CanOperationError, match="closed"):
            bus.recv(2.0)
    finally:
        bus.shutdown()


def test_the_worker_reads_the_simulator_over_the_hub_and_reconnects_after_a_restart() -> None:
    port = free_port()
    cfg = ems_config(can_cfg={"interface": "socketcand", "channel": "can0", "port": port, "reopen_s": 0.2})
    clock = SystemClock()
    ctx = EMSContext(clock=clock)
    sim = BmsSimulator(StaticBattery(soc_pct=61.0), BmsSimConfig(port=port)).start()
    worker = can_worker(cfg, ctx, clock)
    worker.start()
    try:
        wait_for(lambda: (r := ctx.snapshot().measurements.get(Q.SOC_PCT)) is not None and r.value == 61.0, what="SOC over the hub")
        sim.stop()  # the hub goes away with the simulator
        wait_for(lambda: getattr(ctx.snapshot().device("bms"), "last_error", None) == "CanOperationError", what="worker sees the bus close")
        sim = BmsSimulator(StaticBattery(soc_pct=33.0), BmsSimConfig(port=port)).start()
        wait_for(lambda: ctx.snapshot().measurements[Q.SOC_PCT].value == 33.0, timeout_s=15, what="SOC after the worker reconnected")
        assert worker.is_alive()
        assert can_counters(ctx).get("can_frames_malformed", 0) == 0
    finally:
        worker.stop()
        sim.stop()
