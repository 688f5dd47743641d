"""Files in and out: interaction and feature readers/writers, and the bundled sample."""

from .files import (
    MAX_ID_LENGTH,
    MAX_WEIGHT,
    InputError,
    read_features,
    read_interactions,
    write_features,
    write_interactions,
)
from .sample import Sample, load_sample, sample_dir

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_WEIGHT",
    "InputError",
    "Sample",
    "load_sample",
    "read_features",
    "read_interactions",
    "sample_dir",
    "write_features",
    "write_interactions",
]
