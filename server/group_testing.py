"""Adaptive group testing: find the items that make a group "invalid", asking only valid/invalid of groups.

Used by server-blind aggregation (``server/secure.py``): the items are one round's encrypted updates, a
group's test is whether the sum of its updates decrypts on a key holder, and a defective item is an update
outside the encoding's range. The search is binary splitting from a group already known to be invalid:
split it in halves, test the left half; an invalid left half is searched and the right half tested too; a
valid left half means the right half holds the defect, so it is searched without a test of its own (a single
item reached that way is tested before it is called defective). With ``k`` defective items among ``n`` the
search asks at most ``2 k ceil(log2 n)`` questions (:func:`query_bound`): each level of a defective item's
path costs at most two, paths shared by several defective items are paid once.

Defects that only show in combination (two updates that are each decodable but whose sum wraps) can leave
the search with nothing found; the caller therefore tests the remainder before using it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class SearchResult:
    """Positions (into the searched sequence, ascending) of the defective items, and the questions asked."""

    defective: tuple[int, ...]
    queries: int


def query_bound(n: int, k: int) -> int:
    """Most questions :func:`find_defective` asks for ``k`` defective items among ``n`` (root known invalid)."""
    if n < 1 or k < 0:
        raise ValueError(f"need n >= 1 and k >= 0, got n={n}, k={k}")
    return 2 * k * math.ceil(math.log2(n)) if n > 1 else k


def find_defective(n: int, is_valid: Callable[[Sequence[int]], bool]) -> SearchResult:
    """Defective positions among ``range(n)``, given that the whole group is invalid.

    ``is_valid(positions)`` answers for one group (a list of positions, ascending); it is called at most
    :func:`query_bound` times."""
    if n < 1:
        raise ValueError(f"nothing to search: n={n}")
    asked = 0

    def valid(group: Sequence[int]) -> bool:
        nonlocal asked
        asked += 1
        return bool(is_valid(list(group)))

    def search(group: Sequence[int], tested: bool) -> list[int]:
        if len(group) == 1:
            return list(group) if tested or not valid(group) else []
        half = len(group) // 2
        left, right = group[:half], group[half:]
        if valid(left):
            return search(right, False)
        found = search(left, True)
        if not valid(right):
            found += search(right, True)
        return found

    return SearchResult(tuple(sorted(search(list(range(n)), True))), asked)
