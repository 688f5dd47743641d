"""How an answer presents its items: what a score means, and the items' metadata.

Shared by the API (``serving/app.py``) and the command line (``recommend``, ``similar``),
so both print the same fields. No Flask, no Redis: the metadata lookup is passed in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from .snapshot import Recommendation, Snapshot

__all__ = ["SCORE_TYPES", "MetadataCache", "add_metadata", "presented", "score_type"]

SCORE_TYPES = {
    "model": "LightFM's prediction q_u . q_i + b_u + b_i: a ranking score, comparable "
    "within one answer of one model version, not a probability",
    "fold_in": "q_u . q_i + b_i with q_u folded in from the user's items (no user bias, "
    "so another scale than model scores)",
    "popularity": "the item's interactions in the training data (weights summed)",
    "blend": "the blend: the model's score z-scored over the training items, plus the "
    "item-item (EASE) score of the user's history, or else the item's popularity, "
    "z-scored likewise; comparable within one answer",
    "cosine": "cosine of the two items' latent vectors, -1..1",
}
"""Every ``score_type`` of an answer and what its ``score`` means (README: "Scores")."""


def score_type(rec: Recommendation, snap: Snapshot) -> str:
    """``"model"``, ``"fold_in"``, ``"popularity"`` or ``"blend"``: see :data:`SCORE_TYPES`.

    The snapshot folds a user in exactly when their feature row is empty: no indicator
    (an unknown user, or a model without user indicators) and no feature the model knows.
    """
    if rec.strategy == "baseline":
        return "popularity"
    if set(rec.score_parts) & {"item_item", "popularity"}:
        return "blend"
    unplaced = rec.user_case == "unknown" or (
        rec.user_case == "known" and not snap.model.user_indicators
    )
    return "fold_in" if unplaced else "model"


def presented(meta: dict[str, str] | None) -> dict[str, Any]:
    """An item's metadata as answer fields: ``"title"``, and ``"metadata"`` for the rest."""
    out: dict[str, Any] = {}
    if not meta:
        return out
    if "title" in meta:
        out["title"] = meta["title"]
    rest = {k: v for k, v in meta.items() if k != "title"}
    if rest:
        out["metadata"] = rest
    return out


def add_metadata(
    items: list[dict[str, Any]],
    metadata_of: Callable[[list[str]], list[dict[str, str] | None]],
    more: Iterable[str] = (),
) -> list[dict[str, str] | None]:
    """Put each item's metadata beside it, with one ``metadata_of`` call for the items
    and the ``more`` ids; return the metadata of ``more``."""
    more = list(more)
    ids = [item["item_id"] for item in items] + more
    found = metadata_of(ids) if ids else []
    for item, meta in zip(items, found):
        item.update(presented(meta))
    return found[len(items) :]


MetadataLookup = Callable[[list[str]], list[dict[str, str] | None]]


class MetadataCache:
    """Item metadata one worker fetched, kept while the store's metadata generation
    (``store/metadata.py``) stays the same: an answer then needs no second round trip.

    :meth:`lookup` is given the generation read in the request's first round trip
    (with the user's features). A different generation empties the cache first; what is
    fetched after reading generation ``g`` is at least as new as ``g`` (writers bump the
    counter after writing), so a cached entry is never older than the generation it is
    kept under, and an edit is seen by the next request that reads the new generation.
    At most ``capacity`` items are kept (the oldest entries go first): a bounded share
    of a worker's memory whatever the catalog's size (0: nothing kept). Thread-safe.
    """

    def __init__(self, capacity: int = 20_000):
        self.capacity = capacity
        self._generation: int | None = None
        self._items: dict[str, dict[str, str] | None] = {}
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def lookup(self, ids: list[str], generation: int, fetch: MetadataLookup) -> list:
        """The metadata of ``ids`` (None where there is none), fetching only the ids not
        kept for ``generation`` (one ``fetch`` call, none when all are kept)."""
        with self._lock:
            if generation != self._generation:
                self._generation, self._items = generation, {}
            items = self._items
            found = {i: items[i] for i in ids if i in items}
        missing = [i for i in dict.fromkeys(ids) if i not in found]
        self.hits += len(found)
        self.misses += len(missing)
        if missing:
            fetched = dict(zip(missing, fetch(missing)))
            with self._lock:
                if items is self._items and self.capacity > 0:  # still this generation's
                    for item_id, meta in fetched.items():
                        if len(items) >= self.capacity:
                            del items[next(iter(items))]
                        items[item_id] = meta
            found.update(fetched)
        return [found[i] for i in ids]
