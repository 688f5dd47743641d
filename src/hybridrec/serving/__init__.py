"""Online serving: the serving snapshot, its reloader thread and the Flask API.

``snapshot`` is pure numpy (no Redis, Flask or files); ``reloader`` and ``app`` wire it
to the feature store, the registry and the model store; ``server`` runs the app under
gunicorn with one BLAS thread per worker.
"""

from .app import ServingContext, create_app
from .snapshot import Recommendation, Snapshot, UnknownItem

__all__ = ["Recommendation", "ServingContext", "Snapshot", "UnknownItem", "create_app"]
