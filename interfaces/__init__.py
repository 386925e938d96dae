"""Edges to the outside world: device protocols, storage, uplink, logging. Unit conversion lives here."""
