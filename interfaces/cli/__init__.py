"""`emsctl`, the field engineer's command line (docs/operations.md): REST client, Modbus/CAN wiring checks."""
