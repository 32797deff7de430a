"""Shared fixtures: the real GPT-2 tokenizer (fetched by `hf-prefs assets fetch`) and tiny random GPT-2 models."""

from __future__ import annotations

import atexit
import copy
import os
import shutil
import subprocess
import tempfile
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# trackio keeps its runs under TRACKIO_DIR, read once when it is imported (TRL imports it whenever it is installed):
# the tests' runs go to a temporary folder, never to ~/.cache/huggingface/trackio or a folder set for real runs.
# `pytest -n 2` (pytest-xdist, as README and CI run the suite): each worker runs one thread (below), and so do the
# recipes and benchmarks it starts in subprocesses — two workers with two threads each on two cores run ~10x slower.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
TRACKIO_DIR = tempfile.mkdtemp(prefix="hf_prefs_tests_trackio_")
os.environ["TRACKIO_DIR"] = TRACKIO_DIR
atexit.register(shutil.rmtree, TRACKIO_DIR, ignore_errors=True)

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from hf_prefs.trainers.launch import EXIT_ABORT, failed_only_at_exit

RECIPES = Path(__file__).resolve().parents[1] / "recipes"

torch.set_num_threads(1)  # tiny models gain nothing from more; and the suite stays fast on a busy machine


@pytest.fixture(scope="session")
def gpt2_tokenizer_pristine():
    """The real 50,257-token GPT-2 BPE (eos 50256), loaded once; raises AssetMissingError naming the fetch command if
    absent. Fixtures and tests take copies (:func:`gpt2_tokenizer`): nothing may change this one."""
    from hf_prefs.assets import load_gpt2_tokenizer

    return load_gpt2_tokenizer()


@pytest.fixture
def gpt2_tokenizer(gpt2_tokenizer_pristine):
    """A copy of the real GPT-2 tokenizer per test: trainers set its pad token (TRL's RewardTrainer does, on the
    tokenizer it is given), and one test's change must not reach another's."""
    return copy.deepcopy(gpt2_tokenizer_pristine)


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
def tiny_base(tmp_path_factory, gpt2_tokenizer_pristine) -> str:
    """A tiny random GPT-2 with the real tokenizer, saved like a Hub checkpoint (a base model for the recipes)."""
    path = tmp_path_factory.mktemp("tiny_gpt2")
    torch.manual_seed(0)
    GPT2LMHeadModel(tiny_gpt2_config()).save_pretrained(path)
    gpt2_tokenizer_pristine.save_pretrained(path)
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


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """A :class:`fake_hub.FakeHub` on 127.0.0.1 that huggingface_hub, datasets and transformers talk to.

    Points the default endpoint of ``HfApi()`` / ``hf_hub_download`` / ``datasets`` / ``transformers.Trainer`` at the
    fake, sets ``HF_TOKEN`` to :data:`fake_hub.TOKEN`, turns offline mode off (this conftest sets HF_HUB_OFFLINE=1 and
    the libraries read it at import) and Xet off (the fake speaks LFS), keeps the Hub download cache in ``tmp_path``.
    After the test: every request was one the fake implements, and carried the token.
    """
    import datasets
    import transformers.utils.hub
    from huggingface_hub import constants

    from fake_hub import TOKEN, FakeHub

    with FakeHub() as hub:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(datasets.config, "HF_ENDPOINT", hub.url)
        monkeypatch.setattr(datasets.config, "HUB_DATASETS_URL", hub.url + "/datasets/{repo_id}/resolve/{revision}/{path}")
        monkeypatch.setattr(transformers.utils.hub, "_hf_api", None)  # its shared HfApi() read the endpoint when made
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_hub_cache"))
        yield hub
    assert hub.unhandled == [], f"requests the fake hub does not implement: {hub.unhandled}"
    assert hub.auth_failures == [], f"requests without the token: {hub.auth_failures}"


def short_recipe_args(base: str, out: Path) -> list[str]:
    """Command-line arguments of the shortened offline sentiment recipe on tiny ``base`` (full fine-tuning, 16 label
    queries, 24 PPO episodes of 4 per process, 1 PPO epoch, 6 evaluation queries, no checkpoints); a test appends
    its own flags after them (the last value of a flag wins)."""
    return [
        "--config", str(RECIPES / "configs" / "sentiment_offline.yaml"), "--model_name_or_path", base,
        "--output_dir", str(out), "--use_peft", "false", "--rm_freeze_layers", "0", "--num_label_queries", "16",
        "--num_eval_queries", "6", "--num_ppo_queries", "40", "--rm_normalize_samples", "8", "--rm_batch_size", "4",
        "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1", "--total_episodes", "24",
        "--num_ppo_epochs", "1", "--sampling_batch_size", "16", "--kl_horizon", "100", "--disable_tqdm", "true",
        "--save_strategy", "no",
    ]


def load_recipe(name: str):
    """The module ``recipes/<name>.py`` (its ``main(task, argv)`` runs the recipe in-process)."""
    if str(RECIPES) not in sys.path:
        sys.path.insert(0, str(RECIPES))  # recipes import each other (tldr.py runs sentiment.py's flow)
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def aborted_only_at_exit(proc: subprocess.CompletedProcess) -> bool:
    """A failed ``accelerate launch`` whose only error is a rank's abort at exit
    (:func:`hf_prefs.trainers.launch.failed_only_at_exit`; CI saw one in test_scaling_tiny's 2-process reward-model run
    with the exit hook registered, which 110 launches here — alone, beside 2 busy processes, 4 at once — never
    repeated). A test that gets one still checks the run's outputs, which an abort before the work was done leaves
    missing."""
    return proc.returncode != 0 and failed_only_at_exit(proc.stderr)


def tolerate_exit_abort(proc: subprocess.CompletedProcess, what: str) -> bool:
    """True (with a warning naming ``what``) where ``proc`` failed only by a rank's abort at exit."""
    if not aborted_only_at_exit(proc):
        return False
    warnings.warn(f"{what}: a rank aborted at exit ({EXIT_ABORT!r}, pytorch/pytorch#190489); its outputs are checked")
    return True
