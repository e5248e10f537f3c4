"""fedinterest: shared_models.privacy — DP accounting and the on-device privacy ledger.

Layout (after Opacus' ``accountants/``): pure math with no framework imports
(:mod:`.rdp`, :mod:`.calibrate`), a thin stateful accountant
(:mod:`.accountant`), a registry keyed by the config string
(:mod:`.registry`), and the persistent ledger (:mod:`.ledger`).
"""

from .accountant import RDPAccountant
from .adjacency import replace_one_epsilon
from .base import Accountant
from .calibrate import (
    DEFAULT_EPSILON_TOLERANCE,
    max_rounds_within_budget,
    noise_for_target_epsilon,
    steps_within_budget,
)
from .ledger import PrivacyLedger
from .ledger_entry import (
    DuplicateRoundError,
    LedgerCorruptError,
    LedgerEntry,
    LedgerError,
    LedgerMismatchError,
)
from .params import HistoryEntry
from .rdp import (
    DEFAULT_ORDERS,
    compute_rdp,
    epsilon_from_history,
    rdp_from_history,
    rdp_to_epsilon,
)
from .registry import ACCOUNTANTS, accountant_from_dict, make_accountant

__all__ = [
    "replace_one_epsilon",
    "ACCOUNTANTS",
    "Accountant",
    "DEFAULT_EPSILON_TOLERANCE",
    "DEFAULT_ORDERS",
    "DuplicateRoundError",
    "HistoryEntry",
    "LedgerCorruptError",
    "LedgerEntry",
    "LedgerError",
    "LedgerMismatchError",
    "PrivacyLedger",
    "RDPAccountant",
    "accountant_from_dict",
    "compute_rdp",
    "epsilon_from_history",
    "make_accountant",
    "max_rounds_within_budget",
    "noise_for_target_epsilon",
    "rdp_from_history",
    "rdp_to_epsilon",
    "steps_within_budget",
]
