"""A ComfyUI workflow file (UI or API format, subgraphs included) read into a case: the
`zimage_parity.workflow_readers` entry point `comfyui`.

From the one sampler node it follows the wiring back: the positive to its text encoder (the prompt),
the negative to a `ConditioningZeroOut` of the positive (`negative_conditioning = "zeroed"`, as the
official workflow does) or to an encoder of its own (`"encoded"` with its `negative_prompt`), the
latent to its empty-latent node (the size), the model to `ModelSamplingAuraFlow` (the shift). Values
come from widgets, or through links from primitive nodes, reroutes and subgraph inputs. The node
pack QwenImageWanBridge's encoders and `ZImageEmptyLatent` are read too: its example workflows
use them. Every other node is reported as not understood, except plumbing that cannot change the
case (loaders, decoding, saving and previewing, notes). The node names and widget orders are
ComfyUI's (`nodes.py`, `comfy_extras/`) and the pack's (`nodes/z_image_encoder.py`,
`nodes/qwen_vl_helpers.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from implementations.comfyui_style import workflow_graph
from implementations.comfyui_style.workflow_encoders import (
    ENCODERS,
    NEGATIVE_KEEPS,
    TURN_BUILDER,
    TURN_WIDGETS,
    conversation_fields,
    encoder_fields,
)
from implementations.comfyui_style.workflow_graph import Constant, Graph, Node
from parity.core.errors import InputError, shown
from parity.suite.workflow_reader import WorkflowCase

CONTROL = "control_after_generate"  # the front end's widget after every seed
SAMPLERS = ("KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced")
LATENTS = ("EmptySD3LatentImage", "EmptyLatentImage", "ZImageEmptyLatent")
# The case's `sampler` values: ComfyUI's names for the two samplers the adapters implement.
CASE_SAMPLERS = ("euler", "res_multistep")
WIDGETS: dict[str, tuple[str, ...]] = {
    "KSampler": ("seed", CONTROL, "steps", "cfg", "sampler_name", "scheduler", "denoise"),
    "KSamplerAdvanced": (
        "add_noise", "noise_seed", CONTROL, "steps", "cfg", "sampler_name", "scheduler",
        "start_at_step", "end_at_step", "return_with_leftover_noise",
    ),
    "SamplerCustom": ("add_noise", "noise_seed", CONTROL, "cfg"),
    "KSamplerSelect": ("sampler_name",),
    "BasicScheduler": ("scheduler", "steps", "denoise"),
    "RandomNoise": ("noise_seed", CONTROL),
    "CFGGuider": ("cfg",),
    "ModelSamplingAuraFlow": ("shift",),
    "EmptySD3LatentImage": ("width", "height", "batch_size"),
    "EmptyLatentImage": ("width", "height", "batch_size"),
    "ZImageEmptyLatent": ("width", "height", "batch_size"),
    "PrimitiveNode": ("value", CONTROL),
    "PrimitiveInt": ("value", CONTROL),
    **{kind: ("value",) for kind in ("PrimitiveFloat", "PrimitiveString", "PrimitiveStringMultiline")},
    "PrimitiveBoolean": ("value",),
    **{kind: encoder.widgets for kind, encoder in ENCODERS.items()},
    TURN_BUILDER: TURN_WIDGETS,
}
PRIMITIVES = tuple(kind for kind in WIDGETS if kind.startswith("Primitive"))
# Nodes that cannot change what the case holds: they load the files a run is given separately,
# or act on the image after sampling, or are comments.
PLUMBING = (
    "UNETLoader", "CLIPLoader", "VAELoader", "CheckpointLoaderSimple", "VAEDecode", "SaveImage",
    "PreviewImage", "PreviewAny", "Note", "MarkdownNote", "Reroute",
)
LOADERS = ("UNETLoader", "CheckpointLoaderSimple")
UNDERSTOOD = frozenset((*WIDGETS, *PLUMBING, "SamplerCustomAdvanced", "BasicGuider", "ConditioningZeroOut"))
# The order the case file lists the fields in: the prompt, its encoding, then the sampler's.
ORDER = (
    "prompt", "encoder", "messages", "raw_prompt", "system_prompt", "template", "thinking", "assistant",
    "trigger_words", "add_think_block", "strip_key_quotes", "filter_padding", "negative_conditioning",
    "negative_prompt", "sampler", "steps", "cfg", "seed", "shift", "denoise", "height", "width",
)
# ComfyUI's Z-Image model config (`comfy/supported_models.py`, `ZImage.sampling_settings`).
MODEL_SHIFT = 3.0
# The pack's ZImageEmptyLatent widget range: its rounding is only defined inside it.
PACK_LATENT_RANGE = (16, 8192)


@dataclass(frozen=True)
class _Sampling:
    """One sampler's settings, whichever node family holds them, and the inputs to follow."""

    node: Node
    seed: int
    steps: int
    cfg: float
    sampler: str
    scheduler: str
    denoise: float
    models: tuple[tuple[Node, str], ...]
    positive: tuple[Node, str]
    negative: tuple[Node, str] | None
    latent: tuple[Node, str]


class _Reader:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.notes: list[str] = []

    def source(self, node: Node, name: str) -> Node:
        """The node that makes `node`'s linked input `name`."""
        link = node.links.get(name)
        found = self.graph.source(link) if link is not None else None
        if not isinstance(found, tuple):
            raise InputError(f"{node.label}: its input {shown(name)} is not connected")
        return found[0]

    def upstream(self, node: Node, name: str, *kinds: str) -> Node:
        found = self.source(node, name)
        if found.type not in kinds:
            raise InputError(
                f"{node.label}: its {name} comes from {found.label}; the reader reads it only from {', '.join(kinds)}"
            )
        return found

    def raw(self, node: Node, name: str) -> Any:
        """The value of `node`'s widget input `name`: its own, or what a primitive node or a subgraph's
        outer node gives it."""
        asked, seen = f"{node.label}: its {name}", set()
        while (link := node.links.get(name)) is not None and isinstance(found := self.graph.source(link), tuple):
            source = found[0]
            if source.type not in PRIMITIVES:
                raise InputError(f"{asked} comes from {source.label}, which the reader does not understand")
            if source.id in seen:
                raise InputError(f"{asked} comes from primitive nodes that feed each other")
            seen.add(source.id)
            node, name = source, "value"
        if link is not None and isinstance(found, Constant):
            return found.value
        # Unlinked, or a subgraph input its outer node leaves alone: the widget's own value.
        if name not in node.widgets:
            raise InputError(f"{asked} has no value")
        return node.widgets[name]

    def value(self, node: Node, name: str, kind: type) -> Any:
        value = self.raw(node, name)
        numeric = kind is float and isinstance(value, int | float)
        if isinstance(value, bool) != (kind is bool) or not (isinstance(value, kind) or numeric):
            raise InputError(f"{node.label}: its {name} must be {kind.__name__}, not {shown(value)}")
        return float(value) if numeric else value

    def seed(self, node: Node, name: str) -> int:
        control = node.widgets.get(CONTROL)
        link = node.links.get(name)
        own = link is None or self.graph.source(link) is None
        if own and control in ("randomize", "increment", "decrement"):
            self.notes.append(f"{node.label}: seed control {control!r}: ComfyUI draws a new seed after each run, "
                              "so the saved seed is the one the next run uses")
        return self.value(node, name, int)

    def sampling(self, node: Node) -> _Sampling:
        v = self.value
        if node.type == "KSampler":
            return _Sampling(node, self.seed(node, "seed"), v(node, "steps", int), v(node, "cfg", float),
                             v(node, "sampler_name", str), v(node, "scheduler", str), v(node, "denoise", float),
                             ((node, "model"),), (node, "positive"), (node, "negative"), (node, "latent_image"))
        if node.type == "KSamplerAdvanced":
            steps = v(node, "steps", int)
            if v(node, "add_noise", str) != "enable":
                raise InputError(f"{node.label}: add_noise is off; a case always starts from noise")
            start, end = v(node, "start_at_step", int), v(node, "end_at_step", int)
            if start != 0 or end < steps:
                raise InputError(f"{node.label}: it samples steps {start} to {end} of {steps}; a case samples them all")
            return _Sampling(node, self.seed(node, "noise_seed"), steps, v(node, "cfg", float),
                             v(node, "sampler_name", str), v(node, "scheduler", str), 1.0,
                             ((node, "model"),), (node, "positive"), (node, "negative"), (node, "latent_image"))
        picked = self.upstream(node, "sampler", "KSamplerSelect")
        sigmas = self.upstream(node, "sigmas", "BasicScheduler")
        common = dict(steps=v(sigmas, "steps", int), sampler=v(picked, "sampler_name", str),
                      scheduler=v(sigmas, "scheduler", str), denoise=v(sigmas, "denoise", float),
                      latent=(node, "latent_image"))
        if node.type == "SamplerCustom":
            if not v(node, "add_noise", bool):
                raise InputError(f"{node.label}: add_noise is off; a case always starts from noise")
            return _Sampling(node, seed=self.seed(node, "noise_seed"), cfg=v(node, "cfg", float),
                             models=((node, "model"), (sigmas, "model")), positive=(node, "positive"),
                             negative=(node, "negative"), **common)
        noise = self.upstream(node, "noise", "RandomNoise")
        guider = self.upstream(node, "guider", "CFGGuider", "BasicGuider")
        models = ((guider, "model"), (sigmas, "model"))
        if guider.type == "BasicGuider":
            self.notes.append(f"{guider.label}: no negative (guidance off, cfg 1)")
            return _Sampling(node, seed=self.seed(noise, "noise_seed"), cfg=1.0, models=models,
                             positive=(guider, "conditioning"), negative=None, **common)
        return _Sampling(node, seed=self.seed(noise, "noise_seed"), cfg=v(guider, "cfg", float), models=models,
                         positive=(guider, "positive"), negative=(guider, "negative"), **common)

    def shift(self, inputs: tuple[tuple[Node, str], ...]) -> float:
        found = {self.model_shift(node, name) for node, name in inputs}
        if len(found) > 1:
            raise InputError(f"the sampler's models are shifted differently ({', '.join(map(str, sorted(found)))})")
        return found.pop()

    def model_shift(self, node: Node, name: str) -> float:
        """The shift of the nearest ModelSamplingAuraFlow upstream: the patch applied last wins."""
        seen: set[str] = set()
        current = self.source(node, name)
        while current.type != "ModelSamplingAuraFlow":
            if current.id in seen:
                raise InputError(f"the sampler's model comes round in a cycle through {current.label}")
            seen.add(current.id)
            if current.type in LOADERS or "model" not in current.links:
                self.notes.append(f"no ModelSamplingAuraFlow between {current.label} and the sampler: "
                                  f"the model's own shift, {MODEL_SHIFT}")
                return MODEL_SHIFT
            current = self.source(current, "model")
        return self.value(current, "shift", float)

    def latent(self, sampling: _Sampling) -> dict[str, int]:
        node = self.upstream(*sampling.latent, *LATENTS)
        width, height, batch = (self.value(node, key, int) for key in ("width", "height", "batch_size"))
        if batch != 1:
            self.notes.append(f"{node.label}: batch_size {batch}; the case is the batch's first image")
        if node.type == "ZImageEmptyLatent":
            low, high = PACK_LATENT_RANGE
            if not (low <= width <= high and low <= height <= high):
                raise InputError(f"{node.label}: {width}x{height} is outside the node's range {low} to {high}")
            # The node's own arithmetic, Python's round-half-to-even included (1000 becomes 992).
            aligned = [max(16, round(size / 16) * 16) for size in (width, height)]
            rounded = f"rounds {width}x{height} to" if aligned != [width, height] else "keeps"
            self.notes.append(f"latent: {node.label}, which {rounded} {aligned[0]}x{aligned[1]} (multiples of 16)")
            width, height = aligned
        else:
            self.notes.append(f"latent: {node.label}, {width}x{height}")
        return {"height": height, "width": width}

    def conditioning(self, sampling: _Sampling) -> dict[str, Any]:
        positive = self.source(*sampling.positive)
        if positive.type == TURN_BUILDER:
            fields = conversation_fields(self, positive)
        elif positive.type in ENCODERS:
            fields = encoder_fields(self, positive)
        else:
            raise InputError(
                f"the positive comes from {positive.label}; the reader reads {', '.join([*ENCODERS, TURN_BUILDER])}"
            )
        if sampling.negative is None:
            return fields
        negative = self.source(*sampling.negative)
        if negative.type == "ConditioningZeroOut":
            zeroed = self.source(negative, "conditioning")
            if zeroed is not positive:
                raise InputError(f"{negative.label} zeroes {zeroed.label}, not the positive's {positive.label}")
            return {**fields, "negative_conditioning": "zeroed"}
        if negative.type not in ENCODERS:
            raise InputError(
                f"the negative comes from {negative.label}; the reader reads ConditioningZeroOut or an encoder"
            )
        encoded = encoder_fields(self, negative)
        kept = {k: v for k, v in fields.items() if k in NEGATIVE_KEEPS}
        if negative.type != positive.type or {k: v for k, v in encoded.items() if k != "prompt"} != kept:
            raise InputError(f"the negative ({negative.label}) is encoded differently from the positive "
                             f"({positive.label}); a case encodes both one way")
        return {**fields, "negative_conditioning": "encoded", "negative_prompt": encoded["prompt"]}


def _graph(data: Any) -> Graph | None:
    if isinstance(data, dict) and "nodes" in data:
        return workflow_graph.read_ui(data, WIDGETS)
    if workflow_graph.is_api_format(data):
        return workflow_graph.read_api(data)
    return None


def read_workflow(data: Any) -> WorkflowCase | None:
    graph = _graph(data)
    if graph is None:
        return None
    nodes = [n for n in graph.nodes.values() if not n.structural]
    running = [n for n in nodes if n.type in SAMPLERS and n.mode not in (workflow_graph.MUTED, workflow_graph.BYPASSED)]
    unknown = [n for n in nodes if n.type not in UNDERSTOOD]
    if not running:
        others = f"; not understood: {', '.join(n.label for n in unknown[:3])}" if unknown else ""
        raise InputError(f"the workflow has no sampler node (the reader reads {', '.join(SAMPLERS)}){others}")
    if len(running) > 1:
        raise InputError(f"the workflow has {len(running)} sampler nodes ({', '.join(n.label for n in running[:4])}); "
                         "a case is one sampler's")
    reader = _Reader(graph)
    sampling = reader.sampling(running[0])
    if sampling.sampler not in CASE_SAMPLERS:
        raise InputError(f"{sampling.node.label}: sampler {shown(sampling.sampler)}; a case samples with "
                         f"{' or '.join(CASE_SAMPLERS)}")
    fields = {
        **reader.conditioning(sampling),
        "sampler": sampling.sampler, "steps": sampling.steps, "cfg": sampling.cfg, "seed": sampling.seed,
        "shift": reader.shift(sampling.models), "denoise": sampling.denoise, **reader.latent(sampling),
    }
    notes = [f"scheduler {shown(sampling.scheduler)}: the case format has no scheduler key", *reader.notes]
    mode = {workflow_graph.MUTED: " (muted)", workflow_graph.BYPASSED: " (bypassed)"}
    return WorkflowCase(
        fields=dict(sorted(fields.items(), key=lambda item: ORDER.index(item[0]))),
        summary=f"{sampling.node.label}, {sampling.steps} steps of {sampling.sampler} ({sampling.scheduler[:40]})",
        not_understood=tuple(f"{n.label}{mode.get(n.mode, '')}" for n in unknown),
        notes=tuple(dict.fromkeys(notes)),
    )
