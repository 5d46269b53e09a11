"""speedy entry point.

    python run.py                         # single-box run of cluster.toml's preset
    python run.py --preset cartpole --inline
    python run.py --preset atari100k --set env.id=atari:Pong --set train.batch_size=128
    python run.py --resume runs/<run>     # continue a stopped run (its config, checkpoint, replay and frames)
    python run.py --evaluate runs/<run> [--episodes 32] [--record game.gif]   # Atari evaluation protocol
    python run.py --cleanup               # remove shared memory left by runs that were killed
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train an EfficientZero agent (SpeedyZero-style system).")
    parser.add_argument("--config", default=str(REPO / "cluster.toml"), help="run file (TOML), default cluster.toml")
    parser.add_argument("--preset", help="named preset (speedy/presets/*.toml), overrides the run file's preset")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one setting, e.g. --set train.batch_size=64 (repeatable)")
    parser.add_argument("--inline", action="store_true", help="run every role in this one process")
    parser.add_argument("--run-dir", help="directory for metrics and checkpoints (default runs/<game>-<time>)")
    parser.add_argument("--max-env-steps", type=int, help="stop self-play after this many agent steps")
    parser.add_argument("--max-train-steps", type=int, help="stop after this many training steps")
    parser.add_argument("--seed", type=int, help="random seed")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue the stopped run in RUN_DIR (its config; --set/--max-* may extend it)")
    parser.add_argument("--evaluate", metavar="CHECKPOINT_OR_RUN_DIR",
                        help="play a trained Atari agent on the evaluation protocol and print raw scores and HNS")
    parser.add_argument("--episodes", type=int, default=32, help="--evaluate: games to play (default 32)")
    parser.add_argument("--record", metavar="OUT.gif", help="--evaluate: write the first game as an animated GIF")
    parser.add_argument("--cleanup", action="store_true", help="remove stale shared memory segments and exit")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    return parser.parse_args(argv)


def cluster_node(config_path: str) -> tuple | int | None:
    """Under torchrun: (torchrun world, node map) once cluster.toml's [cluster] fits the world, or exit code 2
    with one line on stderr if it does not (before anything starts); None in single-box mode."""
    from speedy.cluster.bootstrap import place_node, this_host, torchrun_world
    from speedy.cluster.nodes import ClusterError, parse_cluster
    from speedy.config import ConfigError, read_run_file

    try:
        world = torchrun_world()
        if world is None:
            return None
        table = read_run_file(config_path).get("cluster")
        if table is None:
            raise ClusterError(f"{config_path} has no [cluster] table: a torchrun launch needs the node map")
        spec = parse_cluster(table, world.world_size, config_path)
        world = place_node(world, spec.hosts, this_host())
        from speedy.roles.cluster_agent import check_supported

        check_supported(spec)
    except (ClusterError, ConfigError) as err:
        print(f"cluster error: {err}", file=sys.stderr)
        return 2
    return world, spec


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from speedy.config import ConfigError, build_config, resumed_config

    cluster = cluster_node(args.config)
    if isinstance(cluster, int):
        return cluster
    if cluster is not None and (args.inline or args.evaluate or args.cleanup):
        print("error: --inline, --evaluate and --cleanup are single-box commands (not under torchrun)",
              file=sys.stderr)
        return 2

    if args.cleanup:
        from speedy.shm.segment import cleanup_stale

        removed = cleanup_stale()
        print(f"removed {len(removed)} stale shared-memory segment(s)" + "".join(f"\n  {r}" for r in removed))
        return 0
    if args.evaluate:
        from speedy.evaluate_checkpoint import evaluate_main

        return evaluate_main(args.evaluate, args.episodes, args.seed, args.record)
    overrides = list(args.overrides)
    for flag, key in (("max_env_steps", "run.max_env_steps"), ("max_train_steps", "run.max_train_steps"),
                      ("seed", "run.seed")):
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    try:
        if args.resume:
            if args.preset or args.inline or args.run_dir:
                raise ConfigError("--resume takes the run's own config and directory; use --set to change settings "
                                  "(--preset, --inline and --run-dir do not combine with it)")
            config = resumed_config(args.resume, overrides)
        else:
            config = build_config(args.preset, args.config if Path(args.config).exists() else None, overrides)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    if args.print_config:
        print(json.dumps(asdict(config), indent=2))
        return 0
    from speedy.components import make_run_dir, task_spec

    try:
        task_spec(config)  # an unknown game or environment id fails here, before anything is written
    except ValueError as err:
        print(f"config error: env.id = {config.env.id!r}: {err}", file=sys.stderr)
        return 2

    try:
        run_dir = make_run_dir(config, args.resume or args.run_dir)
    except OSError as err:
        where = args.resume or args.run_dir or config.run.run_dir
        print(f"error: cannot write the run directory under {where}: {err.strerror or err} "
              f"(choose another with --run-dir or run.run_dir)", file=sys.stderr)
        return 2
    print(f"speedy: {config.env.id}, run dir {run_dir}", flush=True)
    if cluster is not None:
        from speedy.roles.cluster_agent import run_cluster_node

        world, spec = cluster
        node_dir = run_dir if world.rank == 0 else run_dir / f"node{world.rank}"
        node_dir.mkdir(parents=True, exist_ok=True)
        return run_cluster_node(config, node_dir, spec, world, resume=bool(args.resume))
    if args.inline:
        from speedy.inline import run_inline

        summary = run_inline(config, run_dir)
    else:
        from speedy.checkpoint import CheckpointError
        from speedy.roles.launch import RunFailedError, run_single_box

        try:
            summary = run_single_box(config, run_dir, resume=bool(args.resume))
        except CheckpointError as err:
            print(f"error: cannot resume: {err}", file=sys.stderr)
            return 2
        except (MemoryError, RunFailedError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    print(json.dumps(asdict(summary), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
