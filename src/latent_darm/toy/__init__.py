"""The toy world: a procedurally generated pointer-chasing task and the tiny planner and executor trained on it.

``world`` (problems, splits, settings) → ``tokenizer`` → ``mixtures`` (chat-formatted training examples) →
``models`` (fresh Llama executor; LLaDA planner started from it) → ``build`` (train, save as ordinary checkpoints,
cache) → ``check`` (measure) → ``benchmarks`` (register the test split per level as ``toy1`` … ``toyN``).
"""
