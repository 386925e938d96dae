"""CAN BMS: the DBC (pylontech.dbc), its codec, the worker, and a loopback TCP bus bridge (docs/can.md)."""
