"""What a resumed offline run takes from its output folder instead of doing it again: the labels and the reward model
the interrupted run saved before PPO began (``--resume_from_checkpoint`` continues PPO from its checkpoint; without
these, the run would sample and label again and retrain the reward model first: on a float32 CPU a third of README
command 1's time). A stage is taken only when it was saved whole: ``labels_info.json`` is written after
``labels.jsonl``, ``rm_metrics.jsonl`` after the reward model."""

from __future__ import annotations

import json
import os
import uuid
import warnings
from typing import Any

import torch
from accelerate import PartialState
from datasets import Dataset

from transformers import TrainerCallback
from transformers.trainer_utils import get_last_checkpoint

from ..labels.schema import label_file_digest
from ..models.loading import load_reward_model
from .results import SUMMARY_FILE

__all__ = [
    "LABELS_FILE", "LABELS_INFO_FILE", "RUN_FILE", "RunIdCallback", "checkpoint_run_id", "has_saved_stages",
    "labels_saved", "new_run_id", "online_label_info", "saved_run_id", "stale_stage_fields", "save_labels", "saved_labels",
    "saved_reward_model", "warn_replacing_earlier_run",
]

LABELS_FILE = "labels.jsonl"
LABELS_INFO_FILE = "labels_info.json"
RM_METRICS_FILE = "rm_metrics.jsonl"
#: in each PPO checkpoint of a pipeline run: ``{"run_id": ...}``, the id its labels_info.json holds
RUN_FILE = "hf_prefs_run.json"


def new_run_id() -> str:
    """A fresh run id: a run that does not resume writes it into ``labels_info.json`` and every PPO checkpoint, so a
    resume takes only checkpoints of the run whose labels and reward model it reuses."""
    return uuid.uuid4().hex


def _run_id_in(path: str) -> str | None:
    """The ``run_id`` of a JSON file (None: no file, or none in it)."""
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f).get("run_id")


def saved_run_id(output_dir: str) -> str | None:
    """The run id of the labels saved in ``output_dir`` (None: none saved, or saved by a version without ids)."""
    return _run_id_in(os.path.join(output_dir, LABELS_INFO_FILE))


def checkpoint_run_id(checkpoint: str) -> str | None:
    """The run id a PPO checkpoint folder was written by (None: written without one)."""
    return _run_id_in(os.path.join(checkpoint, RUN_FILE))


class RunIdCallback(TrainerCallback):
    """Writes ``RUN_FILE`` into each checkpoint the PPO trainer saves (main process), with its PPO state — before
    ``trainer_state.json``, which makes a checkpoint complete, and before older ones are rotated away: the run id of
    the labels saved in ``output_dir`` (:func:`saved_run_id`; nothing where there is none)."""

    def __init__(self, output_dir: str) -> None:
        self.output_dir = output_dir

    def save_into_checkpoint(self, checkpoint: str) -> None:
        """PPOTrainer's hook for callbacks with state of their own (called on every process)."""
        if PartialState().is_main_process and (run_id := saved_run_id(self.output_dir)):
            with open(os.path.join(checkpoint, RUN_FILE), "w") as f:
                json.dump({"run_id": run_id}, f)


def online_label_info(source: str, resumed_from: str | None) -> dict[str, Any]:
    """``labels_info.json`` of an online run: its label source and mode, and, resumed, the run id of the checkpoint it
    resumes (:func:`checkpoint_run_id`): the same run goes on, so its new checkpoints keep the id and a later
    ``--resume_from_checkpoint true`` takes them. A checkpoint written before run ids has none: then neither has the
    resumed run (``null``: its checkpoints carry none, and ``true`` takes the newest as before run ids). A new run
    gets a new id from :func:`save_labels`."""
    info: dict[str, Any] = {"source": source, "mode": "online"}
    if resumed_from:
        info["run_id"] = checkpoint_run_id(resumed_from)
    return info


def save_labels(labels: Dataset, output_dir: str, info: dict[str, Any] | None = None) -> None:
    """``output_dir/labels.jsonl``: the labels the reward model was trained on, then ``labels_info.json`` (how they
    were made) when ``info`` is given (written by the main process). An ``info`` without a ``run_id`` (a new run's
    labels) gets a new one (:func:`new_run_id`), set in the caller's dict, so that saving it again keeps it; a
    reward model saved there before is then no longer taken by a resume (its ``rm_metrics.jsonl`` is removed: it was
    trained on other labels)."""
    new_labels = info is not None and "run_id" not in info
    if new_labels:
        info["run_id"] = new_run_id()
    if PartialState().is_main_process:
        os.makedirs(output_dir, exist_ok=True)
        if new_labels and os.path.isfile(os.path.join(output_dir, RM_METRICS_FILE)):
            os.remove(os.path.join(output_dir, RM_METRICS_FILE))
        info_path = os.path.join(output_dir, LABELS_INFO_FILE)
        if os.path.exists(info_path):  # an older run's: the labels being written are not whole until the new one is
            os.remove(info_path)
        labels.to_json(os.path.join(output_dir, LABELS_FILE))
        if info is not None:
            with open(info_path, "w") as f:
                json.dump(info, f, indent=1)


def labels_saved(output_dir: str) -> bool:
    """Labels saved whole: ``labels_info.json`` is written after ``labels.jsonl``."""
    return all(os.path.isfile(os.path.join(output_dir, name)) for name in (LABELS_FILE, LABELS_INFO_FILE))


def _reward_model_saved(output_dir: str) -> bool:
    """A reward model saved whole: ``rm_metrics.jsonl`` is written after ``reward_model/``."""
    return all(os.path.isfile(os.path.join(output_dir, *name))
               for name in ((RM_METRICS_FILE,), ("reward_model", "config.json")))


def has_saved_stages(output_dir: str) -> bool:
    """Whether ``output_dir`` holds labels or a reward model saved whole by an earlier run (what
    :func:`saved_labels` and :func:`saved_reward_model` would read back)."""
    return labels_saved(output_dir) or _reward_model_saved(output_dir)


def warn_replacing_earlier_run(output_dir: str, reuse: bool) -> bool:
    """Warn (and return True), on the main process, when a run that is not resuming starts in an ``output_dir``
    holding an earlier run's labels, reward model, checkpoints or results: they are replaced as the stages finish
    (nothing is removed up front)."""
    earlier = (has_saved_stages(output_dir) or os.path.isfile(os.path.join(output_dir, SUMMARY_FILE))
               or (os.path.isdir(output_dir) and get_last_checkpoint(output_dir) is not None))
    if reuse or not earlier or not PartialState().is_main_process:
        return False
    warnings.warn(f"output_dir {output_dir} holds an earlier run's labels, reward model, checkpoints or results: this "
                  "run replaces them stage by stage (--resume_from_checkpoint continues that run instead — an offline "
                  "run also reuses its saved labels and reward model —; another --output_dir keeps them)", stacklevel=2)
    return True


def stale_stage_fields(output_dir: str, pa: Any, base_model: str, cfg: Any = None) -> list[str]:
    """What the labels saved in ``output_dir`` (and the reward model trained on them) were made with that this run's
    arguments contradict, as ``"field: saved X, asked Y"`` — the task, the label source and mode, the known reward, the
    label file and what it holds, the number of label queries, K and the base model, and for sampled labels the
    queries and sampling settings (``labels_info.json`` records them since 2026-12-08; with ``cfg``, PPOConfig's)."""
    info_path = os.path.join(output_dir, LABELS_INFO_FILE)
    if not os.path.isfile(info_path):
        return []
    with open(info_path) as f:
        info = json.load(f)
    asked = {"task": pa.task, "label_source": pa.label_source, "label_mode": pa.label_mode,
             "model_name_or_path": base_model}
    saved = {"task": info.get("task"), "label_source": info.get("source"), "label_mode": info.get("mode", "offline"),
             "model_name_or_path": info.get("base_model")}
    if info.get("source") == "simulated":
        asked["known_reward"], saved["known_reward"] = pa.known_reward, info.get("known_reward")
    if info.get("source") in ("simulated", "human") and "queries" in info:
        asked["num_label_queries"], saved["num_label_queries"] = pa.num_label_queries, info["queries"]
    if info.get("source") == "file":
        asked["label_file"], saved["label_file"] = pa.label_file, info.get("label_file")
        now = label_file_digest(pa.label_file) if pa.label_file == info.get("label_file") else None
        if now is not None:  # the same file, edited since (a file gone, or a Hub id: not compared)
            asked["label_file contents (sha256)"], saved["label_file contents (sha256)"] = now, info.get("label_file_sha256")
    labels_path = os.path.join(output_dir, LABELS_FILE)
    if os.path.isfile(labels_path):
        with open(labels_path) as f:
            first = f.readline()
        if first.strip():
            asked["num_candidates"], saved["num_candidates"] = pa.num_candidates, len(json.loads(first)["samples"])
    stale = [f"{key}: saved {saved[key]!r}, asked {asked[key]!r}" for key in asked
             if saved[key] is not None and saved[key] != asked[key]]
    if info.get("source") in ("simulated", "human") and cfg is not None:  # None is a setting here (no cut, Austen)
        stale += [f"{key}: saved {info[key]!r}, asked {value!r}" for key, value in sampling_settings(pa, cfg).items()
                  if key in info and info[key] != value]  # absent from an older labels_info.json: not compared
    return stale


def sampling_settings(pa: Any, cfg: Any) -> dict[str, Any]:
    """What sampled labels are drawn with, as ``labels_info.json`` records it: the queries, response length,
    temperature, cut and seed (None for a field ``cfg`` lacks: a caller's namespace with the seed alone)."""
    return {"query_dataset": pa.query_dataset,
            **{name: getattr(cfg, name, None) for name in ("response_length", "temperature", "truncate_token",
                                                           "truncate_after", "seed")}}


def saved_labels(output_dir: str) -> tuple[Dataset, dict[str, Any]] | None:
    """The labels and their info a run saved in ``output_dir`` with :func:`save_labels`; None when not saved whole."""
    if not labels_saved(output_dir):
        return None
    path, info_path = os.path.join(output_dir, LABELS_FILE), os.path.join(output_dir, LABELS_INFO_FILE)
    with open(info_path) as f:
        info = json.load(f)
    if PartialState().is_main_process:
        print(f"[hf_prefs] resume: the {info.get('labels', '?')} labels saved in {path}")
    return Dataset.from_json(path), info


def saved_reward_model(output_dir: str) -> tuple[torch.nn.Module, dict[str, float]] | None:
    """The normalized reward model a run saved in ``output_dir/reward_model`` and its metrics (the numbers of
    ``rm_metrics.jsonl``, later entries over earlier ones, as the training returned them); None when not saved whole."""
    if not _reward_model_saved(output_dir):
        return None
    model_dir, log_path = os.path.join(output_dir, "reward_model"), os.path.join(output_dir, RM_METRICS_FILE)
    with open(log_path) as f:
        logs = [json.loads(line) for line in f if line.strip()]
    metrics = {k: v for log in logs for k, v in log.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    model, _ = load_reward_model(model_dir)
    model.requires_grad_(False)  # PPO only scores with it; frozen, its layers can share rho's tensors as a trained one's
    if PartialState().is_main_process:
        print(f"[hf_prefs] resume: the reward model saved in {model_dir}")
    return model, metrics
