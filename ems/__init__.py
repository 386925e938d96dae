"""EMS control core: pure decision logic plus the 1 Hz controller (DESIGN.md §3-5)."""
