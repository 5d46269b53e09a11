"""speedy.device_monitor: nvidia-smi's CSV answer parsed by hand-checked values, CUDA_VISIBLE_DEVICES honoured, and
the sampling thread run against a real executable that answers as nvidia-smi does (this machine has no GPU);
speedy.profile turns the samples of every node into GPU figures and a note on the bottleneck."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest

from speedy.device_monitor import DeviceMonitor, DeviceQueryError, DeviceReading, parse_query, summarize, visible
from speedy.profile import analyze, format_report

from .profile_records import board_row, write_jsonl

ANSWER = ("0, GPU-1a2b3c4d-0000-1111-2222-333344445555, NVIDIA H100 80GB HBM3, 35, 1024, 81559\n"
          "1, GPU-9f8e7d6c-0000-1111-2222-333344445555, NVIDIA H100 80GB HBM3, [N/A], [N/A], 81559\n")


def test_parse_query_reads_fractions_and_gib():
    first, second = parse_query(ANSWER)
    assert first == DeviceReading(index=0, uuid="GPU-1a2b3c4d-0000-1111-2222-333344445555",
                                  name="NVIDIA H100 80GB HBM3", busy=0.35, memory_used_gib=1.0,
                                  memory_total_gib=pytest.approx(79.647, abs=1e-3))
    assert (second.index, second.busy, second.memory_used_gib) == (1, None, 0.0)


def test_parse_query_names_the_line_it_cannot_read():
    with pytest.raises(DeviceQueryError, match=r"'0, GPU-x, H100, 35'.*expected 6"):
        parse_query("0, GPU-x, H100, 35\n")
    with pytest.raises(DeviceQueryError, match="busy"):
        parse_query("0, GPU-x, H100, busy, 1, 2\n")


def test_visible_follows_cuda_visible_devices():
    readings = parse_query(ANSWER)
    assert visible(readings, None) == readings
    assert visible(readings, "") == []
    assert [r.index for r in visible(readings, "1")] == [1]
    assert [r.index for r in visible(readings, "GPU-9f8e,0")] == [1, 0]
    assert visible(readings, "7") == []


def _fake_nvidia_smi(folder: Path, body: str) -> Path:
    path = folder / "nvidia-smi"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_monitor_samples_a_real_executable_until_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Busy 100 % and 0 % on alternate calls: the mean over the samples is about half, the max is 1."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    counter = tmp_path / "calls"
    counter.write_text("0")
    fake = _fake_nvidia_smi(tmp_path, f"""n=$(cat {counter}); echo $((n + 1)) > {counter}
case "$*" in *--query-gpu=index,uuid,name,utilization.gpu,memory.used,memory.total*) ;; *) exit 3 ;; esac
echo "0, GPU-aa, Fake GPU, $(( (n % 2) * 100 )), $((n * 1024)), 8192"
""")
    monitor = DeviceMonitor.start(interval_s=0.02, nvidia_smi=str(fake))
    assert monitor is not None
    time.sleep(0.5)
    monitor.close()
    report = monitor.report()["gpu0"]
    calls = int(counter.read_text())
    assert report["samples"] == calls >= 6
    assert 0.35 <= report["busy_mean"] <= 0.65 and report["busy_max"] == 1.0
    assert report["memory_used_gib"] == calls - 1 and report["memory_total_gib"] == 8.0
    assert report["name"] == "Fake GPU" and monitor.error is None
    time.sleep(0.1)
    assert int(counter.read_text()) == calls  # closed: no more samples
    assert monitor.report() == {}


def test_no_nvidia_smi_means_no_monitor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert DeviceMonitor.start() is None


def test_a_failing_driver_is_said_and_the_run_goes_on_without_gpu_figures(tmp_path: Path):
    fake = _fake_nvidia_smi(tmp_path, "echo 'NVIDIA-SMI has failed because it could not communicate with the "
                                      "NVIDIA driver' >&2; exit 9\n")
    said: list[str] = []
    assert DeviceMonitor.start(nvidia_smi=str(fake), say=lambda text, **_: said.append(text)) is None
    assert len(said) == 1 and "exited with 9" in said[0] and "could not communicate" in said[0]


def test_summarize_weights_each_gpu_by_its_samples():
    a = DeviceReading(0, "GPU-a", "G", 0.2, 1.0, 8.0)
    b = DeviceReading(0, "GPU-a", "G", 0.8, 3.0, 8.0)
    c = DeviceReading(1, "GPU-b", "G", None, 0.5, 8.0)
    out = summarize([[a, c], [b, c]])
    assert out["gpu0"] == {"name": "G", "busy_mean": pytest.approx(0.5), "busy_max": 0.8, "memory_used_gib": 3.0,
                           "memory_total_gib": 8.0, "samples": 2}
    assert out["gpu1"]["busy_mean"] is None and out["gpu1"]["busy_max"] is None


def _gpu(busy: float, samples: int, used: float) -> dict:
    return {"name": "NVIDIA H100", "busy_mean": busy, "busy_max": busy, "memory_used_gib": used,
            "memory_total_gib": 79.6, "samples": samples}


def test_profile_reports_every_nodes_gpus_and_says_what_a_trainer_bound_run_leaves_idle(tmp_path: Path):
    """A trainer busy 90 % training while node 0's GPU runs kernels 30 % of the time: the GPU figures of node 0 (agent)
    and node 1 (link records) are in the profile, and the bottleneck says the step is CPU-bound."""
    t0 = 1000.0
    snapshots = []
    busy = [0.0, 0.9, 0.2, 0.4]  # interval means (each row's covers the interval ending at its time)
    samples = [1, 10, 30, 10]  # the third interval has three times the samples of the fourth
    for i, t in enumerate((t0, t0 + 10, t0 + 20, t0 + 30)):
        steps = 10 * i  # the window starts at the first reading after a training step: (t0 + 10, t0 + 30]
        trainer = board_row(t, {"busy_train": 9.5 * i, "wait_input": 0.5 * i}, train_steps=steps)
        reanalyzer = board_row(t, {"busy_tree": 3.0 * i, "wait_output": 7.0 * i}, items=5 * i)
        snapshots.append({"time": t, "step": steps, "devices": {"gpu0": _gpu(busy[i], samples[i], 1.0 + i)},
                          "roles": {"trainer": trainer, "reanalyzer0": reanalyzer}})
    write_jsonl(tmp_path / "metrics" / "agent.jsonl",
           [{"time": t0, "step": 0, "config": {"train": {"batch_size": 8, "device": "cuda"}}}, *snapshots])
    write_jsonl(tmp_path / "node1" / "metrics" / "link.jsonl",
           [{"time": t0 + 10 * i, "step": 10 * i, "peer": "node0", "frames_in": 100 * i,
             "devices": {"gpu3": _gpu(0.9, 10, 5.0)}} for i in range(4)])
    profile = analyze(tmp_path)
    assert profile.window == (10.0, 30.0)
    node0, node1 = profile.devices
    assert (node0.node, node0.device, node1.node, node1.device) == ("node0", "gpu0", "node1", "gpu3")
    assert node0.busy_mean == pytest.approx((0.2 * 30 + 0.4 * 10) / 40)  # weighted by samples
    assert node0.busy_max == 0.4 and node0.memory_used_gib == 4.0
    assert node0.timeline == [(20.0, 0.2), (30.0, 0.4)]
    assert profile.diagnosis.bottleneck == "trainer" and profile.diagnosis.stage == "busy_train"
    assert "gpu0 (NVIDIA H100) runs kernels only 25 % of the time" in profile.diagnosis.evidence
    report = format_report(profile)
    assert "node0/gpu0 (NVIDIA H100): kernels running 25 % of the time (busiest interval 40 %), memory up to 4.0 " \
           "of 79.6 GiB" in report
    assert "node1/gpu3 (NVIDIA H100): kernels running 90 %" in report
    assert json.loads(json.dumps(profile.to_json()))["devices"][1]["busy_mean"] == 0.9


def test_a_cpu_run_has_no_gpu_figures(tmp_path: Path):
    t0 = 1000.0
    rows = [{"time": t0 + 10 * i, "step": 10 * i, "roles": {
        "trainer": board_row(t0 + 10 * i, {"busy_train": 9.0 * i}, train_steps=10 * i)}} for i in range(3)]
    write_jsonl(tmp_path / "metrics" / "agent.jsonl",
                [{"time": t0, "step": 0, "config": {"train": {"device": "cpu"}}}, *rows])
    profile = analyze(tmp_path)
    assert profile.devices == [] and "kernels" not in format_report(profile)


def test_a_trainer_on_a_saturated_gpu_is_not_told_to_add_cpu_threads(tmp_path: Path):
    """As the H200 check saw it: the trainer trains 90 % of the time, the GPU it shares with 8 reanalyzers runs kernels
    95 % of the time and cores are idle. More trainer threads cannot help; the advice names the GPU's other users and
    the full batches ring instead."""
    t0 = 1000.0
    snapshots = []
    for i, t in enumerate((t0, t0 + 10, t0 + 20, t0 + 30)):
        roles = {"trainer": board_row(t, {"busy_train": 9.0 * i, "wait_input": 0.2 * i}, train_steps=10 * i)}
        roles |= {f"reanalyzer{k}": board_row(t, {"busy_inference": 8.0 * i, "busy_tree": 1.0 * i}, items=5 * i)
                  for k in range(8)}
        snapshots.append({"time": t, "step": 10 * i, "cores": 16, "devices": {"gpu0": _gpu(0.95, 10, 40.0)},
                          "rings": {"batches": {"mean": 0.94, "max": 1.0}}, "roles": roles})
    write_jsonl(tmp_path / "metrics" / "agent.jsonl",
                [{"time": t0, "step": 0, "config": {"train": {"batch_size": 8, "device": "auto"}},
                  "plan": {"threads": {"trainer": 2}}}, *snapshots])
    diagnosis = analyze(tmp_path).diagnosis
    assert diagnosis.bottleneck == "trainer" and "the GPU is the limit" in diagnosis.evidence
    assert "roles.trainer_threads=" not in diagnosis.advice
    assert "not roles.trainer_threads: gpu0 is busy 95 %" in diagnosis.advice
    assert "8 inference processes (8 reanalyzers)" in diagnosis.advice
    assert "batches ring is 94 % full" in diagnosis.advice
