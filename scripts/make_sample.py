"""Build the bundled sample (src/hybridrec/sample/) from MovieLens ml-latest-small.

Usage: python scripts/make_sample.py [SOURCE_DIR] [--out DIR]

SOURCE_DIR holds ratings.csv, movies.csv, tags.csv and README.txt of ml-latest-small
(https://grouplens.org/datasets/movielens/). The output is deterministic: running the
script twice on the same source gives byte-identical files. See sample/SAMPLE.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import pandas as pd

from hybridrec.io import (
    read_features,
    read_interactions,
    read_metadata,
    write_features,
    write_interactions,
    write_metadata,
)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "src" / "hybridrec" / "sample"
NO_GENRES = "(no genres listed)"
MIN_MOVIES_PER_TAG = 2  # a tag on one movie only is an id in disguise, not a feature
SIGNUP_RATINGS = 5  # "interests declared at sign-up": genres of the first 5 ratings


def read_source(source: Path, name: str) -> pd.DataFrame:
    path = source / name
    if not path.is_file():
        sys.exit(f"{path} not found: give the directory of MovieLens ml-latest-small")
    return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")


def make_interactions(ratings: pd.DataFrame) -> pd.DataFrame:
    """Every rating as an implicit interaction of weight 1; the rating kept alongside."""
    return pd.DataFrame(
        {
            "user_id": ratings["userId"],
            "item_id": ratings["movieId"],
            "weight": 1,
            "timestamp": ratings["timestamp"].astype("int64"),
            "rating": ratings["rating"].astype(float),
        }
    )


def genre_rows(movies: pd.DataFrame) -> pd.DataFrame:
    """One ``genre:<Genre>`` row (weight 1) per movie and listed genre."""
    genres = movies[["movieId", "genres"]].assign(genre=movies["genres"].str.split("|"))
    genres = genres.explode("genre")
    genres = genres[(genres["genre"] != NO_GENRES) & (genres["genre"] != "")]
    return pd.DataFrame(
        {"id": genres["movieId"], "feature": "genre:" + genres["genre"], "weight": 1}
    )


def tag_rows(tags: pd.DataFrame) -> pd.DataFrame:
    """``tag:<tag>`` rows weighted by how often the tag was applied to the movie."""
    tags = tags.assign(tag=tags["tag"].str.strip().str.lower())
    tags = tags[tags["tag"] != ""]
    movies_per_tag = tags.groupby("tag")["movieId"].nunique()
    useful = movies_per_tag[movies_per_tag >= MIN_MOVIES_PER_TAG].index
    counts = (
        tags[tags["tag"].isin(useful)]
        .groupby(["movieId", "tag"], sort=True)
        .size()
        .rename("weight")
        .reset_index()
    )
    return pd.DataFrame(
        {"id": counts["movieId"], "feature": "tag:" + counts["tag"], "weight": counts["weight"]}
    )


def make_item_features(movies: pd.DataFrame, tags: pd.DataFrame) -> pd.DataFrame:
    """Genres then tags of every movie in movies.csv, rated or not, in movieId order."""
    rows = pd.concat([genre_rows(movies), tag_rows(tags)], ignore_index=True)
    rows["kind"] = rows["feature"].str.startswith("tag:").astype(int)
    rows["movie"] = rows["id"].astype(int)
    rows = rows.sort_values(["movie", "kind"], kind="stable")
    return rows[["id", "feature", "weight"]].reset_index(drop=True)


def make_user_features(ratings: pd.DataFrame, movies: pd.DataFrame) -> pd.DataFrame:
    """Genres of each user's first 5 ratings in time (ties by movieId), weight = count."""
    first = ratings.assign(
        user=ratings["userId"].astype(int),
        movie=ratings["movieId"].astype(int),
        time=ratings["timestamp"].astype("int64"),
    ).sort_values(["user", "time", "movie"], kind="stable")
    first = first.groupby("user", sort=True).head(SIGNUP_RATINGS)
    genres = genre_rows(movies).rename(columns={"id": "movieId"})
    joined = first[["userId", "user", "movieId"]].merge(genres, on="movieId", how="inner")
    counts = joined.groupby(["user", "userId", "feature"], sort=True).size().rename("weight")
    counts = counts.reset_index()
    return pd.DataFrame(
        {"id": counts["userId"], "feature": counts["feature"], "weight": counts["weight"]}
    )


def make_item_metadata(movies: pd.DataFrame) -> pd.DataFrame:
    """Every movie's title (with its year, as MovieLens writes it), in movieId order."""
    titles = movies.assign(movie=movies["movieId"].astype(int)).sort_values("movie")
    return pd.DataFrame({"id": titles["movieId"], "title": titles["title"].str.strip()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", default="ml-latest-small", type=Path)
    parser.add_argument("--out", default=DEFAULT_OUT, type=Path)
    args = parser.parse_args(argv)

    ratings = read_source(args.source, "ratings.csv")
    movies = read_source(args.source, "movies.csv")
    tags = read_source(args.source, "tags.csv")
    args.out.mkdir(parents=True, exist_ok=True)

    write_interactions(make_interactions(ratings), args.out / "interactions.csv")
    write_features(make_item_features(movies, tags), args.out / "item_features.csv")
    write_features(make_user_features(ratings, movies), args.out / "user_features.csv")
    write_metadata(make_item_metadata(movies), args.out / "item_metadata.csv")
    # The MovieLens license asks that its README travels with (transformed) data.
    shutil.copyfile(args.source / "README.txt", args.out / "README.txt")

    interactions = read_interactions(args.out / "interactions.csv")
    items = read_features(args.out / "item_features.csv")
    users = read_features(args.out / "user_features.csv")
    titles = read_metadata(args.out / "item_metadata.csv")
    featureless = sorted(set(movies["movieId"]) - set(items["id"]), key=int)
    print(f"interactions: {len(interactions)} rows, {interactions['user_id'].nunique()} users,")
    print(f"  {interactions['item_id'].nunique()} items")
    print(f"item features: {len(items)} rows, {items['id'].nunique()} items,")
    print(f"  {items['feature'].nunique()} distinct features")
    print(f"  movies without any feature (not in the file): {len(featureless)}")
    print(f"user features: {len(users)} rows, {users['id'].nunique()} users")
    print(f"item metadata: {len(titles)} titles")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
