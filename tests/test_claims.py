"""The claims ledger (fixtures/claims.toml): each seeded claim's verdict, its evidence, and bad ledgers.

Each verdict below is what ZIMAGE_REFERENCE.md says of the claim, written here independently of the
ledger's own `expected` field (which a test also checks, as `parity tables --check` does).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from parity.analysis.claim_checks import CHECKS
from parity.analysis.claims import INCONCLUSIVE, Claim, evaluate, load_claims
from parity.analysis.probe_runner import ProbeRunner
from parity.analysis.tables_command import tables_command
from parity.analysis.text_observations import embedding_layer
from parity.core.errors import InputError

ROOT = Path(__file__).parents[1]
LEDGER = ROOT / "fixtures" / "claims.toml"

# claim id -> verdict, from ZIMAGE_REFERENCE.md (section in the comment).
REFERENCE = {
    "diffsynth-empty-think-block": "refuted",  # §1: enable_thinking=True adds nothing
    "diffusers-enable-thinking-false": "refuted",  # §1: diffusers passes enable_thinking=True
    "inhouse-default-think-block": "confirmed",  # §1: ends 151667, 271, 151668, 271
    "comfyui-pads-512": "refuted",  # §1: no padding and no truncation
    "comfyui-truncates-512": "refuted",  # §1
    "diffusers-truncates-512": "confirmed",  # §1: the 512 limit includes the template
    "legacy-comfyui-think-single-token": "refuted",  # §1: [13708, 766, 29] before 2025-12-01
    "comfyui-think-single-token": "confirmed",  # §1: single tokens since then
    "inhouse-simple-equals-full": "refuted",  # §1: the two in-house encoders differ
    "all-hidden-states-minus-2": "confirmed",  # §2
    "zimage-32-pixel-alignment": "refuted",  # §4: diffusers requires 16
    "diffsynth-bf16-time-embedder": "confirmed",  # §5
    "schedule-8-diffusers-comfyui": "confirmed",  # §3: 8 steps equals diffusers
    "schedule-9-diffusers-comfyui": "refuted",  # §3: the 9-step workflow differs
    "schedule-8-diffusers-diffsynth": "confirmed",  # §3: equals diffusers at strength 1
    "time-input-bf16-diffusers-diffsynth": "refuted",  # §6: [0, 44, 100, 168, ...]
    "same-seed-same-noise": "refuted",  # §4, §6: DiffSynth draws in bf16
    "comfyui-skips-negative-at-cfg-1": "confirmed",  # §4
    "comfyui-zeroed-negative": "confirmed",  # §4: the official workflow zeroes the negative
}


@pytest.fixture(scope="module")
def lab() -> ProbeRunner:
    return ProbeRunner()


@pytest.fixture(scope="module")
def claims(lab: ProbeRunner) -> list[Claim]:
    return load_claims(LEDGER, set(lab.names()))


@pytest.fixture(scope="module")
def results(lab: ProbeRunner, claims: list[Claim]):
    return {claim.id: evaluate(claim, lab) for claim in claims}


def test_the_ledger_holds_the_seeded_claims(claims):
    assert {c.id for c in claims} == set(REFERENCE)
    for claim in claims:
        assert claim.source and claim.statement and claim.expected == REFERENCE[claim.id], claim.id
    assert sum(c.expected == "refuted" for c in claims) >= 8  # the ledger says which claims are false


@pytest.mark.parametrize("claim_id", sorted(REFERENCE))
def test_each_seeded_claim_gets_the_reference_verdict(results, claim_id):
    result = results[claim_id]
    assert result.verdict == REFERENCE[claim_id], result.evidence
    assert not result.unexpected


@pytest.mark.parametrize(
    ("claim_id", "shown"),
    [
        ("legacy-comfyui-think-single-token", ["[13708, 766, 29]", "'<th', 'ink', '>'"]),
        ("comfyui-think-single-token", ["[151667]"]),
        ("inhouse-default-think-block", ["151667, 271, 151668, 271]", r"assistant\n<think>\n\n</think>\n\n'"]),
        ("diffsynth-empty-think-block", [r"'<|im_start|>user\nA cat sleeping<|im_end|>\n<|im_start|>assistant\n'",
                                         "[151644, 872, 198, 32, 8251, 21127, 151645, 198, 151644, 77091, 198]"]),
        ("diffusers-enable-thinking-false", ["the adapter's bytes equal enable_thinking=True"]),
        ("comfyui-pads-512", ["hands the encoder 11 ids", "no padding"]),
        ("comfyui-truncates-512", ["700-token prompt gives 708 attended ids", "are kept"]),
        ("diffusers-truncates-512", ["gives 512 attended ids", "are lost"]),
        ("zimage-32-pixel-alignment", ["136x136: refused", "divisible by 16", "144x144: latent 18x18",
                                       "needs a multiple of 16"]),
        ("schedule-9-diffusers-comfyui", ["0.960043, 0.913146, 0.857326, 0.789773, 0.706349, 0.600719, 0.462656",
                                          "[1, 0.96, 0.913044"]),
        ("time-input-bf16-diffusers-diffsynth", ["[0, 44, 100, 168, 248, 356, 500, 700]",
                                                 "[0, 45.4546, 100, 166.6667, 250, 357.1429, 500, 700]"]),
        ("diffsynth-bf16-time-embedder", ["linear layers got ['bf16'] inputs"]),
        ("same-seed-same-noise", ["diffsynth_style: (1, 16, 16, 16) bf16", "(differs)",
                                  "diffusers: (1, 16, 16, 16) fp32"]),
        ("comfyui-skips-negative-at-cfg-1", ["embedded 1 sample(s) in 1 call(s) over 1 step(s)"]),
        ("comfyui-zeroed-negative", ["u = zero: k = 2.000000"]),
        ("all-hidden-states-minus-2", ["diffusers: hidden_states[-2] of", "comfyui_style: hidden_states[-2] of"]),
    ],
)
def test_evidence_shows_the_actual_ids_bytes_and_values(results, claim_id, shown):
    evidence = results[claim_id].evidence
    for piece in shown:
        assert piece in evidence, (piece, evidence)


def test_a_claim_an_adapter_cannot_run_is_inconclusive(lab):
    claim = Claim("x", "qwen3_chat's time embedder runs in bf16", "test", "time_embedder_dtype",
                  {"adapter": "qwen3_chat", "pipeline_dtype": "fp32", "dtype": "bf16"}, "confirmed")
    result = evaluate(claim, lab)
    assert result.verdict == INCONCLUSIVE and "no sampler" in result.evidence
    assert result.unexpected


# --- bad ledgers ----------------------------------------------------------------------------------------

GOOD = """
[[claim]]
id = "c"
statement = "s"
source = "design document"
check = "pads_to"
params = { adapter = "comfyui_style", length = 512 }
"""


@pytest.mark.parametrize(
    ("ledger", "message"),
    [
        (GOOD.replace('check = "pads_to"', 'check = "no_such_check"'), "unknown check 'no_such_check'"),
        (GOOD + 'colour = "red"\n', "unknown key 'colour'"),
        (GOOD.replace('statement = "s"\n', ""), "missing field 'statement'"),
        (GOOD.replace('source = "design document"\n', ""), "missing field 'source'"),
        (GOOD.replace('check = "pads_to"\n', ""), "missing field 'check'"),
        (GOOD.replace("length = 512", "length = 512, side = 1"), "has no parameter 'side'"),
        (GOOD.replace(", length = 512", ""), "needs the parameter 'length'"),
        (GOOD.replace("length = 512", 'length = "512"'), "parameter 'length' must be int"),
        (GOOD.replace('"comfyui_style"', '"comfy"'), "unknown adapter 'comfy'"),
        (GOOD + 'expected = "true"\n', "expected must be one of confirmed, refuted"),
        (GOOD + GOOD, "duplicate claim id 'c'"),
        (GOOD.replace('id = "c"', "id = 3"), "'id' must be str"),
        ('[claim]\nid = "c"\n', "'claim' must be [[claim]] tables"),
        ("claim = [1]\n", "each claim must be a [[claim]] table"),
        ('title = "x"\n' + GOOD, "unknown top-level key 'title'"),
        ("", "no [[claim]] tables"),
        ("[[claim]\n", "malformed TOML"),
        (GOOD.replace('"pads_to"', '"time_embedder_dtype"').replace(
            "length = 512", 'pipeline_dtype = "fp64", dtype = "bf16"'),
         "parameter 'pipeline_dtype' must be Literal['fp32', 'bf16'], got 'fp64'"),
        (GOOD.replace('"pads_to"', '"same_template"').replace(
            "length = 512", 'a = { encoder = "full" }, b = { colour = "red" }'), "unknown key 'colour'"),
        (GOOD.replace('"pads_to"', '"dit_passes"').replace("length = 512", "cfg = 0.5, passes = 1"),
         "cfg must be at least 1"),
    ],
)
def test_bad_ledger_entries_are_input_errors(lab, tmp_path, ledger, message):
    path = tmp_path / "claims.toml"
    path.write_text(ledger, encoding="utf-8")
    with pytest.raises(InputError, match=re.escape(message)):
        load_claims(path, set(lab.names()))


def test_a_missing_ledger_is_an_input_error(lab, tmp_path):
    with pytest.raises(InputError, match="claims ledger not found"):
        load_claims(tmp_path / "absent.toml", set(lab.names()))


def test_every_check_is_registered_by_its_name():
    assert all(func.__name__ == name for name, func in CHECKS.items())
    assert {"empty_think_block", "pads_to", "truncates_at", "size_alignment", "same_schedule", "same_noise",
            "dit_passes", "single_token", "time_embedder_dtype", "embedding_layer"} <= set(CHECKS)


# --- --check: the ledger is regression-tested ------------------------------------------------------------


def test_check_fails_when_a_verdict_differs_from_the_ledger(lab, tmp_path, capsys):
    ledger = tmp_path / "claims.toml"
    ledger.write_text(GOOD + 'expected = "confirmed"\n', encoding="utf-8")  # false: ComfyUI does not pad
    args = argparse.Namespace(adapters=["comfyui_style"], claims=ledger, out=None, check=True, checkpoint=None,
                              device="cpu", fixtures=ROOT / "fixtures")
    assert tables_command(args, lab=lab) == 1
    captured = capsys.readouterr()
    assert "UNEXPECTED claim c: refuted, the ledger says confirmed" in captured.err
    assert "**refuted** (unexpected)" in captured.out
    args.check = False
    assert tables_command(args, lab=lab) == 0


def test_the_hidden_layer_of_the_comfyui_rows_is_decided_by_the_real_codes_stored_output():
    """ComfyUI's own Qwen3 (and the pack on it) is another implementation of the encoder than the
    harness's transformers one, so its rows equal hidden_states[-2] within the stage tolerance but
    not bit for bit: a claim decided by the re-implementation's own run would read exact."""
    lab = ProbeRunner(fixtures=ROOT / "fixtures")
    for name, real in (("comfyui_style", "comfyui_live"), ("inhouse", "inhouse_live")):
        seen = embedding_layer(lab, name)
        assert seen.decided_by == f"{real}'s stored output"
        assert seen.index == -2 and seen.agrees and 0.0 < seen.max_abs_diff <= 1e-5
    own = embedding_layer(lab, "diffusers")
    assert own.decided_by == "its own run" and own.max_abs_diff == 0.0
    verdict, evidence = CHECKS["embedding_layer"](lab, layer=-2, adapters=["comfyui_style", "diffusers"])
    assert verdict == "confirmed" and "comfyui_live's stored output" in evidence
