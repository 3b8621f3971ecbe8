"""The verdicts a (case, adapter, stage) can get, in one place: the judge gives them, the results file
checks them, the report marks them."""

from __future__ import annotations

MATCH, DECLARED, UNEXPECTED, UNSUPPORTED, STALE = (
    "match", "declared", "unexpected", "unsupported", "declared-but-matches"
)
STATUSES = (MATCH, DECLARED, UNEXPECTED, UNSUPPORTED, STALE)
# What fails a run: a divergence nobody declared, or a declared one that no longer happens.
FAILING = (UNEXPECTED, STALE)
# A stage that left its reference, declared or not.
DIVERGENT = (DECLARED, UNEXPECTED)
