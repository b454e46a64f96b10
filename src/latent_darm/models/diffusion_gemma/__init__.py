"""models/diffusion_gemma: transformers' own DiffusionGemma classes as a planner family (no port)."""
