"""What every route of one app shares: the settings, the store, the event hub, the metrics,
the runs, the authenticator and the orchestration report, made once by
:func:`corral.server.create_app`."""

from __future__ import annotations

from dataclasses import dataclass

from corral.server._auth import Authenticator
from corral.server._events import EventHub
from corral.server._metrics import Metrics
from corral.server._orchestration import Orchestration
from corral.server._runs import RunManager
from corral.server._settings import Settings
from corral.store import Store

__all__ = ["Service"]


@dataclass(slots=True)
class Service:
    """What the routes share: one per app."""

    settings: Settings
    store: Store
    hub: EventHub
    metrics: Metrics
    runs: RunManager
    auth: Authenticator
    orchestration: Orchestration
