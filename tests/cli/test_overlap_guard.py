"""``darm train-projector``'s train/test guard: training questions are compared with every evaluation set ``darm eval``
would load (local test files with a data directory, else the hub), training is refused when one cannot be loaded,
and benchmarks contribute their train split only. All refusals happen before any model is loaded."""

from __future__ import annotations

import json

import pytest

from latent_darm.evaluation import benchmarks

QUESTIONS = [f"What is {a} plus {a + 3}?" for a in range(6)]


@pytest.fixture(autouse=True)
def _no_data_env(monkeypatch):
    monkeypatch.delenv(benchmarks.DATA_ENV, raising=False)


@pytest.fixture
def pairs(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"question": q, "answer": "1"}) + "\n" for q in QUESTIONS))
    return path


def fake_hub(monkeypatch, rows: dict) -> list:
    """``datasets.load_dataset`` answering from ``rows[(dataset id, split)]``; anything else is "offline"."""
    import datasets

    calls = []

    def load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        if (path, split) not in rows:
            raise ConnectionError(f"Couldn't reach '{path}' on the Hub (offline)")
        return rows[(path, split)]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def train(darm, tmp_path, *args):
    code, out, err = darm("train-projector", "--planner", "p", "--executor", "e", "--out", tmp_path / "out", *args)
    return code, out, err.strip().splitlines()[-1] if err.strip() else ""


def test_without_a_data_dir_the_hub_sets_are_checked_and_an_unloadable_one_refuses(darm, tmp_path, pairs, monkeypatch):
    fake_hub(monkeypatch, {})  # no network
    code, out, error = train(darm, tmp_path, "--data", pairs)
    assert code == 2 and not out
    assert error.startswith("error: cannot check the training questions against evaluation sets ")
    assert "aime24" in error and "dart5" in error and "gsm8k" in error and "--no-overlap-check" in error


def test_an_unreachable_hub_is_tried_once_not_once_per_set(tmp_path, monkeypatch):
    """Each hub try waits through the client's retries (about half a minute offline): after the first says the hub
    is unreachable, the other hub sets are refused with it instead of tried."""
    from latent_darm.cli.train_projector import evaluation_sets
    from latent_darm.errors import DataError

    monkeypatch.delenv(benchmarks.DATA_ENV, raising=False)
    calls = fake_hub(monkeypatch, {})
    with pytest.raises(DataError) as info:
        evaluation_sets(None, None)
    assert len(calls) == 1
    hub_sets = [n for n in benchmarks.benchmark_names() if benchmarks.get_benchmark(n).loader is None]
    assert len(hub_sets) > 5 and all(name in str(info.value) for name in hub_sets)


def test_a_hub_evaluation_set_that_shares_a_question_refuses(darm, tmp_path, pairs, monkeypatch):
    monkeypatch.setattr(benchmarks, "_REGISTRY", {"gsm8k": benchmarks.get_benchmark("gsm8k")})
    fake_hub(monkeypatch, {("openai/gsm8k", "test"): [{"question": QUESTIONS[2].upper(), "answer": "#### 1"}]})
    code, _, error = train(darm, tmp_path, "--data", pairs)
    assert code == 2 and "1 training questions also appear in evaluation set 'gsm8k'" in error


def test_paper_preset_without_a_data_dir_does_not_train_on_the_dart_pool(darm, tmp_path, monkeypatch):
    """The authors' leak: DART-k trained from the DART-Math pool and evaluated on the same pool."""
    pool = [
        {"query": f"Pool question {i}?", "gt_ans": str(i), "query_metadata": {"level": 1 + i % 5}} for i in range(20)
    ]
    arc = {
        "question": "Which is a metal?",
        "choices": {"text": ["wood", "iron"], "label": ["A", "B"]},
        "answerKey": "B",
    }
    hub = {("hkust-nlp/dart-math-pool-math", "train"): pool}
    hub |= {("allenai/ai2_arc", split): [arc] for split in ("train", "validation")}
    # Offline for everything else: refused, not "kept disjoint from: none found".
    fake_hub(monkeypatch, hub)
    code, _, error = train(darm, tmp_path, "--preset", "paper")
    assert code == 2 and error.startswith("error: cannot check the training questions")
    # With the evaluation sets reachable, the shared pool is found.
    monkeypatch.setattr(benchmarks, "_REGISTRY", {f"dart{k}": benchmarks.get_benchmark(f"dart{k}") for k in (1, 2)})
    code, _, error = train(darm, tmp_path, "--preset", "paper")
    assert code == 2 and "training questions also appear in evaluation set 'dart" in error


def test_no_overlap_check_is_explicit_and_recorded(darm, tmp_path, pairs, monkeypatch, llada_dir, executor_dir):
    fake_hub(monkeypatch, {})
    code, _, err = darm(
        "train-projector", "--planner", llada_dir, "--executor", executor_dir, "--out", tmp_path / "out",
        "--data", pairs, "--no-overlap-check", "--gen-length", "8", "--block-length", "8", "--hidden-dim", "8",
        "--max-steps", "1", "--held-out-per-source", "0", "--dtype", "float32", "--device", "cpu", "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    assert "kept disjoint from: NOT CHECKED (--no-overlap-check)" in err
    config = json.loads((tmp_path / "out/projector/config.json").read_text())
    assert config["training"]["kept_disjoint_from"] is None


def test_benchmark_train_uses_the_train_split_and_is_checked_against_its_test_split(darm, tmp_path, monkeypatch):
    data = tmp_path / "data"
    (data / "gsm8k").mkdir(parents=True)
    (data / "gsm8k/test.jsonl").write_text(json.dumps({"question": "A test question?", "answer": "#### 1"}) + "\n")
    only = ["--data-dir", data, "--exclude-benchmarks", "gsm8k"]
    code, _, error = train(darm, tmp_path, "--benchmark-train", "gsm8k", *only)
    assert code == 2 and "gsm8k/train.jsonl: file not found; benchmark 'gsm8k' has no local train split" in error
    rows = [{"question": "A train question?", "answer": "#### 2"}, {"question": "A TEST question", "answer": "#### 1"}]
    (data / "gsm8k/train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, _, error = train(darm, tmp_path, "--benchmark-train", "gsm8k", *only)
    assert code == 2 and "1 training questions also appear in evaluation set 'gsm8k'" in error  # no exemption
    code, _, error = train(darm, tmp_path, "--benchmark-train", "aime24", *only)
    assert code == 2 and error == (
        "error: benchmark 'aime24' has no train split, so it cannot be a training source (train splits only)"
    )
