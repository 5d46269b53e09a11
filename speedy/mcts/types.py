"""Data crossing the MCTS boundary: search settings, root inputs, leaves to evaluate, results.

Shapes: B = number of roots (searches run side by side), A = number of actions,
S = `num_simulations`. Node slots: the roots live in slot 0 and the node created for root b in
simulation k (0-based) lives in slot k + 1, so the caller keeps embeddings as (S + 1, B, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from speedy.mcts.policy import GREEDY_RULES, POLICY_TARGET_RULES


@dataclass(frozen=True)
class SearchConfig:
    """MCTS hyper-parameters (EfficientZero's Atari values by default).

    `discount` is per agent step (0.997 per frame, 4 frames per step). `lstm_horizon` <= 0 means
    the value-prefix LSTM is never reset inside the tree.
    """

    num_simulations: int = 50
    discount: float = 0.997**4
    pb_c_base: float = 19652.0
    pb_c_init: float = 1.25
    value_delta_max: float = 0.01
    lstm_horizon: int = 5
    dirichlet_alpha: float = 0.3
    exploration_fraction: float = 0.25
    # Not the engine's: what the caller makes of a result (speedy.mcts.policy.GREEDY_RULES) —
    greedy_rule: str = "visits"  # the greedy action
    policy_target_rule: str = "visits"  # the policy target

    def __post_init__(self) -> None:
        if self.num_simulations < 1:
            raise ValueError(f"num_simulations must be >= 1, got {self.num_simulations}")
        if not 0.0 <= self.discount <= 1.0:
            raise ValueError(f"discount must be in [0, 1], got {self.discount}")
        if self.pb_c_base <= 0.0:
            raise ValueError(f"pb_c_base must be > 0, got {self.pb_c_base}")
        if self.value_delta_max <= 0.0:
            raise ValueError(f"value_delta_max must be > 0, got {self.value_delta_max}")
        if self.dirichlet_alpha <= 0.0:
            raise ValueError(f"dirichlet_alpha must be > 0, got {self.dirichlet_alpha}")
        if not 0.0 <= self.exploration_fraction <= 1.0:
            raise ValueError(f"exploration_fraction must be in [0, 1], got {self.exploration_fraction}")
        for name, allowed in (("greedy_rule", GREEDY_RULES), ("policy_target_rule", POLICY_TARGET_RULES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")


@dataclass
class RootBatch:
    """Initial-inference outputs for B roots.

    value_prefix: (B,) float32 root value prefix (usually 0).
    policy_logits: (B, A) float32.
    noise: (B, A) float32 Dirichlet samples mixed into the root priors with weight
        `exploration_fraction`, or None for no noise (evaluation, reanalysis).
    noise_fraction: (B,) float32 in [0, 1], each root's own weight of its noise instead of `exploration_fraction`
        (0: no noise at that root, e.g. an env that plays greedily), or None.
    """

    value_prefix: np.ndarray
    policy_logits: np.ndarray
    noise: np.ndarray | None = None
    noise_fraction: np.ndarray | None = None


@dataclass
class LeafBatch:
    """One simulation's leaves, one per root, for the caller to evaluate with the dynamics network.

    slot: simulation slot (1..S) the new nodes' embeddings go to; roots are slot 0.
    parent_slot: (B,) int32 slot holding the embedding of each leaf's parent (row b of that slot).
    action: (B,) int32 action taken from the parent.
    depth: (B,) int32 depth of the new node (root children have depth 1).
    reset_hidden: (B,) bool, depth % lstm_horizon == 0: zero the new node's LSTM state.

    The engine reuses these arrays on the next `select`; copy them to keep them.
    """

    slot: int
    parent_slot: np.ndarray
    action: np.ndarray
    depth: np.ndarray
    reset_hidden: np.ndarray


@dataclass
class ExpansionBatch:
    """The caller's recurrent inference for a LeafBatch.

    value: (B,) float32 scalar value of each new node.
    value_prefix: (B,) float32 predicted value prefix of each new node.
    policy_logits: (B, A) float32.
    """

    value: np.ndarray
    value_prefix: np.ndarray
    policy_logits: np.ndarray


@dataclass
class SearchResult:
    """Search outputs per root.

    visit_counts: (B, A) int32 visits of the root's children (sums to S per row).
    root_value: (B,) float32 root value_sum / root visit_count (EfficientZero's root->value()).
    root_q: (B, A) float32 Q = r + discount * value of each root child (0 where unvisited).
    """

    visit_counts: np.ndarray
    root_value: np.ndarray
    root_q: np.ndarray


def check_roots(roots: RootBatch) -> tuple[int, int]:
    """Validate a RootBatch and return (B, A); raise ValueError naming the bad field."""
    logits = np.asarray(roots.policy_logits)
    if logits.ndim != 2 or logits.shape[1] < 1:
        raise ValueError(f"RootBatch.policy_logits must have shape (B, A) with A >= 1, got {logits.shape}")
    batch, actions = logits.shape
    if np.shape(roots.value_prefix) != (batch,):
        raise ValueError(f"RootBatch.value_prefix must have shape ({batch},), got {np.shape(roots.value_prefix)}")
    if roots.noise is not None and np.shape(roots.noise) != (batch, actions):
        raise ValueError(f"RootBatch.noise must have shape ({batch}, {actions}), got {np.shape(roots.noise)}")
    if roots.noise_fraction is not None:
        fraction = np.asarray(roots.noise_fraction)
        if fraction.shape != (batch,):
            raise ValueError(f"RootBatch.noise_fraction must have shape ({batch},), got {fraction.shape}")
        if not np.all((fraction >= 0) & (fraction <= 1)):
            raise ValueError("RootBatch.noise_fraction must be in [0, 1]")
    if not np.all(np.isfinite(logits)):
        raise ValueError("RootBatch.policy_logits contains NaN or inf")
    return batch, actions


def check_expansion(out: ExpansionBatch, batch: int, actions: int) -> None:
    """Validate an ExpansionBatch against (B, A); raise ValueError naming the bad field."""
    if not isinstance(out, ExpansionBatch):
        raise TypeError(f"recurrent_fn must return an ExpansionBatch, got {type(out).__name__}")
    if np.shape(out.value) != (batch,):
        raise ValueError(f"ExpansionBatch.value must have shape ({batch},), got {np.shape(out.value)}")
    if np.shape(out.value_prefix) != (batch,):
        raise ValueError(
            f"ExpansionBatch.value_prefix must have shape ({batch},), got {np.shape(out.value_prefix)}"
        )
    if np.shape(out.policy_logits) != (batch, actions):
        raise ValueError(
            f"ExpansionBatch.policy_logits must have shape ({batch}, {actions}), "
            f"got {np.shape(out.policy_logits)}"
        )
