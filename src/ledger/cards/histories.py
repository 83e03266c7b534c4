"""Cards' append-only lists of ids, copied cheaply when the repository hands out a card.

eventsourcing's repository deep-copies every aggregate it returns from its cache (so a
command's mutations cannot corrupt the cached one). A card keeps the ids of every
consumption it took part in, so that deep copy walked thousands of UUIDs per get, several
gets per consumption: a card became slower with every use (benchmarks/card_ageing.py). The
ids are immutable values, so a copy of the list that shares them is as safe as a deep copy
and costs a pointer per entry.
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any, ClassVar


class CopiesHistoriesShallowly:
    """A mixin for aggregates: the attributes named in `histories` (lists of immutable
    values: UUIDs or tuples of UUIDs) are copied as new lists sharing their items; everything
    else is deep-copied as before."""

    histories: ClassVar[tuple[str, ...]] = ()

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        copied = object.__new__(type(self))
        memo[id(self)] = copied
        for name, value in self.__dict__.items():
            if name in self.histories:
                copied.__dict__[name] = list(value)
            else:
                copied.__dict__[name] = deepcopy(value, memo)
        return copied
