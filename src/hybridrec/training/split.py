"""Train/test splits that simulate what a live service meets: warm users' newest
interactions, cold users who only declared interests, and cold items.

:func:`split_frame` is ``hybridrec split``: one of three ways (``SPLIT_MODES``) to cut a
file of interactions into a training and a test set that are disjoint and together the
whole input, refusing arguments that would leave either side empty.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import HybridrecError

__all__ = [
    "DEFAULT_TEST_SIZE",
    "SPLIT_MODES",
    "Split",
    "SplitError",
    "split_frame",
    "split_interactions",
    "time_holdout",
]

SPLIT_MODES = ("time", "per-user", "cold-users")
"""``time``: one cut for everyone, the newest interactions are the test set; ``per-user``:
the newest share of each user's interactions; ``cold-users``: a share of the users, with
every interaction of theirs (users the model will not know)."""
DEFAULT_TEST_SIZE = 0.2


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
    cold_users = _pick(rng, df["user_id"], cold_user_frac)
    cold_items = _pick(rng, df["item_id"], cold_item_frac)

    is_cold_user = df["user_id"].isin(cold_users).to_numpy()
    is_cold_item = df["item_id"].isin(cold_items).to_numpy()
    order_in_user = df.groupby("user_id", sort=False).cumcount().to_numpy()
    newest = _newest_in_user(df, test_frac, order_in_user)

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


def _pick(rng: np.random.Generator, ids: pd.Series, frac: float) -> set:
    """``round(frac * distinct ids)`` of the distinct ``ids``, drawn with ``rng``."""
    distinct = np.sort(ids.unique())
    return set(rng.choice(distinct, int(round(len(distinct) * frac)), replace=False))


def _newest_in_user(
    df: pd.DataFrame, frac: float, order_in_user: np.ndarray | None = None
) -> np.ndarray:
    """Mask of each user's newest ``frac`` of interactions in ``df`` (sorted by time):
    a user with n interactions keeps the oldest ``ceil(n * (1 - frac))``, so at least one."""
    by_user = df.groupby("user_id", sort=False)
    if order_in_user is None:
        order_in_user = by_user.cumcount().to_numpy()
    n_user = by_user["item_id"].transform("size").to_numpy()
    return order_in_user >= np.ceil(n_user * (1.0 - frac))


def time_holdout(df: pd.DataFrame, frac: float = 0.1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The oldest ``1 - frac`` of interactions and the newest ``frac`` (by timestamp)."""
    df = _sorted(df).reset_index(drop=True)
    cut = int(round(len(df) * (1.0 - frac)))
    return df.iloc[:cut].reset_index(drop=True), df.iloc[cut:].reset_index(drop=True)


class SplitError(HybridrecError, ValueError):
    """Arguments of a split that cannot give a training and a test set; says what to change."""


def split_frame(
    df: pd.DataFrame,
    by: str = "time",
    *,
    test_size: float | None = None,
    at: int | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(train, test)``: the rows of ``df`` (``user_id, item_id, weight, timestamp``, as
    :func:`~hybridrec.io.files.read_interactions` returns) in two disjoint frames that
    together hold every row once, each in ``df``'s order.

    ``by`` (``SPLIT_MODES``):

    - ``"time"``: one cut in time for everyone; the test set is every interaction at or
      after ``at`` (unix seconds), or the newest ``test_size`` of them: the cut falls on
      the timestamp of the interaction at that position, so that no second is split and
      everything in test is newer than everything in train;
    - ``"per-user"``: the newest ``test_size`` of each user's interactions (a user with
      n keeps the oldest ``ceil(n * (1 - test_size))`` for training, so at least one;
      ties in time are broken by item id);
    - ``"cold-users"``: ``round(test_size * users)`` users drawn with ``seed``, and all of
      their interactions: users the trained model will not know.

    ``test_size`` defaults to ``DEFAULT_TEST_SIZE``. Raises :class:`SplitError` for
    arguments that do not fit the mode or would leave either side empty.
    """
    if by not in SPLIT_MODES:
        raise SplitError(f"unknown split {by!r}: use one of {', '.join(SPLIT_MODES)}")
    if at is not None and by != "time":
        raise SplitError(f"a cut time (--at) is for the time split, not {by!r}")
    if at is not None and test_size is not None:
        raise SplitError("give a cut time (--at) or a test size (--test-size), not both")
    if at is None and test_size is None:
        test_size = DEFAULT_TEST_SIZE
    if test_size is not None and not 0.0 < test_size < 1.0:
        raise SplitError(f"the test size must be a fraction between 0 and 1, not {test_size}")
    n = len(df)
    if n < 2:
        raise SplitError(f"{n} interaction{'s' * (n != 1)}: a split needs at least 2")
    if by == "time":
        test = _time_test(df, test_size, at)
    elif by == "per-user":
        ordered = _sorted(df)
        newest = pd.Series(_newest_in_user(ordered, test_size), index=ordered.index)
        test = newest.reindex(df.index).to_numpy()
        if not test.any():
            most = int(df.groupby("user_id", sort=False).size().max())
            raise SplitError(
                f"no user has enough interactions to hold out {test_size:g} of them and keep "
                f"one for training (the most any user has: {most}): raise --test-size, or "
                "split by time"
            )
    else:
        users = df["user_id"]
        cold = _pick(np.random.default_rng(seed), users, test_size)
        n_users = users.nunique()
        if not cold or len(cold) == n_users:
            raise SplitError(
                f"a test size of {test_size:g} of {n_users} users rounds to "
                f"{'no user' if not cold else 'every user'}: choose a size that leaves "
                "users on both sides"
            )
        test = users.isin(cold).to_numpy()
    return df[~test], df[test]


def _time_test(df: pd.DataFrame, test_size: float | None, at: int | None) -> np.ndarray:
    stamps = df["timestamp"].to_numpy(np.int64)
    if at is None:
        n_test = int(round(len(df) * test_size))
        if n_test in (0, len(df)):
            raise SplitError(
                f"a test size of {test_size:g} of {len(df)} interactions rounds to "
                f"{'none' if n_test == 0 else 'all of them'}: choose a size that leaves "
                "interactions on both sides"
            )
        at = int(np.sort(stamps)[len(df) - n_test])
        test = stamps >= at
        if test.all():
            raise SplitError(
                f"the newest {test_size:g} of the interactions share the oldest timestamp "
                f"({at}) with all the others, so a cut in time leaves none for training: "
                "split per user or by users instead"
            )
        return test
    test = stamps >= at
    if not test.any():
        raise SplitError(
            f"no interaction is at or after {_when(at)} (the newest is at "
            f"{_when(int(stamps.max()))}): choose an earlier --at"
        )
    if test.all():
        raise SplitError(
            f"every interaction is at or after {_when(at)} (the oldest is at "
            f"{_when(int(stamps.min()))}), so none is left for training: choose a later --at"
        )
    return test


def _when(seconds: int) -> str:
    """Unix ``seconds`` as ISO-8601 UTC (and the number), for messages."""
    try:
        stamp = dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return str(seconds)
    return f"{stamp} ({seconds})"
