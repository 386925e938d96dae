"""A year of 15-minute battery scheduling (DESIGN §7): `python -m simulators.schedule` (docs/scheduling.md)."""
