"""Moved to :mod:`latent_darm.models.splice` (the executor needs it, and models sit below the bridge); this name
stays importable."""

from latent_darm.models.splice import PLACEMENTS, PLAN_MARKER, left_pad, position_ids_from_mask, splice

__all__ = ["PLACEMENTS", "PLAN_MARKER", "left_pad", "position_ids_from_mask", "splice"]
