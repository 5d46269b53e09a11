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


def test_each_malformed_input_gets_one_line_naming_it_and_exit_code_2(tmp_path):
    cases = {
        "[train\nbatch_size = 3\n": "not valid TOML",
        "[train]\nbatch_size = 'big'\n": "'train.batch_size' = 'big' has type str; expected int",
        "preset = 'nope'\n": "unknown preset 'nope'",
        "[trainer]\nbatch_size = 3\n": "trainer",
    }
    for i, (text, expected) in enumerate(cases.items()):
        run_file = tmp_path / f"bad{i}.toml"
        run_file.write_text(text)
        out = _run("--config", str(run_file), "--run-dir", str(tmp_path / f"r{i}"), cwd=tmp_path)
        assert out.returncode == 2 and expected in out.stderr, out
        assert "Traceback" not in out.stderr and not (tmp_path / f"r{i}").exists()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = _run("--preset", "cartpole", "--run-dir", str(blocker / "run"), cwd=tmp_path)
    assert out.returncode == 2 and "cannot write the run directory" in out.stderr and "Traceback" not in out.stderr
    assert blocker.read_text() == ""
