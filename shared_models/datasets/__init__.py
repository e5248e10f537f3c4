"""fedinterest dataset layer: loading, fetching, splitting and synthesising interactions."""

from .errors import DatasetError
from .fetch import fetch_ml100k
from .parse import load_interactions
from .split import leave_one_out, sequences_by_user
from .synth import make_synthetic, planted_structure, write_csv
from .types import Interactions, UserSplit

__all__ = [
    "DatasetError", "Interactions", "UserSplit", "fetch_ml100k", "leave_one_out",
    "load_interactions", "make_synthetic", "planted_structure", "sequences_by_user", "write_csv",
]
