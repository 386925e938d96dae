"""The planner thread (docs/scheduling.md): prices, forecasts and the LP at the edge of the process."""

from interfaces.planner.services import StoreHistory, StorePriceCache, build_planner
from interfaces.planner.worker import DEVICE, PlannerWorker

__all__ = ["DEVICE", "PlannerWorker", "StoreHistory", "StorePriceCache", "build_planner"]
