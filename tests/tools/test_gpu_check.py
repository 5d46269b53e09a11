"""tools/gpu_check.py --cpu: every section runs end to end on tiny sizes and writes its JSON and PNG (so the GPU
command a lent machine runs first keeps working)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tools.conftest import REPO


@pytest.mark.timeout(150)  # ≈ 35 s on a quiet 2-core machine, 70 s at load average 10
def test_gpu_check_cpu_completes(tmp_path: Path):
    out = tmp_path / "check"
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "gpu_check.py"), "--cpu", "--out", str(out)],
                          capture_output=True, text=True, timeout=140, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((out / "gpu_check.json").read_text())
    assert {r["batch"] for r in result["inference"]} == {2, 8}
    assert all(r["recurrent_per_s"] > 0 for r in result["inference"])
    assert result["train"]["fp32_steps_per_s"] > 0 and result["train"]["mixed_steps_per_s"] > 0
    assert result["selfplay"]["env_steps_per_s"] > 0 and result["ddp"]["backend"] == "gloo"
    training = result["training"]
    assert "error" not in training and training["curve"] and training["env_steps"] >= 40
    assert training["devices"] == [] and result["monitor"] == {"skipped": "no CUDA device (--cpu)"}
    assert result["host"]["cpu"] and (out / "gpu_check.png").read_bytes()[:4] == b"\x89PNG"


def test_gpu_check_without_cuda_says_so(tmp_path: Path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "gpu_check.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "use --cpu" in proc.stderr
