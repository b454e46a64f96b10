"""The toy world: pointer chasing through a small shuffled graph, where every reasoning step is one lookup.

A level-k problem lists the arrows of a random functional graph (each node has at most one outgoing arrow), in
shuffled order, and asks where k steps from a start node end::

    Arrows: 7->3 5->2 8->1 3->8 1->6 2->9 0->5 4->0. Start at 7 and follow 3 arrows. Where do you end?

The path from the start visits k + 1 distinct nodes (7 → 3 → 8 → 1); its last node always has an arrow too
(1->6), so "the node where the arrows run out" is never the answer and the step count matters; the other arrows
are distractors. Every question lists the same number of arrows, so its length says nothing about the level.
Nodes are the numbers ``0 .. nodes-1``; the tokenizer makes each arrow ``7->3`` and each path step ``7 ->`` one
token, so a question is ``arrows + 6`` tokens (14 in the default world: 10 nodes, 8 arrows, levels 1–7).

Why this world: each step is a single attention lookup (find the arrow out of the current node), which a tiny
causal model learns in a few hundred steps; answering directly needs k lookups chained inside one forward pass,
which the 3-layer executor does not learn (it stays near chance at every level). The gold plan is the path so
far, stopping short of the answer (the planner must not reveal it)::

    Path: 7 -> 3 -> 8 ->

An executor given the plan has one lookup left and writes it out before the box (``Last step: 8 -> 1.
\\boxed{1}``, see :attr:`ToyProblem.last_step`). The chain of thought is the whole path, then the boxed answer:
``Path: 7 -> 3 -> 8 -> 1. \\boxed{1}``.

The plan budget: a plan is written on the planner's canvas of ``plan_length`` positions (``Path:``, the nodes,
end of turn), so it shows at most ``plan_length - 2`` nodes. In the default world (``plan_length`` 8, levels up
to 7) the plans of level 7 are cut after 6 nodes and the executor takes the remaining 2 steps itself
(``Last step: 2 -> 1 -> 4. \\boxed{4}``), as in the paper, where 64 planner tokens never hold a whole solution.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

from latent_darm.errors import ConfigError, DataError
from latent_darm.pipelines.prompts import PromptTemplates

Split = Literal["train", "validation", "test"]
SPLITS: tuple[Split, ...] = ("train", "validation", "test")
# Bump when the generator, the text formats or the training recipe change meaning: old caches then go stale.
WORLD_VERSION = "toy-pointers-4"  # 4: transformers' warm-up/cosine schedule in the SFT loops
# Share of the question space (by hash of the question text) that each split may draw from.
_SPLIT_SHARES = {"test": (0, 10), "validation": (10, 20), "train": (20, 100)}
ARROW = "->"
PLAN_PREFIX = "Path:"
STEP_PREFIX = "Last step:"
# The fixed stretches of the world's texts; the tokenizer makes each a single token (short sequences train fast).
QUESTION_PHRASES = ("Arrows:", ". Start at", " and follow", " arrows. Where do you end?", PLAN_PREFIX, STEP_PREFIX)


@dataclass(frozen=True)
class Mixture:
    """Expected number of training examples per training problem, by task (fractions are drawn at random)."""

    plan: float = 0.0  # planner prompt → plan
    execute: float = 0.0  # text-executor prompt with the gold plan → \boxed{answer}
    direct: float = 0.0  # direct prompt → \boxed{answer}
    cot: float = 0.0  # chain-of-thought prompt → the full path, then \boxed{answer}
    latent: float = 0.0  # executor only: the plan canvas as a prefix, then the latent-executor prompt → last step


@dataclass(frozen=True)
class ModelSpec:
    """Size and training budget of one toy model."""

    d_model: int
    layers: int
    heads: int
    kv_heads: int
    mlp_hidden: int
    steps: int
    batch_size: int
    lr: float
    mixture: Mixture = field(default_factory=Mixture)
    # Causal models only: weight of the loss on prompt tokens (0 is plain SFT). The world's prompts are mostly
    # random arrows, so there is little to gain from it here.
    prompt_loss_weight: float = 0.0
    warmup_steps: int = 30
    # Std of the fresh weights. Larger than GPT's 0.02: with 0.02 the tiny models sit on a plateau for the whole
    # budget before any lookup head forms; with 0.1 the executor learns its lookups in a few hundred steps.
    init_std: float = 0.1


PlannerInit = Literal["executor", "scratch"]


@dataclass(frozen=True)
class WorldConfig:
    """Everything that decides the toy world's data and models; its fingerprint keys the build cache.

    ``nodes`` is the number of node names, ``arrows`` the number of arrows every question lists (at least
    ``max(levels) + 1``: the path and the arrow out of its end). ``plan_length`` is the planner's response canvas
    in training and the ``gen_length`` to sample plans with; ``answer_length`` the canvas for the planner's short
    answers (when it acts as executor).

    ``planner_init="executor"`` starts the planner from the trained executor's weights (the same Llama block
    without the causal mask, as Dream and DiffuLLaMA start from autoregressive checkpoints), plus
    ``planner.layers - executor.layers`` extra blocks that start as the identity; the planner's other sizes must
    then equal the executor's. A diffusion model trained from scratch has to discover a two-stage circuit (read
    the previous plan step, then look up its arrow), which takes far longer than the CPU budget; the executor
    already looks up the arrow out of a path step, so the planner only has to learn to use that one position
    later. ``"scratch"`` trains it from random weights (documented, not recommended).
    """

    levels: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7)
    train_per_level: int = 4000
    validation_per_level: int = 16
    test_per_level: int = 100  # ±4–5 points of binomial noise per level (30 gave ±8–9)
    nodes: int = 10
    arrows: int = 8
    shuffle: bool = True
    seed: int = 0
    plan_length: int = 8
    answer_length: int = 12
    block_length: int = 8
    planner_init: PlannerInit = "executor"
    # Planner steps: enough to end on the plateau where its full-budget plans are exact, so that every seed and every
    # CPU gets the same planner (the difficulty comes from the world: fewer denoising steps than plan tokens, or a
    # plan stopped part-way). Measured on 100 test questions per level, plan exact match at 8 steps, levels 1–7:
    # 1000 steps sat at a phase transition (seed 0: 1.00 .57 .60 .40 .20 .17 .20; seed 1: perfect; 700: 1.00 .43
    # .10 .03 0 0 0; 900 perfect); 1500 steps: 99.4% (seed 0), 100% (seed 1), and at 4 steps 32.0% / 31.6% text
    # DDLM→ARM on both seeds (README, `darm demo`).
    planner: ModelSpec = field(
        default_factory=lambda: ModelSpec(
            d_model=96, layers=4, heads=4, kv_heads=2, mlp_hidden=256, steps=1500, batch_size=32, lr=1e-3,
            mixture=Mixture(plan=1.0, execute=0.5, direct=0.1),
        )
    )  # fmt: skip
    executor: ModelSpec = field(
        default_factory=lambda: ModelSpec(
            d_model=96, layers=3, heads=4, kv_heads=2, mlp_hidden=256, steps=600, batch_size=32, lr=3e-3,
            mixture=Mixture(plan=0.5, execute=1.0, direct=0.5, cot=1.0),
        )
    )  # fmt: skip
    # The world has a plan-prefix executor: the trained executor fine-tuned on its mixture plus the ``latent`` task
    # (the gold plan's tokens where the latent pipeline splices the projected latents), built on first use (see
    # ``build_prefix_executor``). Not the paper's setting: reported on its own.
    prefix_executor: bool = True

    def __post_init__(self) -> None:
        if not self.levels or any(not isinstance(k, int) or k < 1 for k in self.levels):
            raise ConfigError(f"levels must be positive integers, got {self.levels!r}")
        if len(set(self.levels)) != len(self.levels):
            raise ConfigError(f"levels must not repeat, got {self.levels!r}")
        check_graph(max(self.levels), self.nodes, self.arrows)
        if self.plan_length % self.block_length:
            raise ConfigError(f"plan_length {self.plan_length} is not divisible by block_length {self.block_length}")
        if self.planner.mixture.latent:
            raise ConfigError("the planner's mixture cannot hold the 'latent' task (it is the executor's)")
        if self.executor.mixture.latent:
            raise ConfigError(
                "the executor's mixture cannot hold the 'latent' task (the paper's executor never sees the latent "
                "slots); set prefix_executor=True for the plan-prefix executor"
            )
        if self.plan_length < 3:
            raise ConfigError(f"plan_length must be ≥ 3 (room for one plan node), got {self.plan_length}")
        if self.planner_init not in ("executor", "scratch"):
            raise ConfigError(f"planner_init must be 'executor' or 'scratch', got {self.planner_init!r}")
        if self.planner_init == "executor":
            p, e = self.planner, self.executor
            sizes = ("d_model", "heads", "kv_heads", "mlp_hidden")
            if any(getattr(p, n) != getattr(e, n) for n in sizes) or p.layers < e.layers:
                raise ConfigError(
                    "planner_init='executor' needs the planner's d_model, heads, kv_heads and mlp_hidden equal to "
                    "the executor's and at least as many layers"
                )

    @property
    def plan_nodes(self) -> int:
        """Nodes a plan can show on its canvas: ``Path:``, the nodes, end of turn. Longer paths are cut there and
        the executor takes the remaining steps itself."""
        return self.plan_length - 2

    def prefix_executor_spec(self, steps: int) -> ModelSpec:
        """The plan-prefix executor's fine-tuning: the executor's mixture with the ``latent`` task added, for
        ``steps`` at a third of the executor's learning rate."""
        mixture = replace(self.executor.mixture, latent=1.0)
        return replace(self.executor, mixture=mixture, steps=steps, lr=self.executor.lr / 3, warmup_steps=steps // 10)

    def fingerprint(self) -> str:
        """Stable hash of the settings, the world version and the default prompt templates (the models learn
        those prompts, so a change to them invalidates a cache too)."""
        payload = {"version": WORLD_VERSION, "config": asdict(self), "templates": PromptTemplates().to_dict()}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def split_size(self, split: Split) -> int:
        return {"train": self.train_per_level, "validation": self.validation_per_level, "test": self.test_per_level}[
            split
        ]


def quick_config(seed: int = 0) -> WorldConfig:
    """A small world for tests and ``--quick``: three levels, small models, seconds of training. The executor
    learns the lookup partly (well above chance with the gold plan); the planner learns little."""
    return WorldConfig(
        levels=(1, 2, 3),
        train_per_level=1000,
        validation_per_level=8,
        test_per_level=16,
        nodes=8,
        arrows=6,
        seed=seed,
        plan_length=8,
        answer_length=8,
        block_length=8,
        planner=ModelSpec(
            d_model=64, layers=3, heads=4, kv_heads=2, mlp_hidden=128, steps=100, batch_size=16, lr=3e-3,
            mixture=Mixture(plan=1.0, execute=0.5, direct=0.1), warmup_steps=5,
        ),
        executor=ModelSpec(
            d_model=64, layers=2, heads=4, kv_heads=2, mlp_hidden=128, steps=300, batch_size=32, lr=3e-3,
            mixture=Mixture(plan=0.5, execute=1.0, direct=0.5, cot=1.0), warmup_steps=5,
        ),
    )  # fmt: skip


def check_graph(max_level: int, nodes: int, arrows: int) -> None:
    """Refuse sizes that cannot hold a level-``max_level`` path, the arrow out of its end and distinct sources."""
    if arrows < max_level + 1:
        raise ConfigError(f"arrows must be ≥ max level + 1 = {max_level + 1}, got {arrows}")
    if nodes < max(arrows, max_level + 2) or nodes > 100:
        raise ConfigError(f"nodes must be in [max(arrows, max level + 2), 100], got {nodes}")


@dataclass(frozen=True)
class ToyProblem:
    """One problem. ``plan`` is the path stopping short of the answer; ``chain_of_thought`` the whole path."""

    id: str
    level: int
    question: str
    plan: str
    answer: int
    chain_of_thought: str

    @property
    def path(self) -> list[int]:
        """Every node of the path, start to answer (read back from the chain of thought)."""
        match = _PATH.match(self.chain_of_thought)
        if match is None:
            raise DataError(f"{self.id}: cannot read the path of {self.chain_of_thought!r}")
        return [int(n) for n in match.group(1).split(f" {ARROW} ")]

    @property
    def last_step(self) -> str:
        """What an executor given the plan writes: the steps the plan left out, then the boxed answer
        (``Last step: 8 -> 1. \\boxed{1}``; after a plan cut short by its canvas, several steps:
        ``Last step: 8 -> 1 -> 4. \\boxed{4}``)."""
        path = self.path
        shown = len(_PATH.match(self.plan).group(1).split(f" {ARROW} "))  # type: ignore[union-attr]
        rest = f" {ARROW} ".join(str(n) for n in path[shown - 1 :])
        return f"{STEP_PREFIX} {rest}. \\boxed{{{self.answer}}}"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def path_text(path: list[int], stop_short: bool) -> str:
    """``Path: 7 -> 3 -> 8 ->`` (stopping short: the last node left out) or ``Path: 7 -> 3 -> 8 -> 1.``"""
    nodes = path[:-1] if stop_short else path
    steps = f" {ARROW} ".join(str(n) for n in nodes)
    return f"{PLAN_PREFIX} {steps} {ARROW}" if stop_short else f"{PLAN_PREFIX} {steps}."


def question_text(edges: list[tuple[int, int]], start: int, steps: int) -> str:
    listed = " ".join(f"{a}{ARROW}{b}" for a, b in edges)
    return f"Arrows: {listed}. Start at {start} and follow {steps} arrows. Where do you end?"


def make_problem(
    rng: random.Random, level: int, nodes: int, arrows: int, shuffle: bool = True, plan_nodes: int | None = None
) -> ToyProblem:
    """A fresh random problem of ``level`` steps (the id is filled in by :func:`generate_split`); ``shuffle``
    lists the arrows out of order (else the path's arrows first, in order). ``plan_nodes`` cuts the plan to its
    first nodes (the plan budget: a canvas shorter than the whole path leaves several steps to the executor)."""
    check_graph(level, nodes, arrows)
    order = rng.sample(range(nodes), nodes)
    path, rest = order[: level + 1], order[level + 1 :]
    # The end of the path always has an arrow out, to a node off the path (the chain never revisits a node).
    edges = [*itertools.pairwise(path), (path[-1], rest[0])]
    for source in rest[: arrows - len(edges)]:  # distractors: distinct sources, targets anywhere but themselves
        edges.append((source, rng.choice([n for n in range(nodes) if n != source])))
    if shuffle:
        rng.shuffle(edges)
    cot = f"{path_text(path, stop_short=False)} \\boxed{{{path[-1]}}}"
    shown = path if plan_nodes is None else path[: min(plan_nodes, level) + 1]
    return ToyProblem("", level, question_text(edges, path[0], level), path_text(shown, True), path[-1], cot)


def split_of(question: str, seed: int) -> Split:
    """The split a question belongs to, by a seeded hash of its text: the splits can never share a question."""
    bucket = int(hashlib.sha256(f"{seed}:{question}".encode()).hexdigest()[:8], 16) % 100
    return next(name for name, (lo, hi) in _SPLIT_SHARES.items() if lo <= bucket < hi)


def generate_split(
    split: Split,
    n_per_level: int,
    levels: tuple[int, ...],
    seed: int,
    nodes: int = 10,
    arrows: int = 8,
    shuffle: bool = True,
    plan_nodes: int | None = None,
) -> list[ToyProblem]:
    """``n_per_level`` distinct problems per level for ``split``, ordered by level; same seed → same problems."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    problems: list[ToyProblem] = []
    for level in levels:
        rng = random.Random(f"{seed}:{split}:{level}")
        seen: set[str] = set()
        attempts = 0
        while len(seen) < n_per_level:
            attempts += 1
            if attempts > 200 * n_per_level + 1000:
                raise ConfigError(f"level {level}: cannot find {n_per_level} distinct {split} problems")
            problem = make_problem(rng, level, nodes, arrows, shuffle, plan_nodes)
            if problem.question in seen or split_of(problem.question, seed) != split:
                continue
            seen.add(problem.question)
            problems.append(replace(problem, id=f"toy-{split}-L{level}-{len(seen) - 1:05d}"))
    return problems


def generate_world(config: WorldConfig) -> dict[Split, list[ToyProblem]]:
    """All three splits of ``config``'s world."""
    return {
        split: generate_split(
            split,
            config.split_size(split),
            config.levels,
            config.seed,
            config.nodes,
            config.arrows,
            config.shuffle,
            config.plan_nodes,
        )
        for split in SPLITS
    }


# ----------------------------------------------------------------------------------------------------------------
# Checking: solve questions and follow plans from their text alone
# ----------------------------------------------------------------------------------------------------------------

_QUESTION = re.compile(r"Arrows: (.*)\. Start at (\d+) and follow (\d+) arrows\. Where do you end\?")
_EDGE = re.compile(r"(\d+)->(\d+)")
_PATH = re.compile(r"Path: (\d+(?: -> \d+)*)( ->|\.)")


def parse_question(question: str) -> tuple[dict[int, int], int, int]:
    """(arrows as source → target, start node, steps) of a toy question."""
    match = _QUESTION.fullmatch(question.strip())
    if match is None:
        raise DataError(f"not a toy question: {question!r}")
    body, start, steps = match.groups()
    edges = _EDGE.findall(body)
    if " ".join(f"{a}->{b}" for a, b in edges) != body:
        raise DataError(f"cannot parse the arrows of {question!r}")
    graph: dict[int, int] = {}
    for a, b in edges:
        if int(a) in graph:
            raise DataError(f"node {a} has two arrows out in {question!r}")
        graph[int(a)] = int(b)
    return graph, int(start), int(steps)


def _step(graph: dict[int, int], node: int) -> int:
    if node not in graph:
        raise DataError(f"node {node} has no arrow out")
    return graph[node]


def solve_question(question: str) -> int:
    """The answer to a toy question, by following its arrows (no plan involved)."""
    graph, node, steps = parse_question(question)
    for _ in range(steps):
        node = _step(graph, node)
    return node


def execute_plan(plan: str, question: str) -> int:
    """Check a plan (or chain of thought) against its question and return where it leads.

    The path must start at the question's start node and follow its arrows; a plan ending in ``->`` is followed
    on to the question's step count (the steps it leaves to the executor: one, or more for a plan cut short).
    Anything else is a :class:`DataError`. Only the first path in the text counts (a chain of thought's boxed
    answer after it is ignored).
    """
    graph, start, steps = parse_question(question)
    match = _PATH.match(plan.strip())
    if match is None:
        raise DataError(f"cannot parse the plan {plan.strip()!r}")
    body, end = match.groups()
    path = [int(n) for n in body.split(" -> ")]
    if path[0] != start:
        raise DataError(f"plan starts at {path[0]}, but the question starts at {start}")
    for a, b in itertools.pairwise(path):
        if graph.get(a) != b:
            raise DataError(f"plan steps {a} -> {b}, which is not an arrow of the question")
    if end.strip() != ARROW:
        return path[-1]
    node = path[-1]
    for _ in range(max(1, steps - len(path) + 1)):  # the steps the plan left to the executor
        node = _step(graph, node)
    return node
