"""The installed `diffsynth_engine` (DiffSynth-Engine), its Z-Image pieces only, imported lazily.

It lives in the references environment (`nox -s references`), installed with `--no-deps` beside
what its Z-Image path imports (`pyproject.toml`'s `diffsynth-engine` group). Checked with
diffsynth-engine 0.7.0 on torch 2.14.1 and transformers 5.23.0.

Importing it as a package cannot work here, so `load()` imports the Z-Image modules directly and
makes four changes, all in this file, none of them to what runs on the Z-Image path:
- `diffsynth_engine`, `diffsynth_engine.pipelines` and `diffsynth_engine.tokenizers` are entered as
  bare packages (their real folders, their `__init__` not run): those import every pipeline and
  tokenizer, with video, audio, 3D and image-processing libraries the Z-Image path never touches.
  `pipelines/z_image.py` takes `BasePipeline` and `LoRAStateDictConverter` from the package, so
  the bare one is given them from `pipelines/base.py`;
- `diffsynth_engine.utils.download` (ModelScope and HTTP downloads, used only to fetch missing model
  files) is replaced by a module whose functions refuse: nothing may download at run time;
- `torch.distributed.tensor.parallel._utils`, which `utils/parallel.py` imports for tensor
  parallelism and this torch no longer has, gets a stand-in with that one function;
- `models/z_image/qwen3.py` calls transformers' `create_causal_mask` with the keyword names of an
  older transformers (`input_embeds`, `cache_position`); its module-level name is bound to a wrapper
  that renames the one and drops the other, which transformers 5 computes itself.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
import types
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

PACKAGE = "diffsynth_engine"
INSTALL_HINT = "needs the references environment (nox -s references)"


def available() -> bool:
    return importlib.util.find_spec(PACKAGE) is not None


def installed_version() -> str | None:
    try:
        return version("diffsynth-engine")
    except PackageNotFoundError:
        return None


def _bare_package(name: str, folder: Path) -> types.ModuleType:
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(
            name, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        module = importlib.util.module_from_spec(spec)  # created, not executed
        sys.modules[name] = module
    return module


def _refuse_download(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("DiffSynth-Engine asked to download a model file; parity runs never download")


def _stand_ins() -> None:
    root = Path(importlib.util.find_spec(PACKAGE).origin).parent
    _bare_package(PACKAGE, root)
    _bare_package(f"{PACKAGE}.tokenizers", root / "tokenizers")
    download = types.ModuleType(f"{PACKAGE}.utils.download")
    for name in ("fetch_model", "fetch_modelscope_model", "fetch_civitai_model", "fetch_file"):
        setattr(download, name, _refuse_download)
    sys.modules.setdefault(download.__name__, download)
    try:
        import torch.distributed.tensor.parallel._utils  # noqa: F401
    except ModuleNotFoundError:
        tensor_parallel = types.ModuleType("torch.distributed.tensor.parallel._utils")

        def _validate_tp_mesh_dim(device_mesh: Any) -> None:
            if device_mesh.ndim > 1:
                raise ValueError("tensor parallelism takes a one-dimensional device mesh")

        tensor_parallel._validate_tp_mesh_dim = _validate_tp_mesh_dim
        sys.modules[tensor_parallel.__name__] = tensor_parallel
    pipelines = _bare_package(f"{PACKAGE}.pipelines", root / "pipelines")
    from diffsynth_engine.pipelines.base import BasePipeline, LoRAStateDictConverter

    pipelines.BasePipeline, pipelines.LoRAStateDictConverter = BasePipeline, LoRAStateDictConverter


@cache
def load() -> types.SimpleNamespace:
    """The pieces of DiffSynth-Engine this adapter drives (ImportError when it is not installed)."""
    # Its loggers get a handler on the stream stderr is when each is created, and print which
    # attention kernels exist on import: created here, they print nowhere (stderr carries the run's
    # progress).
    with contextlib.redirect_stderr(io.StringIO()):
        _stand_ins()
        from diffsynth_engine.configs import ZImagePipelineConfig
        from diffsynth_engine.models.flux import FluxVAEDecoder
        from diffsynth_engine.models.z_image import Qwen3Model, ZImageDiT
        from diffsynth_engine.models.z_image import qwen3 as qwen3_module
        from diffsynth_engine.pipelines import z_image
        from diffsynth_engine.tokenizers.qwen2 import Qwen2TokenizerFast
        from diffsynth_engine.utils.constants import Z_IMAGE_TOKENIZER_CONF_PATH

    causal_mask = qwen3_module.create_causal_mask

    def renamed(*, input_embeds: Any, cache_position: Any = None, **kwargs: Any) -> Any:
        return causal_mask(inputs_embeds=input_embeds, **kwargs)

    qwen3_module.create_causal_mask = renamed
    return types.SimpleNamespace(
        ZImagePipeline=z_image.ZImagePipeline,
        ZImagePipelineConfig=ZImagePipelineConfig,
        ZImageDiT=ZImageDiT,
        Qwen3Model=Qwen3Model,
        FluxVAEDecoder=FluxVAEDecoder,
        Qwen2TokenizerFast=Qwen2TokenizerFast,
        tokenizer_folder=Path(Z_IMAGE_TOKENIZER_CONF_PATH),
    )
