"""The first stages: the base model rho with its tokenizer, and the task's queries split into disjoint sets."""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import torch
from accelerate import PartialState
from datasets import Dataset
from peft.tuners.tuners_utils import check_target_module_exists
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.pytorch_utils import Conv1D
from trl import get_peft_config

from ..hub_loading import named_hub_errors
from ..models.frozen_features import check_freeze_depth, check_freeze_layers
from ..models.generation import configured_positions
from ..models.sharding import whole_weights_at_load
from ..tasks.books import TooFewQueriesError
from ..tasks.queries import load_task_queries
from ..trainers.ppo_data import check_query_positions
from .arguments import PipelineArguments, base_model_name, model_dtype

logger = logging.getLogger(__name__)

__all__ = ["Base", "QuerySplit", "check_lora_targets", "check_stages_fit", "load_base", "split_queries"]


class Base(NamedTuple):
    """The base model of a run: its name or path, its tokenizer (left padding) and rho (frozen, eval mode)."""

    name: str
    tokenizer: Any
    rho: torch.nn.Module


class QuerySplit(NamedTuple):
    """Disjoint query sets: held-out ``eval`` queries, ``label`` queries, the ``ppo`` dataset, and the held-out
    queries' reference summaries (``eval_references``; None when the task's data has none)."""

    eval: list[str]
    label: list[str]
    ppo: Dataset
    eval_references: list[str] | None


def load_base(model_args: Any) -> Base:
    """rho and its tokenizer from ``ModelConfig.model_name_or_path`` or, unset, the offline SmolLM2 asset.

    The tokenizer pads on the left (padding is always masked explicitly, never pooled on; a missing pad token is set
    to EOS); rho is in eval mode, in ``ModelConfig.dtype`` (rho is never trained: bfloat16 makes sampling ~2.5x
    faster on CPUs with bf16 units), on this process's device (the GPU of a GPU run: labels, the normalization
    samples and the evaluation sample from rho before any trainer places a model); under DeepSpeed ZeRO-3 whole all
    the same (:func:`~hf_prefs.models.sharding.whole_weights_at_load`).
    """
    name = base_model_name(model_args)
    with named_hub_errors("model_name_or_path", name):
        tokenizer = AutoTokenizer.from_pretrained(name, padding_side="left")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    with whole_weights_at_load(), named_hub_errors("model_name_or_path", name):
        rho = AutoModelForCausalLM.from_pretrained(name, dtype=model_dtype(model_args))
    rho = rho.eval().to(PartialState().device)
    check_lora_targets(model_args, rho, name)
    return Base(name, tokenizer, rho)


def check_stages_fit(pa: PipelineArguments, cfg: Any, base: Base, queries: QuerySplit) -> None:
    """Before any stage: ``rm_freeze_layers`` within the reward model's blocks, and every query (with the tokenizer's
    special tokens, as it is sampled from) + ``response_length`` within rho's positions — each refused only after the
    labels were sampled (a query too long for a learned position table failed inside rho's forward, a bare
    IndexError)."""
    if pa.rm_freeze_layers > 0:
        if pa.reward_model_name_or_path is None:  # the reward model's trunk is rho's
            check_freeze_layers(base.rho, pa.rm_freeze_layers)
        else:
            layers = getattr(AutoConfig.from_pretrained(pa.reward_model_name_or_path).get_text_config(),
                             "num_hidden_layers", None)
            if isinstance(layers, int):  # (a config without the field: the reward model's build says it)
                check_freeze_depth(pa.rm_freeze_layers, layers, pa.reward_model_name_or_path)
    positions = configured_positions(base.rho)
    for name, texts in (("the held-out queries", queries.eval), ("the label queries", queries.label),
                        ("the PPO queries", queries.ppo["query"])):
        lengths = [len(ids) for ids in base.tokenizer(list(texts))["input_ids"]] if len(texts) else []
        check_query_positions(lengths, cfg.response_length, positions, name)


def check_lora_targets(model_args: Any, rho: torch.nn.Module, name: str) -> None:
    """With ``use_peft``: some module of the base model is one of ``lora_target_modules`` (PEFT's own matching), checked
    on rho before the labels and the reward model are made — PEFT would raise only when PPO's policy is built."""
    if not getattr(model_args, "use_peft", False):
        return
    config = get_peft_config(model_args)
    targets = getattr(config, "target_modules", None)
    if config is None or targets is None or (isinstance(targets, str) and targets.lower() == "all-linear"):
        return  # PEFT's defaults by model type, or every linear layer
    modules = dict(rho.named_modules())
    if not any(check_target_module_exists(config, key) for key in modules):
        linear = sorted({key.rsplit(".", 1)[-1] for key, m in modules.items()
                         if isinstance(m, (torch.nn.Linear, Conv1D))})
        if isinstance(targets, str):  # PEFT matches one name as a regular expression over the whole module path
            raise ValueError(f"lora_target_modules: the pattern {targets!r} matches no module path of {name} (one name "
                             f"is a regular expression over the whole path: '.*{targets}'); its linear layers are "
                             f"{linear} (or use 'all-linear')")
        raise ValueError(f"lora_target_modules: none of {sorted(targets)} is a module of {name}; its linear layers are "
                         f"{linear} (or use 'all-linear')")


def split_queries(pa: PipelineArguments, cfg: Any, tokenizer: Any) -> QuerySplit:
    """The first ``num_eval_queries`` held out, the next ``num_label_queries`` for labels, the rest (or
    ``num_ppo_queries``) for PPO; the order is the task loader's shuffle with ``cfg.seed``. With
    ``label_source=file`` the labels are the file's rows: no query is set aside for them (a ``num_label_queries``
    given is ignored, with a warning; with ``label_mode=online`` it is the rounds' number of labels)."""
    n_label = pa.num_label_queries
    if pa.label_source == "file" and n_label:
        if pa.label_mode != "online":  # (online, it still counts the rounds' labels: online_schedule)
            logger.warning("num_label_queries: %d ignored with label_source=file (the labels are the file's rows); "
                           "those queries go to PPO", n_label)
        n_label = 0
    n_total = n_label + pa.num_eval_queries + (pa.num_ppo_queries or 0)
    try:
        queries = load_task_queries(
            pa.task, tokenizer, n=n_total if pa.num_ppo_queries else None, seed=cfg.seed, query_dataset=pa.query_dataset,
            min_tokens=pa.query_min_tokens, split=pa.query_dataset_split,
        )
    except TooFewQueriesError as e:
        raise ValueError(f"num_ppo_queries: num_eval_queries {pa.num_eval_queries} + num_label_queries "
                         f"{n_label} + num_ppo_queries {pa.num_ppo_queries} = {n_total} queries, but only "
                         f"{e.available} queries fit {e.fit}") from e
    if len(queries) < n_label + pa.num_eval_queries + 1:
        raise ValueError(
            f"num_label_queries: {n_label} + num_eval_queries {pa.num_eval_queries} exceed the "
            f"{len(queries)} distinct queries available"
        )
    held_out = queries.select(range(pa.num_eval_queries))
    label_q = queries.select(range(pa.num_eval_queries, pa.num_eval_queries + n_label))["query"]
    ppo_q = queries.select(range(pa.num_eval_queries + n_label, len(queries)))
    refs = held_out["reference"] if "reference" in held_out.column_names else None
    return QuerySplit(held_out["query"], label_q, ppo_q.select_columns(["query"]), refs)
