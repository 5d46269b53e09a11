"""EfficientZero network and categorical support."""

from speedy.model.network import EfficientZeroNet, InferenceOutput, NetworkSpec
from speedy.model.support import h_inverse, h_transform, scalar_to_support, support_to_scalar

__all__ = [
    "EfficientZeroNet",
    "InferenceOutput",
    "NetworkSpec",
    "h_inverse",
    "h_transform",
    "scalar_to_support",
    "support_to_scalar",
]
