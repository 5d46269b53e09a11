import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def load_tool(name: str) -> ModuleType:
    """Import tools/<name>.py (tools/ is not a package)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def finish_tiny_cartpole_run(run_dir: Path) -> None:
    """A real inline CartPole run of a tiny network (300 env steps, 20 training steps, 4 simulations) into
    `run_dir`: a finished run directory with a checkpoint, for the tools that read one."""
    from speedy.config import build_config
    from speedy.inline import run_inline
    from tests.core.test_inline_smoke import TINY_MODEL

    config = build_config("cartpole", overrides=[
        *TINY_MODEL, "run.max_env_steps=300", "train.training_steps=20", "replay.block_length=16",
        "replay.start_env_steps=64", "train.batch_size=8", "eval.episodes=1", "eval.interval=20",
        "mcts.num_simulations=4", "eval.num_simulations=4", "run.stop_eval_return=0"])
    run_inline(config, run_dir, log=False)
