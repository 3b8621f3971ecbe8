"""`--checkpoint DIR` swaps in a checkpoint's tokenizer/ and text_encoder/ through the same code paths."""

from pathlib import Path

import pytest
import torch

from parity.cli import main
from parity.models.context import Context
from parity.models.text_encoder_weights import build_tiny_text_encoder, weights_sha256

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, context) -> Path:
    folder = tmp_path_factory.mktemp("ckpt")
    context.tokenizer.save_pretrained(folder / "tokenizer")
    build_tiny_text_encoder().save_pretrained(folder / "text_encoder")
    return folder


def test_a_checkpoint_folder_replaces_tokenizer_and_encoder(checkpoint, context):
    loaded = Context(checkpoint=checkpoint)
    assert loaded.tokenizer("<think>A cat")["input_ids"] == context.tokenizer("<think>A cat")["input_ids"]
    assert loaded.tokenizer.chat_template == context.tokenizer.chat_template
    assert weights_sha256(loaded.text_encoder) == weights_sha256(context.text_encoder)


def test_the_suite_gives_the_same_verdicts_on_an_exported_checkpoint(checkpoint, capsys):
    code = main(["run", "--cases", "short", "--checkpoint", str(checkpoint), "--fixtures", str(ROOT / "fixtures")])
    assert code == 0
    assert "unexpected" not in capsys.readouterr().out.lower()


def test_a_checkpoint_encoder_in_bf16(checkpoint):
    loaded = Context(checkpoint=checkpoint, dtype="bf16")
    assert next(loaded.text_encoder.parameters()).dtype == torch.bfloat16


def test_an_exported_diffusers_checkpoint_reproduces_the_sampling_fixtures(tmp_path, capsys, monkeypatch):
    from parity.models.export import export_diffusers

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = export_diffusers(tmp_path / "ckpt")
    code = main(["run", "--cases", "turbo", "--checkpoint", str(folder), "--fixtures", str(ROOT / "fixtures")])
    assert code == 0
    assert "unexpected" not in capsys.readouterr().out.lower()
