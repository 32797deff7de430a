"""The study's label collection resumes chunk by chunk: an interruption loses at most the chunk being collected, and
the resumed labels are the ones an uninterrupted collection gives."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from datasets import Dataset

import hf_prefs.analysis.study as study_mod
import hf_prefs.analysis.study_table as table_mod
from hf_prefs.trainers.ppo_config import PPOConfig


def _fake_collect(calls: list[tuple[int, int]], fail_on: int | None = None):
    """Stands in for ``collect_labels``: rows that depend on the chunk's seed and its queries (chunk-relative
    ``query_index``, as the real one writes); raises on call number ``fail_on``."""

    def collect(pa, cfg, rho, tokenizer, queries, spec):
        calls.append((cfg.seed, len(queries)))
        if fail_on is not None and len(calls) == fail_on:
            raise KeyboardInterrupt("killed")
        rows = [{"query": q, "samples": [f"{q}{k}" for k in range(4)], "best": (cfg.seed + i) % 4, "query_index": i}
                for i, q in enumerate(queries)]
        return Dataset.from_list(rows), {}

    return collect


def _ctx(tmp_path, chunk: int) -> SimpleNamespace:
    sa = SimpleNamespace(label_counts=[5, 10], label_chunk=chunk)
    return SimpleNamespace(output_dir=str(tmp_path), sa=sa, pa=None, base=SimpleNamespace(rho=None, tokenizer=None),
                           spec=None)


def test_labels_resume_after_the_last_whole_chunk(tmp_path, monkeypatch):
    queries = [f"q{i}" for i in range(10)]
    cfg = PPOConfig(output_dir=str(tmp_path), seed=3)

    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(study_mod, "collect_labels", _fake_collect(calls))
    whole = study_mod._seed_labels(_ctx(tmp_path / "a", 4), cfg, queries)
    assert calls == [(3, 4), (3 + 100_003, 4), (3 + 2 * 100_003, 2)]
    assert whole["query_index"] == list(range(10)) and whole["query"] == queries

    calls.clear()
    monkeypatch.setattr(study_mod, "collect_labels", _fake_collect(calls, fail_on=2))
    with pytest.raises(KeyboardInterrupt):
        study_mod._seed_labels(_ctx(tmp_path / "b", 4), cfg, queries)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["labels_s3.part000.jsonl.gz"]  # the whole chunk kept

    calls.clear()
    monkeypatch.setattr(study_mod, "collect_labels", _fake_collect(calls))
    resumed = study_mod._seed_labels(_ctx(tmp_path / "b", 4), cfg, queries)
    assert calls == [(3 + 100_003, 4), (3 + 2 * 100_003, 2)]  # chunk 0 read back, not sampled again
    assert resumed.to_list() == whole.to_list()
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["labels_s3.jsonl.gz"]  # parts merged, then removed

    calls.clear()
    again = study_mod._seed_labels(_ctx(tmp_path / "b", 4), cfg, queries)
    assert calls == [] and again.to_list() == whole.to_list()


def test_a_run_on_the_first_n_labels_needs_only_the_chunks_that_hold_them(tmp_path, monkeypatch):
    """``need``: chunks are collected until there are that many labels (the parts stay, unmerged); asked for more
    later, the collection goes on from the next chunk and ends with the labels of an uninterrupted collection."""
    queries = [f"q{i}" for i in range(10)]
    cfg = PPOConfig(output_dir=str(tmp_path), seed=3)
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(study_mod, "collect_labels", _fake_collect(calls))
    whole = study_mod._seed_labels(_ctx(tmp_path / "a", 4), cfg, queries)

    calls.clear()
    first = study_mod._seed_labels(_ctx(tmp_path / "b", 4), cfg, queries, need=5)
    assert calls == [(3, 4), (3 + 100_003, 4)] and len(first) == 8  # two chunks hold the first 5 labels
    assert first.to_list() == whole.select(range(8)).to_list()
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["labels_s3.part000.jsonl.gz", "labels_s3.part001.jsonl.gz"]
    calls.clear()
    assert study_mod._seed_labels(_ctx(tmp_path / "b", 4), cfg, queries, need=8).to_list() == first.to_list()
    assert calls == []  # enough already: nothing sampled
    rest = study_mod._seed_labels(_ctx(tmp_path / "b", 4), cfg, queries, need=10)
    assert calls == [(3 + 2 * 100_003, 2)] and rest.to_list() == whole.to_list()
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["labels_s3.jsonl.gz"]  # all in: merged, parts removed


def test_rows_another_process_wrote_are_skipped_before_each_seed(tmp_path, monkeypatch):
    """``study.csv`` is read again before each seed: a row a second process (given other ``--seeds``) appended while
    this one ran seed 0 is in ``done`` when seed 1 starts, so that run is not made twice."""
    from hf_prefs.pipeline import PipelineArguments

    out = tmp_path / "study"
    seen: dict[int, set] = {}

    def fake_seed_runs(ctx, seed, done, label_q):
        seen[seed] = set(done)
        if seed == 0:  # meanwhile, another process finished seed 1's direct run
            table_mod.append_row(str(out), {"run": "direct", "seed": 1, "labels": 0}, {})

    monkeypatch.setattr(study_mod, "_context", lambda *a, **k: (SimpleNamespace(rho_samples=SimpleNamespace(
        reward_matrix=lambda: None)), []))
    monkeypatch.setattr(study_mod, "_seed_runs", fake_seed_runs)
    for name in ("validate_pipeline_config", "resolve_cpu_precision", "reread_rows", "plot_study"):
        monkeypatch.setattr(study_mod, name, lambda *a, **k: None)
    monkeypatch.setattr(study_mod, "summarize", lambda rows: [{"run": "direct"}])
    sa = study_mod.StudyArguments(label_counts=[4], seeds=[0, 1])
    study_mod.run_study(PipelineArguments(known_reward="vader"), PPOConfig(output_dir=str(out)), None, sa, str(out))
    assert ("direct", 1, 0) not in seen[0] and ("direct", 1, 0) in seen[1]


def test_the_summary_holds_every_seed_in_study_csv(tmp_path, monkeypatch):
    """A process run with ``--seeds 0`` in a folder where another one ran seed 1 summarizes both seeds' rows (it
    summarized only its own, and whichever process ended last decided the summary)."""
    from hf_prefs.pipeline import PipelineArguments

    out = tmp_path / "study"
    out.mkdir()
    for seed in (0, 1):
        for run, labels in (("direct", 0), ("rm", 4)):
            table_mod.append_row(str(out), {"run": run, "seed": seed, "labels": labels}, {})
    summarized = []
    monkeypatch.setattr(study_mod, "_context", lambda *a, **k: (SimpleNamespace(rho_samples=SimpleNamespace(
        reward_matrix=lambda: None)), []))
    for name in ("validate_pipeline_config", "resolve_cpu_precision", "reread_rows", "plot_study"):
        monkeypatch.setattr(study_mod, name, lambda *a, **k: None)
    monkeypatch.setattr(study_mod, "summarize", lambda rows: summarized.extend(rows) or [{"run": "direct"}])
    sa = study_mod.StudyArguments(label_counts=[4], seeds=[0])
    study_mod.run_study(PipelineArguments(known_reward="vader"), PPOConfig(output_dir=str(out)), None, sa, str(out))
    assert sorted((r["run"], r["seed"]) for r in summarized) == [("direct", "0"), ("direct", "1"), ("rm", "0"), ("rm", "1")]


def test_a_row_appended_while_another_process_rewrites_study_csv_is_kept(tmp_path, monkeypatch):
    """``reread_rows`` reads, recomputes and rewrites ``study.csv``; a row the other study process appends meanwhile
    waits for the lock and lands in the rewritten file (without the lock the rewrite dropped it)."""
    import threading
    import time

    out = str(tmp_path)
    table_mod.append_row(out, {"run": "direct", "seed": 0, "labels": 0, "gain": 1.0}, {})
    other: list[threading.Thread] = []
    original = table_mod.recompute_columns

    def recompute_while_another_appends(output_dir, rows, min_ess, rho_frontier):
        thread = threading.Thread(target=table_mod.append_row, args=(
            out, {"run": "direct", "seed": 1, "labels": 0, "gain": 2.0}, {}))
        thread.start()
        other.append(thread)
        time.sleep(0.3)
        assert thread.is_alive()  # waiting for the lock
        original(output_dir, rows, min_ess, rho_frontier)

    monkeypatch.setattr(table_mod, "recompute_columns", recompute_while_another_appends)
    table_mod.reread_rows(out, 30.0, None)
    other[0].join(timeout=10)
    assert sorted(table_mod.read_done(out)) == [("direct", 0, 0), ("direct", 1, 0)]


def test_a_part_written_with_another_label_chunk_is_refused(tmp_path, monkeypatch):
    """Parts of 4 queries, resumed with label_chunk 2: part 0 holds queries 0-3, not chunk 0's 0-1 (taken as they
    were, part 1 would give queries 4-7 for chunk 1, and the pool would hold them twice)."""
    queries = [f"q{i}" for i in range(10)]
    cfg = PPOConfig(output_dir=str(tmp_path), seed=3)
    monkeypatch.setattr(study_mod, "collect_labels", _fake_collect([], fail_on=3))
    with pytest.raises(KeyboardInterrupt):
        study_mod._seed_labels(_ctx(tmp_path, 4), cfg, queries)  # parts 0 and 1 written
    with pytest.raises(ValueError, match=r"part000.*query_index 2 lies outside its chunk \[0, 2\).*label_chunk"):
        study_mod._seed_labels(_ctx(tmp_path, 2), cfg, queries)


def test_pooled_samples_round_trip_and_a_bad_line_is_named(tmp_path):
    """The pooled frontier's cache reads back the float32 values it was drawn with; a row out of place names its line."""
    import numpy as np

    from hf_prefs.analysis.pooled_frontier import PooledSamples, pooled_frontier, read_pooled_samples, write_pooled_samples

    rng = np.random.default_rng(0)
    arrays = [(rng.normal(size=(2, 5)) - 20.0 * (i > 0)).astype(np.float32).astype(np.float64) for i in range(3)]
    s = PooledSamples(3, 2, *arrays)
    path = str(tmp_path / "pooled.csv")
    write_pooled_samples(path, {"m": 3, "p": 2, "run": "direct_s1"}, s)
    key, back = read_pooled_samples(path)
    assert key == {"m": 3, "p": 2, "run": "direct_s1"}
    assert all(np.array_equal(a, b) for a, b in zip(arrays, (back.known, back.log_rho, back.log_pi)))
    assert pooled_frontier(back, [1.0], seed=0, n_bootstrap=5) == pooled_frontier(s, [1.0], seed=0, n_bootstrap=5)
    lines = open(path).read().splitlines()
    lines[4], lines[5] = lines[5], lines[4]  # query 0's third rho sample and its first policy sample swapped
    open(path, "w").write("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="line 5 should be query 0, rho"):
        read_pooled_samples(path)
