"""Training: supervised fine-tuning of planners and executors, the planner-latent cache, and the projector
trainer (settings, batching and loss, data order, the resumable run directory, the loop, the closed-form map)."""
