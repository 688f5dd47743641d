"""Files in and out: interaction, feature and item metadata readers/writers, and the
bundled sample."""

from .files import (
    MAX_ID_LENGTH,
    MAX_WEIGHT,
    InputError,
    read_features,
    read_interactions,
    write_features,
    write_interactions,
)
from .metadata import read_metadata, write_metadata
from .sample import Sample, load_sample, sample_dir

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_WEIGHT",
    "InputError",
    "Sample",
    "load_sample",
    "read_features",
    "read_interactions",
    "read_metadata",
    "sample_dir",
    "write_features",
    "write_interactions",
    "write_metadata",
]
