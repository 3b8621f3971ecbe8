"""What the DiT is handed during a run, seen from outside: global module hooks, no adapter's help.

Every Z-Image DiT layout (diffusers', DiffSynth's, ComfyUI's, this project's) has a time embedder
under the name `t_embedder`, and DiffSynth's Turbo model function calls that embedder directly
without calling the DiT itself. So the watch recognises:
- a DiT call: a module with a `t_embedder` child is called; its first argument is the latent (or
  a list of per-sample latents), whose last two dimensions are recorded;
- a time-embedder call: that child (or any module whose class is a `TimestepEmbedder`) is called;
  recorded are the time values it is handed (`model_t * 1000`), their dtype, the dtype of every
  linear layer's input inside it (a torch-function mode open for exactly that call: the dtype the
  time MLP computes in, which a cast inside the embedder would otherwise hide), and the dtype it
  returns. A call that raises (an adapter's own hook stopping the model there) is marked unfinished.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.overrides import TorchFunctionMode

TIME_EMBEDDER_ATTRIBUTE = "t_embedder"
TIME_EMBEDDER_CLASS = "TimestepEmbedder"


@dataclass
class TimeCall:
    values: list[float]
    input_dtype: torch.dtype
    compute_dtypes: tuple[torch.dtype, ...] = ()
    finished: bool = False

    @property
    def samples(self) -> int:
        return len(self.values)


@dataclass
class DiTLog:
    time_calls: list[TimeCall] = field(default_factory=list)
    latent_sizes: list[tuple[int, int]] = field(default_factory=list)

    @property
    def finished_calls(self) -> list[TimeCall]:
        return [c for c in self.time_calls if c.finished]

    @property
    def samples(self) -> int:
        """How many samples the time embedder embedded: one per DiT pass (a batch of two counts two)."""
        return sum(c.samples for c in self.finished_calls)

    def compute_dtypes(self) -> list[torch.dtype]:
        return sorted({d for c in self.finished_calls for d in c.compute_dtypes}, key=str)


class _LinearDtypes(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.dtypes: list[torch.dtype] = []

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if "linear" in getattr(func, "__name__", "") and args and isinstance(args[0], torch.Tensor):
            self.dtypes.append(args[0].dtype)
        return func(*args, **(kwargs or {}))


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (list, tuple)) and value:
        return _first_tensor(value[0])
    return None


@contextmanager
def watch_dit() -> Iterator[DiTLog]:
    """Record every DiT and time-embedder call made inside the block."""
    log = DiTLog()
    embedders: set[int] = set()
    open_calls: list[tuple[torch.nn.Module, TimeCall, _LinearDtypes]] = []

    def close(module: torch.nn.Module, output: Any) -> None:
        while open_calls:
            seen, call, mode = open_calls.pop()
            mode.__exit__(None, None, None)
            call.compute_dtypes = tuple(dict.fromkeys(mode.dtypes))
            if seen is module:
                call.finished = isinstance(output, torch.Tensor)
                return

    def before(module: torch.nn.Module, args: tuple) -> None:
        child = getattr(module, TIME_EMBEDDER_ATTRIBUTE, None)
        if isinstance(child, torch.nn.Module):
            embedders.add(id(child))
            latent = _first_tensor(args[0]) if args else None
            if latent is not None and latent.ndim >= 3:
                log.latent_sizes.append((int(latent.shape[-2]), int(latent.shape[-1])))
        if type(module).__name__ == TIME_EMBEDDER_CLASS:
            embedders.add(id(module))
        if id(module) in embedders and args and isinstance(args[0], torch.Tensor):
            t = args[0].detach()
            call = TimeCall(values=t.reshape(-1).to("cpu", torch.float64).tolist(), input_dtype=t.dtype)
            log.time_calls.append(call)
            mode = _LinearDtypes()
            mode.__enter__()
            open_calls.append((module, call, mode))

    def after(module: torch.nn.Module, args: tuple, output: Any) -> None:
        if any(seen is module for seen, _, _ in open_calls):
            close(module, output)

    handles = [register_module_forward_pre_hook(before), register_module_forward_hook(after, always_call=True)]
    try:
        yield log
    finally:
        for handle in handles:
            handle.remove()
        while open_calls:
            _, _, mode = open_calls.pop()
            mode.__exit__(None, None, None)
