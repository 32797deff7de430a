"""The label schema: one best-of-K human (or simulated) comparison per row.

Canonical columns of a label ``datasets.Dataset``:

==========  ============  ===========================================================
column      type          meaning
==========  ============  ===========================================================
query       str           the prompt x shown to the labeler
samples     list[str]     the K continuations y_0..y_{K-1} (K >= 2, same K on every row)
best        int           index b in [0, K) of the continuation the labeler picked
==========  ============  ===========================================================

Optional columns are kept as they are (``query_id``, ``labeler``, ``round``...). The paper's flat layout
``sample0..sample{K-1}`` is accepted everywhere and converted by :func:`to_canonical`.

Converters: :func:`from_pairwise` (TRL's ``prompt``/``chosen``/``rejected`` preference format, K = 2),
:func:`to_pairwise` (K-way -> the K-1 implied (best, other) pairs... see its docstring),
:func:`from_openai_json` (the paper's released ``offline_5k.json``-style files of token ids).
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pathlib import Path

from datasets import Dataset, IterableDataset, Value, load_dataset
from datasets.data_files import DataFilesDict, get_data_patterns
from huggingface_hub import DatasetCard
from trl.data_utils import is_conversational, maybe_extract_prompt

from .._compat import get_dataset_column_names
from ..assets import load_gpt2_tokenizer
from ..dataset_folders import is_blank_file, load_dataset_folder, names_a_local_path
from ..chat_templates import render_row_chat
from ..models.reward_model import without_added_bos
from ..tokenizer_maps import map_with_tokenizer

__all__ = [
    "LABEL_COLUMNS",
    "LabelValidationError",
    "to_canonical",
    "is_pairwise",
    "check_comparison",
    "check_best",
    "merge_flat_samples",
    "check_label_row",
    "validate_labels",
    "load_rows",
    "load_label_file",
    "label_file_digest",
    "pairwise_label",
    "from_pairwise",
    "to_pairwise",
    "from_openai_json",
    "OPENAI_PAD_ID",
]

#: The schema's columns as ``datasets`` features; label sets with more columns (the queue's labeler and round, the
#: online loop's round and episode) extend this mapping.
LABEL_COLUMNS = {"query": Value("string"), "samples": [Value("string")], "best": Value("int64")}

#: The id the paper's label files pad queries and samples with (outside GPT-2's 50,257-token vocab).
OPENAI_PAD_ID = 50259

_SAMPLE_COLUMN = re.compile(r"^sample(\d+)$")


class LabelValidationError(ValueError):
    """A label row breaks the schema; ``row`` and ``field`` say where."""

    def __init__(self, message: str, row: int | None = None, field: str | None = None):
        self.row, self.field = row, field
        where = []
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


def _flat_sample_columns(column_names: Sequence[str]) -> list[str]:
    indexed = sorted((int(m.group(1)), c) for c in column_names if (m := _SAMPLE_COLUMN.match(c)))
    names = [c for _, c in indexed]
    if names and [i for i, _ in indexed] != list(range(len(indexed))):
        raise LabelValidationError(f"flat sample columns must be sample0..sample{{K-1}} without gaps, got {names}")
    return names


def is_pairwise(column_names: Iterable[str]) -> bool:
    """Whether columns are TRL's pairwise preference format (``chosen`` and ``rejected``, no K-way ``samples``)."""
    cols = list(column_names)
    return {"chosen", "rejected"} <= set(cols) and "samples" not in cols and not _flat_sample_columns(cols)


def to_canonical(dataset: Dataset) -> Dataset:
    """Return ``dataset`` with a ``samples`` list column (merging ``sample0..sample{K-1}`` if needed)."""
    cols = dataset.column_names
    flat = _flat_sample_columns(cols)
    if "samples" in cols:
        if flat:  # two sources of the samples that may disagree: which one is meant is the user's to say
            raise LabelValidationError(f"a label dataset has both a 'samples' column and {flat}: keep one of them")
        return dataset
    if not flat:
        hint = ""
        half = [c for c in ("chosen", "rejected") if c in cols]
        if len(half) == 1:
            missing = "rejected" if half == ["chosen"] else "chosen"
            hint = f" — TRL's pairwise preference format needs both 'chosen' and 'rejected': no '{missing}' column"
        elif {"chosen_ids", "rejected_ids"} <= set(cols) or {"chosen_input_ids", "rejected_input_ids"} <= set(cols):
            hint = (" — TRL's pre-tokenized pairwise rows: labels are text here (the reward model, its normalization "
                    "and PPO read text); keep the 'chosen'/'rejected' text columns, or decode the ids with the tokenizer")
        elif is_pairwise(cols):
            hint = (" — this is TRL's pairwise preference format: PreferenceRewardTrainer takes it as it is, or convert it "
                    "with hf_prefs.from_pairwise (K = 2 labels; conversational rows: from_pairwise(dataset, tokenizer))")
        raise LabelValidationError(
            f"a label dataset needs a 'samples' column or 'sample0..sample{{K-1}}' columns; got columns {cols}{hint}"
        )
    return dataset.map(lambda row: {"samples": [row[c] for c in flat]}, remove_columns=flat)


def check_comparison(i: int, query: Any, samples: Any, k: int | None = None) -> tuple[str, tuple[str, ...]]:
    """Row ``i``'s query (a string) and samples (at least 2 non-empty strings; exactly ``k`` when given)."""
    if not isinstance(query, str):
        raise LabelValidationError(f"query must be a string, got {type(query).__name__}", i, "query")
    if isinstance(samples, str) or not isinstance(samples, Sequence):
        raise LabelValidationError(f"samples must be a list of strings, got {type(samples).__name__}", i, "samples")
    if len(samples) < 2:
        raise LabelValidationError(f"a comparison needs at least 2 samples, got {len(samples)}", i, "samples")
    if k is not None and len(samples) != k:
        asked = "like the rows before it" if i else "(the K asked for: num_candidates)"
        raise LabelValidationError(f"expected K={k} samples {asked}, got {len(samples)}", i, "samples")
    for j, s in enumerate(samples):
        if not isinstance(s, str):
            raise LabelValidationError(f"sample {j} must be a string, got {type(s).__name__}", i, f"samples[{j}]")
        if not s.strip():
            raise LabelValidationError(f"sample {j} is empty", i, f"samples[{j}]")
    return query, tuple(samples)


def check_best(i: int, best: Any, k: int) -> int:
    """Row ``i``'s ``best`` as an int in ``[0, k)`` (an integral float is accepted; bool, NaN or text are not)."""
    if isinstance(best, float) and math.isfinite(best) and best.is_integer():
        best = int(best)
    if isinstance(best, bool) or not isinstance(best, int):
        raise LabelValidationError(f"best must be an integer, got {best!r}", i, "best")
    if not 0 <= best < k:
        raise LabelValidationError(f"best={best} is out of range [0, {k - 1}]", i, "best")
    return best


def merge_flat_samples(i: int, row: Mapping[str, Any]) -> dict[str, Any]:
    """The paper's flat ``sample0..sample{K-1}`` fields merged into ``samples`` (other rows unchanged)."""
    row = dict(row)
    flat = sorted((int(m.group(1)), key) for key in row if (m := _SAMPLE_COLUMN.match(key)))
    if row.get("samples") is not None and any(row[key] is not None for _, key in flat):
        raise LabelValidationError(f"has both 'samples' and {[key for _, key in flat]}: keep one of them", i, "samples")
    if row.get("samples") is None:
        if not flat:
            hint = (" (TRL's pairwise chosen/rejected rows: hf_prefs.labels.from_pairwise, or a recipe's "
                    "--label_file, converts them)" if {"chosen", "rejected"} <= set(row) else "")
            raise LabelValidationError(f"a row needs 'samples' or 'sample0..sample{{K-1}}'{hint}", i, "samples")
        if [n for n, _ in flat] != list(range(len(flat))):
            raise LabelValidationError(
                f"flat sample columns must be sample0..sample{{K-1}} without gaps, got {[k for _, k in flat]}", i, "samples"
            )
        row["samples"] = [row.pop(key) for _, key in flat]
    for _, key in flat:  # beside 'samples', all None (checked above): what a table of both layouts holds
        row.pop(key, None)
    return row


def check_label_row(i: int, row: Mapping[str, Any], k: int | None = None) -> dict[str, Any]:
    """Label row ``i`` checked and in canonical form: ``sample0..`` merged into ``samples``, ``best`` an int; K must be
    ``k`` when given. Raises :class:`LabelValidationError` naming the row and field."""
    row = merge_flat_samples(i, row)
    query, samples = check_comparison(i, row.get("query"), row.get("samples"), k)
    row["best"] = check_best(i, row.get("best"), len(samples))
    return row


def validate_labels(dataset: Dataset, k: int | None = None) -> Dataset:
    """Check every row and return the canonical dataset (``best`` cast to int).

    Raises :class:`LabelValidationError` naming the first bad row and field: a non-string query, fewer
    than 2 samples, a row whose K differs from ``k`` (or from the first row), an empty sample, a
    missing/NaN/non-integer ``best`` or one out of ``[0, K)``.
    """
    dataset = to_canonical(dataset)
    if "best" not in dataset.column_names:
        raise LabelValidationError(f"a label dataset needs a 'best' column; got columns {dataset.column_names}")
    if "query" not in dataset.column_names:
        raise LabelValidationError(f"a label dataset needs a 'query' column; got columns {dataset.column_names}")
    if len(dataset) == 0:
        raise LabelValidationError("the label dataset is empty")
    for i, row in enumerate(dataset.select_columns(["query", "samples", "best"])):
        k = len(check_label_row(i, row, k)["samples"])
    if dataset.features["best"].dtype not in ("int64", "int32"):
        # (a map returning ints keeps a float64 column; cast the feature itself)
        dataset = dataset.cast_column("best", Value("int64"))
    return dataset


def load_rows(source: Any) -> list[dict[str, Any]]:
    """Rows of query+samples (and maybe labels), unchecked, from a ``Dataset``, a list of dicts or ``(query, samples)``
    pairs, or a file: ``.jsonl`` / ``.json`` (a list of objects, or one per line as ``Dataset.to_json`` writes) /
    ``.parquet`` / ``.csv`` or a folder written by ``Dataset.save_to_disk``."""
    if isinstance(source, Dataset):
        return source.to_list()
    if isinstance(source, (str, os.PathLike)):
        return _read_file(Path(source))
    rows = []
    for i, row in enumerate(source):
        if isinstance(row, Mapping):
            rows.append(dict(row))
        elif isinstance(row, (tuple, list)) and len(row) == 2:
            rows.append({"query": row[0], "samples": row[1]})
        else:
            raise LabelValidationError("rows must be dicts or (query, samples) pairs", i)
    return rows


#: the file types :func:`load_label_file` reads (besides a saved dataset folder; the paper's token-id files are ``.json``)
LABEL_FILE_SUFFIXES: tuple[str, ...] = (".json", ".jsonl", ".parquet", ".csv")


def _json_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of ``path``, one per line (blank lines skipped); an error names the line."""
    rows = []
    with open(path, "rb") as f:  # bytes, decoded line by line: a decoding error names its line
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if n == 1 else "utf-8")  # a byte-order mark (Notepad, Excel) opens line 1
            except UnicodeDecodeError as exc:
                raise LabelValidationError(f"{path}:{n} is not UTF-8 text ({exc.reason} at byte {exc.start} of "
                                           "the line)") from None
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as exc:
                    raise LabelValidationError(f"{path}:{n} is not valid JSON ({exc})") from None
                if not isinstance(rows[-1], dict):
                    raise LabelValidationError(f"{path}:{n} is not a JSON object", len(rows) - 1)
    return rows


def _train_label_files(folder: Path) -> list[str] | None:
    """The data files ``load_dataset(folder)`` takes for its train split (``datasets``' own split patterns), when the
    folder is no saved dataset and each is a label file type; else None, for ``datasets`` to read."""
    if (folder / "dataset_info.json").is_file() or (folder / "dataset_dict.json").is_file():
        return None
    if (folder / "README.md").is_file():  # a dataset card's `configs` may map the splits to other files
        try:
            if DatasetCard.load(folder / "README.md").data.to_dict().get("configs"):
                return None
        except Exception:  # a card whose header does not parse: datasets reads the folder, as before
            return None
    try:
        files = DataFilesDict.from_patterns(get_data_patterns(str(folder)), base_path=str(folder)).get("train")
    except (FileNotFoundError, ValueError):  # no data files (datasets' EmptyDatasetError is a FileNotFoundError)
        return None
    if not files or any(Path(f).suffix.lower() not in LABEL_FILE_SUFFIXES for f in files):
        return None
    return list(files)


def _read_json(path: Path) -> list[dict[str, Any]]:
    """A JSON file's rows: a list of objects, one object, or one object per line (what ``Dataset.to_json`` writes)."""
    try:
        with open(path, encoding="utf-8-sig") as f:  # a byte-order mark may open the file
            data = json.load(f)
    except UnicodeDecodeError as exc:
        raise LabelValidationError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        if exc.msg != "Extra data":  # a first document that does not parse: the file is broken, say where
            raise LabelValidationError(f"{path} is not valid JSON ({exc})") from None
        return _json_lines(path)  # one object per line under a .json name (what Dataset.to_json writes)
    if isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values()):
        raise LabelValidationError(f"{path} holds its rows by column ({{column: {{index: value}}}}, pandas' default "
                                   "to_json): write one object per row, e.g. to_json(orient='records', lines=True)")
    if isinstance(data, dict):  # one row: what Dataset.to_json writes for a one-label dataset
        data = [data]
    if not isinstance(data, list):
        raise LabelValidationError(f"{path} must hold a JSON list of objects, or one JSON object per line")
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise LabelValidationError(f"{path} must hold a JSON list of objects, got {type(row).__name__}", i)
    return data


def _read_file(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    if path.is_dir():  # saved with save_to_disk (a DatasetDict: its train split), or of data files
        files = _train_label_files(path)
        if files is not None:  # read as the same file alone is ("42" and "NA" stay text; a bad cell is named)
            return [row for file in files for row in _read_file(Path(file))]
        return load_dataset_folder(path).to_list()
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _json_lines(path)
    if suffix == ".json":
        return _read_json(path)
    if suffix == ".parquet":
        return Dataset.from_parquet(str(path)).to_list()
    if suffix == ".csv":
        if is_blank_file(path):  # an empty export (no labels)
            return []
        return _read_csv(path)
    raise LabelValidationError(f"unsupported file type {suffix!r} for {path}: use {', '.join(LABEL_FILE_SUFFIXES)} or a "
                               f"dataset folder")


def _read_csv(path: Path) -> list[dict[str, Any]]:
    """A CSV file's rows with every cell as written: text stays text (``"42"``, ``"NA"``, ``" 4"`` are samples, not
    numbers or missing values, as ``label export`` wrote them); only ``best`` is read as an integer where it is one
    (``2`` or ``2.0``, as a JSON file's integral float is). A row with more or fewer fields than the header, and a
    header naming a column twice, are errors that name them (a reader that shifts or renames columns would move a
    sample into the query or out of ``samples``); blank lines are skipped."""
    rows: list[dict[str, Any]] = []
    csv.field_size_limit(2**31 - 1)  # the module's default stops at a 131,072-character cell; pandas had no limit
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # a byte-order mark (Excel) may open the file
            reader = csv.reader(f)
            header = next((r for r in reader if any(v.strip() for v in r)), None)  # blank lines before it skipped
            if header is None:
                return rows
            # unnamed columns (a spreadsheet's trailing empty ones) named as pandas names them
            header = [c if c.strip() else f"Unnamed: {i}" for i, c in enumerate(header)]
            twice = sorted({c for c in header if header.count(c) > 1})
            if twice:
                raise LabelValidationError(f"{path}: the header names {twice} more than once")
            for values in reader:
                if not any(v.strip() for v in values):
                    continue
                if len(values) != len(header):
                    raise LabelValidationError(
                        f"{path}:{reader.line_num} has {len(values)} fields where the header has {len(header)} "
                        f"({', '.join(header)}): a comma inside a cell needs the cell in double quotes", len(rows))
                rows.append(dict(zip(header, values)))
    except UnicodeDecodeError as exc:
        raise LabelValidationError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise LabelValidationError(f"{path} is not valid CSV ({exc})") from None
    for row in rows:
        best = row.get("best")
        if isinstance(best, str) and re.fullmatch(r"\s*-?\d+(?:\.0*)?\s*", best):  # "2", and "2.0" as JSON's 2.0
            row["best"] = int(float(best))
    return rows


def _pairwise_rows(rows: list[dict[str, Any]], columns: list[str], spec: Any) -> Dataset:
    """TRL pairwise rows read from a file as one ``Dataset``: every row's columns kept (a column row 0 lacks is not
    dropped: a row without the ``prompt`` others have is named, whichever comes first), ``prompt``/``chosen``/
    ``rejected`` checked as text or messages first, so that a bad cell is named rather than an Arrow type error.
    ``columns``: every row's, in first-seen order."""
    for i, row in enumerate(rows):
        check_pairwise_cells(row, i, columns, f" (in {spec})")  # a row without the others' prompt too
    return _one_table(rows, columns, spec)


def check_pairwise_cells(row: Mapping[str, Any], idx: int, columns: Iterable[str], where: str = "") -> None:
    """Raise a :class:`LabelValidationError` naming row ``idx`` and the field where one of ``prompt``/``chosen``/
    ``rejected`` among ``columns`` is neither text nor a list of messages (a cell the row lacks: "got nothing")."""
    columns = set(columns)
    for col in ("prompt", "chosen", "rejected"):
        if col in columns and not isinstance(row.get(col), (str, list)):
            got = type(row.get(col)).__name__ if col in row else "nothing"
            raise LabelValidationError(f"must be text or a list of messages, got {got}{where}", idx, col)


def _one_table(rows: list[dict[str, Any]], columns: list[str], spec: Any) -> Dataset:
    """``rows`` as one ``Dataset`` with ``columns`` (every row's, in first-seen order; None where a row lacks one).
    A column whose values cannot share one Arrow type is named with the first row that breaks it (Arrow's own
    message names neither)."""
    try:
        return Dataset.from_list([{c: row.get(c) for c in columns} for row in rows])
    except (TypeError, ValueError) as err:  # pyarrow's ArrowInvalid / ArrowTypeError subclass these
        for col in columns:
            values = [row.get(col) for row in rows]
            if _arrow_typed(values):
                continue
            lo, hi = 1, len(values)  # the shortest prefix Arrow cannot type ends at the row to name
            while lo < hi:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if not _arrow_typed(values[:mid]) else (mid + 1, hi)
            said = "where the rows before hold other types" if lo > 1 else "that Arrow cannot type"
            raise LabelValidationError(f"{spec}: a {type(values[lo - 1]).__name__} {said} ({type(err).__name__}: {err})",
                                       lo - 1, col) from None
        raise LabelValidationError(f"{spec}: the rows' columns cannot form one table ({type(err).__name__}: {err})") from None


def _arrow_typed(values: list[Any]) -> bool:
    """Whether Arrow gives ``values`` one type (as ``Dataset.from_list`` does for a column)."""
    try:
        Dataset.from_dict({"c": values})
    except (TypeError, ValueError):
        return False
    return True


def names_a_local_file(spec: str | os.PathLike, suffixes: Iterable[str] = LABEL_FILE_SUFFIXES) -> bool:
    """:func:`hf_prefs.dataset_folders.names_a_local_path` with a label file's suffixes by default."""
    return names_a_local_path(spec, suffixes)


def local_label_path(spec: str | os.PathLike, name: str = "label_file") -> Path | None:
    """The local file or folder a label file ``spec`` names (``~`` expanded), or None for a Hub dataset id; raises
    ``FileNotFoundError`` where ``spec`` can only be a local path (:func:`names_a_local_file`) and nothing is there,
    naming it as ``name`` (the argument or flag it came from)."""
    path = Path(spec).expanduser()
    if path.exists():
        return path
    if names_a_local_file(spec):
        raise FileNotFoundError(f"{name} {spec}: no such file or folder (a Hub dataset id is 'name' or "
                                f"'namespace/name', without a file suffix)")
    return None


def check_label_limit(limit: Any) -> None:
    """``label_limit`` (a label file's first rows to use): None (all) or a whole number >= 1, else an error naming it."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise LabelValidationError(f"label_limit must be a whole number of rows >= 1 (or null for all), got {limit!r}",
                                   field="label_limit")


def label_file_digest(spec: str | os.PathLike) -> str | None:
    """SHA-256 of what a local label file (or every data file of a label folder, with its path in it; hidden files and
    datasets' ``cache-*`` files left out) holds; None for a Hub dataset id or a path that is not there. A resumed run
    compares it with its saved labels' (an edited file)."""
    try:
        path = local_label_path(spec)
    except FileNotFoundError:
        return None
    if path is None:
        return None
    digest = hashlib.sha256()
    def data(p: Path) -> bool:  # not a hidden file or a cache a `.map` on the loaded dataset writes there
        return p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts) \
            and not p.name.startswith("cache-")

    for file in sorted(p for p in path.rglob("*") if data(p)) if path.is_dir() else [path]:
        digest.update(str(file.relative_to(path)).encode() if path.is_dir() else b"")
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def load_label_file(
    spec: str | os.PathLike, k: int | None = None, limit: int | None = None, processing_class: Any | None = None
) -> Dataset:
    """Labels from a file or folder (see :func:`load_rows`), the paper's token-id JSON (``offline_5k.json``, decoded
    with GPT-2's tokenizer) or a Hub dataset id, validated (errors name the row); K must equal ``k`` when given.
    ``limit`` keeps the first rows.

    Rows in TRL's pairwise format (``chosen``/``rejected``, explicit or implicit prompt) become K = 2 labels through
    :func:`from_pairwise` without an EOS appended (the samples are scored as the policy's responses are, as text);
    conversational rows are rendered with ``processing_class``'s chat template."""
    check_label_limit(limit)
    path = local_label_path(spec)
    if path is not None:
        rows = _read_file(path)
        if not rows:
            raise LabelValidationError(f"the label file {spec} holds no rows")
        rows = rows[:limit] if limit is not None else rows
        query = rows[0].get("query")
        if isinstance(query, list) and query and all(isinstance(t, int) for t in query):  # the paper's token-id files
            labels = from_openai_json(rows, load_gpt2_tokenizer())
        elif is_pairwise(columns := list(dict.fromkeys(c for row in rows for c in row))):
            labels = _pairwise_rows(rows, columns, spec)
        else:  # each row checked as Python values first: one Arrow cannot type ("best": "2") is named, not ArrowInvalid;
            if not any("best" in row for row in rows):  # a column named otherwise ("choice"): as validate_labels says
                raise LabelValidationError(f"the label file {spec} has no 'best' column (the index of the chosen "
                                           f"sample); its columns: {columns}")
            checked: list[dict[str, Any]] = []  # canonical then, so validate_labels need not read them again
            for i, row in enumerate(rows):
                try:
                    checked.append(check_label_row(i, row, len(checked[0]["samples"]) if checked else None))
                except LabelValidationError as err:
                    raise _on_line(err, path) from None
            # every row's columns (from_list would take row 0's only: an optional column it lacks was dropped)
            columns = list(dict.fromkeys(c for row in checked for c in row))
            return _with_k(_one_table(checked, columns, spec), k, spec, pairwise=False)
    else:
        try:
            labels = load_dataset(str(spec), split="train")
        except Exception as err:  # 'runs/labels' may have been meant as a local folder: say both
            raise FileNotFoundError(f"label_file {spec}: no local file or folder of that name, and not loadable as a "
                                    f"Hub dataset id ({type(err).__name__}: {err})") from err
        if limit is not None:
            labels = labels.select(range(min(limit, len(labels))))
    pairwise = is_pairwise(labels.column_names)
    labels = from_pairwise(labels, processing_class) if pairwise else validate_labels(labels)
    return _with_k(labels, k, spec, pairwise)


def _on_line(err: LabelValidationError, path: Path) -> LabelValidationError:
    """``err`` (row and field kept) with, for a JSON-lines file, the line its row is on in front (blank lines are
    skipped, so row ``i`` need not be line ``i + 1``)."""
    if err.row is None or not path.is_file() or path.suffix != ".jsonl":
        return err
    with open(path, "rb") as f:
        lines = [n for n, raw in enumerate(f, 1) if raw.strip()]
    if err.row >= len(lines):
        return err
    named = LabelValidationError(f"line {lines[err.row]}: {err}")
    named.row, named.field = err.row, err.field
    return named


def _with_k(labels: Dataset, k: int | None, spec: Any, pairwise: bool) -> Dataset:
    """``labels`` when their K is ``k`` (or ``k`` is None); else an error on ``num_candidates``."""
    got = len(labels[0]["samples"])
    if k is not None and got != k:
        hint = " (TRL's pairwise rows: one chosen and one rejected sample; set num_candidates 2)" if pairwise else ""
        raise LabelValidationError(f"the labels in {spec} have K={got} samples per row but num_candidates={k}{hint}",
                                   field="num_candidates")
    return labels


def pairwise_label(
    row: Mapping[str, Any], idx: int, processing_class: Any | None = None, eos_token: str | None = None
) -> dict[str, Any]:
    """Row ``idx`` of TRL's preference format as a K = 2 label ``{query, samples: [chosen, rejected], best: 0}`` (the
    rules: :func:`from_pairwise`). Raises :class:`LabelValidationError` naming the row and field for a row it cannot
    convert; the label's own checks (non-empty samples...) are :func:`check_label_row`'s, which :func:`from_pairwise`
    runs once per row."""
    source, row = row, {c: row[c] for c in ("prompt", "chosen", "rejected") if c in row}
    check_pairwise_cells(row, idx, ["chosen", "rejected", *row])  # before a prompt is derived from them
    text = [c for c, v in row.items() if isinstance(v, str)]
    messages = [c for c, v in row.items() if isinstance(v, list)]
    if text and messages:
        raise LabelValidationError(f"is a list of messages while {text[0]!r} is text: give prompt, chosen and rejected "
                                   f"all as text or all as messages", idx, messages[0])
    for col in messages:  # a message without content (Arrow fills a missing key with None) is not rendered as "None"
        empty = [j for j, m in enumerate(row[col]) if not isinstance(m, Mapping)
                 or (m.get("content") is None and m.get("tool_calls") is None)]  # a tool call may have no content
        if empty:
            raise LabelValidationError(f"message {empty[0]} has no content", idx, col)
    row = maybe_extract_prompt(row) if is_conversational(row) else implicit_text_prompt(row)
    conversational = is_conversational(row)
    if conversational:
        if processing_class is None:
            raise LabelValidationError(
                "is conversational (lists of messages): pass the tokenizer (processing_class=tokenizer), "
                "so its chat template renders the rows to text", idx, "chosen")
        try:
            row = render_row_chat(row, processing_class, source)  # with the row's tools and chat_template_kwargs
        except Exception as err:  # no chat template, malformed messages (jinja's UndefinedError for a missing content)
            raise LabelValidationError(f"could not be rendered with the chat template ({type(err).__name__}: {err})",
                                       idx, "chosen") from err
        if isinstance(row.get("prompt"), str):  # tokenized with special tokens: a BOS the template wrote is left out
            row["prompt"] = without_added_bos(processing_class, row["prompt"])
    for col in ("prompt", "chosen", "rejected"):
        if not isinstance(row[col], str):
            raise LabelValidationError(f"must be text or a list of messages, got {type(row[col]).__name__}", idx, col)
    samples = [row["chosen"], row["rejected"]]
    for col, sample in zip(("chosen", "rejected"), samples):  # before an EOS is appended, which is not text
        if not sample.strip():
            raise LabelValidationError("is empty", idx, col)
    if eos_token and not conversational:
        samples = [s if s.endswith(eos_token) else s + eos_token for s in samples]
    return {"query": row["prompt"], "samples": samples, "best": 0}


def implicit_text_prompt(row: Mapping[str, Any]) -> dict[str, Any]:
    """A text pairwise row with its prompt: the row as given where it has one (or where ``chosen``/``rejected`` are
    not text, for the checks to name); else the longest shared beginning of ``chosen`` and ``rejected`` cut back to
    its last whitespace, the whitespace going with the samples. So the query ends and each sample begins at a word
    boundary, where a BPE tokenizer splits the joined text too (``"I like apples"`` / ``"I like apricots"`` →
    ``"I like"`` + ``" apples"`` / ``" apricots"``; TRL's ``extract_prompt`` cuts mid-word there, ``"I like ap"``, and
    TRL's reward trainer, which tokenizes the joined text, never uses it). No shared word: an empty prompt."""
    row = dict(row)
    chosen, rejected = row.get("chosen"), row.get("rejected")
    if "prompt" in row or not isinstance(chosen, str) or not isinstance(rejected, str):
        return row
    shared = len(os.path.commonprefix([chosen, rejected]))
    cut = max((i for i in range(shared) if chosen[i].isspace()), default=0)  # the whitespace goes with the samples
    while cut > 0 and chosen[cut - 1].isspace():  # a run of whitespace goes whole with the samples
        cut -= 1
    row["prompt"], row["chosen"], row["rejected"] = chosen[:cut], chosen[cut:], rejected[cut:]
    return row


def from_pairwise(
    dataset: Dataset | IterableDataset, processing_class: Any | None = None, eos_token: str | None = None
) -> Dataset | IterableDataset:
    """TRL's preference format (``prompt``/``chosen``/``rejected``) -> K = 2 labels.

    Rows become ``query = prompt``, ``samples = [chosen, rejected]``, ``best = 0``. Without a ``prompt`` column (TRL's
    implicit-prompt format) the shared beginning is the query: for text cut back to a word boundary
    (:func:`implicit_text_prompt`), for conversations TRL's ``maybe_extract_prompt`` (the shared messages).
    Conversational rows (lists of ``{"role", "content"}`` messages, explicit or implicit prompt) are rendered to text
    with TRL's ``maybe_apply_chat_template`` and ``processing_class`` (a tokenizer with a chat template): the query is
    the templated prompt (with the generation prompt), each sample the rest of the templated conversation (the
    assistant turn after the generation prompt); a row's ``tools`` (schemas, or their JSON text) and
    ``chat_template_kwargs`` go to the template, as TRL passes them. ``eos_token``: appended to text samples that do not end with it, as
    ``trl.RewardTrainer`` appends the tokenizer's to text (not conversational) completions. An ``IterableDataset`` is
    converted as it streams (a bad row raises when it is read).
    """
    columns = get_dataset_column_names(dataset)
    for col in ("chosen", "rejected"):
        if col not in columns:
            raise LabelValidationError(f"a pairwise dataset needs '{col}'; got columns {columns}")
    if "margin" in columns:
        raise LabelValidationError("TRL's per-pair margin has no place in the best-of-K loss: drop the column, or train "
                                   "with trl.RewardTrainer, whose loss uses it", field="margin")
    drop = [c for c in ("prompt", "chosen", "rejected", "tools", "chat_template_kwargs") if c in columns]
    if isinstance(dataset, Dataset):  # converted, then every row checked at once (validate_labels)
        def convert(row: dict[str, Any], idx: int) -> dict[str, Any]:
            return pairwise_label(row, idx, processing_class, eos_token)

        return validate_labels(map_with_tokenizer(dataset, convert, processing_class, with_indices=True,
                                                  remove_columns=drop), k=2)

    def convert_and_check(row: dict[str, Any], idx: int) -> dict[str, Any]:  # a stream: each row as it is read
        return check_label_row(idx, pairwise_label(row, idx, processing_class, eos_token), k=2)

    return dataset.map(convert_and_check, with_indices=True, remove_columns=drop)


def to_pairwise(dataset: Dataset) -> Dataset:
    """K-way labels -> TRL pairwise rows (``prompt``, ``chosen``, ``rejected``).

    A best-of-K choice implies K-1 comparisons (best > each other sample); it says nothing about the
    order of the others. The K(K-1)/2 pairs of a label that stock pairwise trainers are often fed are
    therefore *not* all implied; this returns only the K-1 implied pairs per label.
    """
    dataset = validate_labels(dataset)

    def explode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"prompt": [], "chosen": [], "rejected": []}
        for query, samples, best in zip(batch["query"], batch["samples"], batch["best"]):
            for j, other in enumerate(samples):
                if j != best:
                    out["prompt"].append(query)
                    out["chosen"].append(samples[best])
                    out["rejected"].append(other)
        return out

    return dataset.map(explode, batched=True, remove_columns=dataset.column_names)


def _strip_pad(ids: Iterable[int], vocab_size: int, pad_id: int) -> list[int]:
    return [int(t) for t in ids if int(t) != pad_id and 0 <= int(t) < vocab_size]


def from_openai_json(
    source: str | os.PathLike | Sequence[Mapping[str, Any]],
    tokenizer: Any,
    pad_id: int = OPENAI_PAD_ID,
    limit: int | None = None,
) -> Dataset:
    """The paper's released label files (e.g. ``sentiment/offline_5k.json``) -> the label schema.

    Each record holds GPT-2 token ids: ``query`` (padded), ``sample0..sample3`` (cut at the period and
    padded with ``pad_id`` = 50259, outside GPT-2's vocab; or a ``samples`` list of such lists) and ``best``.
    Pad and out-of-vocab ids are dropped and the rest decoded with ``tokenizer`` (GPT-2's). ``limit`` keeps the
    first rows (the paper used the first 4,992 of 6,264).
    """
    if isinstance(source, (str, os.PathLike)):  # a list of records, or one per line; read as every label file is
        path = Path(source)
        records = _json_lines(path) if path.suffix.lower() == ".jsonl" else _read_json(path)
    else:
        records = list(source)
    if limit is not None:
        records = records[:limit]
    if not records:
        raise LabelValidationError("the label file holds no records")
    flat = _flat_sample_columns(list(records[0].keys()))
    if not flat and not isinstance(records[0].get("samples"), list):
        raise LabelValidationError("a token-id record needs sample0..sample{K-1} or a 'samples' list of token-id lists",
                                   0, "samples")
    vocab_size = len(tokenizer)
    rows: dict[str, list[Any]] = {"query": [], "samples": [], "best": []}
    for i, rec in enumerate(records):
        for field in ["query", "best", *(flat or ["samples"])]:
            if field not in rec:
                raise LabelValidationError("missing in the record", i, field)
        try:
            theirs = _flat_sample_columns(list(rec.keys()))
        except LabelValidationError as err:  # a gap: named with its record
            raise LabelValidationError(str(err), i, "samples") from None
        if theirs and "samples" in rec:
            raise LabelValidationError(f"has both 'samples' and {theirs}: keep one of them", i, "samples")
        if len(theirs) != len(flat):  # a sample the first record lacks
            raise LabelValidationError(f"expected K={len(flat)} samples (sample0..sample{len(flat) - 1}) like record "
                                       f"0, got {theirs}", i, "samples")
        if not _token_ids(rec["query"]):
            raise LabelValidationError(f"the query of a token-id record must be a list of token ids, got "
                                       f"{_kind(rec['query'])}", i, "query")
        samples = [rec[c] for c in flat] if flat else rec["samples"]
        if not isinstance(samples, list):
            raise LabelValidationError(f"samples must be a list of token-id lists, got {type(samples).__name__}", i,
                                       "samples")
        for j, ids in enumerate(samples):
            if not _token_ids(ids):
                raise LabelValidationError(f"a sample of a token-id record (its query is token ids) must be a list of "
                                           f"token ids, got {_kind(ids)}", i, flat[j] if flat else f"samples[{j}]")
        best = check_best(i, rec["best"], len(samples))  # an int in range, named here before Arrow types the column
        rows["query"].append(tokenizer.decode(_strip_pad(rec["query"], vocab_size, pad_id)))
        rows["samples"].append([tokenizer.decode(_strip_pad(ids, vocab_size, pad_id)) for ids in samples])
        rows["best"].append(best)
    return validate_labels(Dataset.from_dict(rows), k=len(flat) or len(records[0]["samples"]))


def _is_token_id(t: Any) -> bool:
    """An int (a bool or a float is no token id)."""
    return isinstance(t, int) and not isinstance(t, bool)


def _token_ids(value: Any) -> bool:
    """Whether ``value`` is a list of token ids."""
    return isinstance(value, list) and all(_is_token_id(t) for t in value)


def _kind(value: Any) -> str:
    """What a value that should be token ids is, for an error: its type, or the first element that is not an id."""
    if isinstance(value, list):
        return f"a list holding {next(t for t in value if not _is_token_id(t))!r}"
    return f"{type(value).__name__} {value!r}"[:80]


def all_pairs(k: int) -> list[tuple[int, int]]:
    """The K(K-1)/2 unordered index pairs of K samples."""
    return list(itertools.combinations(range(k), 2))
