"""The one seed range: what every consumer of a user's seed takes (numpy's and so datasets' shuffles need
0 <= seed < 2**32; torch takes more), so the CLI and the benchmark subset refuse the same values."""

from __future__ import annotations

MAX_SEED = 2**32 - 1


def check_seed_list(seeds: tuple[int, ...] | None, option: str = "--seeds") -> None:
    """A list of seeds (``--seeds`` of ``darm demo`` and ``darm latent-tokens``): non-empty, each in range, none
    repeated; a one-line ConfigError naming ``option``. None (not given) passes."""
    from latent_darm.errors import ConfigError

    if seeds is None:
        return
    if not seeds:
        raise ConfigError(f"{option}: '' names no seed")
    for index, seed in enumerate(seeds):
        if not 0 <= seed <= MAX_SEED:  # torch's and numpy's generators refuse the others
            raise ConfigError(f"{option} must be an integer from 0 to {MAX_SEED}, got {seed}")
        if seed in seeds[:index]:
            raise ConfigError(f"{option}: {seed} is repeated")
