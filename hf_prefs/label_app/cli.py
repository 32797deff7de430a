"""``hf-prefs label ...``: serve the labeling page, fill a queue, export its labels.

Wire into ``hf_prefs/cli.py`` with ``from hf_prefs.label_app.cli import add_label_parser`` and by
appending ``add_label_parser`` to ``COMMAND_GROUPS``. Standalone: ``python -m hf_prefs.label_app.cli``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hf_prefs.labels.queue import LabelQueue

__all__ = ["add_label_parser", "main"]


def _queue(args: argparse.Namespace, existing: bool = False, **kwargs) -> LabelQueue:
    """The queue in ``--queue`` (made if missing, unless ``existing``: reading a mistyped folder makes none)."""
    from hf_prefs.labels.event_log import LOG_NAME
    from hf_prefs.labels.queue import LabelQueue  # lazy: `hf-prefs --help` should not import datasets (~2 s)

    path = Path(args.queue).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"--queue {args.queue}: a file, not a queue folder (the folder holds {LOG_NAME})")
    if existing and not (path / LOG_NAME).is_file():
        raise FileNotFoundError(f"--queue {args.queue}: no label queue there (no {LOG_NAME}; `hf-prefs label add` "
                                "makes one)")
    return LabelQueue(path, **kwargs)


def _next_round(queue: LabelQueue) -> str:
    ints = [int(r) for r in queue.rounds() if r.isdigit()]
    return str(max(ints) + 1 if ints else 0)


def _cmd_serve(args: argparse.Namespace) -> int:
    from hf_prefs.label_app.app import serve  # lazy: Gradio is the optional 'label' extra

    queue = _queue(
        args,
        labels_per_item=args.labels_per_item,
        repeat_fraction=args.repeat_fraction,
        repeat_gap=args.repeat_gap,
        lease_s=args.lease_minutes * 60.0,
        seed=args.seed,
    )
    p = queue.progress()
    print(f"queue {args.queue}: {p['done']}/{p['items']} items done, {p['labels']} labels", flush=True)
    serve(
        queue,
        host=args.host,
        port=args.port,
        share=args.share,
        password=args.password,
        users=args.users,
        default_labeler=args.labeler,
        title=args.title,
    )
    return 0


def _round_total(queue: LabelQueue, round_id: int | str) -> int:
    """Items in the round so far (0 for a round not yet made)."""
    try:
        return queue.round_status(round_id).total
    except KeyError:
        return 0


def _source_rows(args: argparse.Namespace, labels: bool) -> list[dict]:
    """The rows of ``--from``, read and checked (as comparisons, or as ``labels``) before the queue folder is made: a
    missing, unreadable or bad file leaves none behind."""
    from hf_prefs.labels.queue_state import LabelRequestError, check_name  # lazy, as _queue
    from hf_prefs.labels.schema import (LabelValidationError, check_comparison, check_label_row, load_rows,
                                        local_label_path, merge_flat_samples)

    local_label_path(args.source, name="--from")  # a path that can only be a local file: named with its flag
    rows = load_rows(args.source)
    if not rows:  # before the queue folder is made
        raise ValueError(f"--from {args.source}: no rows in it")
    k = None
    for i, row in enumerate(rows):  # the queue checks them again; a bad row is named here, before any folder is made
        for name in ("item_id", "labeler") if labels else ("item_id",):
            if row.get(name) not in (None, ""):
                try:
                    check_name(str(row[name]) if labels else row[name], name)  # as add_labels / put_round read it
                except LabelRequestError as exc:
                    raise LabelValidationError(str(exc), i, name) from None
        if labels:
            k = len(check_label_row(i, dict(row), k)["samples"])
        else:
            row = merge_flat_samples(i, dict(row))
            k = len(check_comparison(i, row.get("query"), row.get("samples"), k)[1])
    if not labels and any(row.get("best") not in (None, "") and row.get("best") == row.get("best") for row in rows):  # NaN: none
        print(f"hf-prefs label add: note: --from {args.source} has a 'best' column; `add` queues comparisons to label "
              "and does not read it (`hf-prefs label import` adds labels)", file=sys.stderr)
    return rows


@contextlib.contextmanager
def _removed_if_refused(args: argparse.Namespace) -> Iterator[None]:
    """A queue folder (or empty log) that this command makes in ``--queue`` is not left behind when the command is
    refused as a whole (a row the queue names)."""
    from hf_prefs.labels.event_log import LOG_NAME  # lazy, as _queue

    path = Path(args.queue).expanduser()
    made_folder, made_log = not path.exists(), not (path / LOG_NAME).is_file()
    try:
        yield
    except Exception:
        if made_folder:
            shutil.rmtree(path, ignore_errors=True)
        elif made_log and (path / LOG_NAME).is_file() and (path / LOG_NAME).stat().st_size == 0:
            (path / LOG_NAME).unlink()
        raise


def _cmd_add(args: argparse.Namespace) -> int:
    rows = _source_rows(args, labels=False)
    with _removed_if_refused(args):
        queue = _queue(args)
        round_id = args.round if args.round is not None else _next_round(queue)
        before = _round_total(queue, round_id)
        ids = queue.put_round(round_id, rows)
    # a comparison the round already holds is that item, not a new one (another process adding to the same round at
    # the same time would be counted here too: at most len(ids))
    added = min(len(ids), _round_total(queue, round_id) - before)
    again = f"; {len(ids) - added} already queued" if added < len(ids) else ""
    print(f"added {added} items to round {round_id!r} of {args.queue} ({ids[0]} .. {ids[-1]}{again})")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from hf_prefs.labels.event_log import LOG_NAME  # lazy, as _queue

    rows = _source_rows(args, labels=True)
    unplaced = [i for i, row in enumerate(rows) if row.get("round") in (None, "")]
    if args.round is None and unplaced and not (Path(args.queue).expanduser() / LOG_NAME).is_file():
        raise ValueError(f"--queue {args.queue} holds no queue yet, so row {unplaced[0]} (no 'round') matches no queued "
                         "item: give --round (the round its labels go to) or a 'round' column")
    with _removed_if_refused(args):
        ids = _queue(args).add_labels(rows, round_id=args.round, labeler=args.labeler)
    print(f"imported {len(ids)} labels into {args.queue}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    queue = _queue(args, existing=True)
    n = queue.export(args.out, round_id=args.round, include_repeats=args.include_repeats)
    print(f"wrote {n} labels to {args.out}")
    if args.push_to_hub:
        return _push_export(args, queue)
    return 0


def _push_export(args: argparse.Namespace, queue: LabelQueue) -> int:
    """``export --push_to_hub ID``: the exported labels to the dataset repo ID, with their dataset card."""
    from huggingface_hub.errors import HfHubHTTPError  # lazy, like _queue

    from hf_prefs.labels.hub import push_labels_to_hub

    labels = queue.labels(args.round, include_repeats=args.include_repeats)
    source = args.source or (
        f"the hf-prefs label queue `{Path(args.queue).name}`"
        + (f", round {args.round}" if args.round is not None else ", all rounds")
        + (", with the agreement-check repeats" if args.include_repeats else "")
    )
    try:
        url = push_labels_to_hub(
            labels, args.push_to_hub, token=args.token, private=True if args.private else None,
            labeler=args.labeler, source=source, task=args.task,
        )
    except (HfHubHTTPError, RuntimeError) as exc:  # Hub refusals, offline mode
        print(f"hf-prefs label export: error: pushing to {args.push_to_hub} failed: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # anything else the push raised — mostly the network (huggingface_hub's HTTP client's
        # ConnectError, timeouts; which client depends on its version): one line naming the error's type, rc 2
        print(f"hf-prefs label export: error: pushing to {args.push_to_hub} failed: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 2
    print(f"pushed {len(labels)} labels to the dataset repo {args.push_to_hub}: {url}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    queue = _queue(args, existing=True)
    out = {
        "progress": queue.progress(),
        "agreement": queue.agreement(),
        "rounds": {r: vars(queue.round_status(r)) for r in queue.rounds()},
        "bad_lines": queue.bad_lines,
    }
    print(json.dumps(out, indent=2))
    return 0


def _guard(func):
    def run(args: argparse.Namespace) -> int:
        from hf_prefs.labels.queue import LabelRequestError  # lazy, like _queue
        from hf_prefs.labels.schema import LabelValidationError

        try:
            return func(args)
        except (LabelRequestError, LabelValidationError, FileNotFoundError, KeyError, ValueError) as exc:
            print(f"hf-prefs label {args.label_command}: error: {exc}", file=sys.stderr)
            return 2

    return run


def add_label_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``label serve|add|import|export|status`` on the top-level ``hf-prefs`` subparsers."""
    group = subparsers.add_parser("label", help="human labeling: serve the page, fill the queue, export labels")
    sub = group.add_subparsers(dest="label_command", required=True)

    def with_queue(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("--queue", required=True, metavar="DIR", help="queue folder (holds queue.jsonl; serve/add/import make it if missing)")
        return p

    serve = with_queue("serve", help="serve the labeling page (Gradio; needs the 'label' extra)")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default loopback); any other needs a login")
    serve.add_argument("--port", type=int, default=7860)
    serve.add_argument("--share", action="store_true", help="make a public Gradio share link (needs a login)")
    serve.add_argument("--password", default=None, help="shared password; any labeler name logs in (prefer $HF_PREFS_LABEL_PASSWORD)")
    serve.add_argument("--users", default=None, metavar="FILE", help="file of 'name:password' lines allowed to log in")
    serve.add_argument("--labeler", default="local", help="default labeler name on a local page without login")
    serve.add_argument("--labels-per-item", type=int, default=None, help="distinct labelers per item (stored in the queue; default: keep, 1 for new)")
    serve.add_argument("--repeat-fraction", type=float, default=0.1, help="probability of re-showing an answered item to measure agreement")
    serve.add_argument("--repeat-gap", type=int, default=2, help="a repeat skips the labeler's last N answers")
    serve.add_argument("--lease-minutes", type=float, default=15.0, help="how long a shown item stays reserved for its labeler")
    serve.add_argument("--seed", type=int, default=0, help="seed of the shown orders and repeat draws")
    serve.add_argument("--title", default="hf-prefs labeling")
    serve.set_defaults(func=_guard(_cmd_serve))

    add = with_queue("add", help="enqueue items (query + samples) from a .jsonl/.json/.parquet/.csv file or dataset folder")
    add.add_argument("--from", dest="source", required=True, metavar="FILE")
    add.add_argument("--round", default=None, help="round id (default: the next free integer)")
    add.set_defaults(func=_guard(_cmd_add))

    imp = with_queue("import", help="fill the queue with labels collected elsewhere (query, samples, best[, item_id, labeler, round])")
    imp.add_argument("--from", dest="source", required=True, metavar="FILE")
    imp.add_argument("--round", default=None, help="round of rows that match no queued item and have no 'round' column")
    imp.add_argument("--labeler", default=None, help="labeler of rows without a 'labeler' column (default 'file')")
    imp.set_defaults(func=_guard(_cmd_import))

    export = with_queue("export", help="write the labels in the project's label schema")
    export.add_argument("--out", required=True, metavar="FILE", help=".jsonl, .json, .parquet, .csv or a folder (save_to_disk)")
    export.add_argument("--round", default=None, help="only this round")
    export.add_argument("--include-repeats", action="store_true", help="also the agreement-check repeats")
    hub = export.add_argument_group("Hub", "also push the labels to a Hub dataset repo, with a dataset card")
    hub.add_argument("--push_to_hub", "--push-to-hub", dest="push_to_hub", default=None, metavar="ID",
                     help="dataset repo id ('user/name') to push the exported labels to")
    hub.add_argument("--private", action="store_true", help="create the dataset repo as private (an existing repo keeps its own)")
    hub.add_argument("--token", default=None, help="Hub token with write access (default: the saved login or $HF_TOKEN)")
    hub.add_argument("--labeler", default=None, help="who labeled, for the card (default: the labeler names in the labels)")
    hub.add_argument("--source", default=None, help="where the queries and samples came from, for the card (default: the queue)")
    hub.add_argument("--task", default=None, help="the task's name, for the card (e.g. sentiment)")
    export.set_defaults(func=_guard(_cmd_export))

    status = with_queue("status", help="print progress, agreement and per-round status as JSON")
    status.set_defaults(func=_guard(_cmd_status))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hf_prefs.label_app.cli label ...`` without the top-level ``hf-prefs`` entry point."""
    parser = argparse.ArgumentParser(prog="hf-prefs")
    add_label_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
