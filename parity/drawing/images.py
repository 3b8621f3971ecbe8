"""Decoded images as PNG: the files `--save-images` writes and the pictures the report inlines.

The report shows images at most DISPLAY_MAX pixels a side (box-filtered down, so an 8x-upscaled
real image stays legible); the files and every metric keep the full size.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import torch
from PIL import Image

DISPLAY_MAX = 256


def _image(pixels: torch.Tensor) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(pixels.numpy()))


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def png_bytes(pixels: torch.Tensor) -> bytes:
    """A (H, W, 3) uint8 image as PNG."""
    return _png(_image(pixels))


def display_uri(pixels: torch.Tensor) -> str:
    """A (H, W, 3) uint8 image as a PNG data URI, downscaled to DISPLAY_MAX a side."""
    image = _image(pixels)
    if max(image.size) > DISPLAY_MAX:
        image.thumbnail((DISPLAY_MAX, DISPLAY_MAX), Image.Resampling.BOX)
    return "data:image/png;base64," + base64.b64encode(_png(image)).decode("ascii")


def amplified(difference: torch.Tensor) -> tuple[torch.Tensor, float]:
    """|difference| scaled so that its largest value is white, as uint8; and that largest value.

    Scaled per image, not by a fixed gain: a rounding difference (one level) and a wrong decoder
    (a hundred) both show their structure. The largest value is printed beside it so the two cannot
    be confused.
    """
    magnitude = difference.abs().double()
    peak = float(magnitude.max()) if magnitude.numel() else 0.0
    return (magnitude * (255 / peak if peak > 0 else 0)).round().clamp(0, 255).to(torch.uint8), peak
