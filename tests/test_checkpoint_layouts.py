"""`--checkpoint` takes a diffusers folder or a folder of ComfyUI single files, detected in one place."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from parity.cli import main
from parity.core.errors import InputError
from parity.models.checkpoint import detect
from parity.models.context import Context
from parity.models.dit_weights import INDEX_FILE, tiny_dit_config, tiny_dit_state_dict
from parity.models.export import export_comfyui, export_diffusers
from parity.models.text_encoder_weights import build_tiny_text_encoder, weights_sha256

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def comfy(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("layouts") / "comfy"
    export_comfyui(folder)
    return folder


def test_detect_names_the_comfyui_files(comfy):
    layout = detect(comfy)
    assert layout.kind == "comfyui" and layout.tokenizer is None
    assert layout.dit.parent.name == "diffusion_models" and layout.text_encoder.parent.name == "text_encoders"


def test_detect_says_diffusers_for_an_exported_diffusers_folder(tmp_path):
    layout = detect(export_diffusers(tmp_path / "diffusers"))
    assert layout.kind == "diffusers"
    parts = (layout.dit.name, layout.text_encoder.name, layout.tokenizer.name)
    assert parts == ("transformer", "text_encoder", "tokenizer")


def test_comfyui_files_load_as_the_tiny_model(comfy, context):
    loaded = Context(checkpoint=comfy)
    assert loaded.dit_config == tiny_dit_config()
    state, reference = loaded.dit_state_dict, tiny_dit_state_dict()
    assert state.keys() == reference.keys()
    assert all(torch.equal(state[k], reference[k]) for k in reference)
    assert weights_sha256(loaded.text_encoder) == weights_sha256(build_tiny_text_encoder())
    ids = torch.tensor([[151644, 872, 198, 32, 8251]])
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.text_encoder(input_ids=ids).last_hidden_state,
            context.text_encoder(input_ids=ids).last_hidden_state, atol=0, rtol=0,
        )
    # No tokenizer in ComfyUI files: the reference one.
    assert loaded.tokenizer("<think>A cat")["input_ids"] == context.tokenizer("<think>A cat")["input_ids"]


def test_the_suite_runs_on_comfyui_files_with_the_tiny_fixtures(comfy, capsys):
    code = main(["run", "--cases", "turbo", "--checkpoint", str(comfy), "--fixtures", str(ROOT / "fixtures")])
    assert code == 0
    assert "unexpected" not in capsys.readouterr().out.lower()


def test_a_folder_of_neither_layout_names_what_was_looked_for(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(InputError, match=r"no known layout.*transformer/.*diffusion_models/\*\.safetensors"):
        detect(tmp_path)
    with pytest.raises(InputError, match="no known layout"):
        _ = Context(checkpoint=tmp_path).dit_state_dict


def test_a_comfyui_file_of_another_model_names_the_missing_keys(tmp_path):
    (tmp_path / "diffusion_models").mkdir()
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4)},
              tmp_path / "diffusion_models" / "sdxl.safetensors")
    with pytest.raises(InputError, match=r"sdxl\.safetensors is not a Z-Image DiT file: it lacks x_embedder\.weight"):
        _ = Context(checkpoint=tmp_path).dit_config
    with pytest.raises(InputError, match=r"layers\.0\.attention\.qkv\.weight"):
        _ = Context(checkpoint=tmp_path).dit_state_dict
    # The folder has no text encoder: said so, not a crash.
    with pytest.raises(InputError, match=r"no text_encoders/\*\.safetensors"):
        _ = Context(checkpoint=tmp_path).text_encoder


def test_a_text_encoder_file_of_another_model_names_the_missing_keys(tmp_path):
    (tmp_path / "text_encoders").mkdir()
    save_file({"encoder.block.0.weight": torch.zeros(2)}, tmp_path / "text_encoders" / "t5.safetensors")
    with pytest.raises(InputError, match=r"t5\.safetensors is not a Qwen3 text-encoder file: it lacks embed_tokens"):
        _ = Context(checkpoint=tmp_path).text_encoder


def _truncate_header(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:20])  # the 8-byte length promises a header the file no longer has


def test_a_truncated_comfyui_file_is_named(tmp_path):
    written = export_comfyui(tmp_path / "comfy")
    _truncate_header(written.dit)
    with pytest.raises(InputError, match=r"cannot read .*zimage_parity_tiny\.safetensors") as info:
        _ = Context(checkpoint=tmp_path / "comfy").dit_state_dict
    assert "\n" not in str(info.value)


def test_a_diffusers_shard_with_a_truncated_header_is_named(tmp_path):
    folder = tmp_path / "transformer"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(tiny_dit_config()))
    state = tiny_dit_state_dict()
    names = sorted(state)
    weight_map = {}
    for i in range(2):
        shard = f"part-{i}.safetensors"
        save_file({n: state[n] for n in names[i::2]}, folder / shard)
        weight_map |= dict.fromkeys(names[i::2], shard)
    (folder / INDEX_FILE).write_text(json.dumps({"weight_map": weight_map}))
    _truncate_header(folder / "part-1.safetensors")
    assert detect(tmp_path).kind == "diffusers"
    with pytest.raises(InputError, match=r"cannot read .*part-1\.safetensors") as info:
        _ = Context(checkpoint=tmp_path).dit_state_dict
    assert "\n" not in str(info.value)


def test_two_dit_files_are_refused_by_name(comfy, tmp_path):
    folder = tmp_path / "two"
    (folder / "diffusion_models").mkdir(parents=True)
    original = detect(comfy).dit.read_bytes()
    for name in ("a.safetensors", "b.safetensors"):
        (folder / "diffusion_models" / name).write_bytes(original)
    with pytest.raises(InputError, match=r"more than one DiT file \(a\.safetensors, b\.safetensors\)"):
        detect(folder)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> Path:
    """The tiny model as `parity export` writes it with shards: index files and several shards per model."""
    folder = tmp_path_factory.mktemp("sharded") / "ckpt"
    assert main(["export", "--format", "diffusers", "--max-shard-size", "1MB", "--out", str(folder)]) == 0
    return folder


def test_export_shards_both_models_with_their_index(sharded):
    for part, index in (("transformer", INDEX_FILE), ("text_encoder", "model.safetensors.index.json")):
        weight_map = json.loads((sharded / part / index).read_text())["weight_map"]
        assert len(set(weight_map.values())) >= 2
        assert all((sharded / part / shard).is_file() for shard in weight_map.values())


def test_a_sharded_checkpoint_reproduces_the_fixtures_of_the_built_in_model(sharded, capsys):
    code = main(["run", "--cases", "turbo", "--checkpoint", str(sharded), "--fixtures", str(ROOT / "fixtures")])
    assert code == 0
    assert "unexpected" not in capsys.readouterr().out.lower()


def _drop_a_shard(part: Path) -> str:
    shard = sorted(part.glob("*-00002-of-*.safetensors"))[0]
    shard.unlink()
    return rf"names the shard {re.escape(shard.name)}, which is missing"


def _truncate_a_shard(part: Path) -> str:
    shard = sorted(part.glob("*-00001-of-*.safetensors"))[0]
    _truncate_header(shard)
    return rf"cannot read .*{re.escape(shard.name)}"


def _widen_cap_feat_dim(part: Path) -> str:
    config = json.loads((part / "config.json").read_text())
    (part / "config.json").write_text(json.dumps(config | {"cap_feat_dim": 96}))
    return r"transformer has DiT weights of the wrong shape: cap_embedder"


def _widen_the_mlp(part: Path) -> str:
    config = json.loads((part / "config.json").read_text())
    (part / "config.json").write_text(json.dumps(config | {"intermediate_size": 320}))
    return r"text_encoder has text-encoder weights of the wrong shape: layers\.0\.mlp"


@pytest.mark.parametrize(
    ("part", "damage"),
    [
        ("transformer", _drop_a_shard),
        ("text_encoder", _drop_a_shard),
        ("transformer", _truncate_a_shard),
        ("text_encoder", _truncate_a_shard),
        ("transformer", _widen_cap_feat_dim),
        ("text_encoder", _widen_the_mlp),
    ],
    ids=["dit-shard-missing", "encoder-shard-missing", "dit-shard-truncated", "encoder-shard-truncated",
         "dit-config-mismatch", "encoder-config-mismatch"],
)
def test_a_damaged_checkpoint_is_one_line_and_exit_2(sharded, tmp_path, capsys, part, damage):
    folder = tmp_path / "ckpt"
    shutil.copytree(sharded, folder)
    message = damage(folder / part)
    stage = "denoise" if part == "transformer" else "embeddings"
    code = main(["run", "--cases", "turbo", "--stages", stage, "--checkpoint", str(folder),
                 "--fixtures", str(ROOT / "fixtures")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("parity: error: ")
    assert re.search(message, err[-1]), err[-1]
