"""Hard-negative mining: ``mine`` (the ``embforge mine`` driver) over ``mine_negatives`` (exact store search,
rank-band sampling, false-negative margin)."""

from .config import MineConfig
from .negatives import MineStats, default_pool, mine_negatives, parse_range
from .run import load_input, mine

__all__ = ["MineConfig", "MineStats", "default_pool", "load_input", "mine", "mine_negatives",
           "parse_range"]
