import pytest
import torch

from speedy.model import EfficientZeroNet, NetworkSpec


@pytest.mark.parametrize("batchnorm", [True, False])
def test_mlp_network_shapes_and_lstm_state(batchnorm):
    spec = NetworkSpec((8,), 3, support_size=10, lstm_hidden=16, head_hidden=(8,), proj_hidden=16, proj_out=16,
                       pred_hidden=8, mlp_latent=12, mlp_hidden=(16,), value_prefix_batchnorm=batchnorm)
    net = EfficientZeroNet(spec).eval()
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
