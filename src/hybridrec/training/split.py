"""Train/test splits that simulate what a live service meets: warm users' newest
interactions, cold users who only declared interests, and cold items."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["Split", "split_interactions", "time_holdout"]


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    test: pd.DataFrame
    cold_users: frozenset[str]
    cold_items: frozenset[str]


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    cols = ["timestamp", "user_id", "item_id"] if "timestamp" in df else ["user_id", "item_id"]
    return df.sort_values(cols, kind="stable")


def split_interactions(
    df: pd.DataFrame,
    *,
    test_frac: float = 0.2,
    cold_user_frac: float = 0.1,
    cold_item_frac: float = 0.1,
    cold_user_skip_first: int = 0,
    seed: int = 0,
) -> Split:
    """Split interactions (``user_id, item_id, weight, timestamp``) three ways.

    - ``cold_user_frac`` of users leave training entirely; their interactions go to the
      test set, except their first ``cold_user_skip_first`` in time (those stand for what
      they declared at sign-up, so they must not be test targets);
    - ``cold_item_frac`` of items leave training entirely (their interactions go to test);
    - of every other user, the newest ``test_frac`` of interactions go to test.
    """
    rng = np.random.default_rng(seed)
    df = _sorted(df)
    users = np.sort(df["user_id"].unique())
    items = np.sort(df["item_id"].unique())
    cold_users = set(rng.choice(users, int(round(len(users) * cold_user_frac)), replace=False))
    cold_items = set(rng.choice(items, int(round(len(items) * cold_item_frac)), replace=False))

    is_cold_user = df["user_id"].isin(cold_users).to_numpy()
    is_cold_item = df["item_id"].isin(cold_items).to_numpy()
    order_in_user = df.groupby("user_id", sort=False).cumcount().to_numpy()
    n_user = df.groupby("user_id", sort=False)["item_id"].transform("size").to_numpy()
    newest = order_in_user >= np.ceil(n_user * (1.0 - test_frac))

    test_mask = (is_cold_user & (order_in_user >= cold_user_skip_first)) | (
        ~is_cold_user & (is_cold_item | newest)
    )
    train_mask = ~is_cold_user & ~is_cold_item & ~newest
    return Split(
        train=df[train_mask].reset_index(drop=True),
        test=df[test_mask].reset_index(drop=True),
        cold_users=frozenset(cold_users),
        cold_items=frozenset(cold_items),
    )


def time_holdout(df: pd.DataFrame, frac: float = 0.1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The oldest ``1 - frac`` of interactions and the newest ``frac`` (by timestamp)."""
    df = _sorted(df).reset_index(drop=True)
    cut = int(round(len(df) * (1.0 - frac)))
    return df.iloc[:cut].reset_index(drop=True), df.iloc[cut:].reset_index(drop=True)
