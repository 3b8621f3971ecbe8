"""The golden fixture store: `fixtures/golden/<case>/<reference>.<hash>.{safetensors,json}` + manifest.

The manifest records, per fixture, its two files with their sha256, the hash of the case inputs
that produced it, and its provenance (library versions, torch, device, dtype, threads, weights).
A fixture is trusted only when its bytes hash to what the manifest says.

File names carry a hash of their content, so a regen never overwrites a file the manifest points
at: it writes new files beside the old ones, and the one atomic replace of `manifest.json` is the
moment the fixtures change. A regen killed before that leaves the previous fixtures intact and
verifiable; the files it left behind (fixture files no entry points at, a temporary manifest) are
listed by `parity fixtures check`, named by the next regen, and removed when it commits.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parity.cases import Case
from parity.errors import InputError
from parity.outputs import StageOutputs, atomic_write_bytes, decode, encode

MANIFEST_FORMAT = 1


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _well_formed(entry: Any) -> bool:
    """A manifest entry names one .safetensors and one .json file, as plain names, each with a sha256."""
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
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"{self.manifest_path}: unreadable manifest ({e})") from None
        if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
            found = data.get("format") if isinstance(data, dict) else None
            raise InputError(f"{self.manifest_path}: manifest format {found!r} is not {MANIFEST_FORMAT}")
        fixtures = data.get("fixtures")
        if not isinstance(fixtures, dict):
            raise InputError(f"{self.manifest_path}: no 'fixtures' table")
        for key, entry in fixtures.items():
            if not _well_formed(entry):
                raise InputError(
                    f"{self.manifest_path}: entry {key!r} needs 'case_hash' and 'files' (one .safetensors and "
                    "one .json file name, each with its sha256)"
                )
        return data

    @staticmethod
    def key(case_id: str, reference: str) -> str:
        return f"{case_id}/{reference}"

    def _paths(self, case_id: str, entry: dict[str, Any]) -> list[Path]:
        return [self.golden / case_id / name for name in sorted(entry["files"], key=lambda n: n.endswith(".json"))]

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
        return decode(blobs[0], blobs[1], key)

    def write(self, case: Case, reference: str, outputs: StageOutputs, provenance: dict[str, Any]) -> FixtureWrite:
        """Write a fixture's files if its bytes changed; the manifest moves to them on `commit`."""
        key = self.key(case.id, reference)
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
            (self.golden / case.id / name).is_file() and (self.golden / case.id / name).read_bytes() == data
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
                atomic_write_bytes(self.golden / case.id / name, data)
        self._pending[key] = {
            "files": {name: sha256(data) for name, data in files.items()},
            "case_hash": case.content_hash(),
            "reference": reference,
            "provenance": provenance,
        }
        old_provenance = old.get("provenance") if old is not None else None
        return FixtureWrite(key, changed, previous if changed else None, old_provenance, provenance)

    def commit(self) -> None:
        """Point the manifest at every written fixture in one atomic replace, then tidy up."""
        manifest = self.manifest()
        manifest["fixtures"].update(self._pending)
        self._write_manifest(manifest)
        self._pending = {}
        for path in self.leftovers():
            path.unlink()

    def leftovers(self) -> list[Path]:
        """Files the manifest does not account for: fixture files under golden/ no entry points at,
        and temporary manifests beside it (what an interrupted regen leaves)."""
        wanted = {
            path
            for key, entry in self.manifest()["fixtures"].items()
            for path in self._paths(key.split("/", 1)[0], entry)
        }
        found = {p for p in self.golden.glob("*/*") if p.is_file()} if self.golden.is_dir() else set()
        temporary = set(self.root.glob(f".{self.manifest_path.name}.*.tmp"))
        return sorted((found - wanted) | temporary)

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        manifest["fixtures"] = dict(sorted(manifest["fixtures"].items()))
        data = json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False).encode() + b"\n"
        atomic_write_bytes(self.manifest_path, data)
        self._manifest = manifest

    def check_all(self) -> list[str]:
        """Every problem with the stored fixtures: missing, corrupted or stray files."""
        problems = []
        for key, entry in self.manifest()["fixtures"].items():
            for path in self._paths(key.split("/", 1)[0], entry):
                if not path.is_file():
                    problems.append(f"{key}: {path.name} is missing")
                elif sha256(path.read_bytes()) != entry["files"][path.name]:
                    problems.append(f"{key}: {path.name} does not match its sha256 (corrupted or truncated)")
        problems.extend(
            f"{path.relative_to(self.root)}: not in the manifest (left by an interrupted regen? "
            "`parity fixtures regen` removes it)"
            for path in self.leftovers()
        )
        return problems

    def references_for(self, case_id: str) -> list[str]:
        """The references with a stored fixture for this case."""
        prefix = f"{case_id}/"
        return sorted(key[len(prefix):] for key in self.manifest()["fixtures"] if key.startswith(prefix))

    def stale(self, wanted: set[str]) -> list[str]:
        """Fixture keys in the manifest that no current case and reference uses."""
        return sorted(set(self.manifest()["fixtures"]) - wanted)
