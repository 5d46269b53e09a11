import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "run.py"), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_bad_setting_and_unknown_game_are_refused_before_anything_is_written(tmp_path):
    out = _run("--set", "train.batch_sise=3", "--run-dir", str(tmp_path / "a"), cwd=tmp_path)
    assert out.returncode == 2 and "did you mean 'train.batch_size'" in out.stderr
    out = _run("--set", "env.id=atari:Breakot", "--run-dir", str(tmp_path / "b"), cwd=tmp_path)
    assert out.returncode == 2 and "unknown Atari game 'Breakot'" in out.stderr and "breakout" in out.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_print_config_resolves_preset_and_overrides(tmp_path):
    out = _run("--preset", "atari100k", "--set", "train.batch_size=64", "--print-config", cwd=tmp_path)
    assert out.returncode == 0
    assert '"batch_size": 64' in out.stdout and '"id": "atari:Breakout"' in out.stdout
