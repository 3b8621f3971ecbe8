"""Case: one scenario's inputs, loaded from `fixtures/cases/*.toml` (`[[case]]` tables).

Every field an implementation may read lives here; a key the harness does not know is an error,
so a typo never silently falls back to a default.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from parity.core.errors import InputError, shown
from parity.core.files import read_toml
from parity.core.paths import check_case_id
from parity.models.context import DTYPES
from parity.stages import STAGES

ENCODERS = ("full", "simple", "turns")
NOISE = ("shared", "own")
# The sampler's update; pipelines that offer only one reject the other.
SAMPLERS = ("euler", "res_multistep")
# What a ComfyUI graph wires to the sampler's negative: the positive zeroed (the official Z-Image-Turbo
# workflow) or the negative prompt encoded. Pipelines that take a negative prompt always encode it.
NEGATIVE_CONDITIONING = ("zeroed", "encoded")
# 16 pixels make a 2x2 latent, the DiT's one 2x2 patch; below that the shared latent
# (2 * (size // 16) per side, as diffusers draws it) is empty and no implementation can sample.
MIN_SIZE = 16
# A memory bound, checked before anything is allocated: 4096 pixels make a 512x512 latent, 65,536
# image tokens in the DiT's joint attention (16x the tokens, 256x the attention of the 1024 px
# ZImagePipeline defaults to). The DiT's RoPE tables (axes_lens: 512 patches per image axis) place
# nothing past 8192 px at all.
MAX_SIZE = 4096
# The flow-matching schedulers' num_train_timesteps: ComfyUI's sigma table has 1000 entries (its
# `simple` scheduler repeats one at 1001 steps, a step of length 0), diffusers' scheduler is built
# with num_train_timesteps=1000. More steps than training timesteps have no meaning.
MAX_STEPS = 1000
# torch.Generator.manual_seed takes 0..2**64-1, the range ComfyUI's seed widget offers too.
MAX_SEED = 2**64 - 1


@dataclass(frozen=True)
class Message:
    role: str
    content: str
    thinking: str | None = None


@dataclass(frozen=True)
class Case:
    id: str
    prompt: str | None = None
    messages: tuple[Message, ...] | None = None
    system_prompt: str | None = None
    thinking: str | None = None
    assistant: str | None = None
    encoder: str = "full"
    # None means "the implementation's own default", which is itself something we compare.
    add_think_block: bool | None = None
    filter_padding: bool | None = None
    template: str | None = None
    raw_prompt: bool = False
    trigger_words: str | None = None
    strip_key_quotes: bool = False
    negative_prompt: str = ""
    height: int = 1024
    width: int = 1024
    steps: int = 8
    shift: float = 3.0
    denoise: float = 1.0
    seed: int = 0
    cfg: float = 1.0
    dtype: str = "fp32"
    # "shared": every adapter starts from diffusers' draw for the seed; "own": each draws its own way.
    noise: str = "shared"
    # Extra diffusers guidance options (ignored by implementations that have none).
    cfg_normalization: float = 0.0
    cfg_truncation: float = 1.0
    sampler: str = "euler"
    # Only with guidance (cfg > 1); ignored by implementations that always encode the negative prompt.
    negative_conditioning: str = "zeroed"
    description: str = ""
    # The stages this case exercises (default: all); text-only cases skip the costly sampler.
    stages: tuple[str, ...] = STAGES
    source: Path | None = field(default=None, compare=False)

    @property
    def user_text(self) -> str:
        """The text of the (last) user turn: what single-prompt implementations encode."""
        if self.prompt is not None:
            return self.prompt
        users = [m.content for m in self.messages or () if m.role == "user"]
        return users[-1] if users else ""

    @property
    def is_plain_prompt(self) -> bool:
        """True when the case is one user prompt with nothing a plain pipeline cannot express."""
        return (
            self.prompt is not None
            and self.system_prompt is None
            and self.thinking is None
            and self.assistant is None
            and self.template is None
            and not self.raw_prompt
            and self.trigger_words is None
            and not self.strip_key_quotes
            and self.encoder == "full"
        )

    def negative(self) -> Case:
        """The negative prompt as a case of its own, encoded the same way as the positive."""
        return replace(self, id=f"{self.id}#negative", prompt=self.negative_prompt, messages=None,
                       system_prompt=None, thinking=None, assistant=None, template=None,
                       raw_prompt=False, trigger_words=None)

    def content_hash(self) -> str:
        """sha256 of the case's inputs: fixtures record it so a changed case reads as stale."""
        data = asdict(self)
        data.pop("source")
        for key in _HASHED_WHEN_SET:
            if data[key] == _DEFAULTS[key]:
                del data[key]
        blob = json.dumps(data, sort_keys=True, ensure_ascii=False).encode()
        return hashlib.sha256(blob).hexdigest()


_KEYS = {f.name for f in fields(Case)} - {"source"}
_DEFAULTS = {f.name: f.default for f in fields(Case)}
# Keys added after fixtures were recorded: at their default they stay out of the hash, so a case that
# does not set them keeps the hash its fixtures were recorded under.
_HASHED_WHEN_SET = ("sampler", "negative_conditioning")
_TYPES: dict[str, tuple[type, ...]] = {
    "id": (str,), "prompt": (str,), "messages": (list,), "system_prompt": (str,),
    "thinking": (str,), "assistant": (str,), "encoder": (str,), "add_think_block": (bool,),
    "filter_padding": (bool,), "template": (str,), "raw_prompt": (bool,),
    "trigger_words": (str,), "strip_key_quotes": (bool,), "negative_prompt": (str,),
    "height": (int,), "width": (int,), "steps": (int,), "shift": (int, float),
    "denoise": (int, float), "seed": (int,), "cfg": (int, float), "dtype": (str,),
    "description": (str,), "stages": (list,), "noise": (str,),
    "cfg_normalization": (int, float), "cfg_truncation": (int, float), "sampler": (str,),
    "negative_conditioning": (str,),
}


def _message(raw: Any, where: str) -> Message:
    if not isinstance(raw, dict):
        raise InputError(f"{where}: each message must be a table with role and content")
    unknown = set(raw) - {"role", "content", "thinking"}
    if unknown:
        raise InputError(f"{where}: unknown message key {sorted(unknown)[0]!r}")
    if not isinstance(raw.get("role"), str) or not isinstance(raw.get("content"), str):
        raise InputError(f"{where}: a message needs string 'role' and 'content'")
    if raw["role"] not in ("system", "user", "assistant"):
        raise InputError(f"{where}: message role must be system, user or assistant, not {raw['role']!r}")
    thinking = raw.get("thinking")
    if thinking is not None and not isinstance(thinking, str):
        raise InputError(f"{where}: message 'thinking' must be a string")
    return Message(raw["role"], raw["content"], thinking)


def parse_case(raw: dict[str, Any], source: Path) -> Case:
    """Validate one `[[case]]` table; every problem names the file, the case and the key."""
    raw_id = raw.get("id", "?")
    where = f"{source.name}: case {shown(raw_id) if isinstance(raw_id, str) else '?'}"
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r}")
    if "id" not in raw:
        raise InputError(f"{source.name}: a case has no 'id'")
    for key, value in raw.items():
        ok = _TYPES[key]
        if not isinstance(value, ok) or (bool not in ok and isinstance(value, bool)):
            names = " or ".join(t.__name__ for t in ok)
            raise InputError(f"{where}: {key!r} must be {names}, got {type(value).__name__}")
    check_case_id(raw["id"], source.name)
    if ("prompt" in raw) == ("messages" in raw):
        raise InputError(f"{where}: give exactly one of 'prompt' or 'messages'")
    values = dict(raw)
    if "messages" in values:
        values["messages"] = tuple(_message(m, where) for m in values["messages"])
        if not values["messages"]:
            raise InputError(f"{where}: 'messages' must hold at least one message")
    if "stages" in values:
        unknown_stages = [st for st in values["stages"] if st not in STAGES]
        if unknown_stages or not values["stages"]:
            raise InputError(f"{where}: 'stages' must list stages from {', '.join(STAGES)}")
        values["stages"] = tuple(st for st in STAGES if st in values["stages"])
    for key in ("shift", "denoise", "cfg", "cfg_normalization", "cfg_truncation"):
        if key in values:
            values[key] = float(values[key])
    case = Case(**values, source=source)
    if case.encoder not in ENCODERS:
        raise InputError(f"{where}: encoder must be one of {', '.join(ENCODERS)}, not {case.encoder!r}")
    if case.noise not in NOISE:
        raise InputError(f"{where}: noise must be one of {', '.join(NOISE)}, not {case.noise!r}")
    if case.sampler not in SAMPLERS:
        raise InputError(f"{where}: sampler must be one of {', '.join(SAMPLERS)}, not {case.sampler!r}")
    if case.negative_conditioning not in NEGATIVE_CONDITIONING:
        allowed = ", ".join(NEGATIVE_CONDITIONING)
        raise InputError(f"{where}: negative_conditioning must be one of {allowed}, not {case.negative_conditioning!r}")
    if case.cfg < 1:
        raise InputError(f"{where}: cfg must be at least 1 (1.0 = guidance off)")
    if case.dtype not in DTYPES:
        raise InputError(f"{where}: dtype must be one of {', '.join(DTYPES)}, not {case.dtype!r}")
    if case.height <= 0 or case.width <= 0:
        raise InputError(f"{where}: height and width must be positive")
    if case.height < MIN_SIZE or case.width < MIN_SIZE:
        raise InputError(f"{where}: height and width must be at least {MIN_SIZE} pixels (one 2x2 latent patch)")
    if case.height > MAX_SIZE or case.width > MAX_SIZE:
        raise InputError(
            f"{where}: height and width must be at most {MAX_SIZE} pixels (a 512x512 latent, 65,536 image tokens)"
        )
    if case.steps < 1:
        raise InputError(f"{where}: steps must be at least 1")
    if case.steps > MAX_STEPS:
        raise InputError(f"{where}: steps must be at most {MAX_STEPS} (the schedulers' training timesteps)")
    for key in ("shift", "denoise", "cfg", "cfg_normalization", "cfg_truncation"):
        if not math.isfinite(getattr(case, key)):
            raise InputError(f"{where}: {key} must be a finite number")
    if case.shift <= 0:
        raise InputError(f"{where}: shift must be positive")
    if not 0 < case.denoise <= 1:
        raise InputError(f"{where}: denoise must be in (0, 1]")
    # ComfyUI's KSampler schedules int(steps / denoise) steps and keeps the last `steps`: the same bound applies.
    if case.steps / case.denoise > MAX_STEPS:
        raise InputError(
            f"{where}: steps / denoise must be at most {MAX_STEPS} (ComfyUI schedules int(steps / denoise) steps)"
        )
    # torch would take -1 as 2**64 - 1, but ComfyUI's widget cannot express a negative seed and the
    # case hash would tell two spellings of one draw apart: a negative seed is refused, not wrapped.
    if case.seed < 0:
        raise InputError(f"{where}: seed must not be negative (torch would take {case.seed} as {case.seed % 2**64})")
    if case.seed > MAX_SEED:
        raise InputError(f"{where}: seed must be at most 2**64 - 1 (what torch.Generator.manual_seed takes)")
    return case


def load_case_file(path: Path) -> list[Case]:
    data = read_toml(path, "case file")
    unknown = sorted(set(data) - {"case"})
    if unknown:
        raise InputError(f"{path.name}: unknown top-level key {unknown[0]!r} (cases go in [[case]] tables)")
    tables = data.get("case", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise InputError(f"{path.name}: 'case' must be an array of tables, each one written [[case]]")
    if not tables:
        raise InputError(f"{path.name}: no [[case]] tables")
    return [parse_case(t, path) for t in tables]


def load_cases(directory: Path, pattern: str = "*") -> list[Case]:
    """All cases under `directory` whose id or file stem matches the glob `pattern`."""
    files = sorted(directory.glob("*.toml"))
    if not files:
        raise InputError(f"no case files (*.toml) in {directory}")
    cases: list[Case] = []
    seen: dict[str, Path] = {}
    for path in files:
        for case in load_case_file(path):
            if case.id in seen:
                raise InputError(f"duplicate case id {case.id!r} in {seen[case.id].name} and {path.name}")
            seen[case.id] = path
            if fnmatch.fnmatchcase(case.id, pattern) or fnmatch.fnmatchcase(path.stem, pattern):
                cases.append(case)
    if not cases:
        raise InputError(f"no case matches {pattern!r} in {directory}")
    return cases
