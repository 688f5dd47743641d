"""The bundled MovieLens sample (``hybridrec/sample/``), read through the file readers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .files import read_features, read_interactions
from .metadata import read_metadata

__all__ = ["Sample", "load_sample", "sample_dir"]


@dataclass(frozen=True)
class Sample:
    """The sample's frames, as the readers of :mod:`hybridrec.io` return them.

    ``interactions``: ``user_id, item_id, weight, timestamp`` (one row per rating, weight 1);
    ``user_features`` and ``item_features``: ``id, feature, weight``; ``item_metadata``:
    ``id, title`` (the movies' titles).
    """

    interactions: pd.DataFrame
    user_features: pd.DataFrame
    item_features: pd.DataFrame
    item_metadata: pd.DataFrame


def sample_dir() -> Path:
    """Directory of the packaged sample files (CSV, README.txt, SAMPLE.md)."""
    # Package data is installed as plain files (setuptools package-data), so a path works.
    return Path(__file__).resolve().parent.parent / "sample"


def load_sample() -> Sample:
    """Read and validate the bundled sample (about 100k interactions)."""
    directory = sample_dir()
    return Sample(
        interactions=read_interactions(directory / "interactions.csv"),
        user_features=read_features(directory / "user_features.csv"),
        item_features=read_features(directory / "item_features.csv"),
        item_metadata=read_metadata(directory / "item_metadata.csv"),
    )
