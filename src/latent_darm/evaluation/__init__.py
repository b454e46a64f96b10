"""Evaluation: benchmark loaders, the resumable evaluation runner with token accounting, reports with paired
tests, and the diagnostics (plan agreement, latent swaps, attention shares) run on finished evaluations."""
