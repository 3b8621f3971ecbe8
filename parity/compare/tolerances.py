"""A numeric tolerance and the measurement that justifies it. Each stage declares its own values
(parity/stages/), beside its check.

Pass rule (as torch.testing): |obtained - expected| <= atol + rtol * |expected|.
"""

from __future__ import annotations

from dataclasses import dataclass

from parity.compare.records import Record


@dataclass(frozen=True)
class Tolerance(Record):
    atol: float
    rtol: float


@dataclass(frozen=True)
class Evidence(Record):
    noise_floor_max_abs: float
    headroom: float
    measured_by: str


@dataclass(frozen=True)
class StageTolerance(Record):
    tolerance: Tolerance
    evidence: Evidence


# Where the evidence of the numeric stages' tolerances was measured.
SAMPLING_PROBE = "re-implementations vs the installed diffusers transformer, tiny DiT, fixtures/cases/sampling.toml"
VAE_PROBE = "tiny Flux VAE: 1x1-conv against linear attention, unscale before against after the cast, 4-8 latents"
PADDING_PROBE = "tiny text encoder, ids unpadded vs right-padded to 512 with mask, L in {5,11,60,300,511}"
