"""The golden fixture store: `fixtures/golden/<case>/<reference>.{safetensors,json}` + manifest.

The manifest records, per fixture, the sha256 of both files, the hash of the case inputs that
produced it, and its provenance (library versions, torch, device, dtype, threads, weights). A
fixture is trusted only when its bytes hash to what the manifest says.
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


@dataclass(frozen=True)
class FixtureWrite:
    key: str
    changed: bool
    previous: StageOutputs | None


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
        if data.get("format") != MANIFEST_FORMAT:
            raise InputError(f"{self.manifest_path}: manifest format {data.get('format')!r} is not {MANIFEST_FORMAT}")
        return data

    @staticmethod
    def key(case_id: str, reference: str) -> str:
        return f"{case_id}/{reference}"

    def _paths(self, case_id: str, reference: str) -> tuple[Path, Path]:
        folder = self.golden / case_id
        return folder / f"{reference}.safetensors", folder / f"{reference}.json"

    def entry(self, case_id: str, reference: str) -> dict[str, Any] | None:
        return self.manifest()["fixtures"].get(self.key(case_id, reference))

    def load(self, case: Case, reference: str) -> StageOutputs:
        """The verified fixture, or one clear InputError saying what is wrong with it."""
        key = self.key(case.id, reference)
        entry = self.entry(case.id, reference)
        if entry is None:
            raise InputError(f"missing fixture {key}: run `parity fixtures regen` and review the result")
        blobs = []
        for path in self._paths(case.id, reference):
            if not path.is_file():
                raise InputError(f"fixture {key}: file {path} is missing")
            data = path.read_bytes()
            expected = entry["files"][path.name]
            if sha256(data) != expected:
                raise InputError(
                    f"fixture {key}: {path.name} is corrupted or truncated "
                    f"(sha256 {sha256(data)[:12]}…, manifest says {expected[:12]}…)"
                )
            blobs.append(data)
        if entry["case_hash"] != case.content_hash():
            raise InputError(f"fixture {key} was made from other case inputs: run `parity fixtures regen`")
        return decode(blobs[0], blobs[1], key)

    def write(self, case: Case, reference: str, outputs: StageOutputs, provenance: dict[str, Any],
              force: bool = False) -> FixtureWrite:
        """Write a fixture when its bytes changed (or `force`); the manifest is updated by `commit`."""
        key = self.key(case.id, reference)
        tensor_bytes, json_bytes = encode(outputs)
        st, js = self._paths(case.id, reference)
        old = self.entry(case.id, reference)
        same = (
            old is not None
            and st.is_file() and js.is_file()
            and old["files"].get(st.name) == sha256(tensor_bytes)
            and old["files"].get(js.name) == sha256(json_bytes)
            and sha256(st.read_bytes()) == old["files"][st.name]
            and sha256(js.read_bytes()) == old["files"][js.name]
        )
        previous = None
        if old is not None and not same and st.is_file() and js.is_file():
            try:
                previous = decode(st.read_bytes(), js.read_bytes(), key)
            except InputError:
                previous = None
        if not same or force:
            atomic_write_bytes(st, tensor_bytes)
            atomic_write_bytes(js, json_bytes)
        self._pending[key] = {
            "files": {st.name: sha256(tensor_bytes), js.name: sha256(json_bytes)},
            "case_hash": case.content_hash(),
            "reference": reference,
            "provenance": provenance,
        }
        return FixtureWrite(key, not same, previous)

    def commit(self) -> None:
        """Record every written fixture in the manifest in one atomic replace."""
        manifest = self.manifest()
        manifest["fixtures"].update(self._pending)
        self._write_manifest(manifest)
        self._pending = {}

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        manifest["fixtures"] = dict(sorted(manifest["fixtures"].items()))
        data = json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False).encode() + b"\n"
        atomic_write_bytes(self.manifest_path, data)
        self._manifest = manifest

    def check_all(self) -> list[str]:
        """Every problem with the stored fixtures: missing or corrupted files, in key order."""
        problems = []
        for key, entry in self.manifest()["fixtures"].items():
            case_id, reference = key.split("/", 1)
            for path in self._paths(case_id, reference):
                if not path.is_file():
                    problems.append(f"{key}: {path.name} is missing")
                elif sha256(path.read_bytes()) != entry["files"][path.name]:
                    problems.append(f"{key}: {path.name} does not match its sha256 (corrupted or truncated)")
        return problems

    def stale(self, wanted: set[str]) -> list[str]:
        """Fixture keys in the manifest that no current case and reference uses."""
        return sorted(set(self.manifest()["fixtures"]) - wanted)
