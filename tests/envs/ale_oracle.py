"""Test oracle for the Atari protocol: a hand-run single ALE emulator and an area resize in numpy."""

from __future__ import annotations

import numpy as np


def area_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float64 weights of an area (box-average) resize along one axis; rows sum to 1.

    Output pixel j averages the input span [j·s, (j+1)·s) with s = n_in / n_out, each input pixel
    weighted by its overlap with that span (what OpenCV's INTER_AREA does for downscaling).
    """
    s = n_in / n_out
    w = np.zeros((n_out, n_in))
    for j in range(n_out):
        lo, hi = j * s, (j + 1) * s
        for i in range(int(np.floor(lo)), min(int(np.ceil(hi)), n_in)):
            w[j, i] = min(hi, i + 1) - max(lo, i)
    return w / s


def area_resize_chw(rgb: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 screen → (3, size, size) float64 area-resized image (not rounded)."""
    wh = area_weights(rgb.shape[0], size)
    ww = area_weights(rgb.shape[1], size)
    img = rgb.astype(np.float64).transpose(2, 0, 1)
    return wh @ img @ ww.T  # (size, H) @ (3, H, W) @ (W, size), batched over channels


class HandAle:
    """One ALE emulator at frame skip 1, driven by hand exactly as the EfficientZero protocol says."""

    def __init__(self, rom: str) -> None:
        import ale_py
        from ale_py import roms

        ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
        self.ale = ale_py.ALEInterface()
        self.ale.setFloat("repeat_action_probability", 0.0)
        self.ale.loadROM(roms.get_rom_path(rom))
        self.actions = self.ale.getMinimalActionSet()

    def reset(self, noops: int) -> np.ndarray:
        """Reset and play `noops` NOOP frames; return the (H, W, 3) screen."""
        self.ale.reset_game()
        for _ in range(noops):
            self.ale.act(self.actions[0])
        return self.ale.getScreenRGB()

    def step(self, action: int, skip: int = 4) -> tuple[np.ndarray, float]:
        """Repeat `action` for `skip` frames; return (max of the last two screens, summed reward)."""
        reward, screens = 0.0, []
        for _ in range(skip):
            reward += self.ale.act(self.actions[action])
            screens.append(self.ale.getScreenRGB())
        return np.maximum(screens[-2], screens[-1]), reward
