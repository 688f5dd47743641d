"""Online serving: the serving snapshot, its reloader thread and the Flask API.

``snapshot`` is pure numpy (no Redis, Flask or files); ``reloader`` and ``app`` wire it
to the feature store, the registry and the model store; ``server`` runs the app under
granian or gunicorn with one BLAS thread per worker.

Names are imported on first use: ``hybridrec serve`` must set up the environment
(``PROMETHEUS_MULTIPROC_DIR``, BLAS threads) before ``prometheus_client`` and numpy load.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

__all__ = [
    "Recommendation",
    "ServingContext",
    "Snapshot",
    "UnknownItem",
    "create_app",
    "serve",
]

_WHERE = {
    "Recommendation": ".snapshot",
    "Snapshot": ".snapshot",
    "UnknownItem": ".snapshot",
    "ServingContext": ".app",
    "create_app": ".app",
    "serve": ".server",
}

if TYPE_CHECKING:
    from .app import ServingContext, create_app
    from .server import serve
    from .snapshot import Recommendation, Snapshot, UnknownItem


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
