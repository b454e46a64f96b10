"""The toy world: a procedurally generated reasoning task and the tiny planner and executor trained on it.

``world`` (problems, splits, settings) → ``tokenizer`` → ``mixtures`` (chat-formatted training examples) →
``models`` (fresh LLaDA / Llama) → ``build`` (train, save as ordinary checkpoints, cache) → ``check`` (measure).
"""
