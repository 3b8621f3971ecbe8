"""Recording the references: regenerate the golden fixtures, or check that the live references
still reproduce them (reference drift: a new library release changing a schedule, say).

Both run every available reference on every case it supports, through the same `produce` a
comparison uses. Regen writes what changed and fails on purpose (review, commit, rerun), like
pytest-regressions; `accept` (regen --all) takes every change without failing. The drift check
writes nothing and fails when any stage of any fixture is no longer reproduced within its tolerance.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from parity.core.errors import InputError
from parity.golden.changelog import write_changelog
from parity.golden.journal import regen_lock
from parity.golden.store import FixtureStore
from parity.models.checkpoint import detect
from parity.models.deterministic import state_dict_sha256
from parity.models.dit_weights import weights_sha256 as dit_sha256
from parity.models.environment import environment
from parity.models.text_encoder_weights import weights_sha256 as text_encoder_sha256
from parity.run.judge import produce
from parity.run.plan import Group, Options, groups
from parity.stages import REGISTRY, STAGES, check, notices
from parity.suite.adapter import Adapter, Unsupported
from parity.suite.cases import Case


def _provenance(group: Group) -> dict[str, Any]:
    context = group.context
    layout = detect(context.checkpoint) if context.checkpoint is not None else None
    if layout is None or layout.tokenizer is None:
        from parity.core.tokenizer import reference_data_provenance

        tokenizer: dict[str, Any] = reference_data_provenance()
    else:
        tokenizer = {"checkpoint": str(layout.tokenizer)}
    return {
        "environment": environment(context),
        "text_encoder_sha256": text_encoder_sha256(context.text_encoder),
        "dit_sha256": dit_sha256(context.dit_state_dict),
        "vae_sha256": state_dict_sha256(context.vae_state_dict),
        "tokenizer": tokenizer,
        "tolerance": {
            s.name: tolerance.to_json() for s in REGISTRY if (tolerance := s.tolerance(context.dtype)) is not None
        },
    }


def reference_runs(cases: list[Case], options: Options) -> Iterator[tuple[Group, Case, str, Adapter]]:
    """(group, case, reference name, reference) for every available reference that supports a case."""
    for group in groups(cases, [], options):
        for case in group.cases:
            for name, reference in group.references.items():
                try:
                    reference.check_supported(case)
                except Unsupported:
                    continue
                yield group, case, name, reference


def _say_what_an_interrupted_regen_left(store: FixtureStore) -> None:
    leftovers = store.leftovers()
    if leftovers:
        names = ", ".join(str(p.relative_to(store.root)) for p in leftovers)
        print(
            f"note: {len(leftovers)} file(s) in {store.root} the manifest does not list, left by an interrupted "
            f"regen: {names}; the fixtures the manifest lists are intact; when this regen commits, it keeps the "
            "files it writes again and removes the rest of those",
            file=sys.stderr,
        )


def regenerate(store: FixtureStore, cases: list[Case], options: Options, accept: bool, changelog: Path) -> int:
    with regen_lock(store.root, "this regen"):
        return _regenerate(store, cases, options, accept, changelog)


def _regenerate(store: FixtureStore, cases: list[Case], options: Options, accept: bool, changelog: Path) -> int:
    store.begin_regen()
    _say_what_an_interrupted_regen_left(store)
    written = []
    provenance: dict[int, dict[str, Any]] = {}
    for group, case, name, reference in reference_runs(cases, options):
        base = provenance.setdefault(id(group), _provenance(group))
        outputs = produce(reference, case)
        record = base | {"reference": name, "versions": reference.versions(), "seed": case.seed}
        write = store.write(case, name, outputs, record)
        written.append((write, outputs))
        print(f"{write.key}: {'changed' if write.changed else 'unchanged'}", file=sys.stderr)
        for line in notices(group.context.tokenizer, case.id, name, outputs.records):
            print(f"warning: {line}", file=sys.stderr)
    store.commit()
    changed = [w for w, _ in written if w.changed]
    write_changelog(changelog, written)
    print(f"{len(changed)} of {len(written)} fixture(s) changed; changelog: {changelog}")
    if changed and not accept:
        print("fixtures changed: review the changelog and commit them, then rerun", file=sys.stderr)
        return 1
    return 0


def check_drift(store: FixtureStore, cases: list[Case], options: Options) -> int:
    drifted = 0
    checked = 0
    for group, case, name, reference in reference_runs(cases, options):
        key = store.key(case.id, name)
        checked += 1
        try:
            stored = store.load(case, name)
        except InputError as e:
            print(f"{key}: NOT REPRODUCED: {e}")
            drifted += 1
            continue
        produced = produce(reference, case)
        failures = [
            f"{stage}: {found.summary}"
            for stage in STAGES
            if stored.get(stage) is not None
            for found in [check(stage, produced.get(stage), stored.get(stage), group.context, case.dtype)]
            if not found.passed
        ]
        if failures:
            drifted += 1
            print(f"{key}: NOT REPRODUCED: " + "; ".join(failures))
        else:
            print(f"{key}: reproduced", file=sys.stderr)
    print(f"{checked - drifted} of {checked} fixture(s) reproduced by the live references")
    return 1 if drifted else 0
