"""A durable queue of best-of-K comparisons and the labels humans give them: the labeling policy.

One folder holds one queue; its only file of record is ``queue.jsonl``, an append-only
:class:`~hf_prefs.labels.event_log.EventLog` (which owns durability, locking, torn tails and the
``batch`` line). This module owns what the events mean and which requests are allowed. Each line
is an *event*:

=========  ==================================================================================
type       meaning
=========  ==================================================================================
config     queue-wide settings (``labels_per_item``: distinct labelers each item needs)
item       a comparison to label: ``item_id``, ``round``, ``query``, ``samples`` (K strings)
lease      ``item_id`` is being shown to ``labeler`` until ``expires``, in the order ``order``
           (``order[p]`` is the stored sample index shown at position p); ``repeat`` marks an
           agreement-check re-showing of an item the labeler already answered
label      ``labeler`` picked sample ``best`` (a stored index) of ``item_id`` (``label_id``)
undo       the label ``label_id`` is retracted (it stays in the file, it leaves the labels)
skip       ``labeler`` passed on ``item_id``; it is not shown to them again
batch      ``events``: several of the above written by one request, in one line (all or nothing)
=========  ==================================================================================

The state (items, live labels, leases, skips) is the replay of these events, so a restart resumes
exactly where the queue stopped, and several processes (a labeling server, an RL loop waiting for a
round, a file import) share one queue through the file. Every request is checked against the fresh
state under the log's locks; one that breaks a rule raises :class:`LabelRequestError` (or, for rows
of a file, :class:`~hf_prefs.labels.schema.LabelValidationError`) before anything is written, and a
request of several events (a round of items, a label file, undo + re-lease) is one ``batch`` line.
The label schema itself (rows, files, ``query``/``samples``/``best``) is :mod:`hf_prefs.labels.schema`.
"""

from __future__ import annotations

import functools
import json
import math
import operator
import os
import random
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset, Features, Value

from .event_log import LOG_NAME, EventLog, require_flock
from .queue_state import LabelRequestError, Lease, QueueState, RoundStatus, check_name, round_key
from .schema import LABEL_COLUMNS, LabelValidationError, check_comparison, check_label_row, load_rows, merge_flat_samples

__all__ = [
    "LabelQueue",
    "LabelRequestError",
    "Lease",
    "RoundStatus",
    "LABEL_FEATURES",
    "check_name",
]

Event = dict[str, Any]

#: Columns of :meth:`LabelQueue.labels`: the project's label schema (``query``, ``samples``, ``best``)
#: plus who labeled what, when, and in which shown order.
LABEL_FEATURES = Features(
    {
        **LABEL_COLUMNS,
        "labeler": Value("string"),
        "item_id": Value("string"),
        "round": Value("string"),
        "label_id": Value("string"),
        "repeat": Value("bool"),
        "source": Value("string"),
        "shown_order": [Value("int64")],
        "shown_at": Value("float64"),
        "labeled_at": Value("float64"),
    }
)


def _reads_state(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run a read-only method under the thread lock, caught up with the log, so a writer thread cannot
    change the state mid-read."""

    @functools.wraps(method)
    def locked(self: "LabelQueue", *args: Any, **kwargs: Any) -> Any:
        with self._log.lock:
            self.refresh()
            return method(self, *args, **kwargs)

    return locked


def _check_best(best: Any) -> int:
    """``best`` as an int sample index (an integral float is accepted; bool, NaN or text are not)."""
    try:
        if isinstance(best, bool) or (isinstance(best, float) and not (math.isfinite(best) and best.is_integer())):
            raise TypeError
        return int(best) if isinstance(best, float) else operator.index(best)
    except TypeError:
        raise LabelRequestError(f"best must be an integer sample index, got {best!r}", "best") from None


class LabelQueue:
    """A folder-backed queue of best-of-K comparisons for human labelers (see the module docstring).

    Producer side (e.g. the online RL loop): :meth:`put_round` enqueues ``(query, K samples)`` items
    under a round id, :meth:`wait_round` blocks until each has ``labels_per_item`` labels (or raises
    ``TimeoutError``, so a loop can continue with its current reward model), :meth:`labels` returns
    them in the project's label schema, :meth:`add_labels` fills a round from labels collected
    elsewhere. Labeler side (the app): :meth:`next_item` leases an item, :meth:`submit`, :meth:`skip`,
    :meth:`undo`, :meth:`progress`, :meth:`agreement`.

    Args:
        path: the queue folder (created if missing).
        labels_per_item: distinct labelers each item needs before it (and its round) is done; ``None``
            keeps the queue's stored setting (1 for a new queue); a new value is stored for everyone.
        repeat_fraction: probability that :meth:`next_item` re-shows an item the labeler already
            answered (in a new order) to measure their self-agreement; 0 disables repeats.
        repeat_gap: a repeat only re-shows an item answered before the labeler's last ``repeat_gap``
            answers, so it is not still in their short-term memory.
        lease_s: how long a shown item stays reserved for its labeler.
        seed: seeds the shown orders and repeat draws (per labeler and answer count, so reproducible).
        clock: the time source (tests pass a fake one).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        labels_per_item: int | None = None,
        repeat_fraction: float = 0.0,
        repeat_gap: int = 2,
        lease_s: float = 900.0,
        seed: int = 0,
        clock: Callable[[], float] = time.time,
    ):
        require_flock("LabelQueue")
        if not (isinstance(repeat_fraction, (int, float)) and 0.0 <= repeat_fraction < 1.0):
            raise ValueError(f"repeat_fraction must be in [0, 1), got {repeat_fraction!r}")
        if not lease_s > 0:
            raise ValueError(f"lease_s must be > 0, got {lease_s!r}")
        if labels_per_item is not None:
            if isinstance(labels_per_item, bool) or not isinstance(labels_per_item, int) or labels_per_item < 1:
                raise ValueError(f"labels_per_item must be an int >= 1, got {labels_per_item!r}")
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.log_path = self.path / LOG_NAME
        self.repeat_fraction = float(repeat_fraction)
        self.repeat_gap = int(repeat_gap)
        self.lease_s = float(lease_s)
        self.seed = seed
        self.clock = clock
        self._log: EventLog[QueueState] = EventLog(self.log_path, QueueState())
        if labels_per_item is not None:

            def config(state: QueueState) -> list[Event]:
                if state.labels_per_item == labels_per_item:
                    return []
                return [{"type": "config", "labels_per_item": labels_per_item, "t": self.clock()}]

            self._log.append(config)

    # ------------------------------------------------------------------ the log
    @property
    def _state(self) -> QueueState:
        return self._log.state

    @property
    def bad_lines(self) -> list[int]:
        """1-based line numbers of complete lines that could not be replayed (corrupt or inconsistent)."""
        return self._log.bad_lines

    def close(self) -> None:
        """Close the log file (the queue object is unusable afterwards)."""
        self._log.close()

    def __enter__(self) -> "LabelQueue":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def refresh(self) -> None:
        """Replay the complete lines other processes appended since the last call (no lock needed)."""
        self._log.refresh()

    # ------------------------------------------------------------------ producer side
    def put_round(self, round_id: int | str, items: Any) -> list[str]:
        """Enqueue comparisons under ``round_id``; returns their item ids.

        ``items``: ``(query, samples)`` pairs, dicts with ``query``/``samples`` (and optionally
        ``item_id``), a ``Dataset`` or a file (see :func:`~hf_prefs.labels.schema.load_rows`).
        Generated ids are ``"{round}-{n:05d}"``. A comparison (query and samples) the round already holds — or an
        earlier row of ``items`` gives — without an ``item_id``, is that item (its id is returned, nothing is added): a run that puts its round again
        after a restart does not ask for its labels twice; an ``item_id`` listed again with the same comparison (an
        export with several labels per item) is that item too. The items have one K, the round's if it holds any (a
        round's labels train one reward model). All items are checked first; one bad row writes nothing.
        """
        key = round_key(round_id)
        rows = load_rows(items)
        if not rows:
            raise LabelValidationError(f"no items given for round {key!r}")
        checked = []
        for i, row in enumerate(rows):
            row = merge_flat_samples(i, row)
            query, samples = check_comparison(i, row.get("query"), row.get("samples"), len(checked[0][2]) if checked else None)
            item_id = row.get("item_id")
            if item_id is not None:
                try:
                    check_name(item_id, "item_id")
                except LabelRequestError as exc:
                    raise LabelValidationError(str(exc), i, "item_id") from None
            checked.append((item_id, query, samples))

        explicit = {item_id for item_id, _, _ in checked if item_id is not None}
        ids: list[str] = []

        def build(state: QueueState) -> list[Event]:
            _check_round_k(state, key, len(checked[0][2]), 0)
            n0, now, out = len(state.rounds.get(key, [])), self.clock(), []
            seen: dict[str, tuple[int, tuple[str, tuple[str, ...]]]] = {}  # item_id -> (first row, its comparison)
            queued = state.items_by_content()  # the same comparison put again is that item
            ids.clear()
            for i, (item_id, query, samples) in enumerate(checked):
                if item_id is None and (key, query, tuple(samples)) in queued:
                    ids.append(queued[(key, query, tuple(samples))])
                    continue
                if item_id is None:
                    item_id = _new_item_id(key, n0 + len(out), state.items, seen, explicit)
                if item_id in seen:  # listed again in these rows (an export with several labels per item)
                    first, comparison = seen[item_id]
                    if comparison != (query, tuple(samples)):
                        raise LabelValidationError(f"item_id {item_id!r} is row {first}'s too, with another comparison",
                                                   i, "item_id")
                    ids.append(item_id)
                    continue
                if item_id in state.items:
                    raise LabelValidationError(f"item_id {item_id!r} is already in the queue", i, "item_id")
                seen[item_id] = (i, (query, tuple(samples)))
                queued.setdefault((key, query, tuple(samples)), item_id)  # a later row of the same comparison is it
                ids.append(item_id)
                out.append({"type": "item", "item_id": item_id, "round": key, "query": query, "samples": list(samples), "t": now})
            return out

        self._log.append(build)
        return list(ids)

    @_reads_state
    def rounds(self) -> list[str]:
        """Round ids in the order they were first enqueued."""
        return list(self._state.rounds)

    @_reads_state
    def round_status(self, round_id: int | str, item_ids: Sequence[str] | None = None) -> RoundStatus:
        """Progress of one round, or of its items ``item_ids`` (``KeyError`` naming the known rounds if it has no
        items)."""
        return self._state.round_status(round_key(round_id), self.clock(), item_ids)

    def wait_round(self, round_id: int | str, timeout: float | None = None, poll_s: float = 0.5,
                   item_ids: Sequence[str] | None = None) -> Dataset:
        """Block until every item of the round (or its items ``item_ids``: a run's own, as :meth:`put_round` returned
        them, where others may share the round) has ``labels_per_item`` labels; return their labels.

        Raises ``TimeoutError`` (with the progress) after ``timeout`` seconds, so a training loop can
        decide to continue with its current reward model.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.round_status(round_id, item_ids)
            if status.complete:
                return self.labels(round_id, item_ids=item_ids)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"round {status.round!r}: {status.done}/{status.total} items labeled after {timeout} s")
            time.sleep(poll_s if deadline is None else max(0.0, min(poll_s, deadline - time.monotonic())))

    @_reads_state
    def labels(self, round_id: int | str | None = None, include_repeats: bool = False,
               item_ids: Sequence[str] | None = None) -> Dataset:
        """Live (not undone) labels in the project's label schema, in the order they were given (of the items
        ``item_ids`` alone, when given).

        Columns: :data:`LABEL_FEATURES`. Agreement-check repeats are left out unless ``include_repeats``.
        """
        key = None if round_id is None else round_key(round_id)
        rows = self._state.label_rows(key, include_repeats)
        if item_ids is not None:
            wanted = set(item_ids)
            rows = [row for row in rows if row["item_id"] in wanted]
        if not rows:
            return Dataset.from_dict({name: [] for name in LABEL_FEATURES}, features=LABEL_FEATURES)
        return Dataset.from_list(rows, features=LABEL_FEATURES)

    def export(self, out: str | os.PathLike, round_id: int | str | None = None, include_repeats: bool = False) -> int:
        """Write :meth:`labels` to ``out`` (``.jsonl``/``.json``, ``.parquet``, ``.csv`` or a dataset folder);
        returns the number of rows. Labels of rounds with different K are refused (a label file has one K), and a
        ``round_id`` the queue does not hold (``ValueError`` naming its rounds): ``out`` is then left as it was."""
        if round_id is not None and round_key(round_id) not in (known := self.rounds()):  # a typo: nothing written
            raise ValueError(f"no round {round_key(round_id)!r} in this queue (its rounds: {known}); nothing written to {out}")
        ds = self.labels(round_id, include_repeats=include_repeats)
        ks: dict[int, str] = {}
        for rnd, samples in zip(ds["round"], ds["samples"]):
            ks.setdefault(len(samples), rnd)
        if len(ks) > 1:  # a label file holds one K (it trains one reward model); nothing is written
            if round_id is not None:  # queued before hf_prefs kept one K per round
                raise ValueError(f"round {round_key(round_id)!r} mixes K = {sorted(ks)} samples (queued before one K per "
                                 "round was kept): a label file holds one K; read queue.labels(round) and split it by K")
            raise ValueError(f"the labels mix K = {sorted(ks)} samples (e.g. rounds {sorted(ks.values())}): export one K "
                             "at a time with round_id (--round)")
        out = Path(out)
        suffix = out.suffix.lower()
        if suffix == ".jsonl":
            ds.to_json(str(out), lines=True, force_ascii=False)
        elif suffix == ".json":  # one JSON list (datasets writes lists of at most 1,000 rows only)
            with open(out, "w", encoding="utf-8") as f:
                json.dump(ds.to_list(), f, ensure_ascii=False)
        elif suffix == ".parquet":
            ds.to_parquet(str(out))
        elif suffix == ".csv":  # a column per sample (sample0..), which the label readers take back
            Dataset.from_list([_flat_samples(row) for row in ds.to_list()]).to_csv(str(out), index=False)
        elif suffix == "":
            ds.save_to_disk(str(out))
        else:
            raise ValueError(f"unsupported output type {suffix!r}: use .jsonl, .json, .parquet, .csv or a folder")
        return len(ds)

    def add_labels(self, source: Any, round_id: int | str | None = None, labeler: str | None = None) -> list[str]:
        """Fill the queue from labels collected elsewhere; returns the new label ids.

        Rows follow the label schema (``query``, ``samples`` or ``sample0..``, ``best``) and may carry
        ``item_id``, ``labeler`` and ``round``. A row matches a queued item by ``item_id`` (its query and
        samples must then be equal) or else by identical query and samples within the round (with no round
        given: the one queued item of that query and samples, in whichever round); rows matching nothing
        become new items of their round (``round`` column or ``round_id``). The
        labeler is the row's ``labeler``, else ``labeler``, else ``"file"``. Per-labeler uniqueness
        holds as for the app (an item labeled twice by one labeler is refused; a row whose labeler already gave that
        item the same ``best`` is that label, skipped: importing a file again adds nothing); files may add labels
        beyond ``labels_per_item``. The rows have one K, and a new item the K of its round's items. All rows are
        checked first; one bad row writes nothing.
        """
        rows: list[dict[str, Any]] = []
        for i, row in enumerate(load_rows(source)):
            rows.append(check_label_row(i, row, len(rows[0]["samples"]) if rows else None))
        if not rows:
            raise LabelValidationError("the label source holds no rows")
        default_round = None if round_id is None else round_key(round_id)
        default_labeler = check_name(labeler, "labeler") if labeler is not None else "file"
        explicit = {str(row["item_id"]) for row in rows if row.get("item_id") not in (None, "")}

        def build(state: QueueState) -> list[Event]:
            now, out, new_items, taken = self.clock(), [], {}, set()
            by_text = state.item_ids_by_text()
            for i, row in enumerate(rows):
                query, samples = row["query"], tuple(row["samples"])
                who = row.get("labeler") or default_labeler
                rnd = row.get("round")
                item_id = str(row["item_id"]) if row.get("item_id") not in (None, "") else None
                try:
                    rnd = round_key(rnd) if rnd not in (None, "") else default_round
                except LabelRequestError as exc:
                    raise LabelValidationError(str(exc), i, "round") from None
                try:
                    who = check_name(str(who), "labeler")
                except LabelRequestError as exc:
                    raise LabelValidationError(str(exc), i, "labeler") from None
                try:
                    item_id, item = state.match_item(item_id, rnd, query, samples, new_items, by_text)
                except LabelRequestError as exc:
                    raise LabelValidationError(str(exc), i, exc.field) from None
                if item is None:
                    if rnd is None:
                        raise LabelValidationError("no queued item matches; give a round for new items (a 'round' column, round_id= or the CLI's --round)", i, "round")
                    _check_round_k(state, rnd, len(samples), i)
                    if not item_id:
                        n = len(state.rounds.get(rnd, [])) + sum(r["round"] == rnd for r in new_items.values())
                        item_id = _new_item_id(rnd, n, state.items, new_items, explicit)
                    item = {"type": "item", "item_id": item_id, "round": rnd, "query": query, "samples": list(samples), "t": now}
                    new_items[item_id] = item
                    by_text.setdefault((query, samples), []).append(item_id)
                    out.append(item)
                elif item["query"] != query or tuple(item["samples"]) != samples:
                    raise LabelValidationError(f"item {item_id!r} is queued with a different query/samples", i, "item_id")
                if (item_id, who) in taken:
                    raise LabelValidationError(f"labeler {who!r} already answered item {item_id!r} in this file", i, "labeler")
                taken.add((item_id, who))
                answered = state.answers.get((item_id, who, False))
                if answered is not None:
                    if int(state.labels[answered]["best"]) == int(row["best"]):
                        continue  # this label is in the queue already (a file imported again): nothing to add
                    raise LabelValidationError(f"labeler {who!r} already answered item {item_id!r} with best="
                                               f"{state.labels[answered]['best']}", i, "labeler")
                out.append(
                    {"type": "label", "label_id": uuid.uuid4().hex, "item_id": item_id, "labeler": who, "best": int(row["best"]),
                     "repeat": False, "source": "file", "shown_order": None, "shown_at": None, "t": now}
                )
            return out

        return [r["label_id"] for r in self._log.append(build) if r["type"] == "label"]

    # ------------------------------------------------------------------ labeler side
    def _lease_from(self, rec: Event) -> Lease:
        item = self._state.items[rec["item_id"]]
        return Lease(
            lease_id=rec["lease_id"], item_id=rec["item_id"], round=item["round"], query=item["query"],
            samples=tuple(item["samples"]), order=tuple(rec["order"]), labeler=rec["labeler"],
            repeat=bool(rec.get("repeat", False)), shown_at=rec["t"], expires=rec["expires"],
        )

    def _lease_event(self, item_id: str, labeler: str, repeat: bool, order: Sequence[int] | None, rng: random.Random) -> Event:
        k = len(self._state.items[item_id]["samples"])
        order = list(order) if order is not None else rng.sample(range(k), k)
        now = self.clock()
        return {"type": "lease", "lease_id": uuid.uuid4().hex, "item_id": item_id, "labeler": labeler,
                "order": order, "repeat": repeat, "expires": now + self.lease_s, "t": now}

    def _my_leases(self, labeler: str) -> list[Event]:
        """The labeler's unexpired leases that they can still answer."""
        return self._state.open_leases(labeler, self.clock())

    def next_item(self, labeler: str) -> Lease | None:
        """The item to show ``labeler`` now, leased to them; ``None`` when nothing is left for them.

        Their unexpired lease is returned first (a reload or restart shows the same item, same order).
        Otherwise, with probability ``repeat_fraction``, an item they answered before (not among their
        last ``repeat_gap`` answers) comes back as an agreement-check repeat; else the oldest item that still needs labels,
        that they have neither answered nor skipped, and that is not leased to enough other labelers.
        """
        labeler = check_name(labeler, "labeler")

        def build(state: QueueState) -> list[Event]:
            if self._my_leases(labeler):
                return []  # resume the current lease (read after the lock)
            fresh = state.fresh_item(labeler, self.clock())
            if fresh is None:
                return []
            history, skipped = state.history.get(labeler, []), state.skips.get(labeler, set())
            rng = random.Random(f"{self.seed}:{labeler}:{len(history)}:{len(skipped)}")
            if self.repeat_fraction > 0 and rng.random() < self.repeat_fraction:
                candidates = state.repeat_candidates(labeler, self.repeat_gap)
                if candidates:
                    return [self._lease_event(rng.choice(candidates), labeler, True, None, rng)]
            return [self._lease_event(fresh, labeler, False, None, rng)]

        self._log.append(build)
        with self._log.lock:
            mine = self._my_leases(labeler)
            return self._lease_from(max(mine, key=lambda r: r["t"])) if mine else None

    def submit(self, labeler: str, item_id: str, best: int, *, repeat: bool | None = None, source: str = "api") -> Event:
        """Record that ``labeler`` picked stored sample ``best`` of ``item_id``; returns the label event
        once it is fsync'd.

        ``repeat`` defaults to what the labeler's lease on the item says. Refused with
        :class:`LabelRequestError` (nothing written): an unknown item, a ``best`` that is not an int in
        ``[0, K)``, an item this labeler already answered (a replay; undo first), an item that already
        has its ``labels_per_item`` labels, a repeat of an item they never answered.
        """
        labeler = check_name(labeler, "labeler")
        if not isinstance(item_id, str):
            raise LabelRequestError(f"item_id must be a string, got {type(item_id).__name__}", "item_id")
        best_i = _check_best(best)

        def build(state: QueueState) -> list[Event]:
            item = state.items.get(item_id)
            if item is None:
                raise LabelRequestError(f"unknown item_id {item_id!r}: it is not in the queue at {self.path} ({len(state.items)} items)", "item_id")
            k = len(item["samples"])
            if not 0 <= best_i < k:
                raise LabelRequestError(f"best={best_i} is out of range [0, {k - 1}] for item {item_id!r} (K={k})", "best")
            lease = state.leases.get(item_id, {}).get(labeler)
            is_repeat = bool(lease.get("repeat")) if repeat is None and lease is not None else bool(repeat)
            state.check_answer(labeler, item_id, is_repeat)
            return [
                {"type": "label", "label_id": uuid.uuid4().hex, "item_id": item_id, "labeler": labeler, "best": best_i,
                 "repeat": is_repeat, "source": source, "shown_order": lease["order"] if lease else None,
                 "shown_at": lease["t"] if lease else None, "t": self.clock()}
            ]

        return self._log.append(build)[0]

    def skip(self, labeler: str, item_id: str) -> None:
        """``labeler`` passes on ``item_id``: its lease ends and it is not shown to them again."""
        labeler = check_name(labeler, "labeler")

        def build(state: QueueState) -> list[Event]:
            if item_id not in state.items:
                raise LabelRequestError(f"unknown item_id {item_id!r}: it is not in the queue at {self.path}", "item_id")
            if item_id in state.skips.get(labeler, set()):
                raise LabelRequestError(f"labeler {labeler!r} already skipped item {item_id!r}", "item_id")
            return [{"type": "skip", "item_id": item_id, "labeler": labeler, "t": self.clock()}]

        self._log.append(build)

    def undo(self, labeler: str) -> Lease:
        """Retract ``labeler``'s most recent live answer and lease its item back to them (same order as
        they saw it); returns that lease. ``LabelRequestError`` if they have nothing to undo."""
        labeler = check_name(labeler, "labeler")

        def build(state: QueueState) -> list[Event]:
            live = [lid for lid in state.history.get(labeler, []) if lid not in state.undone]
            if not live:
                raise LabelRequestError(f"labeler {labeler!r} has no answer to undo", "labeler")
            label = state.labels[live[-1]]
            now = self.clock()
            # The new lease is the labeler's newest, so it is shown before any other lease they hold.
            order = label.get("shown_order")
            k = len(state.items[label["item_id"]]["samples"])
            lease = self._lease_event(label["item_id"], labeler, bool(label.get("repeat")), order if order and len(order) == k else None,
                                      random.Random(f"{self.seed}:{label['label_id']}"))
            return [{"type": "undo", "label_id": label["label_id"], "labeler": labeler, "t": now}, lease]

        return self._lease_from(self._log.append(build)[-1])

    @_reads_state
    def progress(self, labeler: str | None = None) -> dict[str, int]:
        """Counts for a progress bar: ``items``, ``done`` (items with all their labels), ``labels``
        (live, without repeats), and for ``labeler``: ``mine``, ``repeats``, ``skipped``, ``left``
        (items they could still be shown)."""
        return self._state.progress(labeler)

    @_reads_state
    def agreement(self, labeler: str | None = None) -> dict[str, int]:
        """Agreement on items shown twice: ``self_n``/``self_agree`` count (first answer, repeat) pairs of
        the same labeler (of ``labeler`` only, if given); ``cross_n``/``cross_agree`` count pairs of
        different labelers' first answers on the same item (pairs involving ``labeler``, if given)."""
        return self._state.agreement(labeler)


def _check_round_k(state: QueueState, round_id: str, k: int, row: int) -> None:
    """New items of ``round_id`` have the round's K (its queued items' number of samples), when it holds any."""
    queued = state.num_candidates(round_id)
    if queued is not None and k != queued:
        raise LabelValidationError(f"expected K={queued} samples as round {round_id!r}'s items have (one K per round: "
                                   f"its labels train one reward model), got {k}", row, "samples")


def _new_item_id(round_id: str, n: int, *taken: Any) -> str:
    """``<round>-<n:05d>`` for the first ``n`` on from the given one whose id no collection in ``taken`` holds (an
    item given an explicit id may hold the next generated one)."""
    while any(f"{round_id}-{n:05d}" in ids for ids in taken):
        n += 1
    return f"{round_id}-{n:05d}"


def _flat_samples(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with its ``samples`` list as ``sample0..sample{K-1}`` columns (CSV holds no lists)."""
    flat = {k: v for k, v in row.items() if k != "samples"}
    flat.update({f"sample{k}": text for k, text in enumerate(row["samples"])})
    return flat
