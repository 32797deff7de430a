"""The ``hf-prefs`` command line.

Each command group is added by one small ``_add_<group>(subparsers)`` function that registers its
sub-commands and sets ``func`` (a callable taking the parsed ``argparse.Namespace`` and returning an
exit code). To add a command, write such a function and append it to :data:`COMMAND_GROUPS`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Callable, Sequence

from hf_prefs import __version__
from hf_prefs.label_app.cli import add_label_parser


def _cmd_assets_fetch(args: argparse.Namespace) -> int:
    from hf_prefs import assets

    names = args.only or list(assets.ASSET_NAMES)
    print(f"cache: {assets.cache_dir()}")
    failed = False
    for name in names:
        start = time.perf_counter()
        try:
            path = assets.fetch([name], force=args.force)[name]
        except assets.AssetFetchError as exc:
            print(f"{name:15s} FAILED: {exc}", file=sys.stderr)
            failed = True
            continue
        size = assets.folder_size(path) / 1e6 if name in assets.CACHED_ASSETS else 0.0
        print(f"{name:15s} ok  {time.perf_counter() - start:7.1f} s  {size:8.1f} MB  {path}")
    return 1 if failed else 0


def _cmd_assets_path(args: argparse.Namespace) -> int:
    from hf_prefs import assets

    print(assets.cache_dir())
    status = assets.asset_status()
    for name, info in status.items():
        state = "complete" if info["complete"] else "MISSING"
        size = f"{info['bytes'] / 1e6:8.1f} MB" if name in assets.CACHED_ASSETS else " (pip)     "
        print(f"  {name:15s} {state:9s} {size}  {info['path']}")
    missing = [n for n, info in status.items() if not info["complete"]]
    if missing:
        print(f"fetch missing assets with: hf-prefs assets fetch --only {' '.join(missing)}")
    return 0


def _add_assets(subparsers: argparse._SubParsersAction) -> None:
    from hf_prefs.assets import ASSET_NAMES

    group = subparsers.add_parser("assets", help="fetch and inspect the offline assets (tokenizer, SmolLM2, Austen)")
    sub = group.add_subparsers(dest="assets_command", required=True)
    fetch = sub.add_parser("fetch", help="download/convert assets into the cache ($HF_PREFS_CACHE or ~/.cache/hf_prefs)")
    fetch.add_argument("--only", nargs="+", choices=ASSET_NAMES, metavar="NAME", help=f"subset of: {', '.join(ASSET_NAMES)}")
    fetch.add_argument("--force", action="store_true", help="re-fetch assets that are already complete")
    fetch.set_defaults(func=_cmd_assets_fetch)
    path = sub.add_parser("path", help="print the cache folder and the status of each asset")
    path.set_defaults(func=_cmd_assets_path)


def _cmd_report(args: argparse.Namespace) -> int:
    from hf_prefs.analysis.report import write_report

    try:
        print(write_report(args.run_dir))
    except (OSError, ValueError) as exc:  # no such folder, not a folder, a summary.json that is not one
        print(f"hf-prefs report: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _add_report(subparsers: argparse._SubParsersAction) -> None:
    report = subparsers.add_parser("report", help="write report.md for a pipeline run or study folder")
    report.add_argument("run_dir", help="a results folder (summary.json or study.csv)")
    report.set_defaults(func=_cmd_report)


#: Functions that each register one command group on the top-level subparsers.
COMMAND_GROUPS: list[Callable[[argparse._SubParsersAction], None]] = [_add_assets, add_label_parser, _add_report]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered command group."""
    parser = argparse.ArgumentParser(prog="hf-prefs", description="Fine-tuning LMs from human preferences (Ziegler et al., 2019).")
    parser.add_argument("--version", action="version", version=f"hf-prefs {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors in the log")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add_group in COMMAND_GROUPS:
        add_group(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hf-prefs``; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
