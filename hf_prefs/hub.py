"""Pushing a run's models to the Hugging Face Hub, each with its model card.

A run saves two models: the policy (``AutoModelForCausalLM`` folder, plus its value head files) and the reward model
(``AutoModelForSequenceClassification`` folder with the normalization gain/bias in its config). They go to two
repos: ``hub_model_id`` for the policy and ``f"{hub_model_id}-reward-model"`` for the reward model, each with a
README.md rendered by :mod:`hf_prefs.model_cards`.

The upload is huggingface_hub's own: ``HfApi.create_repo(exist_ok=True)`` then ``HfApi.upload_folder`` (small files go
inline in the commit, large ones such as ``*.safetensors`` through LFS or Xet storage). ``endpoint`` selects
another Hub deployment (``HF_ENDPOINT`` is read once, when huggingface_hub is imported, so pass it here to change it
later); ``token=None`` uses the saved login or ``HF_TOKEN``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, constants
from huggingface_hub.utils import validate_repo_id

from .model_cards import render_policy_card, render_reward_model_card, write_model_card

__all__ = [
    "DEFAULT_IGNORE_PATTERNS",
    "REWARD_MODEL_SUFFIX",
    "push_folder_to_hub",
    "push_run_to_hub",
]

#: Files of a training output folder that are not part of the model: intermediate checkpoints, logs, caches.
DEFAULT_IGNORE_PATTERNS: tuple[str, ...] = ("checkpoint-*", "runs/*", "__pycache__/*", "*.pyc", ".ipynb_checkpoints/*")
#: Suffix of the reward model's repo id after the policy's.
REWARD_MODEL_SUFFIX = "-reward-model"


def _check_folder(folder: str | os.PathLike, what: str, require_model_card: bool) -> Path:
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"{what}: {path} is not a folder")
    if require_model_card and not (path / "README.md").is_file():
        raise FileNotFoundError(
            f"{what}: {path} has no README.md model card; write one with hf_prefs.model_cards.write_model_card("
            "render_policy_card(...) or render_reward_model_card(...)), or pass require_model_card=False"
        )
    return path


def _check_online() -> None:
    if constants.is_offline_mode():
        raise RuntimeError("cannot push to the Hub: offline mode is on (HF_HUB_OFFLINE=1); unset HF_HUB_OFFLINE to push")


def push_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str = "Upload model trained with hf_prefs",
    *,
    endpoint: str | None = None,
    ignore_patterns: Sequence[str] = DEFAULT_IGNORE_PATTERNS,
    require_model_card: bool = True,
) -> str:
    """Create the model repo ``repo_id`` if needed and upload ``folder`` to it in one commit; return the commit's URL.

    Args:
        folder: a saved model folder; it must hold a README.md card unless ``require_model_card=False``.
        repo_id: ``"namespace/name"`` (or ``"name"`` for the token's own namespace).
        token: a Hub token with write access; ``None`` uses the saved login / ``HF_TOKEN``.
        private: visibility of a newly created repo (``None``: the Hub's default); an existing repo keeps its own.
        endpoint: Hub URL (default: ``HF_ENDPOINT`` as read at import, else https://huggingface.co).
        ignore_patterns: glob patterns (relative to ``folder``) of files not to upload.
    Raises:
        FileNotFoundError: ``folder`` is missing or has no README.md; ``ValueError``: invalid ``repo_id``;
        RuntimeError: offline mode is on. An answer of the Hub refusing the call propagates as huggingface_hub's
        ``HfHubHTTPError``; no answer (no network, a proxy, a wrong ``endpoint``) as the HTTP client's connection
        error (httpx's ``ConnectError``). Nothing in ``folder`` is changed either way.
    """
    path = _check_folder(folder, "folder", require_model_card)
    validate_repo_id(repo_id)
    _check_online()
    api = HfApi(endpoint=endpoint, token=token)
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    commit = api.upload_folder(
        repo_id=repo_url.repo_id,
        folder_path=path,
        repo_type="model",
        commit_message=commit_message,
        ignore_patterns=list(ignore_patterns),
    )
    return commit.commit_url


def push_run_to_hub(
    output_dir: str | os.PathLike,
    hub_model_id: str,
    *,
    reward_model_id: str | None = None,
    policy_subdir: str = "policy",
    reward_model_subdir: str = "reward_model",
    policy_card_fields: Mapping[str, Any] | None = None,
    reward_model_card_fields: Mapping[str, Any] | None = None,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str = "Upload model trained with hf_prefs",
    endpoint: str | None = None,
    ignore_patterns: Sequence[str] = DEFAULT_IGNORE_PATTERNS,
) -> dict[str, str]:
    """Push a run's reward model and policy to two repos, each with its README.md card.

    Layout: ``output_dir/<policy_subdir>`` (``"."`` for ``output_dir`` itself) goes to ``hub_model_id``;
    ``output_dir/<reward_model_subdir>`` to ``reward_model_id`` (default ``hub_model_id + "-reward-model"``).
    With ``policy_card_fields`` / ``reward_model_card_fields`` the cards are rendered here
    (:func:`~hf_prefs.model_cards.render_policy_card` / :func:`~hf_prefs.model_cards.render_reward_model_card`, with
    the two repo ids filled in so each card links the other) and written to the folders; without them each folder
    must already hold a README.md. Both folders are checked before anything is uploaded; the reward model is pushed
    first so the policy card's link resolves.

    Returns:
        ``{"reward_model": commit_url, "policy": commit_url}``.
    """
    root = Path(output_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"output_dir: {root} is not a folder")
    reward_model_id = reward_model_id or f"{hub_model_id}{REWARD_MODEL_SUFFIX}"
    if reward_model_id == hub_model_id:
        raise ValueError(f"reward_model_id must differ from hub_model_id ({hub_model_id!r})")
    validate_repo_id(hub_model_id)
    validate_repo_id(reward_model_id)
    policy_dir = _check_folder(root / policy_subdir, "policy_subdir", require_model_card=False)
    reward_dir = _check_folder(root / reward_model_subdir, "reward_model_subdir", require_model_card=False)

    if reward_model_card_fields is not None:
        fields = {"hub_model_id": reward_model_id, "policy_model_id": hub_model_id, **reward_model_card_fields}
        write_model_card(reward_dir, render_reward_model_card(**fields))
    if policy_card_fields is not None:
        fields = {"hub_model_id": hub_model_id, "reward_model_id": reward_model_id, **policy_card_fields}
        write_model_card(policy_dir, render_policy_card(**fields))
    _check_folder(reward_dir, "reward_model_subdir", require_model_card=True)
    _check_folder(policy_dir, "policy_subdir", require_model_card=True)

    # When the policy folder contains the reward model's folder (policy_subdir="."), do not upload it twice.
    policy_ignore = list(ignore_patterns)
    if reward_dir.resolve().is_relative_to(policy_dir.resolve()):
        policy_ignore.append(f"{reward_dir.resolve().relative_to(policy_dir.resolve()).as_posix()}/*")

    urls = {}
    urls["reward_model"] = push_folder_to_hub(
        reward_dir, reward_model_id, token=token, private=private, commit_message=commit_message,
        endpoint=endpoint, ignore_patterns=ignore_patterns,
    )
    urls["policy"] = push_folder_to_hub(
        policy_dir, hub_model_id, token=token, private=private, commit_message=commit_message,
        endpoint=endpoint, ignore_patterns=policy_ignore,
    )
    return urls
