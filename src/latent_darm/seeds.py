"""The one seed range: what every consumer of a user's seed takes (numpy's and so datasets' shuffles need
0 <= seed < 2**32; torch takes more), so the CLI and the benchmark subset refuse the same values."""

from __future__ import annotations

MAX_SEED = 2**32 - 1
