"""Commissioning inside the EMS (`emsctl commission`): see interfaces/commission/runner.py."""

from interfaces.commission.runner import Commissioner, Parts, build_commissioner

__all__ = ["Commissioner", "Parts", "build_commissioner"]
