"""Small synthetic datasets with structure a hybrid model can learn.

Users and items belong to one of ``n_groups`` groups; each user interacts with random
items of their own group (plus a little noise). Item features name the group
(``genre:g``) and one random tag; user features name the user's group (their declared
interest). Deterministic for a given seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Synthetic:
    interactions: pd.DataFrame  # user_id, item_id, weight, timestamp
    user_features: dict[str, dict[str, float]]
    item_features: dict[str, dict[str, float]]
    user_group: dict[str, int]
    item_group: dict[str, int]


def make_synthetic(
    n_users: int = 200,
    n_items: int = 120,
    n_groups: int = 4,
    per_user: int = 15,
    noise: float = 0.1,
    seed: int = 0,
) -> Synthetic:
    rng = np.random.default_rng(seed)
    user_group = {f"u{u}": int(rng.integers(n_groups)) for u in range(n_users)}
    item_group = {f"i{i}": i % n_groups for i in range(n_items)}
    by_group: dict[int, list[str]] = {}
    for item, g in item_group.items():
        by_group.setdefault(g, []).append(item)
    all_items = list(item_group)
    rows = []
    t = 0
    for user, g in user_group.items():
        own = by_group[g]
        # group members share a popularity skew so collaborative signal exists too
        p = np.linspace(2.0, 1.0, len(own))
        picks = rng.choice(own, size=min(per_user, len(own)), replace=False, p=p / p.sum())
        for item in picks:
            if rng.random() < noise:
                item = all_items[int(rng.integers(len(all_items)))]
            t += 1
            rows.append((user, item, 1.0, t))
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "weight", "timestamp"])
    interactions = interactions.drop_duplicates(["user_id", "item_id"]).reset_index(drop=True)
    item_features = {
        item: {f"genre:{g}": 1.0, f"tag:{int(rng.integers(8))}": 1.0}
        for item, g in item_group.items()
    }
    user_features = {user: {f"genre:{g}": 1.0} for user, g in user_group.items()}
    return Synthetic(interactions, user_features, item_features, user_group, item_group)


def long_features(features: dict[str, dict[str, float]]) -> pd.DataFrame:
    """``{id: {feature: weight}}`` as the long ``id, feature, weight`` frame of the files."""
    rows = [(i, f, w) for i, fs in features.items() for f, w in fs.items()]
    return pd.DataFrame(rows, columns=["id", "feature", "weight"])
