"""The bundled MovieLens sample: packaged, readable, and the size the demo expects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hybridrec.io import Sample, load_sample, sample_dir


@pytest.fixture(scope="module")
def sample() -> Sample:
    return load_sample()


def test_sample_dir_is_inside_the_package():
    import hybridrec

    directory = sample_dir()
    assert directory.is_dir()
    assert directory == Path(hybridrec.__file__).resolve().parent / "sample"


def test_license_readme_and_sample_notes_are_packaged():
    readme = sample_dir() / "README.txt"
    assert readme.is_file()
    text = readme.read_text(encoding="utf-8")
    assert "Usage License" in text
    assert "GroupLens" in text
    assert (sample_dir() / "SAMPLE.md").is_file()


def test_sample_loads_with_canonical_columns(sample):
    assert list(sample.interactions.columns) == ["user_id", "item_id", "weight", "timestamp"]
    assert list(sample.item_features.columns) == ["id", "feature", "weight"]
    assert list(sample.user_features.columns) == ["id", "feature", "weight"]
    assert sample.interactions["timestamp"].dtype == np.int64
    assert sample.interactions.attrs["timestamps"] == "column"


def test_sample_sizes(sample):
    interactions = sample.interactions
    assert len(interactions) >= 100_000
    assert interactions["user_id"].nunique() >= 600
    assert sample.item_features["id"].nunique() > 9000
    assert sample.user_features["id"].nunique() == interactions["user_id"].nunique()


def test_sample_weights_follow_the_documented_recipe(sample):
    assert (sample.interactions["weight"] == 1.0).all()
    features = sample.item_features["feature"]
    assert features.str.match(r"^(genre|tag):.").all()
    assert not features.eq("genre:(no genres listed)").any()
    tags = sample.item_features[features.str.startswith("tag:")]
    assert (tags.groupby("feature")["id"].nunique() >= 2).all()
    assert (tags["feature"] == tags["feature"].str.lower()).all()
    # In this data, each of a user's first 5 movies has at least one genre.
    per_user = sample.user_features.groupby("id")["weight"].sum()
    assert per_user.min() >= 5


def test_catalog_includes_items_nobody_interacted_with(sample):
    rated = set(sample.interactions["item_id"])
    catalog = set(sample.item_features["id"])
    assert catalog - rated  # movies known only by their features


def test_sample_carries_the_movie_titles(sample):
    """Issue 10 item 12: nobody could tell whether a list made sense without titles."""
    titles = dict(zip(sample.item_metadata["id"], sample.item_metadata["title"]))
    assert list(sample.item_metadata.columns) == ["id", "title"]
    assert titles["1"] == "Toy Story (1995)"
    assert titles["11"] == "American President, The (1995)"  # quoted in the CSV
    assert set(sample.interactions["item_id"]) <= set(titles)
    assert set(sample.item_features["id"]) <= set(titles)
