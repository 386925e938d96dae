"""CAN BMS: the DBC (pylontech.dbc), its codec, the worker, and the socketcand client (docs/can.md)."""
