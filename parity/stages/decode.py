"""The decode stage: the final latent through the VAE to the image a user saves.

Compared: the float image (the last float values before the uint8 conversion, in [0, 1]) under a
numeric tolerance, with PSNR; and the saved uint8 image, value by value: how many differ, the
histogram of differences, the worst pixel. A uint8 difference that is the conversion is named as
such: truncation against rounding changes about half the values of the same float image by one
level, all one way (in fp32, every difference -1 or 0), so with the float images agreeing it shows
as a mean shift of half a level that their difference does not explain; bf16 arithmetic, which
spreads values over several levels both ways, leaves that shift near 0. Free-running an
adapter decodes its own final latent, teacher-forced the reference's. Stored as `decode.image`
(H, W, 3) float32 and `decode.uint8` (H, W, 3) uint8.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from parity.compare.metrics import MetricRow, numeric_row
from parity.compare.numeric import NumericDiff, compare_numeric
from parity.compare.records import Count, Record, count, optional
from parity.compare.tolerances import SAMPLING_PROBE, VAE_PROBE, Evidence, StageTolerance, Tolerance
from parity.core.labels import split_label
from parity.models.context import Context
from parity.stages.base import Page, Records, Stage, StageCheck, TensorRule

TOLERANCES = {
    # Float image, in [0, 1]. Floor 3.7e-6: an adapter decoding its own final latent where its
    # denoise stage matches (ComfyUI's layout, non-square, free-running); the decoders' own kernels
    # (1x1-conv against linear attention) differ by 1.0e-6 on one latent. 1e-4 leaves 27x and is
    # still 7x below the smallest real divergence measured, DiffSynth's bf16 time embedder (7.4e-4).
    "fp32": StageTolerance(Tolerance(atol=1e-4, rtol=0.0), Evidence(3.7e-6, 27.0, SAMPLING_PROBE)),
    # Floor 1.8e-2: in bf16 the same decoder on the same latent moves by that much with other
    # kernels (1x1-conv attention: 1.6e-2) or with the unscale done in fp32 before the cast instead
    # of after it (39% of the decoder's inputs one bf16 step apart: 1.8e-2). 0.05 leaves 2.8x.
    "bf16": StageTolerance(Tolerance(atol=0.05, rtol=0.0), Evidence(1.8e-2, 2.8, VAE_PROBE)),
}
# The saved image, per dtype: how many levels a value may move, and what fraction may move at all,
# when the float images agree. fp32: a value on a rounding boundary flips by one (5 of 393,216
# values between the two attention kernels, 1.3e-5; bound 1e-3). bf16: the same kernel difference
# moves values by up to 4 levels and 44% of them by some; 8 levels, any fraction.
UINT8_LEVELS = {"fp32": 1, "bf16": 8}
UINT8_FRACTION = {"fp32": 1e-3, "bf16": 1.0}
# Rounding and truncation of one float image differ by half a level on average; arithmetic noise,
# symmetric, leaves the mean near 0. A shift of a quarter level that the float images do not
# explain names the conversion.
CONVERSION_SHIFT = 0.25
# Differences (obtained - expected) counted per level, the outer bins counting everything beyond.
HISTOGRAM_LEVELS = (-3, -2, -1, 0, 1, 2, 3)
# An image no more than this many levels from the golden fixture's looks the same: the report
# shows only its difference picture (its PNG stays in the results).
FAINT_LEVELS = 1
TRUNCATION = "truncation where the reference rounds"
ROUNDING = "rounding where the reference truncates"


@dataclass(frozen=True)
class Decoded:
    """What the VAE and the conversion made of the final latent.

    `image` is (H, W, 3) float32 in [0, 1]: the implementation's last float values before it converts
    to uint8 (cast to float32 for storage). `uint8` is (H, W, 3) uint8: the image it saves.
    """

    image: torch.Tensor
    uint8: torch.Tensor


@dataclass(frozen=True)
class DecodeDetail(Record):
    """The float image's comparison and PSNR (None: identical, or not finite), the uint8 image's
    differences, what the difference is when it is only the conversion, and the pictures the report
    shows (PNG data URIs: the obtained image only when it differs from the reference's, the amplified
    |difference| with the difference that is white, in levels).

    An image shape that differs leaves only `shape_mismatch` and the pictures.
    """

    shape_mismatch: bool | None = optional()
    image: NumericDiff | None = None
    psnr: float | None = None
    uint8_differing: Count | None = None
    uint8_fraction: float | None = None
    # Counts of differences <= -3, -2, -1, 0, 1, 2, >= 3 (HISTOGRAM_LEVELS).
    histogram: tuple[Count, ...] | None = None
    # (row, column, channel) of the largest uint8 difference, and the two values there.
    worst_pixel: tuple[Count, Count, Count] | None = None
    worst_obtained: Count | None = None
    worst_expected: Count | None = None
    # The mean uint8 difference (levels) beyond what the float images' difference explains.
    shift: float | None = None
    conversion: str | None = None
    tolerance_evidence: StageTolerance | None = None
    uint8_max_levels: Count | None = None
    uint8_max_fraction: float | None = None
    expected_png: str | None = optional()
    obtained_png: str | None = optional()
    difference_png: str | None = optional()
    difference_peak: float | None = optional()


def _histogram(difference: torch.Tensor) -> tuple[int, ...]:
    low, high = HISTOGRAM_LEVELS[0], HISTOGRAM_LEVELS[-1]
    clipped = difference.clamp(low, high).flatten() - low
    return tuple(int(n) for n in torch.bincount(clipped, minlength=high - low + 1))


def _histogram_labels(histogram: tuple[int, ...]) -> list[tuple[str, int]]:
    """The non-zero differences as ("-1", count) pairs, the outer bins as "<=-3" and ">=+3"."""
    labels = {HISTOGRAM_LEVELS[0]: f"≤{HISTOGRAM_LEVELS[0]:+d}", HISTOGRAM_LEVELS[-1]: f"≥{HISTOGRAM_LEVELS[-1]:+d}"}
    return [(labels.get(level, f"{level:+d}"), n) for level, n in zip(HISTOGRAM_LEVELS, histogram, strict=True)
            if n and level != 0]


def _shift(floats: torch.Tensor, levels: torch.Tensor) -> float | None:
    """The mean uint8 difference (`levels`) beyond 255 x the float images' mean difference (`floats`);
    None where it is not finite."""
    shift = float(levels.double().mean()) - float(floats.mean()) * 255
    return shift if math.isfinite(shift) else None


def _conversion(shift: float | None, image: NumericDiff) -> str | None:
    """Which conversion differs, when the float images agree and the saved ones are shifted apart."""
    if not image.passed or shift is None or abs(shift) < CONVERSION_SHIFT:
        return None
    return TRUNCATION if shift < 0 else ROUNDING


def _pictures(obtained: Decoded, expected: Decoded, magnitude: torch.Tensor | None) -> dict[str, Any]:
    """The report's pictures; `magnitude` (|obtained - expected|, uint8 levels) None when the shapes differ."""
    from parity.drawing.images import amplified, display_uri  # PIL, only where a check has pictures to show

    pictures: dict[str, Any] = {"expected_png": display_uri(expected.uint8)}
    if magnitude is not None and not magnitude.any():
        return pictures
    pictures["obtained_png"] = display_uri(obtained.uint8)
    if magnitude is not None:
        # One channel: the largest difference of the pixel's three (a third of the bytes of RGB).
        magnitude, peak = amplified(magnitude.amax(dim=-1))
        pictures |= {"difference_png": display_uri(magnitude), "difference_peak": peak}
    return pictures


class DecodeStage(Stage):
    name = "decode"
    path = "sampling"
    inputs = ("denoise",)
    records = ("decode",)
    detail = DecodeDetail
    tolerances = TOLERANCES
    tensors: ClassVar[Mapping[str, TensorRule]] = {
        "decode.image": TensorRule(torch.float32, 3, "decode.uint8"),
        "decode.uint8": TensorRule(torch.uint8, 3, "decode.image"),
    }
    partial = "stages/decode.html.j2"
    drawn = frozenset({"histogram", "expected_png", "obtained_png", "difference_png", "difference_peak"})
    model = "vae"

    def run(
        self, adapter: Any, case: Any, given: Records, feed: Records | None,
        capture_blocks: tuple[int, ...],
    ) -> dict[str, Any]:
        # `given` is the reference's outputs when teacher-forced: its final latent.
        return {"decode": adapter.decode(case, given.get("denoise").latents[-1:].float())}

    def store(self, outputs: Records) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        decoded = outputs.get("decode")
        if decoded is None:
            return {}, {}
        return {
            "decode.image": decoded.image.to(torch.float32).contiguous(), "decode.uint8": decoded.uint8.contiguous()
        }, {}

    def load(self, tensors: Mapping[str, torch.Tensor], strings: Mapping[str, Any]) -> dict[str, Any]:
        if "decode.image" not in tensors:
            return {}
        return {"decode": Decoded(tensors["decode.image"], tensors["decode.uint8"])}

    def check_stored(self, tensors: Mapping[str, torch.Tensor]) -> str | None:
        if "decode.image" not in tensors:
            return None
        image, pixels = tensors["decode.image"].shape, tensors["decode.uint8"].shape
        if image != pixels or image[-1] != 3:
            return f"decode.image is {tuple(image)}, decode.uint8 {tuple(pixels)}: one (H, W, 3) shape for both"
        return None

    def check(self, obtained: Decoded, expected: Decoded, context: Context, dtype: str) -> StageCheck:
        tol = self.tolerance(dtype)
        if obtained.uint8.shape != expected.uint8.shape:
            ours, theirs = tuple(obtained.uint8.shape[:2]), tuple(expected.uint8.shape[:2])
            detail = DecodeDetail(shape_mismatch=True, **_pictures(obtained, expected, None))
            return StageCheck(False, f"image {ours} vs reference {theirs}", detail)
        difference = obtained.uint8.short() - expected.uint8.short()
        magnitude = difference.abs()
        pictures = _pictures(obtained, expected, magnitude)
        image = compare_numeric(obtained.image, expected.image, tol.tolerance)
        floats = obtained.image.double() - expected.image.double()
        mse = float(floats.square().mean())
        # None: identical, or not finite.
        psnr = 10 * math.log10(1 / mse) if math.isfinite(mse) and mse > 0 else None
        differing = int((difference != 0).sum())
        fraction = differing / difference.numel()
        worst = int(magnitude.flatten().argmax())
        row, column, channel = (int(i) for i in torch.unravel_index(torch.tensor(worst), difference.shape))
        largest = int(magnitude[row, column, channel])
        shift = _shift(floats, difference)
        conversion = _conversion(shift, image)
        levels, bound = UINT8_LEVELS[dtype], UINT8_FRACTION[dtype]
        detail = DecodeDetail(
            image=image, psnr=psnr, uint8_differing=differing, uint8_fraction=fraction,
            histogram=_histogram(difference), worst_pixel=(row, column, channel),
            worst_obtained=int(obtained.uint8[row, column, channel]),
            worst_expected=int(expected.uint8[row, column, channel]), shift=shift,
            conversion=conversion, tolerance_evidence=tol, uint8_max_levels=levels, uint8_max_fraction=bound,
            **pictures,
        )
        passed = image.passed and conversion is None and largest <= levels and fraction <= bound
        values = f"{count(differing, 'uint8 value')} ({fraction:.2%})"
        agrees = f"float image within atol={tol.tolerance.atol:g}"
        if psnr is not None:
            agrees += f" (PSNR {psnr:.1f} dB)"
        if conversion is not None:
            way = "lower" if conversion == TRUNCATION else "higher"
            summary = (f"uint8 differs by the conversion, {conversion}: {values} differ, {abs(shift):.2f} levels "
                       f"{way} on average than the float images explain; {agrees}")
        elif not image.passed:
            summary = f"float image: {image.summary()}; uint8: {values} differ, worst by {largest}"
        elif differing == 0:
            summary = f"{agrees}; uint8 identical"
        else:
            summary = f"{agrees}; uint8: {values} differ, worst by {largest}"
            if largest > levels:
                summary += f" (more than the {levels} level(s) the {dtype} tolerance allows)"
            elif fraction > bound:
                summary += f" (more than the {bound:.2%} of values a rounding boundary explains)"
        return StageCheck(passed, summary, detail)

    def files(self, outputs: Records) -> dict[str, bytes]:
        from parity.drawing.images import png_bytes

        decoded = outputs.get("decode")
        return {"png": png_bytes(decoded.uint8)} if decoded is not None else {}

    def describe(self, record: Decoded) -> str:
        height, width = record.uint8.shape[:2]
        return f"this adapter's image is {height}x{width}"

    def evidence(self, detail: DecodeDetail) -> StageTolerance | None:
        return detail.tolerance_evidence

    def metric_rows(self, detail: DecodeDetail) -> list[MetricRow]:
        if detail.image is None:
            return []
        uint8 = MetricRow(
            "decode: uint8 image", str(tuple(detail.image.compared_shape or ())),
            f"{detail.uint8_differing}/{detail.image.numel}", None,
            {"max_abs": float(abs(detail.worst_obtained - detail.worst_expected))},
        )
        return [numeric_row("decode: float image", detail.image), uint8]

    def view(self, rows: list[tuple[str, str, DecodeDetail]], page: Page) -> dict[str, Any] | None:
        shown = [(a, d) for a, _, d in rows if d.expected_png is not None]
        if not shown:
            return None
        expected = shown[0][1].expected_png
        # An image shown already is not shown again: two adapters that saved the same image (ComfyUI
        # and a pack built on it, say), or a column judged against other real code whose image is
        # the golden fixture's.
        first_with: dict[str, str] = {expected: f"the golden fixture ({page.reference})"}
        adapters = []
        for a, d in shown:
            same = first_with.setdefault(d.obtained_png, a) if d.obtained_png is not None else None
            repeated = same is not None and same != a
            faint = not repeated and d.difference_peak is not None and d.difference_peak <= FAINT_LEVELS
            adapters.append({
                "name": a, "same_as": same if repeated else None, "against": split_label(a)[1] or "reference",
                "faint": faint, "image": None if repeated or faint else d.obtained_png,
                "difference": None if repeated else d.difference_png,
                "peak": d.difference_peak, "psnr": d.psnr, "conversion": d.conversion, "fraction": d.uint8_fraction,
                "histogram": _histogram_labels(d.histogram) if d.histogram else None,
            })
        return {"expected": expected, "reference": page.reference, "adapters": adapters}


DECODE = DecodeStage()
