"""Where the labels of an online round come from (:class:`hf_prefs.OnlinePreferenceLoop`).

A :class:`LabelSource` is asked for a round's labels (``request``) and hands over the rows that became available
(``collect``): a simulated labeler labels at once, the human queue when people have labeled, a label file fills the
rounds with its rows in order.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from datasets import Dataset

from .labelers import SimulatedLabeler
from .queue import LabelQueue
from .schema import validate_labels

__all__ = ["LabelSource", "SimulatedLabelSource", "QueueLabelSource", "FileLabelSource", "as_label_source"]

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------
class LabelSource(Protocol):
    """Where a round's labels come from.

    ``samples_from_policy``: whether the loop samples comparisons from the current policy for ``request``.
    ``request(round, n, queries, samples)`` asks for the round's labels (``queries``/``samples`` are ``None`` when
    ``samples_from_policy`` is False); ``collect(round, block, timeout)`` returns the label rows (``query``,
    ``samples``, ``best``, ``round``) that became available since the last call, of this or earlier rounds; with
    ``block`` it first waits for the round's labels (up to ``timeout`` seconds, then returns what is there).
    """

    samples_from_policy: bool

    def request(self, round: int, n: int, queries: list[str] | None, samples: list[list[str]] | None) -> dict[str, Any]: ...

    def collect(self, round: int, block: bool, timeout: float | None = None) -> list[dict[str, Any]]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class SimulatedLabelSource:
    """A :class:`~hf_prefs.labels.labelers.SimulatedLabeler` labels each round at once (the paper's mock human)."""

    samples_from_policy = True

    def __init__(self, labeler: SimulatedLabeler):
        self.labeler = labeler
        self._ready: list[dict[str, Any]] = []

    def request(self, round: int, n: int, queries: list[str] | None, samples: list[list[str]] | None) -> dict[str, Any]:
        known = self.labeler.score(queries, samples)
        best = [self.labeler.choose(r) for r in known]
        self._ready += [{"query": q, "samples": list(s), "best": b, "round": round} for q, s, b in zip(queries, samples, best)]
        flat = [x for r in known for x in r]
        return {
            "known_reward_of_samples": sum(flat) / len(flat),  # mean known reward of the current policy's samples
            "known_reward_of_best": sum(r[b] for r, b in zip(known, best)) / len(best),
        }

    def collect(self, round: int, block: bool, timeout: float | None = None) -> list[dict[str, Any]]:
        out, self._ready = self._ready, []
        return out

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs: the labeler's RNG."""
        return {"labeler": self.labeler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.labeler.load_state_dict(state["labeler"])


class QueueLabelSource:
    """Human labels through a :class:`~hf_prefs.labels.queue.LabelQueue`.

    ``request`` enqueues the round's comparisons under the queue round ``round_format.format(round=r)``; ``collect``
    waits for and returns the live labels of this loop's own items (the ids ``put_round`` gave it) not returned
    before. Labels that arrive late, or answer its items from a file (``LabelQueue.add_labels`` / ``hf-prefs label
    import`` match a row to a queued item by its query and samples), are picked up at the next round; another run's
    items in a round of the same name, and imported rows that match none of this loop's items, are not. A round of
    n comparisons yields n · ``labels_per_item`` labels once complete.
    """

    samples_from_policy = True

    def __init__(self, queue: Any, round_format: str = "online-{round}", poll_s: float = 0.5):
        self.queue, self.round_format, self.poll_s = queue, round_format, poll_s
        self._rounds: dict[str, int] = {}
        self._items: dict[str, list[str]] = {}  # queue round -> this loop's item ids in it
        self._seen: set[str] = set()

    def _key(self, round: int) -> str:
        return self.round_format.format(round=round)

    def request(self, round: int, n: int, queries: list[str] | None, samples: list[list[str]] | None) -> dict[str, Any]:
        key = self._key(round)
        self._rounds[key] = round
        items = self._items.setdefault(key, [])  # a round put again (a restart) returns the same ids: kept once
        items.extend(i for i in self.queue.put_round(key, list(zip(queries, samples))) if i not in items)
        print(f"[hf_prefs] round {round}: {n} comparisons queued as {key!r} in {self.queue.path}")
        return {"queue_round": key}

    def collect(self, round: int, block: bool, timeout: float | None = None) -> list[dict[str, Any]]:
        key = self._key(round)
        if block:
            try:
                self.queue.wait_round(key, timeout=timeout, poll_s=self.poll_s, item_ids=self._items.get(key))
            except TimeoutError as err:
                logger.warning("%s; continuing with the labels given so far", err)
        mine = {item for items in self._items.values() for item in items}
        out = []
        for row in self.queue.labels():
            if (row["round"] in self._rounds and row["label_id"] not in self._seen
                    and (row["item_id"] in mine or row["round"] not in self._items)):  # a state saved before item ids
                self._seen.add(row["label_id"])
                out.append({"query": row["query"], "samples": list(row["samples"]), "best": int(row["best"]),
                            "round": self._rounds[row["round"]]})
        return out

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs: this loop's queue rounds, its items and the labels already handed over."""
        return {"rounds": dict(self._rounds), "items": {k: list(v) for k, v in self._items.items()},
                "seen": sorted(self._seen)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._rounds, self._seen = dict(state["rounds"]), set(state["seen"])
        self._items = {k: list(v) for k, v in state.get("items", {}).items()}


class FileLabelSource:
    """Rows of a label dataset (e.g. a released ``online_45k.json``) fill the rounds in order: round r takes the
    next ``labels_per_round[r]`` rows. Its samples were not drawn from this run's policy."""

    samples_from_policy = False

    def __init__(self, labels: Dataset):
        self.labels = labels
        self._next = 0
        self._ready: list[dict[str, Any]] = []

    def request(self, round: int, n: int, queries: list[str] | None, samples: list[list[str]] | None) -> dict[str, Any]:
        if self._next + n > len(self.labels):
            raise ValueError(
                f"labels_per_round: round {round} needs rows {self._next}..{self._next + n - 1} but the label file "
                f"has {len(self.labels)} rows"
            )
        rows = self.labels.select(range(self._next, self._next + n))
        self._ready += [{"query": r["query"], "samples": list(r["samples"]), "best": int(r["best"]), "round": round} for r in rows]
        info = {"file_rows": [self._next, self._next + n]}
        self._next += n
        return info

    def collect(self, round: int, block: bool, timeout: float | None = None) -> list[dict[str, Any]]:
        out, self._ready = self._ready, []
        return out

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs: the next row of the file."""
        return {"next": self._next}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._next = int(state["next"])


def as_label_source(source: Any) -> LabelSource:
    """A :class:`LabelSource` from a ``SimulatedLabeler``, a ``LabelQueue``, a label ``Dataset`` or a source."""
    if isinstance(source, SimulatedLabeler):
        return SimulatedLabelSource(source)
    if isinstance(source, Dataset):
        return FileLabelSource(validate_labels(source))
    if isinstance(source, LabelQueue):
        return QueueLabelSource(source)
    if hasattr(source, "request") and hasattr(source, "collect"):
        return source
    raise TypeError(
        "label_source must be a SimulatedLabeler, a LabelQueue, a label Dataset or an object with request/collect, "
        f"got {type(source).__name__}"
    )
