"""Price sources (docs/scheduling.md): ENTSO-E, aWATTar, Tibber, Octopus Agile and CSV (`fetch.py`),
and prices pushed over REST or MQTT (`push.py`).

Kept empty on purpose: the API, MQTT and the store import `push.py` at start-up, and the HTTP
sources (requests, ~5 MB) are loaded only by the planner thread that fetches prices.
"""
