"""models/llada: LLaDA (GSAI-ML/LLaDA-8B-*) natively — config, network, the published checkpoint layout, and the
planner family."""
