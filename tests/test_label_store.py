"""The durable label queue (hf_prefs/labels/queue.py on hf_prefs/labels/event_log.py): kill -9 mid-write,
concurrent writers, bad requests, restart, leases, undo, agreement, rounds filled from files."""

from __future__ import annotations

import json
import shutil
import os
import queue as queue_mod
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import hf_prefs
from hf_prefs.label_app import cli as label_cli
from hf_prefs.labels.event_log import LOG_NAME, EventLog
from hf_prefs.labels.queue import LabelQueue, LabelRequestError
from hf_prefs.labels.schema import LabelValidationError, validate_labels

K = 4


def subprocess_env() -> dict[str, str]:
    """The environment for writer subprocesses: they import the same ``hf_prefs`` as this test (a script
    run from a temporary folder would otherwise get whatever checkout is installed)."""
    root = str(Path(hf_prefs.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}


def make_items(n: int, k: int = K, tag: str = "") -> list[tuple[str, list[str]]]:
    return [(f"query {tag}{i}", [f"q{tag}{i} sample {j}" for j in range(k)]) for i in range(n)]


def log_lines(path: Path) -> list[dict]:
    """Every line of the log must be a complete JSON object (no torn or merged records)."""
    data = (path / LOG_NAME).read_bytes()
    assert data.endswith(b"\n"), "the log ends in a partial line"
    events = []
    for line in data.decode("utf-8").splitlines():
        rec = json.loads(line)
        events.extend(rec["events"] if rec["type"] == "batch" else [rec])
    return events


class FakeClock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


# --------------------------------------------------------------------------- basic API and schema
def test_put_round_lease_submit_labels_schema(tmp_path):
    q = LabelQueue(tmp_path, seed=3)
    ids = q.put_round(0, make_items(3))
    assert ids == ["0-00000", "0-00001", "0-00002"]
    assert q.put_round("extra", [{"query": "x", "samples": ["a", "b"], "item_id": "custom"}]) == ["custom"]

    lease = q.next_item("alice")
    assert lease.item_id == "0-00000" and sorted(lease.order) == list(range(K)) and not lease.repeat
    # the position the labeler clicks maps back to the stored index through the shown order
    position = lease.order.index(2)
    assert lease.shown_samples[position] == "q0 sample 2"
    rec = q.submit("alice", lease.item_id, lease.best_from_position(position))
    assert rec["best"] == 2 and rec["shown_order"] == list(lease.order)

    ds = q.labels()
    assert len(ds) == 1
    row = ds[0]
    assert (row["query"], row["samples"], row["best"], row["labeler"], row["item_id"], row["round"]) == (
        "query 0", [f"q0 sample {j}" for j in range(K)], 2, "alice", "0-00000", "0",
    )
    assert row["shown_at"] <= row["labeled_at"] and row["source"] == "api"
    validate_labels(ds)  # the project's label schema
    assert len(q.labels(round_id="extra")) == 0 and len(q.labels(round_id=0)) == 1
    assert q.round_status(0).done == 1 and q.round_status(0).total == 3


# --------------------------------------------------------------------------- bad requests
def test_bad_requests_are_rejected_and_write_nothing(tmp_path):
    q = LabelQueue(tmp_path)
    q.put_round(0, make_items(2))
    lease = q.next_item("alice")
    q.submit("alice", lease.item_id, 1)
    before = (tmp_path / LOG_NAME).read_bytes()

    cases = [
        (dict(item_id="0-99999", best=0), "unknown item_id '0-99999'"),
        (dict(item_id="0-00001", best=4), "best=4 is out of range [0, 3]"),
        (dict(item_id="0-00001", best=-1), "best=-1 is out of range [0, 3]"),
        (dict(item_id="0-00001", best=True), "best must be an integer"),
        (dict(item_id="0-00001", best=1.5), "best must be an integer"),
        (dict(item_id="0-00001", best="2"), "best must be an integer"),
        (dict(item_id=lease.item_id, best=0), "already answered item '0-00000'"),  # replay
        (dict(item_id="0-00001", best=0, repeat=True), "a repeat needs a first answer"),
    ]
    for kwargs, message in cases:
        with pytest.raises(LabelRequestError, match=message.replace("[", r"\[").replace("]", r"\]")):
            q.submit("alice", **kwargs)
    with pytest.raises(LabelRequestError, match="labeler must be a non-empty string"):
        q.submit("", "0-00001", 0)
    with pytest.raises(LabelRequestError, match="unknown item_id"):
        q.skip("alice", "nope")
    with pytest.raises(LabelRequestError, match="no answer to undo"):
        q.undo("bob")
    # a batch with one bad row writes none of it
    with pytest.raises(LabelValidationError, match=r"row 1, field 'samples\[1\]': sample 1 is empty"):
        q.put_round(1, [("ok", ["a", "b"]), ("bad", ["a", " "])])
    with pytest.raises(LabelValidationError, match="row 0, field 'item_id'.*already in the queue"):
        q.put_round(1, [{"query": "x", "samples": ["a", "b"], "item_id": "0-00000"}])
    with pytest.raises(LabelValidationError, match="row 1, field 'item_id': item_id 'y' is row 0's too, with another"):
        q.put_round(1, [{"query": "x", "samples": ["a", "b"], "item_id": "y"}, {"query": "x", "samples": ["a", "c"],
                                                                               "item_id": "y"}])
    assert (tmp_path / LOG_NAME).read_bytes() == before
    assert len(q.labels()) == 1 and q.rounds() == ["0"]


def test_labels_per_item_full_item_refused(tmp_path):
    q = LabelQueue(tmp_path)
    q.put_round(0, make_items(1))
    q.submit("alice", "0-00000", 0)
    with pytest.raises(LabelRequestError, match=r"already has its 1 label\(s\)"):
        q.submit("bob", "0-00000", 1)
    q2 = LabelQueue(tmp_path, labels_per_item=2)  # stored in the log: every process sees it
    assert LabelQueue(tmp_path).round_status(0).done == 0
    q2.submit("bob", "0-00000", 1)
    assert q.round_status(0).done == 1 and sorted(q.labels()["labeler"]) == ["alice", "bob"]


# --------------------------------------------------------------------------- durability
def test_every_submit_is_fsynced_before_it_returns(tmp_path, monkeypatch):
    from hf_prefs.labels import event_log

    q = LabelQueue(tmp_path)
    q.put_round(0, make_items(2))
    synced: list[bytes] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        real_fsync(fd)
        synced.append((tmp_path / LOG_NAME).read_bytes())

    monkeypatch.setattr(event_log.os, "fsync", spy)
    rec = q.submit("alice", "0-00001", 3)
    assert len(synced) == 1 and rec["label_id"].encode() in synced[0]


def test_torn_tail_and_corrupt_line_never_break_loading(tmp_path, caplog):
    q = LabelQueue(tmp_path)
    q.put_round(0, make_items(3))
    first = q.submit("alice", "0-00000", 1)["label_id"]
    q.close()
    log = tmp_path / LOG_NAME
    with open(log, "ab") as f:  # a complete line of garbage, then a record torn mid-write
        f.write(b'{"type": "label", "label_id": "x", "item\n')
        f.write(b'{"type":"label","label_id":"torn","item_id":"0-00001","labeler":"alice","be')
    q = LabelQueue(tmp_path)
    assert q.labels()["label_id"] == [first]
    assert q.bad_lines == [3] and "line 3 skipped" in caplog.text
    assert "dropping a torn, unconfirmed tail" in caplog.text  # opening (under the file lock) dropped it
    second = q.submit("alice", "0-00001", 2)["label_id"]
    lines = log.read_bytes().split(b"\n")
    assert lines[-1] == b"" and b"torn" not in log.read_bytes()
    assert LabelQueue(tmp_path).labels()["label_id"] == [first, second]


def test_a_whole_last_record_without_its_newline_is_kept(tmp_path, caplog):
    """An editor that strips a file's final newline left a complete record as a "tail": it was unread, and the next
    write dropped it as torn (the labels in it lost for good)."""
    q = LabelQueue(tmp_path)
    q.put_round(0, make_items(3))
    first = q.submit("alice", "0-00000", 1)["label_id"]
    last = q.submit("bob", "0-00001", 2)["label_id"]
    q.close()
    log = tmp_path / LOG_NAME
    log.write_bytes(log.read_bytes().rstrip(b"\n"))
    reader = LabelQueue(tmp_path)  # as `hf-prefs label status` opens it
    assert reader.labels()["label_id"] == [first, last] and "had no newline; added" in caplog.text
    assert log.read_bytes().endswith(b"}\n")
    third = reader.submit("carol", "0-00002", 0)["label_id"]
    assert "dropping" not in caplog.text
    assert LabelQueue(tmp_path).labels()["label_id"] == [first, last, third]


def test_a_round_torn_mid_write_is_all_or_nothing(tmp_path):
    """put_round writes its items as one line: a crash mid-write enqueues none of them."""
    q = LabelQueue(tmp_path)
    q.put_round(0, make_items(2))
    q.put_round(1, make_items(5, tag="b"))
    q.close()
    log = tmp_path / LOG_NAME
    lines = log.read_bytes().split(b"\n")
    assert len(lines) == 3  # two batch lines + the empty string after the last newline
    log.write_bytes(lines[0] + b"\n" + lines[1][: len(lines[1]) // 2])  # torn inside round 1's line
    q = LabelQueue(tmp_path)
    assert q.rounds() == ["0"] and q.progress()["items"] == 2 and q.bad_lines == []
    assert q.put_round(1, make_items(5, tag="b"))[0] == "1-00000"  # the retry gets the same ids


class CountState:
    """A toy state: the event log replays into anything with an ``apply(event)``."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def apply(self, event: dict) -> None:
        if event["type"] != "n":
            raise ValueError(f"unknown event type {event['type']!r}")
        self.seen.append(event["n"])


def test_event_log_is_generic_batches_one_line_refusals_write_nothing(tmp_path, caplog):
    path = tmp_path / "events.jsonl"
    a, b = EventLog(path, CountState()), EventLog(path, CountState())
    assert a.append(lambda s: [{"type": "n", "n": len(s.seen)}]) == [{"type": "n", "n": 0}]
    a.append(lambda s: [{"type": "n", "n": len(s.seen) + i} for i in range(2)])  # several events: one batch line
    assert a.append(lambda s: []) == [] and a.state.seen == [0, 1, 2]
    lines = path.read_bytes().split(b"\n")
    assert len(lines) == 3 and json.loads(lines[1])["type"] == "batch"
    b.append(lambda s: [{"type": "n", "n": len(s.seen)}])  # b catches up under the lock before it builds
    assert b.state.seen == [0, 1, 2, 3]

    def refuse(state: CountState) -> list[dict]:
        raise LabelRequestError("no")

    before = path.read_bytes()
    with pytest.raises(LabelRequestError, match="no"):
        a.append(refuse)
    assert path.read_bytes() == before
    with open(path, "ab") as f:  # a complete line the state cannot replay
        f.write(b'{"type": "other"}\n')
    a.refresh()
    assert a.state.seen == [0, 1, 2, 3] and a.bad_lines == [4] and "line 4 skipped" in caplog.text
    a.close()
    b.close()


def test_label_app_reexports_the_queue_and_its_name_check():
    import importlib.util

    import hf_prefs.label_app as label_app
    from hf_prefs.labels import queue, schema

    for name in ["LabelQueue", "LabelRequestError", "Lease", "RoundStatus", "LABEL_FEATURES"]:
        assert getattr(label_app, name) is getattr(queue, name)
    assert label_app.load_rows is schema.load_rows
    assert importlib.util.find_spec("hf_prefs.label_app.store") is None  # no shim left behind
    assert queue.check_name("alice", "labeler") == "alice"
    for bad in ["", "   ", "a\nb", "x" * 201, 3]:
        with pytest.raises(LabelRequestError, match="labeler must be a non-empty string") as info:
            queue.check_name(bad, "labeler")
        assert info.value.field == "labeler"


KILL_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from hf_prefs.labels import event_log, queue

    stall_after = int(sys.argv[2])
    writes = [0]
    real = event_log._write_all

    def slow_write_all(fd, data):
        # write each record in two pieces: a kill between them leaves a torn line
        writes[0] += 1
        half = len(data) // 2
        real(fd, data[:half])
        if stall_after >= 0 and writes[0] > stall_after:
            print("HALF", flush=True)
            time.sleep(60)
        real(fd, data[half:])

    event_log._write_all = slow_write_all
    q = queue.LabelQueue(sys.argv[1])
    print("READY", flush=True)
    while True:
        lease = q.next_item("killed")
        if lease is None:
            print("EMPTY", flush=True)
            break
        rec = q.submit("killed", lease.item_id, int(lease.item_id[-1]) % 4)
        print("OK", rec["label_id"], rec["item_id"], rec["best"], flush=True)
    """
)


def _reader(proc: subprocess.Popen) -> "queue_mod.Queue[str]":
    lines: queue_mod.Queue[str] = queue_mod.Queue()

    def pump() -> None:
        for line in proc.stdout:
            # only whole lines: with PYTHONUNBUFFERED (CI sets it) print writes its pieces one by one, so a kill can
            # cut a confirmation to "OK" — a line that never ended is no confirmation
            if line.endswith("\n"):
                lines.put(line.strip())
        lines.put("EOF")

    threading.Thread(target=pump, daemon=True).start()
    return lines


@pytest.mark.parametrize("mode", ["stalled_mid_record", "random_moment"])
def test_kill_9_mid_write_loses_no_confirmed_label(tmp_path, mode):
    """SIGKILL a writer (deterministically between the two halves of a record, or at a random
    moment); every label whose confirmation it printed is present once, and loading never breaks."""
    qdir = tmp_path / "q"
    LabelQueue(qdir).put_round(0, make_items(400))
    script = tmp_path / "label_kill_writer.py"
    script.write_text(KILL_WRITER)
    n_confirm = 15
    # stall on the write after 2*n_confirm (lease + label per item) events: a half-written lease
    stall_after = 1 + 2 * n_confirm if mode == "stalled_mid_record" else -1
    proc = subprocess.Popen([sys.executable, str(script), str(qdir), str(stall_after)], stdout=subprocess.PIPE, text=True, env=subprocess_env())
    lines = _reader(proc)
    confirmed: dict[str, tuple[str, int]] = {}
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line.startswith("OK"):
                _, label_id, item_id, best = line.split()
                confirmed[label_id] = (item_id, int(best))
                if mode == "random_moment" and len(confirmed) == n_confirm:
                    time.sleep(random.random() * 0.01)  # land somewhere in the writer's loop
                    break
            elif line == "HALF":
                break
            elif line in ("EOF", "EMPTY"):
                pytest.fail(f"writer ended before the kill: {line}")
        else:
            pytest.fail("writer too slow")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    while True:  # confirmations printed before the kill
        try:
            line = lines.get(timeout=5)
        except queue_mod.Empty:
            break
        if line == "EOF":
            break
        if line.startswith("OK"):
            _, label_id, item_id, best = line.split()
            confirmed[label_id] = (item_id, int(best))
    assert len(confirmed) >= n_confirm
    raw = (qdir / LOG_NAME).read_bytes()
    if mode == "stalled_mid_record":
        assert not raw.endswith(b"\n"), "the kill did not land mid-record"

    q = LabelQueue(qdir)  # loading works with a torn tail
    ds = q.labels()
    stored = {r["label_id"]: (r["item_id"], r["best"]) for r in ds}
    assert q.bad_lines == []
    for label_id, value in confirmed.items():
        assert stored.get(label_id) == value
    assert len(set(ds["item_id"])) == len(ds)  # one label per item: nothing duplicated
    # restart resumes: the queue continues after the labeled items, and writing repairs the tail
    lease = q.next_item("killed")
    assert lease is not None and lease.item_id not in set(ds["item_id"])
    q.submit("killed", lease.item_id, 0)
    lines_after = log_lines(qdir)
    assert sum(r["type"] == "label" for r in lines_after) == len(ds) + 1


CONCURRENT_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from hf_prefs.labels.queue import LabelQueue, LabelRequestError

    qdir, labeler, mode, go = sys.argv[1:5]
    q = LabelQueue(qdir)
    print("READY", flush=True)
    while not os.path.exists(go):
        time.sleep(0.001)
    if mode == "lease":
        while (lease := q.next_item(labeler)) is not None:
            rec = q.submit(labeler, lease.item_id, len(lease.item_id) % 4)
            print("OK", rec["label_id"], rec["item_id"], flush=True)
    else:  # race: both processes submit every item, in the same order
        for item_id in [f"0-{i:05d}" for i in range(int(mode))]:
            try:
                rec = q.submit(labeler, item_id, 1)
                print("OK", rec["label_id"], rec["item_id"], flush=True)
            except LabelRequestError as exc:
                print("REFUSED", item_id, flush=True)
    print("DONE", flush=True)
    """
)


def _run_pair(tmp_path: Path, qdir: Path, labelers: list[str], mode: str) -> list[list[str]]:
    script = tmp_path / "label_concurrent_writer.py"
    script.write_text(CONCURRENT_WRITER)
    go = tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, str(script), str(qdir), who, mode, str(go)], stdout=subprocess.PIPE, text=True, env=subprocess_env())
        for who in labelers
    ]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "READY"
        go.touch()  # both start together
        outs = [p.communicate(timeout=120)[0].splitlines() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outs):
        assert p.returncode == 0 and out[-1] == "DONE"
    return outs


def test_two_processes_with_leases_label_each_item_exactly_once(tmp_path):
    qdir = tmp_path / "q"
    n = 120
    LabelQueue(qdir).put_round(0, make_items(n))
    outs = _run_pair(tmp_path, qdir, ["w0", "w1"], "lease")
    confirmed = {line.split()[1]: (line.split()[2], who) for who, out in zip(["w0", "w1"], outs) for line in out if line.startswith("OK")}
    ds = LabelQueue(qdir).labels()
    assert len(ds) == n == len(confirmed)  # nothing lost, nothing duplicated
    assert sorted(ds["item_id"]) == [f"0-{i:05d}" for i in range(n)]
    assert {r["label_id"]: (r["item_id"], r["labeler"]) for r in ds} == confirmed
    records = log_lines(qdir)  # nothing merged: every line is one whole record
    assert sum(r["type"] == "label" for r in records) == n


def test_two_processes_racing_on_the_same_items(tmp_path):
    """Two tabs of one labeler submitting every item: exactly one answer per item is stored and
    confirmed; the other is refused as a replay."""
    qdir = tmp_path / "q"
    n = 120
    LabelQueue(qdir).put_round(0, make_items(n))
    outs = _run_pair(tmp_path, qdir, ["same", "same"], str(n))
    ok = [line.split() for out in outs for line in out if line.startswith("OK")]
    refused = [line for out in outs for line in out if line.startswith("REFUSED")]
    assert len(ok) == n and len(refused) == n
    ds = LabelQueue(qdir).labels()
    assert sorted(ds["item_id"]) == sorted(item for _, _, item in ok) == [f"0-{i:05d}" for i in range(n)]
    assert set(ds["label_id"]) == {label_id for _, label_id, _ in ok}
    assert sum(r["type"] == "label" for r in log_lines(qdir)) == n


def test_threads_sharing_one_queue_object(tmp_path):
    q = LabelQueue(tmp_path)
    q.put_round(0, make_items(60))
    got: dict[str, list[str]] = {"a": [], "b": [], "c": []}

    def work(who: str) -> None:
        while (lease := q.next_item(who)) is not None:
            got[who].append(q.submit(who, lease.item_id, 0)["item_id"])

    threads = [threading.Thread(target=work, args=(w,)) for w in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    done = [i for items in got.values() for i in items]
    assert sorted(done) == sorted(set(done)) == sorted(q.labels()["item_id"]) and len(done) == 60


# --------------------------------------------------------------------------- restart, leases, undo, skip
def test_restart_resumes_same_item_same_order(tmp_path):
    q = LabelQueue(tmp_path, seed=5)
    q.put_round(0, make_items(4))
    q.submit("alice", q.next_item("alice").item_id, 0)
    q.skip("alice", q.next_item("alice").item_id)
    shown = q.next_item("alice")
    q.close()
    q = LabelQueue(tmp_path, seed=5)  # e.g. the server was restarted
    again = q.next_item("alice")
    assert (again.lease_id, again.item_id, again.order) == (shown.lease_id, "0-00002", shown.order)
    q.submit("alice", again.item_id, again.best_from_position(0))
    assert q.next_item("alice").item_id == "0-00003"
    assert q.progress("alice") == {"items": 4, "done": 2, "labels": 2, "mine": 2, "repeats": 0, "skipped": 1, "left": 1}


def test_leases_split_items_between_labelers_and_expire(tmp_path):
    clock = FakeClock()
    q = LabelQueue(tmp_path, lease_s=60, clock=clock)
    q.put_round(0, make_items(2))
    a = q.next_item("alice")
    clock.t += 30
    b = q.next_item("bob")
    assert (a.item_id, b.item_id) == ("0-00000", "0-00001")
    assert q.next_item("carol") is None  # both items are leased
    assert q.round_status(0).leased == 2
    clock.t += 31  # alice walked away: her lease expired, bob's holds
    c = q.next_item("carol")
    assert c.item_id == "0-00000"
    q.submit("carol", c.item_id, 1)
    with pytest.raises(LabelRequestError, match="already has its 1 label"):
        q.submit("alice", a.item_id, 0)  # alice's late answer is refused, nothing duplicated
    assert q.next_item("alice") is None


def test_undo_is_append_only_and_reoffers_the_item(tmp_path):
    q = LabelQueue(tmp_path)
    q.put_round(0, make_items(3))
    first = q.next_item("alice")
    rec = q.submit("alice", first.item_id, 3)
    second = q.next_item("alice")
    back = q.undo("alice")
    assert (back.item_id, back.order) == (first.item_id, first.order)
    assert q.next_item("alice").lease_id == back.lease_id  # the undone item comes first
    assert len(q.labels()) == 0
    rec2 = q.submit("alice", back.item_id, 1)
    assert q.next_item("alice").item_id == second.item_id  # then the item that was showing
    assert q.labels()["label_id"] == [rec2["label_id"]]
    assert [r["label_id"] for r in log_lines(tmp_path) if r["type"] == "label"] == [rec["label_id"], rec2["label_id"]]


# --------------------------------------------------------------------------- agreement
def test_repeats_and_agreement_counts(tmp_path):
    q = LabelQueue(tmp_path, repeat_fraction=0.5, repeat_gap=1, seed=0, labels_per_item=2)
    q.put_round(0, make_items(12))
    firsts: dict[str, int] = {}
    expect_self = [0, 0]
    n_repeat = 0
    while (lease := q.next_item("alice")) is not None:
        if lease.repeat:
            n_repeat += 1
            best = firsts[lease.item_id] if n_repeat % 2 else (firsts[lease.item_id] + 1) % K  # agree, disagree, ...
            expect_self[0] += 1
            expect_self[1] += best == firsts[lease.item_id]
        else:
            best = int(lease.item_id[-1]) % K
            firsts[lease.item_id] = best
        q.submit("alice", lease.item_id, best)
    assert n_repeat >= 2 and len(firsts) == 12
    # bob answers the first 4 items: agrees on items 0 and 1, disagrees on 2 and 3
    for i in range(4):
        q.submit("bob", f"0-{i:05d}", i % K if i < 2 else (i + 1) % K)
    agreement = q.agreement("alice")
    assert (agreement["self_n"], agreement["self_agree"]) == tuple(expect_self)
    assert (agreement["cross_n"], agreement["cross_agree"]) == (4, 2)
    assert q.agreement("bob")["self_n"] == 0
    assert len(q.labels()) == 16 and len(q.labels(include_repeats=True)) == 16 + n_repeat


# --------------------------------------------------------------------------- rounds and files
def test_a_runs_human_labels_are_its_own_items_of_round_0(tmp_path):
    """The recipe's human labels (``pipeline.labels._label``) put the run's comparisons in round 0, which ``hf-prefs
    label add``/``import`` fill by default too: the run waits for and trains on its own items alone (it took the whole
    round: another run's or the user's items, and waited for them)."""
    from types import SimpleNamespace

    from hf_prefs.labels import LabelSamplingStats
    from hf_prefs.pipeline.labels import _label

    q = LabelQueue(tmp_path)
    foreign = q.put_round(0, [("another run's query", ["a", "b"]), ("unlabeled", ["c", "d"])])
    q.submit("bob", foreign[0], 1)
    mine = q.put_round(0, [("q1", ["x", "y"]), ("q2", ["z", "w"])])  # labeled before the run asks (a restart)
    q.submit("alice", mine[0], 0)
    q.submit("alice", mine[1], 1)
    with pytest.raises(TimeoutError, match=r"round '0': 3/4 items labeled"):
        q.wait_round(0, timeout=0.05, poll_s=0.01)  # the whole round: the foreign item is unlabeled
    assert q.wait_round(0, timeout=0.05, poll_s=0.01, item_ids=mine)["item_id"] == mine
    with pytest.raises(KeyError, match="round '0' holds no item 'nope'"):
        q.round_status(0, ["nope"])
    pa = SimpleNamespace(label_source="human", label_queue_dir=str(tmp_path), label_timeout=0.05)
    rows, info = _label(pa, SimpleNamespace(seed=0), ["q1", "q2"], [0, 1], [["x", "y"], ["z", "w"]],
                        LabelSamplingStats(queries=2, labels=2, dropped_no_truncation=0, dropped_empty=0))
    assert [(r["query"], r["best"]) for r in rows] == [("q1", 0), ("q2", 1)] and info["source"] == "human"
    # past label_timeout: said with what to do; run again, the same comparisons are the run's items with their labels
    args = (pa, SimpleNamespace(seed=0), ["q1", "q3"], [0, 1], [["x", "y"], ["u", "v"]],
            LabelSamplingStats(queries=2, labels=2, dropped_no_truncation=0, dropped_empty=0))
    with pytest.raises(TimeoutError, match=r"1/2 items labeled .* label the rest \(`hf-prefs label serve --queue "):
        _label(*args)
    q.submit("alice", q.put_round(0, [("q3", ["u", "v"])])[0], 1)
    assert [(r["query"], r["best"]) for r in _label(*args)[0]] == [("q1", 0), ("q3", 1)]


def test_an_online_loop_waits_for_and_takes_its_own_items_of_a_shared_round_name(tmp_path):
    """Two online runs on one queue both queue round ``online-0``: each waits for and trains on its own items (a file
    answering them included), not the other's (it took every label of the round and waited for the other's items);
    its item ids survive a resume."""
    from hf_prefs.labels.sources import QueueLabelSource

    mine, other = QueueLabelSource(LabelQueue(tmp_path), poll_s=0.01), QueueLabelSource(LabelQueue(tmp_path), poll_s=0.01)
    mine.request(0, 2, ["q1", "q2"], [["x", "y"], ["z", "w"]])
    other.request(0, 2, ["o1", "o2"], [["a", "b"], ["c", "d"]])
    q = LabelQueue(tmp_path)
    ids = dict(zip(["q1", "q2"], mine._items["online-0"])) | dict(zip(["o1", "o2"], other._items["online-0"]))
    q.submit("bob", ids["o1"], 1)  # the other run's item: not this loop's label
    q.submit("alice", ids["q1"], 0)
    path = tmp_path / "answers.jsonl"  # q2 answered from a file, matched to the queued item by its text
    path.write_text(json.dumps({"query": "q2", "samples": ["z", "w"], "best": 1, "round": "online-0"}) + "\n")
    q.add_labels(path)
    got = mine.collect(0, block=True, timeout=5)  # the other run's o2 is unlabeled: no wait for it
    assert [(r["query"], r["best"], r["round"]) for r in got] == [("q1", 0, 0), ("q2", 1, 0)]
    assert mine.collect(0, block=False) == []  # handed over once
    resumed = QueueLabelSource(LabelQueue(tmp_path), poll_s=0.01)
    resumed.load_state_dict(json.loads(json.dumps(mine.state_dict())))
    late = tmp_path / "late.jsonl"  # a late second label of its own item joins; the other run's never
    late.write_text("".join(json.dumps({"item_id": ids[k], "query": k, "samples": s, "best": 1, "labeler": "carol"}) + "\n"
                            for k, s in (("q1", ["x", "y"]), ("o1", ["a", "b"]))))
    q.add_labels(late)
    assert [(r["query"], r["best"]) for r in resumed.collect(0, block=False)] == [("q1", 1)]
    with pytest.raises(TimeoutError, match="1/2 items"):
        other.queue.wait_round("online-0", timeout=0.05, poll_s=0.01, item_ids=other._items["online-0"])


def test_wait_round_times_out_then_file_labels_fill_the_round(tmp_path):
    q = LabelQueue(tmp_path)
    ids = q.put_round(3, make_items(3, tag="r"))
    with pytest.raises(TimeoutError, match=r"round '3': 0/3 items labeled"):
        q.wait_round(3, timeout=0.05, poll_s=0.01)
    labels_file = tmp_path / "elsewhere.jsonl"
    rows = [
        {"item_id": ids[0], "query": "query r0", "samples": [f"qr0 sample {j}" for j in range(K)], "best": 2, "labeler": "mturk-7"},
        {"query": "query r1", "sample0": "qr1 sample 0", "sample1": "qr1 sample 1", "sample2": "qr1 sample 2", "sample3": "qr1 sample 3", "best": 0},
    ]
    labels_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    q.add_labels(labels_file, round_id=3)
    assert q.round_status(3).done == 2

    result: dict = {}
    waiter = threading.Thread(target=lambda: result.setdefault("ds", LabelQueue(tmp_path).wait_round(3, timeout=30, poll_s=0.02)))
    waiter.start()
    LabelQueue(tmp_path).submit("alice", ids[2], 1)  # the last label arrives from another writer
    waiter.join(30)
    ds = result["ds"]
    assert sorted(zip(ds["item_id"], ds["best"], ds["labeler"])) == [(ids[0], 2, "mturk-7"), (ids[1], 0, "file"), (ids[2], 1, "alice")]
    # a whole round from a file: no matching items, so they become new items
    q.add_labels([{"query": "new q", "samples": ["a", "b"], "best": 1}], round_id="ext", labeler="team-b")
    assert q.wait_round("ext", timeout=1)["samples"] == [["a", "b"]]
    # no round given: the one queued item showing that query and samples (round "ext"), whichever round it is in
    q.add_labels([{"query": "new q", "samples": ["a", "b"], "best": 0}], labeler="team-c")
    assert sorted(q.labels(round_id="ext")["labeler"]) == ["team-b", "team-c"]
    q.put_round("ext2", [{"query": "new q", "samples": ["a", "b"]}])
    before = (tmp_path / LOG_NAME).read_bytes()
    with pytest.raises(LabelValidationError, match=r"row 0, field 'round': its query and samples are queued 2 times "
                                                   r"\(rounds \['ext', 'ext2'\]\); give a round"):
        q.add_labels([{"query": "new q", "samples": ["a", "b"], "best": 0}], labeler="team-d")
    with pytest.raises(LabelValidationError, match=r"row 0, field 'round': no queued item matches"):
        q.add_labels([{"query": "never queued", "samples": ["a", "b"], "best": 0}])
    with pytest.raises(LabelValidationError, match=r"row 2, field 'round': its query and samples are queued 2 times"):
        q.add_labels([{"query": "q2", "samples": ["a", "b"], "best": 0, "round": "ext"},  # a new item of this file
                      {"query": "q2", "samples": ["a", "b"], "best": 1, "round": "ext2"},
                      {"query": "q2", "samples": ["a", "b"], "best": 1}], labeler="team-e")
    with pytest.raises(LabelValidationError, match="row 0, field 'labeler'.*already answered item .* with best=1"):
        q.add_labels([{"query": "new q", "samples": ["a", "b"], "best": 0}], round_id="ext", labeler="team-b")
    with pytest.raises(LabelValidationError, match="row 1, field 'labeler'.*already answered item .* in this file"):
        q.add_labels([{"query": "q3", "samples": ["a", "b"], "best": 0}] * 2, round_id="ext", labeler="team-b")
    # the same label again (a file imported twice) is that label: nothing added, nothing refused
    assert q.add_labels([{"query": "new q", "samples": ["a", "b"], "best": 1}], round_id="ext", labeler="team-b") == []
    with pytest.raises(LabelValidationError, match="row 0, field 'item_id'.*different query"):
        q.add_labels([{"item_id": ids[0], "query": "other", "samples": ["a", "b"], "best": 0}])
    with pytest.raises(LabelValidationError, match="row 0, field 'best'"):
        q.add_labels([{"query": "q", "samples": ["a", "b"], "best": 5}], round_id=4)
    with pytest.raises(KeyError, match="round '9' has no items"):
        q.wait_round(9, timeout=0)
    assert (tmp_path / LOG_NAME).read_bytes() == before


def test_cli_add_import_export_status(tmp_path, capsys, monkeypatch):
    qdir = tmp_path / "q"
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"query": q, "samples": s}) + "\n" for q, s in make_items(3)))
    assert label_cli.main(["label", "add", "--queue", str(qdir), "--from", str(items)]) == 0
    assert label_cli.main(["label", "add", "--queue", str(qdir), "--from", str(items)]) == 0  # next round: 1
    assert "added 3 items to round '1'" in capsys.readouterr().out
    assert label_cli.main(["label", "add", "--queue", str(qdir), "--from", str(items), "--round", "1"]) == 0
    assert "added 0 items to round '1'" in (said := capsys.readouterr().out) and "3 already queued" in said
    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps({"item_id": "0-00001", "query": "query 1", "samples": make_items(2)[1][1], "best": 3}) + "\n")
    assert label_cli.main(["label", "import", "--queue", str(qdir), "--from", str(labels), "--labeler", "ext"]) == 0
    out = tmp_path / "out.jsonl"
    assert label_cli.main(["label", "export", "--queue", str(qdir), "--out", str(out)]) == 0
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["item_id"], r["best"], r["labeler"]) for r in exported] == [("0-00001", 3, "ext")]
    capsys.readouterr()
    assert label_cli.main(["label", "status", "--queue", str(qdir)]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["progress"] == {"items": 6, "done": 1, "labels": 1} and status["rounds"]["1"]["done"] == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"query": "q", "samples": ["only one"]}) + "\n")
    assert label_cli.main(["label", "add", "--queue", str(qdir), "--from", str(bad)]) == 2
    assert "row 0, field 'samples': a comparison needs at least 2 samples" in capsys.readouterr().err
    for command, row in (("add", {"query": "q", "samples": ["a", ""]}),  # a bad row: named, and no queue folder made
                         ("import", {"query": "q", "samples": ["a", "b"], "best": 2}),
                         ("add", {"query": "q", "samples": ["a", "b"], "item_id": "x" * 201}),
                         ("import", {"query": "q", "samples": ["a", "b"], "best": 0, "labeler": "tab\there"})):
        bad.write_text(json.dumps(row) + "\n")
        assert label_cli.main(["label", command, "--queue", str(tmp_path / "new_q"), "--from", str(bad)]) == 2
        assert "row 0, field '" in capsys.readouterr().err and not (tmp_path / "new_q").exists()
    # an export with 2 labels per item lists its items twice: `add` reads it back, each item once (it said "already in
    # the queue" of a new queue, and left that queue behind); an id given to two comparisons is still refused
    twice = [{"item_id": "0-00000", "query": "q", "samples": ["a", "b"], "best": b, "labeler": who}
             for b, who in ((0, "ann"), (1, "bob"))]
    bad.write_text("".join(json.dumps(row) + "\n" for row in twice))
    assert label_cli.main(["label", "add", "--queue", str(tmp_path / "new_q"), "--from", str(bad)]) == 0
    assert "added 1 items to round '0' of" in capsys.readouterr().out
    shutil.rmtree(tmp_path / "new_q")
    twice[1]["samples"] = ["a", "c"]
    bad.write_text("".join(json.dumps(row) + "\n" for row in twice))
    assert label_cli.main(["label", "add", "--queue", str(tmp_path / "new_q"), "--from", str(bad)]) == 2
    assert "row 1, field 'item_id': item_id '0-00000' is row 0's too" in capsys.readouterr().err
    assert not (tmp_path / "new_q").exists()
    bad.write_text(json.dumps({"query": "q9", "samples": ["a", "b"], "best": 1}) + "\n")
    assert label_cli.main(["label", "import", "--queue", str(tmp_path / "new_q"), "--from", str(bad)]) == 2
    assert "holds no queue yet, so row 0 (no 'round') matches no queued item: give --round" in capsys.readouterr().err
    assert not (tmp_path / "new_q").exists()  # was left behind, and `export` then read it as an empty queue
    # labels given to `add`: said
    assert label_cli.main(["label", "add", "--queue", str(tmp_path / "new_q"), "--from", str(bad)]) == 0
    assert "has a 'best' column; `add` queues comparisons to label" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "new_q")
    for command in ("add", "import"):  # a missing file: named by the command's flag, and no queue folder made for it
        assert label_cli.main(["label", command, "--queue", str(tmp_path / "new_q"), "--from", str(tmp_path / "no.jsonl")]) == 2
        assert f"--from {tmp_path / 'no.jsonl'}: no such file or folder" in capsys.readouterr().err
        assert not (tmp_path / "new_q").exists()
    monkeypatch.chdir(tmp_path)
    for command in ("add", "import"):  # a bare name, which could be a Hub id: it made queue.jsonl before reading
        assert label_cli.main(["label", command, "--queue", "new_q", "--from", "no_file"]) == 2
        assert "no such file or folder: no_file" in capsys.readouterr().err and not (tmp_path / "new_q").exists()


def test_cli_queue_must_be_a_folder_and_reading_commands_make_none(tmp_path, capsys):
    """``--queue`` naming a file: a one-line error for every command; ``status``/``export`` of a folder with no queue
    (a mistyped path) say so and leave no folder behind; an empty CSV export reads back as no items."""
    a_file = tmp_path / "items.jsonl"
    a_file.write_text(json.dumps({"query": "q", "samples": ["a", "b"]}) + "\n")
    for argv in (["add", "--from", str(a_file)], ["status"], ["export", "--out", str(tmp_path / "o.jsonl")]):
        assert label_cli.main(["label", argv[0], "--queue", str(a_file), *argv[1:]]) == 2
        assert "a file, not a queue folder" in capsys.readouterr().err
    typo = tmp_path / "no_such_queue"
    for argv in (["status"], ["export", "--out", str(tmp_path / "o.jsonl")]):
        assert label_cli.main(["label", argv[0], "--queue", str(typo), *argv[1:]]) == 2
        assert "no label queue there" in capsys.readouterr().err
    assert not typo.exists() and not (tmp_path / "o.jsonl").exists()
    empty = tmp_path / "empty"
    LabelQueue(empty)
    assert label_cli.main(["label", "export", "--queue", str(empty), "--out", str(tmp_path / "e.csv")]) == 0
    for command in ("add", "import"):  # no rows: said, and no queue folder made for them
        assert label_cli.main(["label", command, "--queue", str(tmp_path / "q2"), "--from", str(tmp_path / "e.csv")]) == 2
        assert f"--from {tmp_path / 'e.csv'}: no rows in it" in capsys.readouterr().err and not (tmp_path / "q2").exists()
    twice = tmp_path / "twice.jsonl"  # refused by the queue itself (one labeler, one item, two answers)
    twice.write_text("".join(json.dumps({"query": "Q", "samples": [" a", " b"], "best": b}) + "\n" for b in (1, 0)))
    for queue in (tmp_path / "q3", empty):  # a queue the import made is removed; one that was there is kept
        made = not queue.exists()
        before = sorted(p.name for p in queue.iterdir()) if not made else None
        argv = ["label", "import", "--queue", str(queue), "--from", str(twice), "--round", "0"]
        assert label_cli.main(argv) == 2
        assert "row 1, field 'labeler'" in capsys.readouterr().err
        assert not queue.exists() if made else sorted(p.name for p in queue.iterdir()) == before
        if not made:
            assert label_cli.main(["label", "status", "--queue", str(queue)]) == 0


def test_cli_export_of_a_round_the_queue_lacks_or_a_push_that_cannot_connect_is_one_line(tmp_path, capsys, monkeypatch):
    """``export --round`` with a round the queue does not hold (a typo) is an error naming its rounds, and the file
    at ``--out`` is left as it was (it was overwritten with 0 labels, rc 0); a push the network refuses is one line
    naming the repo and the error, rc 2 (it was a traceback)."""
    import httpx

    import hf_prefs.labels.hub as label_hub

    qdir, out = tmp_path / "q", tmp_path / "labels.jsonl"
    LabelQueue(qdir).add_labels([{"query": "x", "samples": ["a", "b"], "best": 1}], round_id=0)
    out.write_text("an earlier export\n")
    assert label_cli.main(["label", "export", "--queue", str(qdir), "--out", str(out), "--round", "9"]) == 2
    assert f"no round '9' in this queue (its rounds: ['0']); nothing written to {out}" in capsys.readouterr().err
    assert out.read_text() == "an earlier export\n"

    def refused(*args, **kwargs):
        raise httpx.ConnectError("[Errno 111] Connection refused")

    monkeypatch.setattr(label_hub, "push_labels_to_hub", refused)
    argv = ["label", "export", "--queue", str(qdir), "--out", str(out), "--push_to_hub", "me/labels"]
    assert label_cli.main(argv) == 2
    err = capsys.readouterr().err  # (after datasets' progress bar of the export)
    assert err.strip().splitlines()[-1] == "hf-prefs label export: error: pushing to me/labels failed: ConnectError: [Errno 111] Connection refused"
    assert len(out.read_text().splitlines()) == 1  # the export itself was written first


def test_one_k_per_file_and_per_round(tmp_path):
    """Rows entering a queue in one call have one K, and a round's items one K (a round's labels train one reward
    model): another K is named by row, nothing is written; rounds may differ, and exporting them together is refused
    (a label file has one K) while each round exports on its own."""
    q = LabelQueue(tmp_path / "q")
    log = tmp_path / "q" / LOG_NAME
    with pytest.raises(LabelValidationError, match=r"row 1, field 'samples': expected K=4 samples like the rows before"):
        q.put_round(0, [("q0", ["a", "b", "c", "d"]), ("q1", ["a", "b", "c"])])
    with pytest.raises(LabelValidationError, match=r"row 1, field 'samples': expected K=2"):
        q.add_labels([{"query": "q", "samples": ["a", "b"], "best": 0},
                      {"query": "r", "samples": ["a", "b", "c"], "best": 0}], round_id=0)
    assert q.progress()["items"] == 0
    q.put_round(0, [("q0", ["a", "b", "c", "d"])])
    before = log.read_bytes()
    with pytest.raises(LabelValidationError, match=r"row 0, field 'samples': expected K=4 samples as round '0'.*got 3"):
        q.put_round(0, [("q1", ["a", "b", "c"])])
    with pytest.raises(LabelValidationError, match=r"row 1, field 'samples': expected K=4 samples as round '0'.*got 2"):
        q.add_labels([{"query": "x", "samples": ["a", "b"], "best": 0, "round": "pairs"},
                      {"query": "y", "samples": ["a", "b"], "best": 0, "round": "0"}])
    assert log.read_bytes() == before
    q.add_labels([{"query": "x", "samples": ["a", "b"], "best": 1}], round_id="pairs")  # another round, another K
    q.submit("alice", q.put_round(0, [("q1", ["e", "f", "g", "h"])])[0], 2)
    with pytest.raises(ValueError, match=r"mix K = \[2, 4\].*--round"):
        q.export(tmp_path / "all.jsonl")
    assert not (tmp_path / "all.jsonl").exists()
    assert q.export(tmp_path / "pairs.jsonl", round_id="pairs") == 1 and q.export(tmp_path / "k4.jsonl", round_id=0) == 1


def test_generated_item_ids_step_over_explicit_ones(tmp_path):
    """An item given the id the next generated one would take: the generated id moves on, and the label added
    through it is kept (it was written, then dropped on replay as a duplicate item)."""
    q = LabelQueue(tmp_path)
    assert q.put_round("r", [{"query": "x", "samples": ["a", "b"], "item_id": "r-00001"}]) == ["r-00001"]
    label_ids = q.add_labels([{"query": "y", "samples": ["c", "d"], "best": 1}], round_id="r")
    assert len(label_ids) == 1
    for queue in (q, LabelQueue(tmp_path)):  # this process, and the log replayed
        rows = queue.labels(round_id="r").to_list()
        assert [(r["query"], r["best"], r["item_id"]) for r in rows] == [("y", 1, "r-00002")]
    # put_round in the same way: a generated id never takes an explicit one (given earlier or later in the batch)
    assert q.put_round("s", [{"query": "p", "samples": ["a", "b"]}, {"query": "q", "samples": ["a", "b"],
                                                                        "item_id": "s-00000"}]) == ["s-00001", "s-00000"]


@pytest.mark.parametrize("suffix", [".json", ".csv", ".jsonl", ".parquet"])
def test_export_reads_back_in_every_format(tmp_path, suffix):
    q = LabelQueue(tmp_path / "q")
    rows = [{"query": f"query {i}", "samples": [f"a{i}", f"b{i}", f"c{i}"], "best": i % 3} for i in range(1500)]
    q.add_labels(rows, round_id=0)
    out = tmp_path / f"labels{suffix}"
    assert q.export(out) == 1500  # a .json list of more than 1,000 rows too
    back = LabelQueue(tmp_path / "back")
    back.add_labels(str(out))  # the rows carry their round
    got = back.labels().to_list()
    assert [(r["query"], r["samples"], r["best"]) for r in got] == [(r["query"], r["samples"], r["best"]) for r in rows]


def test_putting_a_round_again_reuses_its_items(tmp_path):
    """A restarted run puts the same round again: its items are the queued ones (no second copy to label), labels
    already given stay the round's only labels, and new comparisons are still added."""
    q = LabelQueue(tmp_path)
    items = make_items(3)
    ids = q.put_round(0, items)
    for item_id in ids:
        q.submit("alice", item_id, 1)
    assert q.put_round(0, items) == ids  # nothing new
    assert q.round_status(0).total == 3 and q.round_status(0).complete
    assert len(q.wait_round(0, timeout=1)) == 3
    more = q.put_round(0, items + make_items(1, tag="x"))
    assert more[:3] == ids and more[3] == "0-00003" and q.round_status(0).total == 4
    assert q.put_round(1, items) == ["1-00000", "1-00001", "1-00002"]  # another round: its own items
    twice = make_items(2, tag="t")
    got = q.put_round(2, [twice[0], twice[1], twice[0]])  # one comparison twice in one call: one item (was two)
    assert got == ["2-00000", "2-00001", "2-00000"] and q.round_status(2).total == 2
    assert q.put_round(2, [twice[0], twice[1], twice[0]]) == got  # and the restarted run's put agrees


def test_bad_round_or_labeler_and_non_object_rows_name_the_row(tmp_path):
    q = LabelQueue(tmp_path / "q")
    row = {"query": "q", "samples": ["a", "b"], "best": 0}
    with pytest.raises(LabelValidationError) as info:
        q.add_labels([{**row, "round": 0}, {**row, "query": "p", "round": 1.5}])
    assert (info.value.row, info.value.field) == (1, "round")
    with pytest.raises(LabelValidationError) as info:
        q.add_labels([{**row, "round": 0, "labeler": "two\nlines"}])
    assert (info.value.row, info.value.field) == (0, "labeler")
    q.add_labels([{**row, "round": 2.0}])  # a whole float (pandas, parquet) is its int
    assert q.rounds() == ["2"] and len(q.labels(round_id=2)) == 1
    for name, text in (("rows.json", json.dumps([row, ["not", "an", "object"]])),
                       ("rows.jsonl", json.dumps(row) + "\n" + json.dumps([1, 2]) + "\n")):
        (tmp_path / name).write_text(text)
        with pytest.raises(LabelValidationError, match="row 1") as info:
            q.add_labels(str(tmp_path / name), round_id=3)
        assert "object" in str(info.value)


def test_a_batch_line_that_fails_on_replay_applies_none_of_its_events(tmp_path):
    """A batch is one line, all or nothing: when one of its events cannot be replayed, the earlier ones are not
    applied either (the line is reported in bad_lines)."""
    q = LabelQueue(tmp_path)
    q.put_round("r", [{"query": "x", "samples": ["a", "b"], "item_id": "keep"}])
    item = {"type": "item", "round": "r", "query": "y", "samples": ["c", "d"], "t": 0.0}
    batch = {"type": "batch", "events": [{**item, "item_id": "new"}, {**item, "item_id": "keep"}]}  # 2nd: duplicate
    with open(tmp_path / LOG_NAME, "a") as f:
        f.write(json.dumps(batch) + "\n")
    reopened = LabelQueue(tmp_path)
    assert reopened.round_status("r").total == 1 and reopened._log.bad_lines == [2]
    q.refresh()  # the process that was already open replays it the same way
    assert q.round_status("r").total == 1 and q._log.bad_lines == [2]
