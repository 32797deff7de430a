"""Saving, checkpoints and resume of :class:`hf_prefs.PPOTrainer` (a mixin on its TRL/Trainer base).

A saved policy folder holds the policy as ``policy.save_pretrained`` writes it (full model or PEFT adapter) AND its
value function (``value_head.safetensors`` or a ``value_model/`` folder; TRL 1.12 dropped the value model, trl#3293),
so ``PolicyWithValueHead.from_pretrained`` reloads both. A checkpoint adds the Trainer's optimizer, scheduler, RNG and
trainer state, and ``ppo_state.json`` (beta, the sampling / shuffling generators and the gain/bias ``normalize_reward``
set), so a resumed run continues exactly.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import TrainerState
from transformers.utils import logging

from .._compat import checkpoint_folder, tied_weights_keys
from ..models.reward_model import get_reward_normalization, set_reward_normalization
from ..models.value_head import PolicyWithValueHead
from .trainer_cards import ppo_trainer_card, write_trainer_card

__all__ = [
    "PPO_STATE_FILE",
    "OnlineTrainerState",
    "PPOCheckpointMixin",
    "check_checkpoint_process_count",
    "check_checkpoint_updates",
    "complete_checkpoints",
    "last_complete_checkpoint",
]

logger = logging.get_logger(__name__)

#: Per-checkpoint PPO state: the KL controller (beta), the sampling / shuffling generators and, with
#: ``normalize_reward``, the reward model's gain/bias.
PPO_STATE_FILE = "ppo_state.json"


@dataclass
class OnlineTrainerState(TrainerState):
    """TRL 1.12's trainer state of its PPOTrainer: ``TrainerState`` with ``episode``, the episodes of the updates
    begun so far (``batch_size`` more at the start of each update), saved in ``trainer_state.json`` with the rest."""

    episode: int = 0


def complete_checkpoints(output_dir: str) -> list[str]:
    """The ``checkpoint-N`` folders of ``output_dir`` that a run can resume from, oldest (lowest N) first: each holds
    the PPO state and Trainer's ``trainer_state.json`` (written last before Trainer deletes older checkpoints), so a
    checkpoint a stopped process left half-written is left out."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        folder = os.path.join(output_dir, name)
        if name.startswith("checkpoint-") and name[len("checkpoint-"):].isdigit() and os.path.isdir(folder):
            files = os.listdir(folder)
            if "trainer_state.json" in files and any(f.startswith("ppo_state") for f in files):
                found.append((int(name[len("checkpoint-"):]), folder))
    return [folder for _, folder in sorted(found)]


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The newest of :func:`complete_checkpoints` (a half-written one is passed over for the one before it); None
    when there is none."""
    found = complete_checkpoints(output_dir)
    return found[-1] if found else None


def _ppo_state_files(checkpoint: str) -> list[str]:
    """The PPO state files in ``checkpoint``: ``ppo_state.json`` (one process) or ``ppo_state_<rank>.json``."""
    if not os.path.isdir(checkpoint):
        return []
    return sorted(f for f in os.listdir(checkpoint) if f.startswith("ppo_state") and f.endswith(".json"))


def check_checkpoint_kl_settings(saved: dict[str, Any], controller: Any) -> None:
    """Refuse to resume a β controller whose settings this run changed: the checkpoint's were restored in silence (a
    fixed β of 0.3 kept for ``kl_coef`` 0.5; an adaptive ``kl_target``/``kl_horizon`` replaced). ``saved``: its
    ``state_dict``; ``controller``: this run's, as built (a fixed and an adaptive one are refused by its
    ``load_state_dict``)."""
    fresh = controller.state_dict()
    if ("target" in saved) != ("target" in fresh):
        return
    names = {"target": "kl_target", "horizon": "kl_horizon"} if "target" in saved else {"value": "kl_coef"}
    changed = [f"{name} {saved[key]} in the checkpoint, {fresh[key]} now" for key, name in names.items()
               if float(saved[key]) != float(fresh[key])]
    if changed:
        raise ValueError(f"resume_from_checkpoint: the KL controller's settings changed ({'; '.join(changed)}): "
                         "resume with the checkpoint's, or start a new run in another output_dir")


def check_checkpoint_updates(checkpoint: str, num_updates: int, total_episodes: int) -> None:
    """Refuse to resume ``checkpoint`` into a run of another number of PPO updates than the one that saved it (its
    ``trainer_state.json``'s ``max_steps``): its learning-rate schedule decays to 0 over the saved run's updates,
    which a longer run would pass (an update at lr 0, then the schedule's restart). A folder without a trainer state
    passes (loading it says what is missing)."""
    path = os.path.join(checkpoint, "trainer_state.json")
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as f:
        saved = json.load(f).get("max_steps")
    if isinstance(saved, int) and saved > 0 and saved != num_updates:
        raise ValueError(f"total_episodes: {checkpoint} was saved by a run of {saved} PPO updates, this one asks for "
                         f"{num_updates} (total_episodes {total_episodes}): its learning-rate schedule ends with the "
                         "saved run's updates; resume with the total_episodes (and batch sizes) it was saved with, or "
                         "start a new run")


def check_checkpoint_process_count(checkpoint: str, num_processes: int) -> None:
    """Refuse to resume ``checkpoint`` on another process count than it was saved by (each process's sampling
    generator and data share are saved with it): one process writes ``ppo_state.json`` (its ``num_processes``, 1 in
    older files), N write ``ppo_state_<rank>.json`` each. A folder without PPO state passes (loading it says what is
    missing)."""
    written = _ppo_state_files(checkpoint)
    if not written:
        return
    saved_on = len(written)
    if PPO_STATE_FILE in written:
        with open(os.path.join(checkpoint, PPO_STATE_FILE), encoding="utf-8") as f:
            saved_on = json.load(f).get("num_processes", 1)
    if saved_on != num_processes:
        raise ValueError(f"{checkpoint} was saved by {saved_on} process(es) and is resumed on {num_processes}: "
                         "resume with the process count it was saved with")


class PPOCheckpointMixin:
    """The Trainer hooks that save and load a policy with its value function, and the PPO state of checkpoints."""

    def _unwrapped(self) -> PolicyWithValueHead:
        return self.accelerator.unwrap_model(self.model)

    def _scoring_model(self) -> PolicyWithValueHead:
        """The model as the PPO epochs run it, without DDP's or DeepSpeed's wrapper (``.module``): with
        ``torch_compile`` its compiled blocks, so that the rollout's log-probs and values come from the same kernels
        as the epochs'. (``accelerator.unwrap_model`` keeping compilation returns a DDP wrapper whose module was
        compiled after wrapping as it is.)"""
        model = self.model_wrapped
        while not isinstance(model, PolicyWithValueHead) and isinstance(getattr(model, "module", None), nn.Module):
            model = model.module
        return model

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Save the policy (full model or PEFT adapter) AND its value head / value model, plus tokenizer and args."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        self._unwrapped().save_pretrained(output_dir, state_dict=state_dict)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))
        # hf_prefs' card (peft's blank template, or none, before): loads the policy and samples as it was trained
        write_trainer_card(self, output_dir, ppo_trainer_card, model_name=os.path.basename(os.path.normpath(output_dir)))

    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None,
                          tags: str | list[str] | None = None) -> None:
        """hf_prefs' policy card in ``output_dir/README.md`` (:func:`.trainer_cards.ppo_trainer_card`: loads the policy
        with transformers/peft and samples at the run's temperature), where TRL writes its generic one (at each
        checkpoint, before ``push_to_hub``)."""
        write_trainer_card(self, self.args.output_dir, ppo_trainer_card, model_name=model_name,
                           dataset_name=dataset_name, tags=tags)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        """Load the policy weights (Trainer's loader: full or PEFT) and the value weights of a checkpoint."""
        wrapper = self.accelerator.unwrap_model(model if model is not None else self.model)
        super()._load_from_checkpoint(resume_from_checkpoint, model=wrapper.policy)
        wrapper.load_value_weights(resume_from_checkpoint)

    def _issue_warnings_after_load(self, load_result: Any) -> None:
        """Like Trainer's, for the policy inside the wrapper: re-tie tied weights, warn about other mismatches."""
        policy = self._unwrapped().policy
        missing = set(load_result.missing_keys)
        tied = tied_weights_keys(policy)
        if missing and hasattr(policy, "tie_weights"):
            policy.tie_weights()
        if missing - tied:
            logger.warning(f"There were missing keys in the checkpoint policy: {sorted(missing - tied)}")
        if load_result.unexpected_keys:
            logger.warning(f"There were unexpected keys in the checkpoint policy: {load_result.unexpected_keys}")

    def _ppo_state_path(self, checkpoint: str) -> str:
        if self.accelerator.num_processes > 1:
            return os.path.join(checkpoint, f"ppo_state_{self.accelerator.process_index}.json")
        return os.path.join(checkpoint, PPO_STATE_FILE)

    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:  # noqa: D401 (Trainer hook)
        """PPO state (beta, generators; and a callback's ``save_into_checkpoint(folder)``, e.g. the online label loop's
        rounds and reward model) + model card + Trainer checkpoint (weights, optimizer, scheduler, RNG, trainer
        state), so that resuming continues with the same step count and beta. The PPO state of every process is
        written first: Trainer deletes the older checkpoints (``save_total_limit``) once it has written its own
        files, and a process stopped before the PPO state was there left a newest checkpoint that could not resume.
        A folder of that name already there (an earlier run's, passed over by a resume, or this run's own from before
        the checkpoint it resumed) is removed first: its files would stay beside the new ones."""
        checkpoint = checkpoint_folder(self, trial)
        stale = os.path.isdir(checkpoint)
        self.accelerator.wait_for_everyone()  # every process looked before the main one removes it (unconditional:
        if stale and self.accelerator.is_main_process:  # processes that disagree must not wait in different places)
            logger.warning(f"{checkpoint} exists (an earlier run's, or this run's from before the checkpoint it "
                           "resumed): replaced")
            shutil.rmtree(checkpoint)
        self.accelerator.wait_for_everyone()  # removed before any process writes into it
        os.makedirs(checkpoint, exist_ok=True)
        state = {
            "kl_controller": self.kl_ctl.state_dict(),
            "sampling_generator": self.sampling_generator.get_state().tolist(),
            "shuffle_generator": self.shuffle_generator.get_state().tolist(),
            "num_processes": self.accelerator.num_processes,
        }
        if self.args.normalize_reward and isinstance(self.reward_model, nn.Module):  # set by train(), not by a load
            state["reward_normalization"] = list(get_reward_normalization(self.reward_model))
        with open(self._ppo_state_path(checkpoint), "w", encoding="utf-8") as f:
            json.dump(state, f)
        for callback in self.callback_handler.callbacks:  # callbacks with state of their own (the online label loop)
            if hasattr(callback, "save_into_checkpoint"):
                callback.save_into_checkpoint(checkpoint)
        self.accelerator.wait_for_everyone()  # every process's state is written before any rotation
        model_name = Path(self.args.output_dir).name if self.args.hub_model_id is None else self.args.hub_model_id.split("/")[-1]
        self.create_model_card(model_name=model_name)
        super()._save_checkpoint(model, trial)

    def _load_ppo_state(self, checkpoint: str) -> None:
        check_checkpoint_process_count(checkpoint, self.accelerator.num_processes)  # every process checks: all stop
        check_checkpoint_updates(checkpoint, self.args.num_total_batches, self.args.total_episodes)
        path = self._ppo_state_path(checkpoint)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is missing: this checkpoint was not written by hf_prefs PPOTrainer")
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
        check_checkpoint_kl_settings(state["kl_controller"], self.kl_ctl)
        self.kl_ctl.load_state_dict(state["kl_controller"])
        self.sampling_generator.set_state(torch.tensor(state["sampling_generator"], dtype=torch.uint8))
        self.shuffle_generator.set_state(torch.tensor(state["shuffle_generator"], dtype=torch.uint8))
        if "reward_normalization" in state:  # normalize_reward: the gain/bias train() set (it does not set them again)
            set_reward_normalization(self.reward_model, *state["reward_normalization"])
