import numpy as np
import pytest
import torch

from speedy.model import EfficientZeroNet, NetworkSpec
from speedy.model.network import NORMS


def _mlp_spec(norm: str) -> NetworkSpec:
    return NetworkSpec((8,), 3, support_size=10, lstm_hidden=16, head_hidden=(8,), proj_hidden=16, proj_out=16,
                       pred_hidden=8, mlp_latent=12, mlp_hidden=(16,), norm=norm)


@pytest.mark.parametrize("norm", NORMS)
def test_mlp_network_shapes_and_lstm_state(norm):
    net = EfficientZeroNet(_mlp_spec(norm)).eval()
    root = net.initial_inference(torch.randn(5, 8))
    assert root.latent.shape == (5, 12) and root.policy_logits.shape == (5, 3) and root.value.shape == (5,)
    assert torch.all(root.value_prefix == 0) and root.lstm_state[0].shape == (1, 5, 16)
    assert root.latent.min() >= 0 and root.latent.max() <= 1  # min-max normalised latent
    step = net.recurrent_inference(root.latent, root.lstm_state, torch.tensor([0, 1, 2, 0, 1]))
    assert step.value_prefix_logits.shape == (5, 21) and step.latent.shape == (5, 12)
    assert not torch.equal(step.lstm_state[0], root.lstm_state[0])  # the LSTM carries state between steps
    assert net.project(step.latent).shape == (5, 16)
    assert not net.project(step.latent, with_grad=False).requires_grad


def test_conv_network_downsamples_96_to_6():
    spec = NetworkSpec((12, 96, 96), 4, support_size=10, channels=16, reduced_channels=4, lstm_hidden=16,
                       head_hidden=(8,), proj_hidden=16, proj_out=16, pred_hidden=8)
    net = EfficientZeroNet(spec).eval()
    root = net.initial_inference(torch.zeros(2, 12, 96, 96, dtype=torch.uint8))
    assert root.latent.shape == (2, 16, 6, 6)
    step = net.recurrent_inference(root.latent, root.lstm_state, torch.tensor([3, 1]))
    assert step.latent.shape == (2, 16, 6, 6) and step.policy_logits.shape == (2, 4)


def _unroll_outputs(net: EfficientZeroNet, obs: torch.Tensor, actions: torch.Tensor) -> list[torch.Tensor]:
    """Value, policy and value-prefix logits of initial inference and every recurrent step of `actions` (K, B)."""
    out = net.initial_inference(obs)
    outputs = [out.value_logits, out.policy_logits]
    latent, state = out.latent, out.lstm_state
    for action in actions:
        step = net.recurrent_inference(latent, state, action)
        outputs += [step.value_logits, step.policy_logits, step.value_prefix_logits]
        latent, state = step.latent, step.lstm_state
    return outputs


def _perturb_weights(net: EfficientZeroNet) -> None:
    """Random weights everywhere (the zero-initialised last layers would make every output trivially equal)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in net.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.5)


def _trained_and_searched(norm: str) -> tuple[EfficientZeroNet, torch.Tensor, torch.Tensor, list, list]:
    """A randomly weighted MLP network with `norm`, a batch of 6 observations, 3 steps of actions, and the unroll
    outputs in training mode and in search (eval) mode."""
    torch.manual_seed(0)
    net = EfficientZeroNet(_mlp_spec(norm))
    _perturb_weights(net)
    obs, actions = torch.randn(6, 8), torch.randint(0, 3, (3, 6))
    with torch.no_grad():
        trained = _unroll_outputs(net.train(), obs, actions)
        searched = _unroll_outputs(net.eval(), obs, actions)
    return net, obs, actions, trained, searched


def test_layer_norm_network_searches_with_what_it_trained():
    """With model.norm = "layer" an output depends on its own sample only: training mode (one unroll step's batch)
    and search (eval mode) compute the same numbers, and one sample gives the same answer alone or in a batch."""
    net, obs, actions, trained, searched = _trained_and_searched("layer")
    with torch.no_grad():
        alone = _unroll_outputs(net.eval(), obs[:1], actions[:, :1])
    for a, b, c in zip(trained, searched, alone, strict=True):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a[:1], c)


def test_batch_norm_network_searches_with_running_statistics():
    """The EfficientZero default ("batch") normalises by the batch in training and by running statistics in
    search, so the two differ: the reason "layer" exists."""
    _, _, _, trained, searched = _trained_and_searched("batch")
    assert not torch.allclose(trained[0], searched[0])


@pytest.mark.parametrize("input_norm", [True, False])
def test_layer_norm_on_the_input_layer_loses_the_observation_magnitude(input_norm):
    """LayerNorm(c·h) = LayerNorm(h): with a LayerNorm after the first linear layer (bias 0), obs and 3·obs get the
    same latent, so a cart 0.5 or 1.5 from the centre looks alike. model.input_norm = false keeps them apart."""
    from dataclasses import replace

    torch.manual_seed(0)
    net = EfficientZeroNet(replace(_mlp_spec("layer"), input_norm=input_norm)).eval()
    first = next(m for m in net.modules() if isinstance(m, torch.nn.Linear))  # the representation's input layer
    torch.nn.init.zeros_(first.bias)
    obs = torch.randn(4, 8)
    with torch.no_grad():
        near, far = net.initial_inference(obs).latent, net.initial_inference(3 * obs).latent
    assert torch.allclose(near, far, atol=1e-5) == input_norm


def test_obs_scale_multiplies_the_observation_before_the_representation():
    """model.obs_scale: a network with multipliers s sees obs exactly as the same weights without them see s·obs."""
    from dataclasses import replace

    scale = (1.0, 2.0, 10.0, 1.0, 1.0, 1.0, 0.5, 3.0)
    torch.manual_seed(0)
    plain = EfficientZeroNet(_mlp_spec("layer")).eval()
    scaled = EfficientZeroNet(replace(_mlp_spec("layer"), obs_scale=scale)).eval()
    scaled.load_state_dict(plain.state_dict())  # the multipliers are not part of the saved weights
    obs = torch.randn(4, 8)
    with torch.no_grad():
        assert torch.equal(scaled.initial_inference(obs).latent,
                           plain.initial_inference(obs * torch.tensor(scale)).latent)
        assert not torch.allclose(scaled.initial_inference(obs).latent, plain.initial_inference(obs).latent)
    with pytest.raises(ValueError, match="obs_scale has 3 multipliers for an input of 8 components"):
        EfficientZeroNet(replace(_mlp_spec("layer"), obs_scale=(1.0, 2.0, 3.0)))


def test_obs_scale_is_one_multiplier_per_component_of_a_vector_frame():
    from dataclasses import replace

    from speedy.components import network_spec
    from speedy.config import build_config
    from speedy.envs.types import EnvSpec

    config = build_config(overrides=["model.obs_scale=[1.0, 1.0, 10.0, 1.0]"])
    vector = EnvSpec("gym:CartPole-v1", "gym", (4,), np.dtype(np.float32), 2, 2, ("LEFT", "RIGHT"))
    assert network_spec(config, vector).obs_scale == (1.0, 1.0, 10.0, 1.0) * 2  # tiled over the stack
    with pytest.raises(ValueError, match=r"model.obs_scale = \[1.0, 1.0, 10.0, 1.0\]: expected one multiplier"):
        network_spec(config, replace(vector, frame_shape=(3,)))


@pytest.mark.parametrize("one_hot", [False, True])
def test_conv_dynamics_sees_the_action_as_planes(one_hot):
    """The dynamics conv gets the latent and the action: one plane a / A (EfficientZero) or A one-hot planes."""
    spec = NetworkSpec((4, 10, 10), 4, support_size=5, channels=8, reduced_channels=2, lstm_hidden=8,
                       head_hidden=(8,), proj_hidden=8, proj_out=8, pred_hidden=8, downsample=False,
                       one_hot_actions=one_hot)
    net = EfficientZeroNet(spec).eval()
    seen = {}

    def keep_input(module: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
        seen["x"] = args[0]

    net.body.dynamics_conv.register_forward_hook(keep_input)
    latent = torch.rand(3, 8, 10, 10)
    net.body.dynamics(latent, torch.tensor([0, 2, 3]))
    x = seen["x"]
    assert torch.equal(x[:, :8], latent)
    if one_hot:
        assert x.shape == (3, 12, 10, 10)
        for b, a in enumerate([0, 2, 3]):
            expected = torch.zeros(4, 10, 10)
            expected[a] = 1.0
            assert torch.equal(x[b, 8:], expected)
    else:
        assert x.shape == (3, 9, 10, 10)
        assert torch.equal(x[:, 8, 0, 0], torch.tensor([0.0, 0.5, 0.75]))
        assert torch.equal(x[:, 8].amin((1, 2)), x[:, 8].amax((1, 2)))  # constant over the plane
