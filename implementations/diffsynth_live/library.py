"""The installed `diffsynth` package (DiffSynth-Studio), imported lazily and with a fixed attention backend.

`diffsynth` lives only in the references environment, yet every parity run loads every registered
adapter module (and builds every reference adapter), so nothing here imports it until a stage needs
it; without it the adapter reports each case as not supported.

Attention backend: `diffsynth.core.attention.attention` picks its backend once, when it is first
imported: `DIFFSYNTH_ATTENTION_IMPLEMENTATION` if set, otherwise the first installed of a custom
flash-attn kernel, flash-attn 4/3/2, SageAttention (int8-quantised q/k), xformers, and only then
torch's `scaled_dot_product_attention`. Which one runs would depend on what else happens to be
installed, and every other implementation here (diffusers, the re-implementations) uses torch SDPA,
so a parity run pins DiffSynth to "torch". The variable is set when this module is imported (before
anything in this package imports diffsynth), and `load()` checks that the backend diffsynth chose is
"torch": an earlier import of diffsynth with another backend is an error, not a silent difference.
"""

from __future__ import annotations

import importlib.util
import os
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from types import SimpleNamespace

ATTENTION_VARIABLE = "DIFFSYNTH_ATTENTION_IMPLEMENTATION"
ATTENTION_BACKEND = "torch"
INSTALL_HINT = "needs the references environment (nox -s references)"

os.environ[ATTENTION_VARIABLE] = ATTENTION_BACKEND


def available() -> bool:
    return importlib.util.find_spec("diffsynth") is not None


def installed_version() -> str | None:
    try:
        return version("diffsynth")
    except PackageNotFoundError:
        return None


@cache
def load() -> SimpleNamespace:
    """The pieces of diffsynth this adapter drives (ImportError when it is not installed)."""
    from diffsynth.core.attention import attention
    from diffsynth.models.flux_vae import FluxVAEDecoder
    from diffsynth.models.z_image_dit import ZImageDiT
    from diffsynth.pipelines import z_image
    from diffsynth.utils.state_dict_converters.flux_vae import FluxVAEDecoderStateDictConverterDiffusers

    if attention.ATTENTION_IMPLEMENTATION != ATTENTION_BACKEND:
        raise RuntimeError(
            f"diffsynth was imported with the {attention.ATTENTION_IMPLEMENTATION!r} attention backend; parity "
            f"runs need {ATTENTION_VARIABLE}={ATTENTION_BACKEND} set before diffsynth is first imported"
        )
    return SimpleNamespace(
        ZImagePipeline=z_image.ZImagePipeline,
        ZImageDiT=ZImageDiT,
        FluxVAEDecoder=FluxVAEDecoder,
        VAEDecoderConverter=FluxVAEDecoderStateDictConverterDiffusers,
        PromptEmbedder=z_image.ZImageUnit_PromptEmbedder,
        ShapeChecker=z_image.ZImageUnit_ShapeChecker,
        NoiseInitializer=z_image.ZImageUnit_NoiseInitializer,
        PipelineUnit=z_image.PipelineUnit,
    )
