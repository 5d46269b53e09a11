import struct

from tensorboardX.proto import event_pb2

from speedy.metrics import BatchStaleness, MetricsWriter, read_metrics


def test_jsonl_and_tensorboard_records(tmp_path):
    writer = MetricsWriter(tmp_path, "trainer")
    writer.write(1, {"loss": 2.5, "name": "x"})
    writer.write(2, {"loss": 1.5})
    writer.close()
    records = read_metrics(tmp_path / "metrics" / "trainer.jsonl")
    assert [(r["step"], r["loss"]) for r in records] == [(1, 2.5), (2, 1.5)]
    (event_file,) = (tmp_path / "tensorboard" / "trainer").iterdir()
    data, offset, scalars = event_file.read_bytes(), 0, []
    while offset < len(data):  # TFRecord: u64 length, u32 crc, payload, u32 crc
        (length,) = struct.unpack("<Q", data[offset : offset + 8])
        event = event_pb2.Event()
        event.ParseFromString(data[offset + 12 : offset + 12 + length])
        offset += 16 + length
        if event.HasField("summary"):
            scalars.append((event.step, event.summary.value[0].tag, event.summary.value[0].simple_value))
    assert scalars == [(1, "trainer/loss", 2.5), (2, "trainer/loss", 1.5)]


def test_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1}\n{"step": 2, "lo')
    assert read_metrics(path) == [{"step": 1}]


def test_batch_staleness_means_the_ages_since_the_last_take_and_skips_unrecorded_ones() -> None:
    staleness = BatchStaleness()
    staleness.add(trained_at_step=10, sampled_at_step=7, target_version=0)
    staleness.add(trained_at_step=11, sampled_at_step=10, target_version=-1)  # no target version recorded
    assert staleness.take() == {"sample_lead_steps": 2.0, "target_lag_steps": 10.0}  # (3 + 1) / 2, 10 / 1
    assert staleness.take() == {}  # nothing since
    staleness.add(trained_at_step=20, sampled_at_step=-1, target_version=20)
    assert staleness.take() == {"target_lag_steps": 0.0}
