"""Modbus TCP/RTU: point maps, SunSpec discovery and the worker that polls the ESS and grid meter."""
