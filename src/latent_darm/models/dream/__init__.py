"""models/dream: Dream-v0 (Dream-org/Dream-v0-*-7B) natively — config, network, sampler, planner family."""
