"""Shared, lazily built resources every adapter in one run uses: one tokenizer, one text encoder,
one copy of the DiT weights, one copy of the VAE decoder's weights.

Building them once and handing the same objects to every adapter is what keeps K adapters from
costing K copies of the weights. When a model is first needed and the device cannot hold it beside
the ones loaded, those are dropped first (`_make_room_for`) and `say` is told. That keeps memory to
one model at a time because the runner runs every case's text stages, then every case's DiT stages,
then every case's decode stages (`parity.stages.PHASES`): a model dropped is needed again only by a
trace (a rerun of a denoise step), which loads it back the same way.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from parity.core.errors import InputError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
GIB = 2**30
# Each model a stage may run (`Stage.model`), and the cached property that holds it once loaded.
MODEL_ATTRIBUTES = {"text_encoder": "text_encoder", "dit": "dit_state_dict", "vae": "vae_state_dict"}
MODEL_NAMES = {"text_encoder": "the text encoder", "dit": "the DiT", "vae": "the VAE"}


def available_devices() -> list[str]:
    """The devices this torch can run on here, spelled as `--device` takes them."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    if torch.backends.mps.is_available():
        found.append("mps")
    return found


def check_device(device: str) -> None:
    """InputError naming `device` and the devices here unless this torch can run on it: checked once,
    before anything is built, where a missing device would otherwise fail mid-run in torch."""
    here = f"available here: {', '.join(available_devices())}"
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise InputError(f"--device {device}: not a device name torch knows; {here}") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(f"--device {device}: this torch ({torch.__version__}) sees no CUDA device; {here}")
        if parsed.index is not None and parsed.index >= count:
            raise InputError(f"--device {device}: this torch sees {count} CUDA device(s); {here}")
    elif parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise InputError(f"--device {device}: this torch ({torch.__version__}) sees no MPS device; {here}")
    elif parsed.type != "cpu":
        raise InputError(f"--device {device}: parity runs on cpu, cuda or mps; {here}")


@dataclass
class Context:
    checkpoint: Path | None = None
    device: str = "cpu"
    dtype: str = "fp32"
    cache_dir: Path | None = field(default=None)
    # Where a line saying that a model made way for another goes.
    say: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr), repr=False)
    # The models that made way for another: loading one again would hold both.
    released: set[str] = field(default_factory=set)
    # Source trees adapters import from a path, by name (`parity.suite.checkouts`).
    checkouts: dict[str, Path] = field(default_factory=dict)

    @cached_property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The checkpoint's `tokenizer/`, else the reference one (a ComfyUI checkpoint has none; ComfyUI
        bundles its own copy of the Qwen vocabulary, identical to the reference since 2025-12-01)."""
        from parity.core.tokenizer import load_tokenizer

        checkpoint = self.checkpoint
        if checkpoint is not None:
            from parity.models.checkpoint import detect

            if detect(checkpoint).kind == "comfyui":
                checkpoint = None
        return load_tokenizer(checkpoint, cache_dir=self.cache_dir)

    @cached_property
    def text_encoder(self) -> torch.nn.Module:
        from parity.models.text_encoder_weights import load_text_encoder

        return load_text_encoder(self.checkpoint, device=self.device, dtype=DTYPES[self.dtype])

    @cached_property
    def dit_config(self) -> dict:
        """The DiT's config in the diffusers `ZImageTransformer2DModel` format."""
        from parity.models.dit_weights import load_dit_config

        return load_dit_config(self.checkpoint)

    @cached_property
    def dit_state_dict(self) -> dict[str, torch.Tensor]:
        """One copy of the DiT weights (diffusers key layout, run dtype) that every adapter shares."""
        from parity.models.dit_weights import load_dit_state_dict

        return self._shared("dit", load_dit_state_dict)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @cached_property
    def vae_config(self) -> dict:
        """The VAE's config in the diffusers `AutoencoderKL` format."""
        from parity.models.vae_weights import load_vae_config

        return load_vae_config(self.checkpoint)

    @cached_property
    def vae_state_dict(self) -> dict[str, torch.Tensor]:
        """One copy of the VAE decoder's weights (diffusers key layout, run dtype) that every adapter shares."""
        from parity.models.vae_weights import load_vae_state_dict

        return self._shared("vae", load_vae_state_dict)

    def _shared(
        self, model: str, load: Callable[[Path | None], dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """`model`'s weights as `load` reads them from the checkpoint, room made for them first, on the
        run's device in its dtype."""
        self._make_room_for(model)
        return {k: v.to(device=self.device, dtype=self.torch_dtype) for k, v in load(self.checkpoint).items()}

    def check_files(self, models: set[str]) -> None:
        """Read the configs of those of `models` ("dit", "vae") whose files the checkpoint holds, which
        checks them against their weights' headers: a damaged file is then one line before the first
        stage runs, not when its model is first needed, minutes later. A part the checkpoint lacks
        stays an error for the stage that needs it (a run that never decodes needs no VAE)."""
        if self.checkpoint is None:
            return
        from parity.models.checkpoint import detect

        layout = detect(self.checkpoint)
        if "dit" in models and layout.dit is not None:
            _ = self.dit_config
        if "vae" in models and layout.vae is not None:
            _ = self.vae_config

    def _weight_shapes(self, model: str) -> dict[str, tuple[int, ...]]:
        if model == "dit":
            from parity.models.dit_weights import expected_shapes

            return expected_shapes(self.dit_config)
        from parity.models.vae_weights import expected_vae_shapes

        return expected_vae_shapes(self.vae_config)

    def _make_room_for(self, model: str) -> None:
        """Before `model` ("dit" or "vae") loads: drop every other loaded model if the device cannot hold
        `model` beside them, and say so. (The text encoder runs first, so nothing is loaded before it:
        a context that released it is replaced, see parity.run.plan.)"""
        from parity.core.memory import available_bytes, is_short, weight_bytes

        loaded = [m for m, attribute in MODEL_ATTRIBUTES.items() if m != model and attribute in self.__dict__]
        if not loaded:
            return
        needed = weight_bytes(self._weight_shapes(model), self.torch_dtype)
        available = available_bytes(self.device)
        if not is_short(needed, available):
            return
        for m in loaded:
            del self.__dict__[MODEL_ATTRIBUTES[m]]
        self.released.update(loaded)
        gc.collect()
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
        dropped = " and ".join(MODEL_NAMES[m] for m in loaded)
        self.say(
            f"memory: {MODEL_NAMES[model]} needs {needed / GIB:.1f} GiB and {self.device} has "
            f"{available / GIB:.1f} GiB free; released {dropped} (a stage that needs it again loads it again)"
        )
