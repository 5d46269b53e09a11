"""Checkpoints that are safe to load and survive crashes.

Format: one `torch.save` file holding only tensors and plain Python values (dicts, lists, str, int, float,
bool, None), loaded with `torch.load(weights_only=True)`, so loading a file can never run code: a crafted
pickle that names any other global is refused. Every checkpoint carries

    format      "speedy-checkpoint"          (anything else is refused: not ours)
    version     CHECKPOINT_VERSION           (a file from another format version is refused)
    fingerprint sha256 of the config's algorithm-defining sections (`config_fingerprint`)
    config      the resolved config as JSON text

plus its payload (model, target model, optimizer, counters, RNG states, ...). A checkpoint from another
config (a different network, task or optimizer) is refused with both fingerprints' differing keys named.

Writing is atomic and keeps one previous copy: the new file is written to `<name>.tmp`, flushed and fsynced,
the current file becomes `<name>.prev`, and the new one is renamed into place. A crash at any moment leaves
either the new or the previous checkpoint whole. `load_latest` tries the current file and falls back to the
previous one, saying why the current one was refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speedy.config import Config

CHECKPOINT_FORMAT = "speedy-checkpoint"
CHECKPOINT_VERSION = 2
CHECKPOINT_NAME = "checkpoint.pt"
# Sections whose values define what a checkpoint's tensors mean; run/roles/eval settings may change on resume.
FINGERPRINT_SECTIONS = ("env", "model", "train", "mcts", "replay")


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used; the message names the file and why."""


def config_fingerprint(config: dict[str, Any]) -> str:
    """sha256 (hex) of the algorithm-defining sections of a config given as a plain dict (`asdict(config)`)."""
    core = {k: config.get(k) for k in FINGERPRINT_SECTIONS}
    return hashlib.sha256(json.dumps(core, sort_keys=True, default=str).encode()).hexdigest()


def rng_state() -> dict[str, Any]:
    """The process's RNG states (torch CPU, numpy's global, Python's `random`) as checkpoint-safe values."""
    np_kind, np_keys, np_pos, np_gauss, np_cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"kind": np_kind, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                      "has_gauss": int(np_gauss), "cached_gaussian": float(np_cached)},
            "python": {"version": py_version, "state": list(py_state),
                       "gauss": py_gauss}}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def save_checkpoint(path: str | Path, state: dict[str, Any], config: dict[str, Any] | None = None) -> Path:
    """Write `state` (tensors and plain values only) to `path` atomically, keeping the previous file as
    `<path>.prev`. With `config` (a plain dict), the format header, fingerprint and config are added."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = dict(state)
    record.update(format=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION)
    if config is not None:
        record.update(fingerprint=config_fingerprint(config), config=json.dumps(config, default=str))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        torch.save(record, handle)
        handle.flush()
        os.fsync(handle.fileno())
    if path.exists():
        os.replace(path, previous_path(path))
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


EVAL_WEIGHTS_DIR = "evals"


def save_eval_weights(run_dir: str | Path, train_steps: int, env_steps: int, model: torch.nn.Module,
                      config: Config) -> Path:
    """`eval.keep_weights`: the weights one evaluation played, as RUN_DIR/evals/step-NNNNNNN/checkpoint.pt (NNNNNNN
    = the training step of the weights), a checkpoint that tools/value_trace.py, tools/greedy_rules.py and (Atari)
    `run.py --evaluate` read like a finished run's."""
    folder = Path(run_dir) / EVAL_WEIGHTS_DIR / f"step-{train_steps:07d}"
    return save_checkpoint(folder / CHECKPOINT_NAME, {"model": model.state_dict(), "train_steps": train_steps,
                                                     "env_steps": env_steps}, config=asdict(config))


def previous_path(path: str | Path) -> Path:
    """Where the checkpoint before `path` is kept."""
    path = Path(path)
    return path.with_name(path.name + ".prev")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu",
                    config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load and check one checkpoint file; raises CheckpointError naming the file and the problem:
    missing, truncated or corrupt, unsafe (would run code), not a speedy checkpoint, another format version,
    or (with `config`) made with a different configuration."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; a cut or foreign file is not one
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt (not a torch.save archive, "
                              f"{path.stat().st_size} bytes)")
    try:
        record = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"checkpoint {path} was refused: it holds objects that could run code on load "
                              f"(only tensors and plain values are allowed): {str(e).splitlines()[0]}") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else 'no detail'})") from e
    if not isinstance(record, dict) or record.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a speedy checkpoint (no '{CHECKPOINT_FORMAT}' header)")
    if record.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {record.get('version')}, this speedy reads "
                              f"version {CHECKPOINT_VERSION}")
    if config is not None and record.get("fingerprint") != config_fingerprint(config):
        diffs = _config_differences(record, config)
        if diffs:
            raise CheckpointError(f"checkpoint {path} was made with another configuration ({'; '.join(diffs[:4])})")
    return record


def _config_differences(record: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """The settings that differ between the checkpoint's config and `config`. A setting added to speedy after the
    checkpoint was written (absent from its config) counts only if `config` moves it off its default: a new
    setting's default keeps the behaviour the checkpoint was trained with."""
    try:
        saved = json.loads(record.get("config", "{}"))
    except ValueError:
        return ["its config is unreadable"]
    defaults = asdict(Config())
    diffs = []
    for section in FINGERPRINT_SECTIONS:
        old, new = saved.get(section) or {}, config.get(section) or {}
        for key in sorted(set(old) | set(new)):
            a, b = old.get(key), new.get(key)
            if key not in old and key in (defaults.get(section) or {}) and _same(b, defaults[section][key]):
                continue
            if not _same(a, b):
                diffs.append(f"{section}.{key}: checkpoint {a!r}, now {b!r}")
    return diffs


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, default=str) == json.dumps(b, default=str)


def load_latest(path: str | Path, device: torch.device | str = "cpu", config: dict[str, Any] | None = None,
                warn: Any = None) -> dict[str, Any]:
    """Load `path`, or its previous copy if `path` is refused (`warn(message)` is told why).
    Raises CheckpointError (both reasons) if neither can be used."""
    path = Path(path)
    try:
        return load_checkpoint(path, device, config)
    except CheckpointError as first:
        prev = previous_path(path)
        if not prev.exists():
            raise
        try:
            record = load_checkpoint(prev, device, config)
        except CheckpointError as second:
            raise CheckpointError(f"{first}; and the previous one: {second}") from second
        if warn is not None:
            warn(f"{first}; using the previous checkpoint {prev} (train step {record.get('train_steps')})")
        return record


def state_digest(value: Any) -> str:
    """sha256 (hex) of a nested structure of tensors and plain values (a state dict, an optimizer state): equal
    digests mean equal keys, shapes, dtypes and bytes. Used to show a resumed run starts from what was saved."""
    digest = hashlib.sha256()

    def walk(item: Any) -> None:
        if isinstance(item, torch.Tensor):
            t = item.detach().to("cpu").contiguous()
            digest.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(item, dict):
            for key in sorted(item, key=str):
                digest.update(f"K{key!r}".encode())
                walk(item[key])
        elif isinstance(item, list | tuple):
            digest.update(f"L{len(item)}".encode())
            for sub in item:
                walk(sub)
        else:
            digest.update(f"V{item!r}".encode())

    walk(value)
    return digest.hexdigest()


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to `path` so that a reader sees the old file or the whole new one, never a part: a temporary
    file of this process (several processes may write the same path, e.g. cluster nodes sharing a run directory),
    fsync, rename."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def save_arrays(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write named arrays to an .npz file atomically (tmp file, fsync, rename): loadable with allow_pickle=False,
    and a crash mid-write leaves the previous file whole."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    with open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path
