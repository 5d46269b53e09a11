import numpy as np

from speedy.targets import (
    beta_schedule,
    bootstrap_offsets,
    corrected_td_steps,
    position_mask,
    value_prefix_targets,
    value_targets,
    visit_temperature,
)

# Hand-written trajectory (K = 2 unroll steps, n_max = 3): rewards after t, t+1, … ; γ = 0.5.
REWARDS = np.array([[1.0, 0.0, 2.0, 4.0, 8.0]], dtype=np.float32)
BOOT = np.array([[10.0, 20.0, 30.0]])


def test_n_step_values_full_trajectory():
    # z0 = 1 + .5·0 + .25·2 + .125·v(t+3)=10 → 2.75 ; z1 = 0 + .5·2 + .25·4 + .125·20 = 4.5
    # z2 = 2 + .5·4 + .25·8 + .125·30 = 9.75
    z = value_targets(REWARDS, BOOT, np.array([3]), np.array([100]), 0.5)
    np.testing.assert_allclose(z, [[2.75, 4.5, 9.75]])


def test_episode_end_drops_bootstrap_and_zeroes_after_end():
    # valid_steps = 3: states t, t+1, t+2 are real, t+3 terminal. Rewards past the end are stored as 0.
    rewards = REWARDS.copy()
    rewards[0, 3:] = 0
    # z0 = 1 + 0 + .25·2 (bootstrap index 3 is not a real state) = 1.5 ; z1 = 0 + .5·2 = 1 ; z2 = 2
    z = value_targets(rewards, BOOT, np.array([3]), np.array([3]), 0.5)
    np.testing.assert_allclose(z, [[1.5, 1.0, 2.0]])
    # valid_steps = 1: only t is real: z0 = r_t = 1, later targets are 0 (absorbing)
    z = value_targets(rewards, BOOT, np.array([3]), np.array([1]), 0.5)
    np.testing.assert_allclose(z, [[1.0, 0.0, 0.0]])


def test_a_time_limit_cut_bootstraps_past_the_end():
    # Same episode as above (valid_steps = 3, s_T = t+3), but cut by the time limit: the game goes on, so targets whose
    # n steps reach T bootstrap γ^(T−t−k)·v with v read at the last stored state t+2 (BOOT holds the values there).
    rewards = REWARDS.copy()
    rewards[0, 3:] = 0
    cut = np.array([True])
    np.testing.assert_array_equal(bootstrap_offsets(np.array([3]), np.array([3]), cut, 3), [[2, 2, 2]])
    # z0 = 1 + 0 + .25·2 + .125·10 = 2.75 ; z1 = 0 + .5·2 + .25·20 = 6 ; z2 = 2 + .5·30 = 17
    z = value_targets(rewards, BOOT, np.array([3]), np.array([3]), 0.5, cut)
    np.testing.assert_allclose(z, [[2.75, 6.0, 17.0]])
    # valid_steps = 1: z0 = 1 + .5·10 = 6; the final state (k = 1) is worth v itself (20), not 0
    z = value_targets(rewards, BOOT, np.array([3]), np.array([1]), 0.5, cut)
    np.testing.assert_allclose(z[:, :2], [[6.0, 20.0]])
    # far from the cut nothing changes: offsets k + n, the same targets as an uncut episode
    np.testing.assert_array_equal(bootstrap_offsets(np.array([3]), np.array([100]), cut, 3), [[3, 4, 5]])
    np.testing.assert_allclose(value_targets(REWARDS, BOOT, np.array([3]), np.array([100]), 0.5, cut),
                               [[2.75, 4.5, 9.75]])


def test_off_policy_correction_shortens_n():
    # period = 0.3 · 1000 = 300 env steps: ages 0, 299 keep n = 3; 300 → 2; 5000 → clipped to 1
    n = corrected_td_steps(np.array([0, 299, 300, 5000]), 3, 0.3, 1000)
    np.testing.assert_array_equal(n, [3, 3, 2, 1])
    # with n = 1: z0 = 1 + .5·10 = 6, z1 = 0 + .5·20 = 10, z2 = 2 + .5·30 = 17
    z = value_targets(REWARDS, BOOT, np.array([1]), np.array([100]), 0.5)
    np.testing.assert_allclose(z, [[6.0, 10.0, 17.0]])


def test_value_prefix_resets_every_horizon():
    rewards = np.array([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    np.testing.assert_allclose(value_prefix_targets(rewards, 5), [[1, 3, 6, 10, 15, 6]])
    np.testing.assert_allclose(value_prefix_targets(rewards, 2), [[1, 3, 3, 7, 5, 11]])


def test_mask_and_schedules():
    np.testing.assert_array_equal(position_mask(np.array([2, 9]), 4), [[1, 1, 0, 0], [1, 1, 1, 1]])
    assert beta_schedule(0.0, 0.4, 1.0) == 0.4
    assert abs(beta_schedule(0.5, 0.4, 1.0) - 0.7) < 1e-12
    assert beta_schedule(2.0, 0.4, 1.0) == 1.0
    assert visit_temperature(0.1, [1.0, 0.5, 0.25], [0.5, 0.75]) == 1.0
    assert visit_temperature(0.6, [1.0, 0.5, 0.25], [0.5, 0.75]) == 0.5
    assert visit_temperature(0.9, [1.0, 0.5, 0.25], [0.5, 0.75]) == 0.25
