"""Models: the planner families (LLaDA, Dream, DiffusionGemma) with their checkpoints and samplers, the
role-neutral wrappers (`DiffusionLM`, `AutoregressiveLM`), GGUF reading, chat templates and weight fingerprints."""
