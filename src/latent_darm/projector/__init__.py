"""The projector: a small network that maps a planner's hidden states into an executor's input-embedding space,
and the config and model signatures saved with it."""
