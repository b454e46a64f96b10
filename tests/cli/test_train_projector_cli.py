"""``darm train-projector``: both stages end to end on tiny checkpoints, a projector the latent pipeline loads, resume
by rerunning, and one-line refusals (no data, an evaluation set in the training data, another configuration)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState

from latent_darm.models.autoregressive_lm import AutoregressiveLM
from latent_darm.models.diffusion_lm import DiffusionLM
from latent_darm.models.llada.checkpoint import load_llada, save_llada
from latent_darm.models.tiny import random_llama
from latent_darm.pipelines.factory import build_pipeline
from latent_darm.projector.model import Projector

QUESTIONS = [f"What is {a} plus {a + 3}?" for a in range(14)]
TINY = ["--gen-length", "8", "--block-length", "8", "--hidden-dim", "16", "--batch-size", "4", "--warmup-steps", "1",
        "--max-steps", "3", "--eval-every", "2", "--save-every", "2", "--held-out-per-source", "2",
        "--max-new-tokens", "4", "--dtype", "float32", "--device", "cpu", "--no-progress"]  # fmt: skip


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture
def data(tmp_path):
    """A JSONL training file and a data directory whose GSM8K test set shares the training file's first question."""
    path = tmp_path / "pairs.jsonl"
    path.write_text(
        "".join(json.dumps({"question": q, "answer": str(2 * a + 3)}) + "\n" for a, q in enumerate(QUESTIONS))
    )
    (tmp_path / "benchmarks/gsm8k").mkdir(parents=True)
    (tmp_path / "benchmarks/gsm8k/test.jsonl").write_text(json.dumps({"question": QUESTIONS[0], "answer": "#### 3"}))
    return path, tmp_path / "benchmarks"


def _answers_through_the_latent_pipeline(out: Path, llada_dir: Path, executor_dir: Path) -> None:
    """The trained projector in OUT answers a question through the latent pipeline with the paper's accounting."""
    spec = {
        "kind": "latent",
        "planner": {"kind": "ddlm", "model": str(llada_dir), "gen_length": 8, "steps": 8, "block_length": 8},
        "executor": {"kind": "arm", "model": str(executor_dir), "max_new_tokens": 4},
        "projector": str(out / "projector"),
    }
    result = build_pipeline(spec).run([QUESTIONS[3]], "math")[0]
    assert result.accounting.planner_tokens == 8 and 1 <= result.accounting.executor_tokens <= 4


def test_trains_a_projector_the_latent_pipeline_loads_and_resumes(
    darm, tmp_path, data, llada_dir, executor_dir, tokenizer
):
    pairs, benchmarks = data
    out = tmp_path / "run"
    command = _train(llada_dir, executor_dir, out, "--data", pairs, "--data-dir", benchmarks,
                     "--exclude-benchmarks", "gsm8k", "--drop-overlap", *TINY)  # fmt: skip
    code, stdout, stderr = darm(*command)
    assert code == 0, stderr
    assert "11 training and 2 held-out questions; kept disjoint from: gsm8k" in stderr
    assert f"projector → {out / 'projector'}" in stderr
    summary = json.loads(stdout)
    assert summary["steps"] == 3 and summary["best_step"] in (0, 2, 3) and summary["resumed_from"] == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2", "step-3"]
    assert (out / "latents/spec.json").is_file() and (out / "curve.png").is_file()
    assert [r["step"] for r in map(json.loads, (out / "history.jsonl").read_text().splitlines())] == [0, 2, 3]

    planner, executor = DiffusionLM.from_pretrained(llada_dir), AutoregressiveLM.from_pretrained(executor_dir)
    projector = Projector.from_pretrained(out / "projector", planner=planner, executor=executor)
    config = projector.config
    assert (config.plan_length, config.hidden_dim, config.planner, config.executor) == (
        8,
        16,
        str(llada_dir),
        str(executor_dir),
    )
    assert config.training["kept_disjoint_from"] == ["gsm8k"] and config.training["sampler"]["gen_length"] == 8
    _answers_through_the_latent_pipeline(out, llada_dir, executor_dir)

    # Rerunning the same command resumes at the end: nothing is recomputed.
    code, stdout, _ = darm(*command)
    assert code == 0 and json.loads(stdout)["resumed_from"] == 3

    # The same directory with other settings, or an executor of another width, is refused with the key named.
    code, _, stderr = darm(*command, "--lr", "0.001")
    assert code == 2 and "made with a different 'training.lr' (0.0003 there, 0.001 now)" in stderr
    assert len(stderr.strip().splitlines()) == 1  # refused before loading anything
    narrow = tmp_path / "narrow"
    random_llama(tokenizer, hidden_size=32, std=0.2).save_pretrained(narrow)
    tokenizer.save_pretrained(narrow)
    code, _, stderr = darm(*[narrow if arg == executor_dir else arg for arg in command])
    assert code == 2 and "made with a different 'weights.executor'" in stderr
    assert len(stderr.strip().splitlines()) == 1  # refused before loading anything
    # Planner weights replaced in place (same path, same shapes): the cached latents are theirs, so it is refused.
    replaced = Path(shutil.copytree(llada_dir, tmp_path / "replaced"))
    model = load_llada(replaced)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01)
    save_llada(model, replaced)
    code, _, stderr = darm(*[replaced if arg == llada_dir else arg for arg in command])
    assert code == 2 and "latents was built with a different 'planner_weights'" in stderr
    assert len(stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "no training data: give --data FILE.jsonl, --benchmark-train NAME or --preset paper"),
        (["--data", "{missing}"], "missing.jsonl: file not found"),
        (["--data", "{pairs}"], "cannot check the training questions against evaluation sets aime24, amc23"),
        (
            ["--data", "{pairs}", "--data-dir", "{benchmarks}", "--exclude-benchmarks", "gsm8k"],
            "1 training questions also appear in evaluation set 'gsm8k'",
        ),
        (
            ["--data", "{pairs}", "--exclude-benchmarks", "gsm8k", "--data-dir", "{benchmarks}"],
            "also appear in evaluation set 'gsm8k'",
        ),
        (["--data", "{pairs}", "--benchmark-train", "no_such_set"], "unknown benchmark 'no_such_set'"),
        (
            ["--benchmark-train", "gsm8k", "--exclude-benchmarks", "gsm8k", "--data-dir", "{benchmarks}"],
            "gsm8k/train.jsonl: file not found; benchmark 'gsm8k' has no local train split",
        ),
        (["--data", "{pairs}", "--preset", "tiny"], "--preset must be one of paper"),
        (["--data", "{pairs}", "--lr", "0"], "lr must be > 0"),
        (["--data", "{pairs}", "--answer-type", "essay"], "unknown answer_type 'essay'"),
        (["--data", "{pairs}", "--hidden-dim", "0"], "projector hidden_dim must be a positive integer"),
        (["--data", "{pairs}", "--mixed-precision", "fp8"], "mixed_precision must be one of auto, no, bf16"),
        (["--data", "{pairs}", "--gen-length", "12"], "gen_length 12 is not divisible by block_length"),
        (
            ["--data", "{pairs}", "--no-overlap-check", "--latent-layer", "9"],
            "--latent-layer must be -1 or 0..2 for this planner",
        ),
    ],
)
def test_bad_input_is_one_line(darm, tmp_path, data, llada_dir, executor_dir, extra, message):
    pairs, benchmarks = data
    names = {"pairs": pairs, "benchmarks": benchmarks, "missing": tmp_path / "missing.jsonl"}
    args = [str(a).format(**names) for a in extra]
    code, stdout, stderr = darm(*_train(llada_dir, executor_dir, tmp_path / "out", "--data-dir", tmp_path / "empty",
                                        *TINY, *args))  # fmt: skip
    error = stderr.strip().splitlines()[-1]  # after at most a status line
    assert code == 2 and not stdout and error.startswith("error: ") and message in error


def test_bf16_autocast_on_cpu_when_asked(darm, tmp_path, data, llada_dir, executor_dir):
    pairs, _ = data
    code, _, stderr = darm(*_train(llada_dir, executor_dir, tmp_path / "out", "--data", pairs, "--no-overlap-check",
                                   *TINY, "--mixed-precision", "bf16", "--max-steps", "1"))  # fmt: skip
    assert code == 0, stderr
    weights = Projector.from_pretrained(tmp_path / "out/projector").state_dict()
    assert all(w.dtype == torch.float32 for w in weights.values())  # master weights stay fp32


def test_two_processes_train_the_same_projector_as_one(tmp_path, llada_dir, executor_dir):
    """Two processes (torchrun, CPU, gloo): each process takes half of every batch of 8 and the
    gradients are averaged, so the weights follow the single-process run with batch 8. Here the 16 training pairs
    fill whole batches and every target has the same number of tokens (one-digit answers), so the mean over a batch
    is exactly the mean of its halves' means."""
    from safetensors.torch import load_file

    pairs = tmp_path / "pairs.jsonl"
    questions = [f"What is {a} plus {a + 3}, modulo ten?" for a in range(18)]  # 2 held out, 16 for training
    pairs.write_text(
        "".join(json.dumps({"question": q, "answer": str((2 * a + 3) % 10)}) + "\n" for a, q in enumerate(questions))
    )
    at = TINY.index("--batch-size")
    settings = TINY[:at] + TINY[at + 2 :]  # the batch differs between the two runs
    common = ["--planner", str(llada_dir), "--executor", str(executor_dir), "--data", str(pairs)]
    common += ["--answer-type", "integer", "--no-overlap-check", *settings]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    # torchrun sets RANK/WORLD_SIZE; accelerate then runs data-parallel over gloo on CPU (``accelerate launch
    # --cpu --num_processes 2`` would start a single process).
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    runs = {
        "two": [*launch, "-m", "latent_darm.cli.app", "train-projector", *common, "--batch-size", "4"],
        "one": [sys.executable, "-m", "latent_darm.cli.app", "train-projector", *common, "--batch-size", "8"],
    }
    weights = {}
    for name, command in runs.items():
        out = tmp_path / name
        done = subprocess.run([*command, "--out", str(out)], env=env, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads(done.stdout.strip().splitlines()[-1])["steps"] == 3
        weights[name] = load_file(out / "checkpoints/step-3/model.safetensors")
    assert weights["one"].keys() == weights["two"].keys()
    moved = load_file(tmp_path / "one/checkpoints/step-2/model.safetensors")
    for key, value in weights["one"].items():
        torch.testing.assert_close(weights["two"][key], value, rtol=1e-4, atol=1e-5)
    assert any(not torch.equal(moved[k], v) for k, v in weights["one"].items())  # it did train between checkpoints


def _train(llada_dir, executor_dir, out, *options) -> list:
    """``darm train-projector`` arguments: the tiny planner and executor into ``out``, then ``options``."""
    return ["train-projector", "--planner", llada_dir, "--executor", executor_dir, "--out", out, *options]


def _tiny_command(llada_dir, executor_dir, pairs, out) -> list:
    return _train(llada_dir, executor_dir, out, "--data", pairs, "--answer-type", "integer", "--no-overlap-check",
                  *TINY)  # fmt: skip


def _same_run(ours: Path, theirs: Path) -> None:
    """Two run directories hold the same files with the same contents (weights within float tolerance; paths the
    provenance records aside)."""
    from safetensors.torch import load_file

    def files(root: Path) -> list[str]:
        return sorted(
            str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name not in (".lock", ".run.lock")
        )

    assert files(ours) == files(theirs)
    for name in files(ours):
        a, b = ours / name, theirs / name
        if name.endswith(".safetensors"):
            x, y = load_file(a), load_file(b)
            assert x.keys() == y.keys(), name
            for key in x:
                torch.testing.assert_close(x[key], y[key], rtol=1e-5, atol=1e-6, msg=name)
        elif name.endswith("history.jsonl"):
            rows = [[json.loads(r) for r in path.read_text().splitlines()] for path in (a, b)]
            assert [sorted(r) for r in rows[0]] == [sorted(r) for r in rows[1]]
            for x, y in zip(*rows, strict=True):
                assert x == pytest.approx(y, rel=1e-5)
        elif name in ("run.json", "latents/spec.json") or name.endswith("shard-r0-00000.json"):
            assert a.read_text() == b.read_text(), name


def test_a_full_disk_while_checkpointing_is_one_line_and_the_rerun_resumes(darm, tmp_path, data, llada_dir,
                                                                          executor_dir, monkeypatch):  # fmt: skip
    """torch.save's own error for a failed write (its zip writer, not an OSError) while the step-3 checkpoint is
    written: one line naming it; the rerun resumes from step 2 and ends where an uninterrupted run ends."""
    pairs, _ = data
    code, _, stderr = darm(*_tiny_command(llada_dir, executor_dir, pairs, tmp_path / "whole"))
    assert code == 0, stderr
    save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if "step-3" in str(f):
            raise RuntimeError(
                "[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file data/0: file "
                "write failed"
            )
        return save(obj, f, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(torch, "save", full_disk)
        code, _, stderr = darm(*_tiny_command(llada_dir, executor_dir, pairs, tmp_path / "full"))
    lines = stderr.strip().splitlines()
    assert code == 2 and "Traceback" not in stderr and lines[-1].startswith("error: disk full while writing "), stderr
    assert lines[-1].endswith(f"{tmp_path / 'full/checkpoints/step-3'}; the checkpoints before it are kept: free "
                              "space and rerun")  # fmt: skip
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    code, stdout, stderr = darm(*_tiny_command(llada_dir, executor_dir, pairs, tmp_path / "full"))
    assert code == 0, stderr
    assert json.loads(stdout)["resumed_from"] == 2
    _same_run(tmp_path / "full", tmp_path / "whole")


def test_two_runs_on_one_out_do_the_work_once(tmp_path, data, llada_dir, executor_dir):
    """The second run waits for the first's lock on --out, then finds the run finished and reuses it."""
    pairs, _ = data
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    command = [sys.executable, "-m", "latent_darm.cli.app"]
    command += [str(a) for a in _tiny_command(llada_dir, executor_dir, pairs, tmp_path / "run")]
    runs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]  # fmt: skip
    results = [run.communicate(timeout=300) for run in runs]
    assert all(run.returncode == 0 for run in runs), [err[-2000:] for _, err in results]
    assert sorted(json.loads(out.strip().splitlines()[-1])["resumed_from"] for out, _ in results) == [0, 3]
    assert [p.name for p in (tmp_path / "run/latents").glob("shard-*.safetensors")] == ["shard-r0-00000.safetensors"]


def test_lstsq_init_training_free_with_a_stored_placement(darm, tmp_path, data, llada_dir, executor_dir):
    """``--init lstsq --max-steps 0``: the ridge map on the cached latents and plan tokens is the projector (no
    training), saved with its placement, and the latent pipeline runs with it."""
    from latent_darm.training.latent_cache import LatentCache
    from latent_darm.training.projector_lstsq import plan_token_embeddings, ridge_map

    pairs, _ = data
    out = tmp_path / "free"
    tiny = [*TINY, "--max-steps", "0", "--held-out-per-source", "0"]  # the last of a repeated option wins
    code, _, stderr = darm(*_train(
        llada_dir, executor_dir, out, "--data", pairs,
        "--no-overlap-check", "--init", "lstsq", "--architecture", "linear", "--placement", "prefix-cue", *tiny,
    ))  # fmt: skip
    assert code == 0, stderr
    assert "--init lstsq: ridge map fitted on 14 examples" in stderr and "0 steps: no training" in stderr
    assert not (out / "checkpoints").exists()
    executor = AutoregressiveLM.from_pretrained(executor_dir)
    projector = Projector.from_pretrained(out / "projector", executor=executor)
    assert projector.config.placement == "prefix-cue"
    assert projector.config.training["init"] == {"init": "lstsq", "ridge": 0.001}
    cache = LatentCache.open(out / "latents")
    keys = sorted(cache.index)
    assert len(keys) == len(QUESTIONS)  # nothing held out here: every example is a training row
    lmap = ridge_map(cache.load(keys).float(), plan_token_embeddings(executor, cache.plan_tokens(keys)), 1e-3)
    assert torch.allclose(projector.layers[0].weight.detach().double(), lmap.weight.T, atol=1e-5)
    assert torch.allclose(projector.layers[0].bias.detach().double(), lmap.bias, atol=1e-5)
    _answers_through_the_latent_pipeline(out, llada_dir, executor_dir)


def test_lstsq_with_too_few_examples_is_one_error_and_keeps_the_cache(darm, tmp_path, llada_dir, executor_dir):
    """4 questions × 8 plan positions = 32 rows cannot determine a ridge-0 map from the tiny planner's 64
    dimensions: the last stderr line names --init lstsq, exit 2, and the latents already cached stay for a rerun."""
    pairs = tmp_path / "few.jsonl"
    pairs.write_text("".join(json.dumps({"question": q, "answer": "1"}) + "\n" for q in QUESTIONS[:4]))
    out = tmp_path / "few"
    code, _, stderr = darm(*_train(
        llada_dir, executor_dir, out, "--data", pairs,
        "--no-overlap-check", "--init", "lstsq", "--ridge", "0", *TINY, "--max-steps", "0",
        "--held-out-per-source", "0",
    ))  # fmt: skip
    lines = stderr.strip().splitlines()
    assert code == 2 and "Traceback" not in stderr
    assert lines[-1].startswith("error: --init lstsq: 32 plan positions are too few") and "at least 65" in lines[-1]
    assert len(list((out / "latents").glob("shard-*.safetensors"))) == 1 and not (out / "projector").exists()


def test_a_latent_cache_inside_out_itself_does_not_deadlock_and_the_map_never_replaces_a_trained_run(
    darm, tmp_path, data, llada_dir, executor_dir
):
    """--cache-dir OUT: the run's lock and the cache's lock are two files (one file locked twice by one process
    waited forever). Then --init lstsq --max-steps 0 into that trained run is refused before any work."""
    pairs, _ = data
    out = tmp_path / "run"
    code, _, stderr = darm(*_tiny_command(llada_dir, executor_dir, pairs, out), "--cache-dir", out)
    assert code == 0, stderr
    assert (out / "projector").is_dir() and list(out.glob("shard-*.safetensors"))
    trained = (out / "projector" / "model.safetensors").read_bytes()
    code, _, stderr = darm(
        *_tiny_command(llada_dir, executor_dir, pairs, out), "--cache-dir", out, "--init", "lstsq", "--max-steps", "0"
    )
    assert code == 2 and "holds a trained projector run" in stderr.strip().splitlines()[-1], stderr
    assert (out / "projector" / "model.safetensors").read_bytes() == trained


def test_plan_token_files_are_checked_and_leave_with_their_damaged_shard(tmp_path):
    """A torn plan-token file is a one-line DataError naming it (was a JSONDecodeError traceback); a damaged shard
    takes its token file with it, so its examples are computed again whole."""
    from latent_darm.errors import DataError
    from latent_darm.training.latent_cache import LatentCache

    cache = LatentCache.open(tmp_path / "c", {"planner": "p"})
    cache.add({"a": torch.zeros(2, 3)}, {"a": "plan"}, tokens={"a": [1, 2]})
    assert cache.plan_tokens(["a"]) == [[1, 2]]
    (tmp_path / "c" / "tokens-r0-00000.json").write_text('{"a": [1,')
    with pytest.raises(DataError, match=r"tokens-r0-00000\.json: malformed JSON"):
        cache.plan_tokens(["a"])
    shard = tmp_path / "c" / "shard-r0-00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:20])  # truncated
    reopened = LatentCache.open(tmp_path / "c")
    assert reopened.damaged == [shard]
    reopened.remove_damaged()
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["spec.json"]
