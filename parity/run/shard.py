"""Which cases one shard of a run takes (`parity run --shard I/N`), so N machines split the suite.

The rule: the selected cases sorted by id; the k-th of them (counting from 0) goes to shard
k mod N + 1. Sorting by id makes every machine deal the same hands whatever the case files look
like; dealing round-robin spreads cases whose ids sort together (the sampling cases `turbo*`, the
slow ones) over the shards instead of handing them all to one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from parity.core.errors import InputError
from parity.suite.cases import Case


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    count: int

    def select(self, cases: list[Case]) -> list[Case]:
        """This shard's cases, in the order given."""
        dealt = sorted(cases, key=lambda c: c.id)
        mine = {case.id for k, case in enumerate(dealt) if k % self.count == self.index - 1}
        return [case for case in cases if case.id in mine]

    def to_json(self, order: list[str], run: dict[str, Any]) -> dict[str, Any]:
        """What `parity report --merge` needs beside the results: every case of the unsharded run in
        its order (to put the shards' cases back), and the run options the results do not show."""
        return {"index": self.index, "count": self.count, "cases": order, "run": run}


def parse_shard(text: str) -> Shard:
    """`I/N` with 1 <= I <= N."""
    match = re.fullmatch(r"(\d+)/(\d+)", text, re.ASCII)
    if match is None:
        raise InputError(f"--shard must be I/N, two whole numbers like 2/3, not {text!r}")
    index, count = int(match[1]), int(match[2])
    if not 1 <= index <= count:
        raise InputError(f"--shard {text}: shard I of N needs 1 <= I <= N")
    return Shard(index, count)
