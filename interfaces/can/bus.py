"""Open the configured python-can bus (socketcan in production; socketcand/virtual for simulators and tests)."""

from __future__ import annotations

import can

from config.can import CanConfig, CanInterface
from interfaces.can.socketcand import SocketcandBus

__all__ = ["open_bus"]


def open_bus(cfg: CanConfig) -> can.BusABC:
    """A new bus for `cfg`; raises can.CanError or OSError when it cannot be opened."""
    if cfg.interface is CanInterface.SOCKETCAND:
        return SocketcandBus(cfg.channel, host=cfg.host, port=cfg.port)
    if cfg.interface is CanInterface.VIRTUAL:
        return can.Bus(interface="virtual", channel=cfg.channel, receive_own_messages=False)
    if cfg.interface is CanInterface.SLCAN:
        return can.Bus(interface="slcan", channel=cfg.channel, bitrate=cfg.bitrate)
    return can.Bus(interface="socketcan", channel=cfg.channel)  # bitrate: `ip link set can0 type can bitrate 500000`
