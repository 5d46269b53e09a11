import numpy as np

from speedy.envs import make_vector_env
from speedy.replay import BlockLayout
from speedy.replay.frames import FrameSource
from speedy.selfplay import SelfPlay, random_policy
from speedy.shm.frames import FrameStore


def test_blocks_reference_the_frames_the_env_produced(tmp_path):
    """Frames are stored once; a block's refs rebuild the exact observation sequence, with lookahead."""
    env = make_vector_env("gym:CartPole-v1", 2, seed=3, mode="train")
    store = FrameStore.create("testselfplay", "frames0", env.spec.frame_shape, env.spec.frame_dtype, 4096)
    try:
        layout = BlockLayout(block_length=5, unroll_steps=2, td_steps=3, frame_stack=2, num_actions=2)
        sp = SelfPlay(env, store, 0, layout, seed=3)
        seen = [[sp.stacker.frames[i, -1].copy()] for i in range(2)]
        blocks = []
        rng = np.random.default_rng(0)
        for step in range(120):
            actions = rng.integers(0, 2, size=2)
            policies = np.tile([0.25, 0.75], (2, 1)).astype(np.float32)
            new_blocks, stats = sp.step(actions, policies, global_env_steps=2 * step)
            blocks += new_blocks
            for i in range(2):
                seen[i].append(sp.stacker.frames[i, -1].copy())
        assert sp.env_steps == 240 and len(blocks) > 10
        source = FrameSource([store])
        for block in blocks:
            frames = source.get(block.frame_ids)
            assert frames.shape == (layout.frame_stack - 1 + block.length + layout.lookahead, 4)
            assert 1 <= block.valid_steps <= block.length + layout.lookahead
            # CartPole reward is 1 for every real transition and 0 in the padding past the end
            np.testing.assert_array_equal(block.rewards[: block.valid_steps], 1.0)
            np.testing.assert_array_equal(block.rewards[block.valid_steps :], 0.0)
            real_policies = block.policies[: min(block.valid_steps, block.length + layout.unroll_steps)]
            np.testing.assert_allclose(real_policies, np.tile([0.25, 0.75], (len(real_policies), 1)))
            # consecutive real observations are distinct CartPole states (no duplicated or skipped frame)
            real = frames[layout.frame_stack - 1 : layout.frame_stack - 1 + min(block.valid_steps, block.length)]
            assert len({row.tobytes() for row in real}) == len(real)
        # every emitted observation is one the env produced, in order, for one of the envs
        produced = {f.tobytes() for env_frames in seen for f in env_frames}
        for block in blocks:
            for frame in source.get(block.frame_ids):
                assert frame.tobytes() in produced
    finally:
        env.close()
        store.close()


def test_before_training_actions_are_uniformly_random_with_uniform_policy_targets():
    actions, policies = random_policy(6000, 3, np.random.default_rng(0))
    assert actions.shape == (6000,) and actions.dtype == np.int64 and policies.shape == (6000, 3)
    np.testing.assert_allclose(policies, 1 / 3)
    counts = np.bincount(actions, minlength=3)
    assert np.all(np.abs(counts - 2000) < 150)  # ±3.4σ of a binomial(6000, 1/3)


def test_blocks_of_an_episode_the_time_limit_cut_say_so():
    """An episode ended by the frame cap is marked truncated (its targets bootstrap past the end); one the game
    ended is not, and neither is a block cut from a running episode."""
    env = make_vector_env("gym:CartPole-v1", 4, seed=1, mode="train", max_frames_train=12)
    store = FrameStore.create("testselfplay", "frames1", env.spec.frame_shape, env.spec.frame_dtype, 4096)
    try:
        layout = BlockLayout(block_length=5, unroll_steps=2, td_steps=3, frame_stack=1, num_actions=2)
        sp = SelfPlay(env, store, 0, layout, seed=1)
        rng = np.random.default_rng(0)
        ended_by_length: dict[int, bool] = {}
        blocks = []
        for step in range(200):
            new_blocks, stats = sp.step(rng.integers(0, 2, size=4), np.full((4, 2), 0.5, np.float32), 4 * step)
            blocks += new_blocks
            for length in stats.episode_lengths:
                ended_by_length[length] = length >= 12
        finals = [b for b in blocks if b.valid_steps < b.length + layout.lookahead]
        running = [b for b in blocks if b.valid_steps == b.length + layout.lookahead]
        assert not any(b.truncated for b in running)
        cut = [b for b in finals if b.truncated]
        ended = [b for b in finals if not b.truncated]
        assert cut and ended  # random play: some episodes fall within 12 steps, others reach the cap
        assert any(ended_by_length.values()) and not all(ended_by_length.values())
    finally:
        env.close()
        store.close()
