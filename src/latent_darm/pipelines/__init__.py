"""Pipelines: the prompts, the four ways a planner and an executor answer a question (alone, text, latent),
the typed spec `darm eval` stores, and the factory that builds a pipeline from it."""
