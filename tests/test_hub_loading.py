"""What a field names on the Hub, loaded offline: the error names the field and the id (it was transformers' or
datasets' message about huggingface.co and its cache, naming neither)."""

from __future__ import annotations

import re
import types

import pytest
from huggingface_hub import constants

from hf_prefs.hub_loading import named_hub_errors


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_the_base_model_the_known_reward_and_the_query_dataset_are_named(offline, tmp_path):
    from hf_prefs.pipeline.setup import load_base
    from hf_prefs.tasks.known_rewards import make_known_reward
    from hf_prefs.assets import load_gpt2_tokenizer
    from hf_prefs.tasks.summarization import load_summarization_queries

    said = re.escape("is not a local folder and cannot be loaded from the Hugging Face Hub: offline mode is on "
                     "(HF_HUB_OFFLINE)")
    with pytest.raises(OSError, match=rf"model_name_or_path: 'no-one/no-model' {said}\. Give model_name_or_path a local"):
        load_base(types.SimpleNamespace(model_name_or_path="no-one/no-model", dtype="float32"))
    with pytest.raises(OSError, match=rf"known_reward: 'no-one/no-classifier' {said}"):
        make_known_reward("no-one/no-classifier")
    with pytest.raises(OSError, match=rf"query_dataset: 'trl-lib/tldr' {said}"):
        load_summarization_queries("tldr", load_gpt2_tokenizer(), n=4)


def test_a_local_paths_own_error_and_other_errors_pass_as_they_are(tmp_path):
    (tmp_path / "model").mkdir()
    with pytest.raises(FileNotFoundError, match="^mine$"), named_hub_errors("model_name_or_path", tmp_path / "model"):
        raise FileNotFoundError("mine")
    with pytest.raises(ValueError, match="^other$"), named_hub_errors("model_name_or_path", "a/b"):
        raise ValueError("other")
