"""The golden fixture store: `fixtures/golden/<case>/<reference>.<hash>.{safetensors,json}` + manifest.

The manifest records, per fixture, its two files with their sha256, the hash of the case inputs
that produced it, and its provenance (library versions, torch, device, dtype, threads, weights).
A fixture is trusted only when its bytes hash to what the manifest says.

File names carry a hash of their content, so a regen never overwrites a file the manifest points
at: it writes new files beside the old ones, and the one atomic replace of `manifest.json` is the
moment the fixtures change. A regen killed before that leaves the previous fixtures intact and
verifiable; the files it left behind are listed by `parity fixtures check`, named by the next
regen, and removed when it commits. What a regen may delete is written in parity/golden/journal.py:
files its journal names and files the manifest listed before the commit and no longer lists,
never a file it cannot account for. Each fixture's JSON names its case and reference, and a read
checks that against the manifest key, so swapped or misfiled fixtures are caught.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parity.core.errors import InputError, shown
from parity.core.files import atomic_write_bytes
from parity.core.paths import inside, is_case_id
from parity.golden.journal import Journal
from parity.stages.outputs import StageOutputs, decode, encode
from parity.suite.cases import Case

MANIFEST_FORMAT = 1
REBUILD_HINT = (
    "restore it (from version control, say) or rebuild it from the fixture files with `parity fixtures rebuild`"
)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _well_formed(key: str, entry: Any) -> bool:
    """A manifest key is `<case id>/<reference>`; its entry names one .safetensors and one .json
    file, as plain names, each with a sha256."""
    case_id, _, reference = key.partition("/")
    if not is_case_id(case_id) or not reference.isidentifier():
        return False
    if not isinstance(entry, dict) or not isinstance(entry.get("case_hash"), str):
        return False
    files = entry.get("files")
    return (
        isinstance(files, dict)
        and all(isinstance(n, str) and isinstance(h, str) and Path(n).name == n for n, h in files.items())
        and sorted(Path(n).suffix for n in files) == [".json", ".safetensors"]
    )


@dataclass(frozen=True)
class FixtureWrite:
    key: str
    changed: bool
    previous: StageOutputs | None
    previous_provenance: dict[str, Any] | None
    provenance: dict[str, Any]


class FixtureStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.golden = root / "golden"
        self.manifest_path = root / "manifest.json"
        self.journal = Journal(root)
        self._pending: dict[str, Any] = {}
        self._manifest: dict[str, Any] | None = None

    def manifest(self) -> dict[str, Any]:
        if self._manifest is None:
            self._manifest = self._read_manifest()
        return self._manifest

    def _read_manifest(self) -> dict[str, Any]:
        if not self.manifest_path.is_file():
            return {"format": MANIFEST_FORMAT, "fixtures": {}}
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError, or an integer past Python's digit limit
            raise InputError(f"{self.manifest_path}: unreadable manifest ({e}); {REBUILD_HINT}") from None
        except RecursionError:
            raise InputError(f"{self.manifest_path}: unreadable manifest (nested too deeply); {REBUILD_HINT}") from None
        if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
            found = data.get("format") if isinstance(data, dict) else None
            raise InputError(f"{self.manifest_path}: manifest format {found!r} is not {MANIFEST_FORMAT}")
        fixtures = data.get("fixtures")
        if not isinstance(fixtures, dict):
            raise InputError(f"{self.manifest_path}: no 'fixtures' table")
        for key, entry in fixtures.items():
            if not _well_formed(key, entry):
                raise InputError(
                    f"{self.manifest_path}: entry {shown(key)} needs a '<case id>/<reference>' key, 'case_hash' and "
                    "'files' (one .safetensors and one .json file name, each with its sha256)"
                )
        return data

    @staticmethod
    def key(case_id: str, reference: str) -> str:
        return f"{case_id}/{reference}"

    def _paths(self, case_id: str, entry: dict[str, Any]) -> list[Path]:
        """The entry's (.safetensors, .json) files."""
        names = sorted(entry["files"], key=lambda n: n.endswith(".json"))
        return [inside(self.golden, case_id, name) for name in names]

    def _listed(self) -> set[Path]:
        return {
            path
            for key, entry in self.manifest()["fixtures"].items()
            for path in self._paths(key.split("/")[0], entry)
        }

    def entry(self, case_id: str, reference: str) -> dict[str, Any] | None:
        return self.manifest()["fixtures"].get(self.key(case_id, reference))

    def load(self, case: Case, reference: str) -> StageOutputs:
        """The verified fixture for `case` as it is now, or one clear InputError saying what is wrong."""
        outputs = self._verified(case.id, reference)
        if self.entry(case.id, reference)["case_hash"] != case.content_hash():
            raise InputError(
                f"fixture {self.key(case.id, reference)} was made from other case inputs: run `parity fixtures regen`"
            )
        return outputs

    def _verified(self, case_id: str, reference: str) -> StageOutputs:
        key = self.key(case_id, reference)
        entry = self.entry(case_id, reference)
        if entry is None:
            raise InputError(f"missing fixture {key}: run `parity fixtures regen` and review the result")
        blobs = []
        for path in self._paths(case_id, entry):
            if not path.is_file():
                raise InputError(f"fixture {key}: file {path} is missing")
            data = path.read_bytes()
            expected = entry["files"][path.name]
            if sha256(data) != expected:
                raise InputError(
                    f"fixture {key}: {path.name} is corrupted or truncated, or the manifest was edited "
                    f"(sha256 {sha256(data)[:12]}…, manifest says {expected[:12]}…)"
                )
            blobs.append(data)
        outputs = decode(blobs[0], blobs[1], key)
        says = (outputs.meta.get("case"), outputs.meta.get("adapter"))
        if says != (case_id, reference):
            raise InputError(
                f"fixture {key}: its files say they are fixture {shown(str(says[0]))}/{shown(str(says[1]))} "
                "(swapped or misfiled: restore them, or run `parity fixtures regen`)"
            )
        return outputs

    def write(self, case: Case, reference: str, outputs: StageOutputs, provenance: dict[str, Any]) -> FixtureWrite:
        """Write a fixture's files if its bytes changed; the manifest moves to them on `commit`."""
        key = self.key(case.id, reference)
        # The files name their fixture, so a read can tell a swapped or misfiled pair.
        outputs = outputs.with_meta({"case": case.id, "adapter": reference})
        tensor_bytes, json_bytes = encode(outputs)
        stem = f"{reference}.{sha256(tensor_bytes + json_bytes)[:16]}"
        files = {f"{stem}.safetensors": tensor_bytes, f"{stem}.json": json_bytes}
        old = self.entry(case.id, reference)
        previous = None
        if old is not None:
            try:
                previous = self._verified(case.id, reference)
            except InputError:
                previous = None
        # Compare bytes, not names: a file edited by hand (manifest updated to match) keeps its name.
        on_disk = all(
            (path := inside(self.golden, case.id, name)).is_file() and path.read_bytes() == data
            for name, data in files.items()
        )
        changed = (
            old is None
            or not on_disk
            or set(old["files"]) != set(files)
            or old["case_hash"] != case.content_hash()
        )
        if not on_disk:
            for name, data in files.items():
                path = inside(self.golden, case.id, name)
                self.journal.record(path)
                atomic_write_bytes(path, data, self.journal.record)
        self._pending[key] = {
            "files": {name: sha256(data) for name, data in files.items()},
            "case_hash": case.content_hash(),
            "reference": reference,
            "provenance": provenance,
        }
        old_provenance = old.get("provenance") if old is not None else None
        return FixtureWrite(key, changed, previous if changed else None, old_provenance, provenance)

    def begin_regen(self) -> None:
        """Refuse to regenerate into a store whose manifest is lost: it would no longer know which
        fixture files are the store's."""
        files = self._fixture_files()
        if files and not self.manifest()["fixtures"]:
            state = "lists no fixtures" if self.manifest_path.is_file() else "is missing"
            raise InputError(
                f"{self.manifest_path} {state}, but {self.golden} holds {len(files)} fixture file(s): {REBUILD_HINT}; "
                "regen refuses to run without it"
            )

    def commit(self) -> None:
        """Point the manifest at every written fixture in one atomic replace, then remove what the
        old manifest listed and the new one does not, and what the journal names and no entry lists."""
        before = self._listed()
        manifest = self.manifest()
        manifest["fixtures"].update(self._pending)
        self._write_manifest(manifest)
        self._pending = {}
        after = self._listed()
        for path in sorted(before - after) + self.leftovers():
            path.unlink(missing_ok=True)
        self.journal.close()

    def leftovers(self) -> list[Path]:
        """What an interrupted regen left: files its journal names that no manifest entry lists."""
        return self.journal.leftovers(self._listed())

    def _fixture_files(self) -> list[Path]:
        return sorted(p for p in self.golden.rglob("*") if p.is_file()) if self.golden.is_dir() else []

    def strays(self) -> list[Path]:
        """Files under golden/ and temporary manifests that neither the manifest nor a regen's journal
        accounts for: reported, never deleted."""
        known = self._listed() | set(self.leftovers())
        candidates = self._fixture_files() + sorted(self.root.glob(f".{self.manifest_path.name}.*.tmp"))
        return [p for p in candidates if p not in known]

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        manifest["fixtures"] = dict(sorted(manifest["fixtures"].items()))
        data = json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False).encode() + b"\n"
        atomic_write_bytes(self.manifest_path, data, self.journal.record)
        self._manifest = manifest

    def check_all(self) -> list[str]:
        """Every problem with the stored fixtures: missing, corrupted, swapped, left-over or stray files."""
        problems = []
        for key, entry in self.manifest()["fixtures"].items():
            case_id, reference = key.split("/")
            damaged = [
                f"{key}: {path.name} is missing" if not path.is_file()
                else f"{key}: {path.name} does not match its sha256 (corrupted or truncated)"
                for path in self._paths(case_id, entry)
                if not path.is_file() or sha256(path.read_bytes()) != entry["files"][path.name]
            ]
            problems.extend(damaged)
            if not damaged:
                try:
                    self._verified(case_id, reference)
                except InputError as e:  # intact files that decode badly or name another fixture
                    problems.append(str(e))
        if self.journal.path.is_file():
            problems.append(
                f"{self.journal.path.relative_to(self.root)}: the journal of an interrupted regen "
                "(`parity fixtures regen` finishes its tidying up)"
            )
        problems.extend(
            f"{path.relative_to(self.root)}: not in the manifest, left by an interrupted regen "
            "(`parity fixtures regen` removes it)"
            for path in self.leftovers()
        )
        problems.extend(
            f"{path.relative_to(self.root)}: not in the manifest, and no regen of this store wrote it: "
            "parity never deletes it (remove it yourself, or `parity fixtures rebuild` if its entry was lost)"
            for path in self.strays()
        )
        return problems

    def rebuild(self, cases: list[Case]) -> list[str]:
        """Add a manifest entry for every fixture whose files vouch for themselves and that no entry
        lists; returns one line per fixture recovered or passed over.

        A pair `<reference>.<h>.{safetensors,json}` under `golden/<case>/` vouches for itself when
        `h` is the start of the sha256 of its bytes (as `write` names them), its JSON names that
        case and reference, and the case exists. Its case hash is taken from today's case, which
        the files cannot confirm, and its recording environment is lost: `parity fixtures regen
        --check` then says whether the live references still reproduce it.
        """
        notes = []
        try:
            manifest = self.manifest()
        except InputError:
            # Unreadable: kept beside, never overwritten, so whatever it still holds can be recovered by hand.
            aside = self.manifest_path.with_name(f"{self.manifest_path.name}.unreadable")
            if aside.exists():
                raise InputError(f"{self.manifest_path} is unreadable and {aside} exists: move one away") from None
            os.replace(self.manifest_path, aside)
            notes.append(f"the unreadable manifest was kept as {aside}")
            manifest = self._manifest = {"format": MANIFEST_FORMAT, "fixtures": {}}
        by_id = {case.id: case for case in cases}
        found: dict[str, list[tuple[Path, Path]]] = {}
        for tensors in sorted(self.golden.glob("*/*.safetensors")) if self.golden.is_dir() else []:
            strings = tensors.with_suffix(".json")
            reference, _, _ = tensors.name.partition(".")
            key = self.key(tensors.parent.name, reference)
            if strings.is_file() and key not in manifest["fixtures"]:
                found.setdefault(key, []).append((tensors, strings))
        for key, pairs in found.items():
            case_id, reference = key.split("/")
            if len(pairs) > 1:
                notes.append(f"{key}: skipped, {len(pairs)} versions on disk and nothing says which is current")
                continue
            tensors, strings = pairs[0]
            blob_t, blob_j = tensors.read_bytes(), strings.read_bytes()
            if tensors.name != f"{reference}.{sha256(blob_t + blob_j)[:16]}.safetensors":
                notes.append(f"{key}: skipped, its files do not hash to their name (damaged or edited)")
                continue
            try:
                meta = decode(blob_t, blob_j, key).meta
            except InputError as e:
                notes.append(f"{key}: skipped, {e}")
                continue
            if (meta.get("case"), meta.get("adapter")) != (case_id, reference) or case_id not in by_id:
                notes.append(f"{key}: skipped, its files name another fixture, or no case has id {case_id!r}")
                continue
            manifest["fixtures"][key] = {
                "files": {tensors.name: sha256(blob_t), strings.name: sha256(blob_j)},
                "case_hash": by_id[case_id].content_hash(),
                "reference": reference,
                "provenance": {"rebuilt": "by `parity fixtures rebuild` from the files: recording environment unknown"},
            }
            notes.append(f"{key}: recovered")
        self._write_manifest(manifest)
        self.journal.close()
        return notes

    def references_for(self, case_id: str) -> list[str]:
        """The references with a stored fixture for this case."""
        prefix = f"{case_id}/"
        return sorted(key[len(prefix):] for key in self.manifest()["fixtures"] if key.startswith(prefix))

    def stale(self, wanted: set[str]) -> list[str]:
        """Fixture keys in the manifest that no current case and reference uses."""
        return sorted(set(self.manifest()["fixtures"]) - wanted)
