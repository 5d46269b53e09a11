"""The actors' data/update bound (collect_allowed) against hand-computed env-step limits."""

from speedy.config import build_config
from speedy.roles.actor import collect_allowed

# replay.start_env_steps 400, 2 env steps per training step; room 300 (what 8 envs hold before emitting a block)
CONFIG = build_config("cartpole", overrides=["replay.start_env_steps=400", "train.env_steps_per_train_step=2"])
ROOM = 300


def test_before_training_actors_stop_at_start_plus_room_even_while_replay_has_not_ingested_a_block():
    """A slow replay (0 positions) must not let actors act at random past 400 + 300: a CI run whose replay lagged
    reached 824 of a 544-step bound and sat out the rest of the run."""
    assert collect_allowed(CONFIG, 699, 0, 0, False, ROOM)
    assert not collect_allowed(CONFIG, 700, 0, 0, False, ROOM)
    assert not collect_allowed(CONFIG, 700, 0, 500, False, ROOM)


def test_a_run_resumed_before_its_first_training_step_counts_the_bound_from_its_credited_env_steps():
    """Stopped before training with 900 env steps credited: 900 + 400 + 300 before the first training step."""
    assert collect_allowed(CONFIG, 1_599, 0, 0, False, ROOM, resumed_env_steps=900)
    assert not collect_allowed(CONFIG, 1_600, 0, 0, False, ROOM, resumed_env_steps=900)


def test_after_the_first_training_step_env_steps_stay_below_start_plus_ratio_times_steps():
    assert collect_allowed(CONFIG, 419, 10, 600, False, ROOM)  # 400 + 2 · 10 = 420
    assert not collect_allowed(CONFIG, 420, 10, 600, False, ROOM)


def test_a_replay_that_lost_its_buffer_is_refilled_past_the_bound():
    assert collect_allowed(CONFIG, 5_000, 10, 399, False, ROOM)  # training started: replay was emptied
    assert collect_allowed(CONFIG, 5_000, 0, 0, True, ROOM)  # restarted before training started
    assert not collect_allowed(CONFIG, 5_000, 10, 400, True, ROOM)  # refilled: the bound again


def test_no_ratio_no_bound():
    unbounded = build_config("cartpole", overrides=["train.env_steps_per_train_step=0"])
    assert collect_allowed(unbounded, 10**6, 0, 0, False, ROOM)
