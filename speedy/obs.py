"""Observation stacks: frames (B, s, *frame_shape) → network input (B, s·C, H, W) or (B, s·D).

Works on numpy arrays and torch tensors alike (both reshape in row-major order).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

Array = TypeVar("Array")


def merge_stack(frames: Array) -> Array:
    """(B, s, C, H, W) → (B, s·C, H, W); (B, s, D) → (B, s·D)."""
    shape = frames.shape  # type: ignore[attr-defined]
    if len(shape) == 5:
        return frames.reshape(shape[0], shape[1] * shape[2], *shape[3:])  # type: ignore[attr-defined]
    return frames.reshape(shape[0], -1)  # type: ignore[attr-defined]


SMALL_IMAGE_SIDE = 32  # pixels: below this an image keeps its grid (no downsampling) and is not shifted


def is_small_image(shape: tuple[int, ...]) -> bool:
    """True for a (C, H, W) frame or stack with min(H, W) < `SMALL_IMAGE_SIDE` (MinAtar's 10×10; not Atari's 96²)."""
    return len(shape) == 3 and min(shape[1:]) < SMALL_IMAGE_SIDE


def stacked_shape(frame_shape: tuple[int, ...], frame_stack: int) -> tuple[int, ...]:
    """Network input shape for one observation stack."""
    return (frame_stack * frame_shape[0], *frame_shape[1:])


class FrameStacker:
    """Rolling stack of the last s frames of N envs; a new episode's first frame fills the whole stack."""

    def __init__(self, num_envs: int, frame_stack: int, frame_shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.frames = np.zeros((num_envs, frame_stack, *frame_shape), dtype=dtype)

    def reset(self, frames: np.ndarray) -> None:
        """All envs start new episodes with frames (N, *frame_shape)."""
        self.frames[:] = frames[:, None]

    def push(self, frames: np.ndarray, new_episode: np.ndarray) -> None:
        """Append frames (N, *frame_shape); where new_episode (N,) is set the stack is refilled with the frame."""
        self.frames[:, :-1] = self.frames[:, 1:].copy()
        self.frames[:, -1] = frames
        if np.any(new_episode):
            self.frames[new_episode] = frames[new_episode][:, None]

    def observation(self) -> np.ndarray:
        return merge_stack(self.frames)
