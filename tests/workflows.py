"""Small ComfyUI workflows built in the tests, in the shapes real files have: the official Z-Image-Turbo
template's (UI format, every node inside one subgraph whose inputs feed the inner widgets, links inside
the definition written as objects, the outer node's widgets shown from the inner nodes), the same
graph in the API format (ids `57:3`), and the node pack's example (flat, its encoder and
ZImageEmptyLatent)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SUBGRAPH_ID = "f0e1d2c3-0000-4000-8000-000000000001"
INPUT_TYPES = {"model": "MODEL", "positive": "CONDITIONING", "negative": "CONDITIONING", "conditioning": "CONDITIONING",
               "clip": "CLIP", "vae": "VAE", "samples": "LATENT", "latent_image": "LATENT"}


@dataclass
class Settings:
    prompt: str = "A cat sleeping"
    negative_prompt: str | None = None  # None: the positive zeroed
    seed: int = 0
    steps: int = 8
    cfg: float = 1.0
    sampler: str = "res_multistep"
    scheduler: str = "simple"
    denoise: float = 1.0
    shift: float = 3.0
    width: int = 1024
    height: int = 1024

    def fields(self) -> dict[str, Any]:
        """The case fields a reader should make of a workflow with these settings."""
        negative = {"negative_conditioning": "zeroed"} if self.negative_prompt is None else {
            "negative_conditioning": "encoded", "negative_prompt": self.negative_prompt}
        return {"prompt": self.prompt, **negative, "sampler": self.sampler, "steps": self.steps, "cfg": self.cfg,
                "seed": self.seed, "shift": self.shift, "denoise": self.denoise, "height": self.height,
                "width": self.width}


@dataclass
class Level:
    """One graph level of the UI format: the root lists links as arrays, a subgraph as objects."""

    objects: bool
    nodes: list[dict[str, Any]] = field(default_factory=list)
    links: list[Any] = field(default_factory=list)

    def link(self, origin: int, slot: int, target: int, target_slot: int, kind: str = "*") -> int:
        link_id = len(self.links) + 1
        if self.objects:
            self.links.append({"id": link_id, "origin_id": origin, "origin_slot": slot, "target_id": target,
                               "target_slot": target_slot, "type": kind})
        else:
            self.links.append([link_id, origin, slot, target, target_slot, kind])
        return link_id

    def add(self, node_id: int, kind: str, widgets: Any = (), mode: int = 0, outputs: tuple[str, ...] = (),
            **inputs: tuple[int, int]) -> dict[str, Any]:
        entries = []
        for k, (name, (origin, slot)) in enumerate(inputs.items()):
            entries.append({"name": name, "type": INPUT_TYPES.get(name, "*"),
                            "link": self.link(origin, slot, node_id, k, INPUT_TYPES.get(name, "*"))})
        node = {"id": node_id, "type": kind, "mode": mode, "inputs": entries,
                "outputs": [{"name": o, "type": o} for o in outputs],
                "widgets_values": widgets if isinstance(widgets, dict) else list(widgets)}
        self.nodes.append(node)
        return node


def official_shape(s: Settings) -> dict[str, Any]:
    inner = Level(objects=True)
    inner.add(30, "CLIPLoader", ["qwen_3_4b.safetensors", "lumina2", "default"])
    inner.add(29, "VAELoader", ["ae.safetensors"])
    inner.add(28, "UNETLoader", ["z_image_turbo_bf16.safetensors", "default"])
    inner.add(27, "CLIPTextEncode", [s.prompt], clip=(30, 0), text=(-10, 0))
    inner.add(13, "EmptySD3LatentImage", [s.width, s.height, 1], width=(-10, 1), height=(-10, 2))
    inner.add(11, "ModelSamplingAuraFlow", [s.shift], model=(28, 0))
    if s.negative_prompt is None:
        inner.add(33, "ConditioningZeroOut", conditioning=(27, 0))
    else:
        inner.add(33, "CLIPTextEncode", [s.negative_prompt], clip=(30, 0))
    inner.add(3, "KSampler", [s.seed, "randomize", s.steps, s.cfg, s.sampler, s.scheduler, s.denoise],
              model=(11, 0), positive=(27, 0), negative=(33, 0), latent_image=(13, 0), seed=(-10, 3), steps=(-10, 4))
    inner.add(8, "VAEDecode", samples=(3, 0), vae=(29, 0))
    inner.link(8, 0, -20, 0, "IMAGE")
    names = ("text", "width", "height", "seed", "steps")
    definition = {"id": SUBGRAPH_ID, "name": "Text to Image (Z-Image-Turbo)",
                  "inputs": [{"name": n, "type": "*"} for n in names], "outputs": [{"name": "IMAGE", "type": "IMAGE"}],
                  "nodes": inner.nodes, "links": inner.links}
    root = Level(objects=False)
    outer = root.add(57, SUBGRAPH_ID, outputs=("IMAGE",))
    outer["inputs"] = [{"name": "text", "type": "STRING", "widget": {"name": "text"}, "link": None}]
    outer["properties"] = {"proxyWidgets": [["27", "text"], ["13", "width"], ["13", "height"], ["3", "seed"]]}
    root.add(9, "SaveImage", ["z-image-turbo"], images=(57, 0))
    return {"nodes": root.nodes, "links": root.links, "definitions": {"subgraphs": [definition]}, "version": 0.4}


def api_shape(s: Settings) -> dict[str, Any]:
    def node(kind: str, **inputs: Any) -> dict[str, Any]:
        return {"class_type": kind, "inputs": inputs, "_meta": {"title": kind}}

    negative = node("ConditioningZeroOut", conditioning=["57:27", 0]) if s.negative_prompt is None else node(
        "CLIPTextEncode", text=s.negative_prompt, clip=["57:30", 0])
    return {
        "9": node("SaveImage", filename_prefix="z-image-turbo", images=["57:8", 0]),
        "57:30": node("CLIPLoader", clip_name="qwen_3_4b.safetensors", type="lumina2", device="default"),
        "57:29": node("VAELoader", vae_name="ae.safetensors"),
        "57:28": node("UNETLoader", unet_name="z_image_turbo_bf16.safetensors", weight_dtype="default"),
        "57:27": node("CLIPTextEncode", text=s.prompt, clip=["57:30", 0]),
        "57:13": node("EmptySD3LatentImage", width=s.width, height=s.height, batch_size=1),
        "57:11": node("ModelSamplingAuraFlow", shift=s.shift, model=["57:28", 0]),
        "57:33": negative,
        "57:3": node("KSampler", seed=s.seed, steps=s.steps, cfg=s.cfg, sampler_name=s.sampler, scheduler=s.scheduler,
                     denoise=s.denoise, model=["57:11", 0], positive=["57:27", 0], negative=["57:33", 0],
                     latent_image=["57:13", 0]),
        "57:8": node("VAEDecode", samples=["57:3", 0], vae=["57:29", 0]),
    }


PACK_TEXT = ["A cat sleeping", "", "none", "You are a photographer.", True, "Soft light.", "", "", False, True]


def pack_shape(
    width: int = 1024, height: int = 1024, encoder_widgets: list[Any] | None = None, turns: tuple[list[Any], ...] = ()
) -> Level:
    """The node pack's example: its encoder, zeroed, into a KSampler (euler, 9 steps) from ZImageEmptyLatent.
    With `turns` (each a `ZImageTurnBuilder`'s widgets), its multi-turn example: the encoder's
    conversation through the turn builders, the last wired to the CLIP, its conditioning sampled."""
    root = Level(objects=False)
    root.add(31, "UNETLoader", ["z_image_turbo_bf16.safetensors", "default"])
    root.add(11, "ModelSamplingAuraFlow", [3], model=(31, 0))
    root.add(18, "CLIPLoader", ["qwen_3_4b.safetensors", "lumina2", "default"])
    root.add(56, "ZImageTextEncoder", PACK_TEXT if encoder_widgets is None else encoder_widgets, clip=(18, 0))
    positive = (56, 0)
    for n, widgets in enumerate(turns):
        clip = {"clip": (18, 0)} if n == len(turns) - 1 else {}
        root.add(77 + n, "ZImageTurnBuilder", widgets, previous=(positive[0], 3 if n == 0 else 0), **clip)
        positive = (77 + n, 1)
    root.add(76, "ConditioningZeroOut", conditioning=positive)
    root.add(73, "ZImageEmptyLatent", [width, height, 1])
    root.add(74, "MarkdownNote", ["# Z-Image Empty Latent Note"])
    root.add(67, "PreviewAny", source=(56, 1))
    root.add(3, "KSampler", [6741, "fixed", 9, 1, "euler", "simple", 1],
             model=(11, 0), positive=positive, negative=(76, 0), latent_image=(73, 0))
    return root


def ui(level: Level) -> dict[str, Any]:
    return {"nodes": level.nodes, "links": level.links, "version": 0.4}
