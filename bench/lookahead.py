"""``lookahead`` on LLaDA planners: speed and plan quality against n, side by side in one run.

``LLaDASamplerConfig(lookahead=n)`` makes every forward pass hold the prompt, the decoded tokens, the positions
being decoded (the current block) and only the n nearest masked positions after the block (He et al.'s knob;
``all`` = exact mode). Two parts, each sweeping n in one process with the repeats of every n interleaved, so load
from other processes hits every n alike:

* **random**: a random LLaDA-architecture model (default the 60M shape of ``bench/sampler.py``), exact mode:
  tokens/s, seconds, CPU seconds, tokens per forward pass (the forward cost) and agreement with n = all;
* **toy**: the toy world's trained planner (``darm demo``'s cache; built if missing, ``--toy-quick`` for the small
  world): plan exact-match with the n = all plans on the test split, and text DDLM→ARM accuracy against n (the
  plan is sampled with blocks of ``--toy-block`` tokens, since n counts positions *after* the block).

    python bench/lookahead.py                     # both parts (tens of minutes on 2 shared cores)
    python bench/lookahead.py --quick             # tiny model, quick world: a smoke run
    python bench/lookahead.py --part random --steps 64 --ns 0 8 32 96 all
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latent_darm.models.llada.sampler import generate_exact
from latent_darm.models.llada.sampler_config import LLaDASamplerConfig, parse_lookahead
from latent_darm.sampling import SpecialIds
from sampler import random_config, random_model, random_std


def _label(n: int | None) -> str:
    return "all" if n is None else str(n)


def count_tokens(model: torch.nn.Module) -> tuple[list[int], Any]:
    """Count the tokens (rows × columns) every forward pass of ``model`` computes."""
    counts: list[int] = []

    def hook(_: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        input_ids = args[0] if args else kwargs["input_ids"]
        counts.append(input_ids.numel())

    return counts, model.register_forward_pre_hook(hook, with_kwargs=True)


def random_part(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Exact mode on a random model for every n; repeats rotate the order of n."""
    from sampler import WorkloadSpec

    spec = WorkloadSpec(args.shape, None, "cpu", "float32", args.prompt_length, args.batch, 0, None, None, 1)
    config = random_config(args.shape)
    model = random_model(config, torch.device("cpu"), torch.float32, 0, random_std(spec, config))
    ids = SpecialIds(mask=config.mask_token_id, eos=config.eos_token_id)
    generator = torch.Generator().manual_seed(1)
    prompts = torch.randint(0, min(ids.mask, ids.eos), (args.batch, args.prompt_length), generator=generator)
    with torch.no_grad():
        model(prompts[:, : args.block_length])  # warm-up
    ns = [parse_lookahead(n) for n in args.ns]
    results: dict[str, dict[str, Any]] = {_label(n): {"n": _label(n), "seconds": [], "cpu_seconds": []} for n in ns}
    for repeat in range(args.repeats):
        order = ns[repeat % len(ns) :] + ns[: repeat % len(ns)]
        for n in order:
            sampler = LLaDASamplerConfig(
                gen_length=args.gen_length, block_length=args.block_length, steps=args.steps, lookahead=n
            )
            counts, handle = count_tokens(model)
            cpu, wall = time.process_time(), time.perf_counter()
            out = generate_exact(model, prompts, None, sampler, ids)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            handle.remove()
            row = results[_label(n)]
            row["seconds"].append(wall)
            row["cpu_seconds"].append(cpu)
            row.update(nfe=out.nfe, tokens_per_pass=sum(counts) / len(counts) / args.batch, tokens=out.generated)
            print(f"random n={_label(n)} repeat {repeat + 1}: {wall:.1f} s (cpu {cpu:.1f} s)", file=sys.stderr)
    full = results["all"]
    rows = []
    for row in results.values():
        best = min(row["seconds"])
        rows.append(
            {
                "n": row["n"],
                "nfe": row["nfe"],
                "tokens_per_pass": row["tokens_per_pass"],
                "forward_cost_vs_all": row["tokens_per_pass"] / full["tokens_per_pass"],
                "best_seconds": best,
                "best_cpu_seconds": min(row["cpu_seconds"]),
                "tokens_per_second": args.gen_length * args.batch / best,
                "speed_vs_all": min(full["seconds"]) / best,
                "cpu_speed_vs_all": min(full["cpu_seconds"]) / min(row["cpu_seconds"]),
                "agreement_with_all": float((row["tokens"] == full["tokens"]).float().mean()),
                "seconds": row["seconds"],
                "cpu_seconds": row["cpu_seconds"],
            }
        )
    return rows


def toy_part(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The toy world's planner: plans and text DDLM→ARM accuracy for every n."""
    from latent_darm.evaluation.benchmarks import load_benchmark
    from latent_darm.evaluation.runner import evaluate, load_results
    from latent_darm.pipelines.factory import ModelCache, build_pipeline
    from latent_darm.toy.benchmarks import TEST_BENCHMARK, register_toy_benchmarks
    from latent_darm.toy.build import build_world
    from latent_darm.toy.demo import _arm, _spec, demo_settings
    from latent_darm.toy.world import WorldConfig, quick_config

    world = build_world(quick_config(0) if args.toy_quick else WorldConfig(seed=0), progress=False)
    register_toy_benchmarks(world)
    c = world.config
    block = args.toy_block
    most = c.plan_length - block
    ns: list[int | None] = [n for n in (0, 1, 2, 4, 8, 16, 32) if n < most] + [most, None]
    settings = demo_settings(quick=args.toy_quick)
    examples = load_benchmark(TEST_BENCHMARK)
    if args.toy_limit:
        examples = examples[: args.toy_limit]
    models = ModelCache(torch.float32, "cpu")
    plans: dict[str, list[str | None]] = {}
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for n in ns:
            role = {
                "kind": "ddlm",
                "model": str(world.planner_dir),
                "gen_length": c.plan_length,
                "steps": c.plan_length,
                "block_length": block,
                "threshold": None,
                "cache": "none",
                "lookahead": n,
            }
            spec = _spec("text", role, _arm(world.executor_dir, settings.answer_tokens))
            pipeline = build_pipeline(spec, models)
            out = Path(scratch) / _label(n)
            started = time.perf_counter()
            summary = evaluate(pipeline, examples, out, batch_size=settings.batch_size, config={"spec": spec})
            seconds = time.perf_counter() - started
            records = load_results(out)
            plans[_label(n)] = [records[key]["plan"] for key in sorted(records)]
            rows.append(
                {
                    "n": _label(n),
                    "text_accuracy": summary.accuracy,
                    "questions": summary.n,
                    "planner_forward_passes": summary.mean_planner_forward_passes,
                    "seconds_per_question": seconds / max(1, summary.n),
                }
            )
            print(f"toy n={_label(n)}: accuracy {summary.accuracy:.3f}, {seconds:.1f} s", file=sys.stderr)
    for row in rows:
        same = [a == b for a, b in zip(plans[row["n"]], plans["all"], strict=True)]
        row["plan_exact_match_vs_all"] = sum(same) / len(same)
    return rows


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["random", "toy", "both"], default="both")
    parser.add_argument("--shape", default=None, help="random-model shape of bench/sampler.py (default small)")
    parser.add_argument("--gen-length", type=int, default=None, help="default 256 (--quick 64)")
    parser.add_argument("--block-length", type=int, default=32)
    parser.add_argument("--steps", type=int, default=None, help="default gen length (one token per step)")
    parser.add_argument("--prompt-length", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--ns", nargs="+", default=None, help="latent-token counts (and 'all')")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--toy-quick", action="store_true", help="the small world (tests' world)")
    parser.add_argument("--toy-block", type=int, default=2, help="plan block length for the toy sweep")
    parser.add_argument("--toy-limit", type=int, default=None, help="first N test questions only")
    parser.add_argument("--quick", action="store_true", help="tiny model, gen 64, quick world: a smoke run")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    args.shape = args.shape or ("tiny" if args.quick else "small")
    args.gen_length = args.gen_length or (64 if args.quick else 256)
    args.steps = args.steps or args.gen_length
    args.ns = args.ns or (["0", "8", "all"] if args.quick else ["0", "8", "32", "96", "all"])
    args.toy_quick = args.toy_quick or args.quick
    return args


def _table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    def cell(value: Any) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    payload: dict[str, Any] = {"command": " ".join(sys.argv), "load_average_at_start": load}
    if args.part in ("random", "both"):
        payload["random"] = random_part(args)
        print(
            f"random {args.shape} model, gen {args.gen_length}, block {args.block_length}, steps {args.steps}, "
            f"prompt {args.prompt_length}, batch {args.batch}, exact mode"
        )
        columns = ["n", "nfe", "tokens_per_pass", "forward_cost_vs_all", "best_seconds", "best_cpu_seconds"]
        columns += ["tokens_per_second", "speed_vs_all", "cpu_speed_vs_all", "agreement_with_all"]
        print(_table(payload["random"], columns))
    if args.part in ("toy", "both"):
        payload["toy"] = toy_part(args)
        print(f"toy world planner, plan blocks of {args.toy_block}")
        columns = ["n", "plan_exact_match_vs_all", "text_accuracy", "questions", "seconds_per_question"]
        print(_table(payload["toy"], columns))
    if args.json is not None:
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
