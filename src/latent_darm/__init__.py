"""latent-darm: a discrete diffusion planner and an autoregressive executor, talking in text or latent space."""

__version__ = "0.1.0"
