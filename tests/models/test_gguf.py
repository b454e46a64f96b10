"""GGUF checkpoints: which paths name one, one-line errors for unreadable ones, and saving a model read from one
(transformers refuses; we copy into a fresh model). Reading a real GGUF is tested in tests/real."""

from __future__ import annotations

import pytest
import torch

from latent_darm.errors import CheckpointError
from latent_darm.models.executor import CausalExecutor
from latent_darm.models.gguf import find_gguf, is_gguf_model, plain_copy


def test_find_gguf_names_a_file_or_the_one_file_of_a_directory(tmp_path, executor_dir):
    model = tmp_path / "one" / "model.Q4_1.gguf"
    model.parent.mkdir()
    model.write_bytes(b"GGUF")
    assert find_gguf(model) == model
    assert find_gguf(model.parent) == model
    assert find_gguf(executor_dir) is None  # a normal checkpoint (config.json)
    assert find_gguf(executor_dir / "config.json") is None  # a file that is not GGUF
    assert find_gguf(tmp_path / "missing") is None  # left to the usual "not found" / hub handling
    (model.parent / "config.json").write_text("{}")
    assert find_gguf(model.parent) is None  # config.json wins: the directory is a normal checkpoint
    two = tmp_path / "two"
    two.mkdir()
    (two / "a.gguf").write_bytes(b"GGUF")
    (two / "b.gguf").write_bytes(b"GGUF")
    with pytest.raises(CheckpointError, match=r"several GGUF files \(a.gguf, b.gguf\)"):
        find_gguf(two)


def test_an_unreadable_gguf_is_a_one_line_checkpoint_error(tmp_path):
    bogus = tmp_path / "broken.gguf"
    bogus.write_bytes(b"not a gguf file at all")
    with pytest.raises(CheckpointError) as info:
        CausalExecutor.from_pretrained(bogus)
    assert str(bogus) in str(info.value) and "\n" not in str(info.value)


def test_plain_copy_has_the_same_weights_and_saves(executor, tmp_path):
    assert not is_gguf_model(executor.model)
    copy = plain_copy(executor.model)
    assert copy is not executor.model
    original = executor.model.state_dict()
    for name, tensor in copy.state_dict().items():
        assert torch.equal(tensor, original[name]), name
    CausalExecutor(copy, executor.tokenizer).save_pretrained(tmp_path / "saved")
    reopened = CausalExecutor.from_pretrained(tmp_path / "saved")
    prompts = ["What is 3x + 7 = 22?", "A train travels 60 miles per hour."]
    assert [g.token_ids for g in reopened.generate(prompts, max_new_tokens=6)] == [
        g.token_ids for g in executor.generate(prompts, max_new_tokens=6)
    ]


def test_darm_convert_errors_are_one_line(darm, tmp_path, executor_dir):
    code, _, err = darm("convert", tmp_path / "nothing.gguf", tmp_path / "out")
    assert code == 2 and "not found" in err
    code, _, err = darm("convert", executor_dir, tmp_path / "out")
    assert code == 2 and "not a .gguf file" in err
    bogus = tmp_path / "broken.gguf"
    bogus.write_bytes(b"nope")
    code, _, err = darm("convert", bogus, tmp_path / "out")
    assert code == 2 and "broken.gguf" in err and len(err.strip().splitlines()) == 1
