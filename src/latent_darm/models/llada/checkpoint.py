"""Read and write LLaDA checkpoint directories in the published layout.

A directory holds ``config.json`` and either ``model.safetensors`` or shards listed in
``model.safetensors.index.json``. Tensors are checked by name and shape against the config before anything is
loaded into the model, so a wrong or truncated checkpoint fails with the tensor's name, not deep inside torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from latent_darm.errors import CheckpointError
from latent_darm.models.llada.configuration import LLaDAConfig
from latent_darm.models.llada.modeling import LLaDAModelLM
from latent_darm.models.safetensors_files import INDEX_FILE, SINGLE_FILE, checked_weight_files


def weight_files(directory: Path) -> dict[str, Path]:
    """Map each tensor name to the safetensors file that holds it (every file opened and checked)."""
    return checked_weight_files(directory)


def load_llada(
    directory: Path,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    strict_config: bool = True,
) -> LLaDAModelLM:
    """Build the model on the meta device, check every tensor, then load the weights in place."""
    config = LLaDAConfig.from_json_file(directory / "config.json", strict=strict_config)
    with torch.device("meta"):
        model = LLaDAModelLM(config)
    expected = {name: tuple(p.shape) for name, p in model.state_dict().items()}
    files = weight_files(directory)
    missing = sorted(set(expected) - set(files))
    if missing:
        raise CheckpointError(f"{directory}: tensor '{missing[0]}' is missing ({len(missing)} missing in all)")
    unexpected = sorted(set(files) - set(expected))
    if unexpected:
        raise CheckpointError(f"{directory}: unexpected tensor '{unexpected[0]}' (does config.json match?)")
    state: dict[str, torch.Tensor] = {}
    by_file: dict[Path, list[str]] = {}
    for name, path in files.items():
        by_file.setdefault(path, []).append(name)
    for path, names in by_file.items():
        try:
            with safe_open(str(path), framework="pt", device=str(device)) as handle:
                for name in names:
                    shape = tuple(handle.get_slice(name).get_shape())
                    if shape != expected[name]:
                        raise CheckpointError(
                            f"{path.name}: tensor '{name}' has shape {list(shape)}, config implies "
                            f"{list(expected[name])}"
                        )
                    state[name] = handle.get_tensor(name).to(dtype)
        except SafetensorError as exc:
            raise CheckpointError(f"{path}: unreadable safetensors file ({str(exc).splitlines()[0]})") from None
    model.load_state_dict(state, assign=True, strict=True)
    return model.eval()


def save_llada(model: LLaDAModelLM, directory: Path, max_shard_bytes: int | None = None) -> None:
    """Write ``config.json`` and the weights, sharded with an index when ``max_shard_bytes`` is exceeded."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    state = {name: t.detach().contiguous().cpu() for name, t in model.state_dict().items()}
    total = sum(t.numel() * t.element_size() for t in state.values())
    if max_shard_bytes is None or total <= max_shard_bytes:
        save_file(state, str(directory / SINGLE_FILE), metadata={"format": "pt"})
        return
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        shard_name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(directory / shard_name), metadata={"format": "pt"})
        weight_map.update({name: shard_name for name in shard})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
