"""Simulated site (plant model, Modbus servers, ...) for `make run`, tests and replay."""
