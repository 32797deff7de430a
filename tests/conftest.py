"""Shared fixtures: the real GPT-2 tokenizer (fetched by `hf-prefs assets fetch`) and tiny random GPT-2 models."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

RECIPES = Path(__file__).resolve().parents[1] / "recipes"

torch.set_num_threads(1)  # tiny models gain nothing from more; and the suite stays fast on a busy machine


@pytest.fixture(scope="session")
def gpt2_tokenizer():
    """The real 50,257-token GPT-2 BPE (eos 50256); raises AssetMissingError naming the fetch command if absent."""
    from hf_prefs.assets import load_gpt2_tokenizer

    return load_gpt2_tokenizer()


def tiny_gpt2_config(**overrides) -> GPT2Config:
    """A 2-layer, 64-wide GPT-2 with the real vocabulary: fast enough for CPU tests."""
    kw = dict(vocab_size=50257, n_positions=256, n_embd=64, n_layer=2, n_head=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    kw.update(overrides)
    return GPT2Config(**kw)


@pytest.fixture
def tiny_gpt2():
    torch.manual_seed(0)
    return GPT2LMHeadModel(tiny_gpt2_config()).eval()


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory, gpt2_tokenizer) -> str:
    """A tiny random GPT-2 with the real tokenizer, saved like a Hub checkpoint (a base model for the recipes)."""
    path = tmp_path_factory.mktemp("tiny_gpt2")
    torch.manual_seed(0)
    GPT2LMHeadModel(tiny_gpt2_config()).save_pretrained(path)
    gpt2_tokenizer.save_pretrained(path)
    return str(path)


class ForceToken(torch.nn.Module):
    """Wraps an LM and adds +100 to one token's logit: it is (almost surely) always sampled."""

    def __init__(self, lm: torch.nn.Module, token: int) -> None:
        super().__init__()
        self.lm, self.token = lm, token

    def forward(self, **kwargs):
        out = self.lm(**kwargs)
        out.logits[..., self.token] += 100.0
        return out


def load_recipe(name: str):
    """The module ``recipes/<name>.py`` (its ``main(task, argv)`` runs the recipe in-process)."""
    if str(RECIPES) not in sys.path:
        sys.path.insert(0, str(RECIPES))  # recipes import each other (tldr.py runs sentiment.py's flow)
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
