import os
import random
import subprocess
import sys
import threading

from flask_cf_prometheus import _openmetrics_files as openmetrics_files
from flask_cf_prometheus._openmetrics_files import COPY_BYTES, FILE_BYTES, Reader, Writer, key_text

BUCKET = "http_server_request_duration_seconds_bucket"


def key(le, path="/"):
    return key_text(BUCKET, {"code": "200", "le": le, "method": "GET", "path": path})


def plan_key(le, path="/"):
    return BUCKET, (("code", "200"), ("le", le), ("method", "GET"), ("path", path))


def exemplars_in(paths):
    return Reader().read(paths)[0]


def ids(number):
    return number.to_bytes(16, "big"), number.to_bytes(8, "big")


def test_a_written_exemplar_is_read_with_its_trace_span_value_and_time(tmp_path):
    writer = Writer(tmp_path / "openmetrics_7.bin")
    trace_id, span_id = ids(0xABC)
    assert writer.record(key("0.1"), trace_id, span_id, 0.07, 1_700_000_000.25)

    (found,) = exemplars_in([tmp_path / "openmetrics_7.bin"]).items()

    assert found[0] == plan_key("0.1")
    assert found[1].labels == {"trace_id": trace_id.hex(), "span_id": span_id.hex()}
    assert (found[1].value, found[1].timestamp) == (0.07, 1_700_000_000.25)


def test_the_newest_across_files_wins_and_a_file_never_goes_back(tmp_path):
    first, second = Writer(tmp_path / "openmetrics_1.bin"), Writer(tmp_path / "openmetrics_2.bin")
    first.record(key("0.1"), *ids(1), 0.05, 100.0)
    second.record(key("0.1"), *ids(2), 0.06, 200.0)
    first.record(key("0.1"), *ids(3), 0.07, 150.0)
    first.record(key("0.1"), *ids(4), 0.08, 120.0)  # the clock went back: kept out
    paths = sorted(tmp_path.glob("openmetrics_*.bin"))

    newest = exemplars_in(paths)[plan_key("0.1")]
    assert newest.labels["trace_id"] == ids(2)[0].hex()
    assert exemplars_in(paths[:1])[plan_key("0.1")].labels["trace_id"] == ids(3)[0].hex()


def test_one_reader_sees_every_change_to_the_files_it_read_before(tmp_path):
    """A reader parses again only the files whose bytes changed: a record rewritten, a
    record added, a file gone or replaced by a fold are each seen at the next read."""
    first, second = Writer(tmp_path / "openmetrics_1.bin"), Writer(tmp_path / "openmetrics_2.bin")
    first.record(key("0.1"), *ids(1), 0.05, 100.0)
    second.record(key("0.5"), *ids(2), 0.3, 100.0)
    paths = sorted(tmp_path.glob("openmetrics_*.bin"))
    reader = Reader()

    def trace_ids():
        exemplars = reader.read(paths)[0]
        return {dict(labels)["le"]: e.labels["trace_id"] for (_, labels), e in exemplars.items()}

    assert trace_ids() == {"0.1": ids(1)[0].hex(), "0.5": ids(2)[0].hex()}
    assert trace_ids() == {"0.1": ids(1)[0].hex(), "0.5": ids(2)[0].hex()}
    first.record(key("0.1"), *ids(3), 0.06, 101.0)
    assert trace_ids() == {"0.1": ids(3)[0].hex(), "0.5": ids(2)[0].hex()}
    second.record(key("1.0"), *ids(4), 0.7, 102.0)
    assert trace_ids() == {"0.1": ids(3)[0].hex(), "0.5": ids(2)[0].hex(), "1.0": ids(4)[0].hex()}
    aggregate = tmp_path / "openmetrics_aggregate.bin"
    openmetrics_files.fold(paths[0], aggregate)
    paths = [aggregate, paths[1]]
    assert trace_ids() == {"0.1": ids(3)[0].hex(), "0.5": ids(2)[0].hex(), "1.0": ids(4)[0].hex()}
    paths = [aggregate]
    assert trace_ids() == {"0.1": ids(3)[0].hex()}


def test_a_fold_keeps_the_newest_of_each_key_and_removes_the_dead_file(tmp_path):
    aggregate = tmp_path / "openmetrics_aggregate.bin"
    for pid, (le, number, timestamp) in enumerate(
        [("0.1", 1, 10.0), ("0.1", 2, 30.0), ("0.5", 3, 20.0), ("0.1", 4, 25.0)]
    ):
        Writer(tmp_path / f"openmetrics_{pid}.bin").record(key(le), *ids(number), 0.1, timestamp)
        openmetrics_files.fold(tmp_path / f"openmetrics_{pid}.bin", aggregate)

    assert sorted(path.name for path in tmp_path.iterdir()) == ["openmetrics_aggregate.bin"]
    newest = exemplars_in([aggregate])
    assert newest[plan_key("0.1")].labels["trace_id"] == ids(2)[0].hex()
    assert newest[plan_key("0.5")].labels["trace_id"] == ids(3)[0].hex()


def test_a_reused_pid_goes_on_from_the_records_its_namesake_left(tmp_path):
    path = tmp_path / "openmetrics_9.bin"
    Writer(path).record(key("0.1"), *ids(1), 0.1, 10.0)
    again = Writer(path)
    again.record(key("0.1"), *ids(2), 0.1, 20.0)
    again.record(key("0.5"), *ids(3), 0.3, 30.0)

    newest = exemplars_in([path])
    assert {name: exemplar.labels["trace_id"] for name, exemplar in newest.items()} == {
        plan_key("0.1"): ids(2)[0].hex(),
        plan_key("0.5"): ids(3)[0].hex(),
    }
    assert path.stat().st_size == FILE_BYTES


def test_a_full_file_keeps_what_it_holds_and_refuses_new_keys(tmp_path, caplog):
    writer = Writer(tmp_path / "openmetrics_3.bin")
    written = 0
    while writer.record(key("0.1", path=f"/{written:04}"), *ids(written), 0.1, 1.0):
        written += 1
    assert writer.record(key("0.1", path="/0000"), *ids(99), 0.1, 2.0)  # a known key still

    newest = exemplars_in([tmp_path / "openmetrics_3.bin"])
    assert len(newest) == written > 1000
    assert newest[plan_key("0.1", "/0000")].labels["trace_id"] == ids(99)[0].hex()
    assert caplog.text.count("is full") == 1


def test_a_copy_being_written_is_never_read(tmp_path):
    """Torn copies, as a read racing the writer sees them: the reader takes the other."""
    path = tmp_path / "openmetrics_5.bin"
    writer = Writer(path)
    writer.record(key("0.1"), *ids(1), 0.1, 10.0)
    writer.record(key("0.1"), *ids(2), 0.2, 20.0)
    data = bytearray(path.read_bytes())
    (_, copies, newest), *_ = openmetrics_files.records(data)
    newer = copies + COPY_BYTES * (newest[0] % 2)
    data[newer + 20] ^= 0xFF  # half of the newer copy rewritten
    path.write_bytes(bytes(data))

    assert exemplars_in([path])[plan_key("0.1")].labels["trace_id"] == ids(1)[0].hex()


def test_foreign_bytes_under_the_name_give_no_exemplar_and_no_error(tmp_path):
    rng = random.Random(36)
    for number in range(50):
        (tmp_path / f"openmetrics_{number}.bin").write_bytes(rng.randbytes(rng.randrange(1, 9000)))
    (tmp_path / "openmetrics_99.bin").write_bytes(b"\xff\xff\xff\x7f" + bytes(60))

    assert exemplars_in(sorted(tmp_path.iterdir())) == {}


WRITING = """
import sys, time
from flask_cf_prometheus._openmetrics_files import Writer, key_text

writer = Writer(sys.argv[1])
key = key_text("b_bucket", {"le": "0.1"})
number = 0
deadline = time.monotonic() + 3
while time.monotonic() < deadline and number < 2_000_000:
    number += 1
    stamp = number.to_bytes(16, "big")
    writer.record(key, stamp, stamp[8:], float(number), float(number))
"""


def test_reads_racing_a_writer_see_whole_exemplars_that_never_go_back(tmp_path):
    """A writer process overwriting one exemplar as fast as it can; every read agrees
    with itself (its ids, value and time were written together) and is no older than
    the one before."""
    path = tmp_path / "openmetrics_1.bin"
    Writer(path).record(key_text("b_bucket", {"le": "0.1"}), *ids(0), 0.0, 0.0)
    process = subprocess.Popen([sys.executable, "-c", WRITING, str(path)])
    reader, seen, last = Reader(), 0, 0.0
    stop = threading.Timer(10, process.kill)
    stop.start()
    try:
        while process.poll() is None:
            for exemplar in reader.read([path])[0].values():
                number = int(exemplar.labels["trace_id"], 16)
                assert exemplar.value == exemplar.timestamp == float(number) >= last
                assert exemplar.labels["span_id"] == number.to_bytes(8, "big").hex()
                last = exemplar.value
                seen += 1
    finally:
        stop.cancel()
        process.wait(10)
    assert process.returncode == 0
    assert seen > 100
    assert last > 1000
    assert os.path.getsize(path) == FILE_BYTES


def start_key(path="/"):
    return key_text("http_server_requests_created", {"code": "200", "method": "GET", "path": path})


def test_the_earliest_start_wins_in_a_file_across_files_and_through_folds(tmp_path):
    """A start never moves later, which Prometheus would read as a counter reset."""
    first, second = Writer(tmp_path / "openmetrics_1.bin"), Writer(tmp_path / "openmetrics_2.bin")
    assert first.record_start(start_key(), 200.0)
    assert first.record_start(start_key(), 300.0)  # later: the earlier is kept
    second.record_start(start_key(), 150.0)
    second.record_start(start_key("/other"), 400.0)
    first.record(key("0.1"), *ids(1), 0.1, 500.0)  # an exemplar beside them
    series = ("http_server_requests_created", (("code", "200"), ("method", "GET"), ("path", "/")))
    other = (series[0], (("code", "200"), ("method", "GET"), ("path", "/other")))

    assert Reader().read([tmp_path / "openmetrics_1.bin"])[1] == {series: 200.0}
    exemplars, starts = Reader().read(sorted(tmp_path.glob("openmetrics_*.bin")))
    assert starts == {series: 150.0, other: 400.0}
    assert list(exemplars) == [plan_key("0.1")]

    aggregate = tmp_path / "openmetrics_aggregate.bin"
    openmetrics_files.fold(tmp_path / "openmetrics_2.bin", aggregate)
    openmetrics_files.fold(tmp_path / "openmetrics_1.bin", aggregate)
    assert Reader().read([aggregate]) == (exemplars, starts)
    again = Writer(aggregate.with_name("openmetrics_3.bin"))
    again.record_start(start_key(), 100.0)
    assert Reader().read([aggregate, aggregate.with_name("openmetrics_3.bin")])[1][series] == 100.0
