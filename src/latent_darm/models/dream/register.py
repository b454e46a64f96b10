"""Register Dream with transformers' Auto classes in this process (no remote code, nothing on the hub)."""

from __future__ import annotations

from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

from latent_darm.models.dream.configuration import MODEL_TYPE, DreamConfig
from latent_darm.models.dream.modeling import DreamModel

_done = False


def register() -> None:
    """``AutoConfig``/``AutoModel``/``AutoModelForMaskedLM`` resolve ``model_type "Dream"`` to our classes."""
    global _done
    if _done:
        return
    AutoConfig.register(MODEL_TYPE, DreamConfig, exist_ok=True)
    AutoModel.register(DreamConfig, DreamModel, exist_ok=True)
    AutoModelForMaskedLM.register(DreamConfig, DreamModel, exist_ok=True)
    _done = True
