"""Latent tokens (He, Welleck, Fried, arXiv 2602.03769): one LLaDA network trained under five attention patterns
on generated puzzles, and the number of latent tokens as a decoding knob. ``darm latent-tokens`` runs it all.

Modules, one job each: ``variants`` (the registry: one entry per variant, looked up by name everywhere else),
``patterns`` (who may attend whom), ``sudoku`` and ``countdown`` (the puzzles), ``tasks`` (rows, files,
grading), ``tokenizer``, ``objectives`` (training losses), ``decoding``, ``diagnostic`` (the one-step
diagnostic), ``train``, ``sweep`` (the cached, resumable run) and ``report`` (table and figures).
"""
