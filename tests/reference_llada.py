"""An independent, deliberately plain port of ML-GSAI/LLaDA ``generate.py`` for equivalence tests and benchmarks.

One loop over blocks and steps, whole-canvas logits every step, one prompt batch as given — no caching, no
slicing, nothing shared with the package's sampler (``latent_darm.models.llada.sampler``). Quirks kept on purpose:
* ``prompt_index`` is every non-mask position of the initial canvas (pads included) for the CFG branch;
* ``confidence_eos_eot_inf`` at temperature 0 removes both EOS and EoT from the confidence softmax (the reference
  aliases ``logits_with_noise`` and ``logits`` there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def reference_generate(
    model,
    prompt: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    steps: int,
    gen_length: int,
    block_length: int,
    temperature: float = 0.0,
    cfg_scale: float = 0.0,
    remasking: str = "low_confidence",
    mask_id: int,
    eos_id: int,
    eot_id: int,
    logits_eos_inf: bool = False,
    confidence_eos_eot_inf: bool = False,
) -> torch.Tensor:
    batch, prompt_len = prompt.shape
    x = torch.full((batch, prompt_len + gen_length), mask_id, dtype=torch.long)
    x[:, :prompt_len] = prompt
    if attention_mask is not None:
        attention_mask = torch.cat([attention_mask, torch.ones(batch, gen_length, dtype=attention_mask.dtype)], dim=1)
    prompt_index = x != mask_id
    num_blocks = gen_length // block_length
    steps_per_block = steps // num_blocks
    for b in range(num_blocks):
        lo, hi = prompt_len + b * block_length, prompt_len + (b + 1) * block_length
        masks_in_block = (x[:, lo:hi] == mask_id).sum(dim=1)
        schedule = torch.zeros(batch, steps_per_block, dtype=torch.long)
        for row in range(batch):
            n = int(masks_in_block[row])
            for s in range(steps_per_block):
                schedule[row, s] = n // steps_per_block + (1 if s < n % steps_per_block else 0)
        for s in range(steps_per_block):
            mask_index = x == mask_id
            if cfg_scale > 0:
                un_x = x.clone()
                un_x[prompt_index] = mask_id
                both_mask = None if attention_mask is None else torch.cat([attention_mask, attention_mask])
                both = model(torch.cat([x, un_x]), attention_mask=both_mask).logits
                cond, uncond = both[:batch], both[batch:]
                logits = uncond + (cfg_scale + 1) * (cond - uncond)
            else:
                logits = model(x, attention_mask=attention_mask).logits
            if logits_eos_inf:
                logits[:, :, eos_id] = -torch.inf
            if temperature == 0:
                x0 = logits.argmax(dim=-1)
            else:
                l64 = logits.to(torch.float64)
                u = torch.rand_like(l64)
                x0 = (l64.exp() / (-torch.log(u)) ** temperature).argmax(dim=-1)
            if confidence_eos_eot_inf:
                logits = logits.clone()
                logits[:, :, eot_id] = -torch.inf
                if temperature == 0:
                    logits[:, :, eos_id] = -torch.inf
            if remasking == "low_confidence":
                p = F.softmax(logits, dim=-1)
                conf = torch.gather(p, -1, x0.unsqueeze(-1)).squeeze(-1)
            else:
                conf = torch.rand(x0.shape)
            conf[:, hi:] = -torch.inf
            x0 = torch.where(mask_index, x0, x)
            conf = torch.where(mask_index, conf, torch.full_like(conf, -torch.inf))
            for row in range(batch):
                k = int(schedule[row, s])
                if k:
                    picked = torch.topk(conf[row], k=k).indices
                    x[row, picked] = x0[row, picked]
    return x
