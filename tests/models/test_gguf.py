"""GGUF checkpoints: which paths name one, one-line errors for unreadable ones, reading one (the same model and
tokenizer as transformers' own GGUF loading, parsed once), and saving a model read from one (transformers refuses;
we copy into a fresh model). The real SmolLM2 GGUF is tested in tests/real."""

from __future__ import annotations

import json
import random

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from latent_darm.errors import CheckpointError
from latent_darm.models.executor import CausalExecutor
from latent_darm.models.gguf import find_gguf, is_gguf_model, load_gguf, plain_copy
from tests.models.tiny_gguf import write_tiny_llama_gguf

gguf = pytest.importorskip("gguf")


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


@pytest.mark.parametrize("seed", [0, 1])
def test_load_gguf_parses_once_and_equals_transformers_own_loading(tmp_path, tokenizer, monkeypatch, seed):
    file = write_tiny_llama_gguf(tmp_path / "tiny.Q4_1.gguf", tokenizer, seed=seed)
    parses, name_maps = [], []
    reader_class, name_map = gguf.GGUFReader, gguf.get_tensor_name_map

    class CountingReader(reader_class):
        def __init__(self, *args, **kwargs):
            parses.append(args[0])
            super().__init__(*args, **kwargs)

    def counting_name_map(*args):
        name_maps.append(args)
        return name_map(*args)

    monkeypatch.setattr(gguf, "GGUFReader", CountingReader)
    monkeypatch.setattr(gguf, "get_tensor_name_map", counting_name_map)
    model, loaded_tokenizer = load_gguf(file)
    assert len(parses) == 1 and len(name_maps) == 1  # transformers alone: 3 parses, 33 tables
    assert gguf.GGUFReader is CountingReader and gguf.get_tensor_name_map is counting_name_map  # restored

    plain = AutoModelForCausalLM.from_pretrained(file.parent, gguf_file=file.name, dtype=torch.float32)
    plain_tokenizer = AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name)
    assert model.config.to_dict() == plain.config.to_dict()
    expected = plain.state_dict()
    assert model.state_dict().keys() == expected.keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    assert loaded_tokenizer.chat_template == plain_tokenizer.chat_template == tokenizer.chat_template
    assert loaded_tokenizer.all_special_tokens == plain_tokenizer.all_special_tokens
    rng = random.Random(seed)
    vocabulary = list(tokenizer.get_vocab())
    for _ in range(20):
        text = tokenizer.decode([tokenizer.convert_tokens_to_ids(rng.choice(vocabulary)) for _ in range(12)])
        assert loaded_tokenizer(text).input_ids == plain_tokenizer(text).input_ids, text


def test_darm_convert_writes_a_checkpoint_that_answers_as_the_gguf_file(darm, tmp_path, tokenizer):
    file = write_tiny_llama_gguf(tmp_path / "model" / "tiny.Q4_1.gguf", tokenizer, seed=2)
    code, _, err = darm("convert", file.parent, tmp_path / "converted")
    assert code == 0, err
    converted = CausalExecutor.from_pretrained(tmp_path / "converted")
    read = CausalExecutor.from_pretrained(file)
    assert is_gguf_model(read.model) and not is_gguf_model(converted.model)
    prompts = ["What is 3x + 7 = 22?", "A train travels 60 miles per hour.", "Natalia sold clips"]
    assert [g.token_ids for g in converted.generate(prompts, max_new_tokens=8)] == [
        g.token_ids for g in read.generate(prompts, max_new_tokens=8)
    ]
    # darm solve takes the .gguf path (and its folder) as an executor and answers as the converted checkpoint does.
    answers = []
    for executor in (file, file.parent, tmp_path / "converted"):
        code, out, err = darm("solve", prompts[0], "--pipeline", "arm", "--executor", executor,
                              "--max-new-tokens", "8", "--json")  # fmt: skip
        assert code == 0, err
        answers.append({key: json.loads(out)[key] for key in ("output", "executor_tokens", "truncated")})
    assert answers[0] == answers[1] == answers[2]
    code, _, err = darm("convert", file, tmp_path / "converted")
    assert code == 2 and "not empty" in err
