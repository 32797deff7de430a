"""The label queue's state: the replay of its events (see :mod:`hf_prefs.labels.queue` for the event
types) and the read-only questions the labeling policy asks of it, plus the values the queue hands out.

Nothing here writes: :class:`~hf_prefs.labels.queue.LabelQueue` checks requests against a
:class:`QueueState` and appends events through its :class:`~hf_prefs.labels.event_log.EventLog`,
which replays them here.
"""

from __future__ import annotations

import dataclasses
import operator
import re
from collections.abc import Iterator, Sequence
from typing import Any

from .schema import check_comparison

__all__ = ["LabelRequestError", "Lease", "QueueState", "RoundStatus", "check_name", "round_key"]

Event = dict[str, Any]

_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,200}$")


class LabelRequestError(ValueError):
    """A request the queue refuses (nothing was written); ``field`` names the offending argument."""

    def __init__(self, message: str, field: str | None = None):
        self.field = field
        super().__init__(message)


def check_name(value: Any, field: str) -> str:
    """``value`` if it is a usable labeler name, round id or item id (``field`` says which): a string of
    1 to 200 printable characters, not only blanks; else :class:`LabelRequestError`."""
    if not isinstance(value, str) or not _NAME.match(value) or not value.strip():
        raise LabelRequestError(
            f"{field} must be a non-empty string of at most 200 printable characters, got {value!r}", field
        )
    return value


def round_key(round_id: Any) -> str:
    """The stored form of a round id (an int or a string; a whole float, as pandas/parquet give an int column with
    gaps, counts as its int): its string, checked like a name."""
    if isinstance(round_id, float) and round_id.is_integer():
        round_id = int(round_id)
    if isinstance(round_id, bool) or not isinstance(round_id, (int, str)):
        raise LabelRequestError(f"round ids are ints or strings, got {type(round_id).__name__}", "round")
    return check_name(str(round_id), "round")


@dataclasses.dataclass(frozen=True)
class Lease:
    """An item shown to one labeler: ``order[p]`` is the stored sample index displayed at position ``p``."""

    lease_id: str
    item_id: str
    round: str
    query: str
    samples: tuple[str, ...]
    order: tuple[int, ...]
    labeler: str
    repeat: bool
    shown_at: float
    expires: float

    @property
    def shown_samples(self) -> list[str]:
        """The samples in the order the labeler sees them."""
        return [self.samples[i] for i in self.order]

    def best_from_position(self, position: int) -> int:
        """Map a shown position (0-based) back to the stored sample index."""
        if isinstance(position, bool) or not 0 <= operator.index(position) < len(self.order):
            raise LabelRequestError(f"position {position!r} is out of range [0, {len(self.order) - 1}]", "position")
        return self.order[position]


@dataclasses.dataclass(frozen=True)
class RoundStatus:
    """How far a round is: items with all their labels (``done``) out of ``total``."""

    round: str
    total: int
    done: int
    labels: int
    leased: int

    @property
    def complete(self) -> bool:
        return self.done == self.total


class QueueState:
    """The replay of the queue's events: items, live labels, undos, leases, skips and the config.

    :meth:`apply` raises ``ValueError``/``KeyError``/``TypeError`` on an event that does not fit the
    state so far (the log then skips that line with a warning).
    """

    def __init__(self) -> None:
        self.labels_per_item = 1
        self.items: dict[str, Event] = {}
        self.rounds: dict[str, list[str]] = {}
        self.labels: dict[str, Event] = {}  # every label event, live or undone
        self.undone: set[str] = set()
        self.answers: dict[tuple[str, str, bool], str] = {}  # (item_id, labeler, repeat) -> live label_id
        self.n_primary: dict[str, int] = {}  # item_id -> live non-repeat labels
        self.leases: dict[str, dict[str, Event]] = {}  # item_id -> labeler -> latest lease event
        self.history: dict[str, list[str]] = {}  # labeler -> label_ids in order
        self.skips: dict[str, set[str]] = {}  # labeler -> item_ids

    # ------------------------------------------------------------------ replay
    def apply(self, rec: Event) -> None:
        """Replay one event (``batch`` lines are unpacked by the log)."""
        kind = rec["type"]
        handler = self._HANDLERS.get(kind)
        if handler is None:
            raise ValueError(f"unknown event type {kind!r}")
        handler(self, rec)

    def _apply_item(self, rec: Event) -> None:
        item_id = rec["item_id"]
        if item_id in self.items:
            raise ValueError(f"duplicate item_id {item_id!r}")
        check_comparison(0, rec["query"], rec["samples"])
        self.items[item_id] = rec
        self.rounds.setdefault(rec["round"], []).append(item_id)
        self.n_primary[item_id] = 0

    def _apply_lease(self, rec: Event) -> None:
        if rec["item_id"] not in self.items:
            raise ValueError(f"lease of unknown item {rec['item_id']!r}")
        self.leases.setdefault(rec["item_id"], {})[rec["labeler"]] = rec

    def _apply_label(self, rec: Event) -> None:
        item_id, labeler, repeat = rec["item_id"], rec["labeler"], bool(rec.get("repeat", False))
        if item_id not in self.items:
            raise ValueError(f"label of unknown item {item_id!r}")
        key = (item_id, labeler, repeat)
        if key in self.answers:
            raise ValueError(f"duplicate answer of {labeler!r} on {item_id!r}")
        if not 0 <= int(rec["best"]) < len(self.items[item_id]["samples"]):
            raise ValueError(f"best={rec['best']} out of range")
        self.labels[rec["label_id"]] = rec
        self.answers[key] = rec["label_id"]
        if not repeat:
            self.n_primary[item_id] += 1
        self.history.setdefault(labeler, []).append(rec["label_id"])
        self.leases.get(item_id, {}).pop(labeler, None)

    def _apply_undo(self, rec: Event) -> None:
        label = self.labels[rec["label_id"]]
        if rec["label_id"] in self.undone:
            raise ValueError(f"label {rec['label_id']!r} undone twice")
        self.undone.add(rec["label_id"])
        repeat = bool(label.get("repeat", False))
        del self.answers[(label["item_id"], label["labeler"], repeat)]
        if not repeat:
            self.n_primary[label["item_id"]] -= 1

    def _apply_skip(self, rec: Event) -> None:
        if rec["item_id"] not in self.items:
            raise ValueError(f"skip of unknown item {rec['item_id']!r}")
        self.skips.setdefault(rec["labeler"], set()).add(rec["item_id"])
        self.leases.get(rec["item_id"], {}).pop(rec["labeler"], None)

    def _apply_config(self, rec: Event) -> None:
        self.labels_per_item = int(rec["labels_per_item"])

    _HANDLERS = {
        "item": _apply_item,
        "lease": _apply_lease,
        "label": _apply_label,
        "undo": _apply_undo,
        "skip": _apply_skip,
        "config": _apply_config,
    }

    # ------------------------------------------------------------------ questions
    def active_leases(self, item_id: str, now: float) -> dict[str, Event]:
        """The unexpired leases on ``item_id``, by labeler."""
        return {who: lease for who, lease in self.leases.get(item_id, {}).items() if lease["expires"] > now}

    def live_label_ids(self) -> Iterator[str]:
        """Label ids not undone, in the order they were given."""
        return (lid for lid in self.labels if lid not in self.undone)

    def open_leases(self, labeler: str, now: float) -> list[Event]:
        """The labeler's unexpired leases that they can still answer."""
        out = []
        for item_id, item_leases in self.leases.items():
            lease = item_leases.get(labeler)
            if lease is None or lease["expires"] <= now:
                continue
            if lease.get("repeat"):
                ok = (item_id, labeler, True) not in self.answers and (item_id, labeler, False) in self.answers
            else:
                ok = (item_id, labeler, False) not in self.answers and self.n_primary[item_id] < self.labels_per_item
            if ok:
                out.append(lease)
        return out

    def fresh_item(self, labeler: str, now: float) -> str | None:
        """The oldest item that still needs labels, that ``labeler`` has neither answered nor skipped,
        and that is not leased to enough other labelers."""
        skipped = self.skips.get(labeler, set())
        for item_id in self.items:
            if (item_id, labeler, False) in self.answers or item_id in skipped:
                continue
            others = sum(1 for who, lease in self.active_leases(item_id, now).items() if who != labeler and not lease.get("repeat"))
            if self.n_primary[item_id] + others < self.labels_per_item:
                return item_id
        return None

    def repeat_candidates(self, labeler: str, gap: int) -> list[str]:
        """Items ``labeler`` answered (not among their last ``gap`` answers) and has not repeated yet."""
        history = self.history.get(labeler, [])
        live = [self.labels[lid] for lid in history if lid not in self.undone and not self.labels[lid].get("repeat")]
        recent = {r["item_id"] for r in live[max(0, len(live) - gap) :]}
        return [r["item_id"] for r in live if r["item_id"] not in recent and (r["item_id"], labeler, True) not in self.answers]

    def num_candidates(self, round_id: str) -> int | None:
        """K of the round's items (one K per round: a round's labels train one reward model); None for a new round."""
        ids = self.rounds.get(round_id)
        return len(self.items[ids[0]]["samples"]) if ids else None

    def items_by_content(self) -> dict[tuple[str, str, tuple[str, ...]], str]:
        """``(round, query, samples) -> item_id`` of every queued item (the first one where a comparison repeats)."""
        by_content: dict[tuple[str, str, tuple[str, ...]], str] = {}
        for item_id, item in self.items.items():
            by_content.setdefault((item["round"], item["query"], tuple(item["samples"])), item_id)
        return by_content

    def item_ids_by_text(self) -> dict[tuple[str, tuple[str, ...]], list[str]]:
        """``(query, samples) -> ids`` of the queued items showing that comparison, in any round."""
        by_text: dict[tuple[str, tuple[str, ...]], list[str]] = {}
        for item_id, item in self.items.items():
            by_text.setdefault((item["query"], tuple(item["samples"])), []).append(item_id)
        return by_text

    def match_item(
        self,
        item_id: str | None,
        rnd: str | None,
        query: str,
        samples: tuple[str, ...],
        new_items: dict[str, Event],
        by_text: dict[tuple[str, tuple[str, ...]], list[str]],
    ) -> tuple[str | None, Event | None]:
        """The item a label file's row refers to, queued or among ``new_items`` (new in this import): by
        ``item_id``, else (without an id) by identical query and samples (``by_text``, the ids showing them in
        the order they were queued): the first in round ``rnd``, or with no round the one item in any round
        (several: :class:`LabelRequestError` naming their rounds). Returns ``(item_id, item)``; ``item`` is
        ``None`` when nothing matches."""
        if item_id:
            return item_id, self.items.get(item_id) or new_items.get(item_id)
        found = [self.items.get(f) or new_items[f] for f in by_text.get((query, samples), [])]
        if rnd is not None:
            found = [f for f in found if f["round"] == rnd][:1]
        elif len(found) > 1:
            raise LabelRequestError(f"its query and samples are queued {len(found)} times (rounds "
                                    f"{sorted({f['round'] for f in found})}); give a round (column 'round' or "
                                    "round_id) or an item_id", "round")
        return (found[0]["item_id"], found[0]) if found else (None, None)

    def check_answer(self, labeler: str, item_id: str, is_repeat: bool) -> None:
        """Refuse (:class:`LabelRequestError`) a replay, a repeat without a first answer, and a first
        answer on an item that already has its ``labels_per_item`` labels."""
        done = self.answers.get((item_id, labeler, is_repeat))
        if done is not None:
            what = "repeat of item" if is_repeat else "item"
            raise LabelRequestError(
                f"labeler {labeler!r} already answered {what} {item_id!r} (label {done}); a replay is refused, undo the answer first to change it",
                "item_id",
            )
        if is_repeat and (item_id, labeler, False) not in self.answers:
            raise LabelRequestError(f"a repeat needs a first answer, but labeler {labeler!r} has not answered item {item_id!r}", "repeat")
        if not is_repeat and self.n_primary[item_id] >= self.labels_per_item:
            raise LabelRequestError(
                f"item {item_id!r} already has its {self.labels_per_item} label(s) from other labelers (labels_per_item={self.labels_per_item})",
                "item_id",
            )

    def round_status(self, key: str, now: float, item_ids: Sequence[str] | None = None) -> RoundStatus:
        """Progress of round ``key``, or of its items ``item_ids`` (``KeyError`` naming the known rounds if it has no
        items, or the first item it does not hold)."""
        if key not in self.rounds:
            raise KeyError(f"round {key!r} has no items; known rounds: {list(self.rounds)}")
        ids = self.rounds[key] if item_ids is None else list(item_ids)
        missing = [i for i in ids if self.items.get(i, {}).get("round") != key]
        if missing:
            raise KeyError(f"round {key!r} holds no item {missing[0]!r}")
        return RoundStatus(
            round=key,
            total=len(ids),
            done=sum(self.n_primary[i] >= self.labels_per_item for i in ids),
            labels=sum(self.n_primary[i] for i in ids),
            leased=sum(bool(self.active_leases(i, now)) for i in ids),
        )

    def label_rows(self, key: str | None, include_repeats: bool) -> list[dict[str, Any]]:
        """Live labels (of round ``key``, or all) as rows of the queue's label columns."""
        rows = []
        for lid in self.live_label_ids():
            rec = self.labels[lid]
            item = self.items[rec["item_id"]]
            if (key is not None and item["round"] != key) or (rec.get("repeat") and not include_repeats):
                continue
            rows.append(
                {
                    "query": item["query"],
                    "samples": list(item["samples"]),
                    "best": int(rec["best"]),
                    "labeler": rec["labeler"],
                    "item_id": rec["item_id"],
                    "round": item["round"],
                    "label_id": lid,
                    "repeat": bool(rec.get("repeat", False)),
                    "source": rec.get("source", "api"),
                    "shown_order": rec.get("shown_order"),
                    "shown_at": rec.get("shown_at"),
                    "labeled_at": rec["t"],
                }
            )
        return rows

    def progress(self, labeler: str | None = None) -> dict[str, int]:
        """See :meth:`hf_prefs.labels.queue.LabelQueue.progress`."""
        out = {
            "items": len(self.items),
            "done": sum(n >= self.labels_per_item for n in self.n_primary.values()),
            "labels": sum(self.n_primary.values()),
        }
        if labeler is not None:
            skipped = self.skips.get(labeler, set())
            mine = {i for (i, who, rep) in self.answers if who == labeler and not rep}
            out["mine"] = len(mine)
            out["repeats"] = sum(1 for (_, who, rep) in self.answers if who == labeler and rep)
            out["skipped"] = len(skipped)
            out["left"] = sum(1 for i, n in self.n_primary.items() if n < self.labels_per_item and i not in mine and i not in skipped)
        return out

    def agreement(self, labeler: str | None = None) -> dict[str, int]:
        """See :meth:`hf_prefs.labels.queue.LabelQueue.agreement`."""
        self_n = self_agree = cross_n = cross_agree = 0
        by_item: dict[str, list[tuple[str, int]]] = {}
        for (item_id, who, rep), lid in self.answers.items():
            best = int(self.labels[lid]["best"])
            if rep:
                if labeler is None or who == labeler:
                    first = self.answers.get((item_id, who, False))
                    if first is not None:
                        self_n += 1
                        self_agree += int(self.labels[first]["best"]) == best
            else:
                by_item.setdefault(item_id, []).append((who, best))
        for answers in by_item.values():
            for a in range(len(answers)):
                for b in range(a + 1, len(answers)):
                    if labeler is None or labeler in (answers[a][0], answers[b][0]):
                        cross_n += 1
                        cross_agree += answers[a][1] == answers[b][1]
        return {"self_n": self_n, "self_agree": self_agree, "cross_n": cross_n, "cross_agree": cross_agree}
