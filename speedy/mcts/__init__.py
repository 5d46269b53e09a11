"""Batched MCTS for MuZero-family agents (EfficientZero's tree rules).

`run_search` / `Searcher` are the fast numba engine; `speedy.mcts.reference` is the slow,
readable test oracle. Numba's compile cache goes to ~/.cache/speedy/numba unless NUMBA_CACHE_DIR
is set, so compiled kernels persist across clones on the same machine.
"""

import os
import sys

if "NUMBA_CACHE_DIR" not in os.environ:
    os.environ["NUMBA_CACHE_DIR"] = os.path.join(os.path.expanduser("~"), ".cache", "speedy", "numba")
    if "numba" in sys.modules:  # imported before us: numba read its config already
        sys.modules["numba"].config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]

from speedy.mcts.engine import Searcher, compile_info, run_search  # noqa: E402
from speedy.mcts.policy import (  # noqa: E402
    GREEDY_RULES,
    POLICY_TARGET_RULES,
    completed_q_actions,
    completed_q_policy,
    dirichlet_noise,
    greedy_actions,
    sample_actions,
    self_play_actions,
    visit_distribution,
)
from speedy.mcts.types import (  # noqa: E402
    ExpansionBatch,
    LeafBatch,
    RootBatch,
    SearchConfig,
    SearchResult,
)

__all__ = [
    "GREEDY_RULES",
    "POLICY_TARGET_RULES",
    "ExpansionBatch",
    "LeafBatch",
    "RootBatch",
    "SearchConfig",
    "SearchResult",
    "Searcher",
    "compile_info",
    "completed_q_actions",
    "completed_q_policy",
    "dirichlet_noise",
    "greedy_actions",
    "run_search",
    "sample_actions",
    "self_play_actions",
    "visit_distribution",
]
