"""What a recipe adds to ``PPOConfig`` and TRL's ``ModelConfig``: the task, labels, reward model and online rounds,
and the checks that name a bad field before any model is loaded."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, is_dataclass
from typing import Any

import torch
from accelerate import PartialState
from huggingface_hub import HfApi
from huggingface_hub.errors import OfflineModeIsEnabled
from transformers import AutoConfig, AutoTokenizer
from transformers.integrations import get_reporting_integration_callbacks

from ..assets import smollm2_path
from ..core.online_schedule import OnlineLabelSchedule
from ..labels.schema import LabelValidationError, check_label_limit, load_label_file, local_label_path
from ..models.loading import check_local_path
from ..tasks.specs import get_task
from ..tasks.summarization import HUB_SOURCES
from ..trainers.launch import check_process_count
from ..trainers.online import check_online_zero_stage
from ..trainers.ppo_config import PPOConfig
from ..field_types import check_field_types, unset_null_strings
from ..hub_loading import named_hub_errors

__all__ = ["PipelineArguments", "LABEL_SOURCES", "LABEL_MODES", "validate_pipeline_config", "online_schedule", "model_dtype",
           "base_model_name", "resolve_cpu_precision", "check_hub_push"]

logger = logging.getLogger(__name__)

LABEL_SOURCES = ("simulated", "file", "human")
LABEL_MODES = ("offline", "online")


@dataclass
class PipelineArguments:
    """What the recipes add to ``PPOConfig`` (the policy's settings) and TRL's ``ModelConfig`` (the base model).

    The base model is ``ModelConfig.model_name_or_path``; left unset, the offline SmolLM2-135M asset is used.
    """

    task: str | None = field(default=None, metadata={"help": "sentiment | descriptiveness | tldr | cnndm (set by the recipe)"})
    query_dataset: str | None = field(
        default=None,
        metadata={"help": "The queries' texts: a Hub dataset id, a local .txt/.json/.jsonl/.csv/.parquet file or a "
                  "dataset folder. Books tasks: a 'text' column. tldr/cnndm: OpenAI's TL;DR columns (subreddit, "
                  "title, post, summary), CNN/DM's (article, highlights), prompt/completion or text (+ summary); unset "
                  "= offline Austen passages (books tasks) or the task's Hub source (trl-lib/tldr, "
                  "abisee/cnn_dailymail); 'austen' = Austen offline."},
    )
    query_dataset_split: str | None = field(
        default=None,
        metadata={"help": "The split of query_dataset the queries come from (as TRL's dataset_train_split); a dataset "
                  "folder's or a Hub dataset's. None = 'train' (a single file has only that one)."},
    )
    query_min_tokens: int = field(default=32, metadata={"help": "Shortest book query in tokens (paper: 64 exactly)."})
    num_label_queries: int = field(default=4992, metadata={"help": "Queries sent to the labeler (paper: 4,992)."})
    num_ppo_queries: int | None = field(default=None, metadata={"help": "Queries PPO cycles over (None: all left)."})
    num_eval_queries: int = field(default=64, metadata={"help": "Held-out queries for the before/after evaluation."})
    label_source: str = field(default="simulated", metadata={"help": "simulated | file | human"})
    label_file: str | None = field(
        default=None,
        metadata={"help": "Labels for label_source=file: .jsonl/.json/.parquet/.csv in the label schema, the "
                  "paper's token-id JSON (offline_5k.json), TRL's pairwise prompt/chosen/rejected rows (K = 2: set "
                  "num_candidates 2), a saved dataset folder, or a Hub dataset id."},
    )
    label_limit: int | None = field(default=None, metadata={"help": "Use the first N labels of the file."})
    num_candidates: int = field(default=4, metadata={"help": "K, samples per label (paper: 4)."})
    known_reward: str = field(
        default="vader",
        metadata={"help": "Known reward of the simulated labeler (also tracked during PPO): 'vader' (offline "
                  "log-odds), a Hub/local text-classification model id whose positive-class log-odds is the reward, "
                  "or 'none' (tasks without one)."},
    )
    known_reward_positive_label: str = field(
        default="POSITIVE",
        metadata={"help": "The class of a known_reward classifier whose log-odds is the reward (its config.id2label "
                  "name, any case; e.g. 'positive' or 'LABEL_1')."},
    )
    label_drop_untruncated: bool = field(
        default=True,
        metadata={"help": "Drop queries with a sample lacking the truncate token past truncate_after (paper); False "
                  "shows such samples uncut (CPU budget: small models rarely end a sentence in the window)."},
    )
    labeler_noise: float = field(default=0.0, metadata={"help": "Boltzmann temperature of the simulated labeler (0: argmax)."})
    label_queue_dir: str | None = field(default=None, metadata={"help": "Queue folder for label_source=human."})
    label_timeout: float | None = field(default=None, metadata={"help": "Seconds to wait for human labels (None: forever)."})
    reward_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Trunk of the reward model (default: the policy's base model, as the paper)."}
    )
    rm_learning_rate: float = field(default=5e-5, metadata={"help": "Reward-model lr, linear decay to 0 (paper: 5e-5)."})
    rm_batch_size: int = field(default=32, metadata={"help": "Reward-model batch in labels per process, as TRL's per_device_train_batch_size (paper: 32 in all)."})
    rm_num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs over the labels (paper: 1)."})
    rm_eval_fraction: float = field(default=0.1, metadata={"help": "Labels held out for the RM's accuracy."})
    rm_share_query_prefix: bool = field(default=True, metadata={"help": "Encode each query once for its K samples."})
    rm_freeze_layers: int = field(
        default=0, metadata={"help": "Freeze the embeddings and this many bottom trunk layers of the RM (CPU budget)."}
    )
    rm_cache_frozen_features: bool = field(
        default=True,
        metadata={"help": "With rm_freeze_layers > 0: compute the frozen layers' output once per label and train the "
                  "top on it (PreferenceRewardConfig.cache_frozen_features; same result, epochs after the first "
                  "skip the frozen layers)."},
    )
    rm_head_init: str = field(
        default="default",
        metadata={"help": "default: transformers' N(0, 0.02) for the reward head | paper: N(0, 1/sqrt(d_model + 1)), as "
                  "the paper's code."},
    )
    rm_normalize_samples: int = field(default=256, metadata={"help": "rho samples per reward-model normalization (paper: 256)."})
    sampling_batch_size: int = field(default=32, metadata={"help": "Rows per batch when sampling from rho."})
    eval_batch_size: int | None = field(
        default=None,
        metadata={"help": "Rows per batch of the before/after evaluation (its sampling cache is a run's last memory "
                  "peak); None: sampling_batch_size."},
    )
    push_reward_model_id: str | None = field(
        default=None, metadata={"help": "Hub id of the reward model (default: <hub_model_id>-reward-model)."}
    )
    # online label collection (hf_prefs.trainers.online): rounds of labels on the CURRENT policy's samples during PPO
    label_mode: str = field(
        default="offline",
        metadata={"help": "offline: all labels on rho samples, then PPO | online: online_rounds rounds, the first "
                  "before RL, the others evenly spaced over PPO (paper, summarization: 20)."},
    )
    online_rounds: int = field(default=20, metadata={"help": "label_mode=online: label rounds (paper: 20)."})
    online_labels_per_round: list[int] | None = field(
        default=None,
        metadata={"help": "label_mode=online: comparisons per round, one value or one per round (default: "
                  "num_label_queries split evenly over the rounds)."},
    )
    online_rm_init: str = field(
        default="fresh",
        metadata={"help": "label_mode=online: fresh = each round trains the RM from the base trunk with a fresh head "
                  "on all labels so far (paper) | continue = train the current RM on the round's new labels."},
    )
    online_wait_for_labels: bool = field(
        default=True,
        metadata={"help": "label_mode=online, label_source=human: PPO waits for each round's labels (up to "
                  "label_timeout); false: PPO goes on and late labels are used at the next round."},
    )
    cpu_bf16_fallback: bool = field(
        default=True,
        metadata={"help": "On a CPU without native bf16 matmuls (no AVX512-BF16/AMX, e.g. AVX2-only), run "
                  "dtype=bfloat16 / bf16=true in float32 instead (bf16 runs ~100x slower there); false keeps bf16."},
    )

    def evaluation_batch_size(self) -> int:
        """Rows per batch of the before/after evaluation: ``eval_batch_size``, else ``sampling_batch_size``."""
        return self.eval_batch_size or self.sampling_batch_size


def base_model_name(model_args: Any) -> str:
    """The base model rho's name or path: ``ModelConfig.model_name_or_path`` or, unset, the offline SmolLM2 asset."""
    return getattr(model_args, "model_name_or_path", None) or str(smollm2_path())


def model_dtype(model_args: Any) -> torch.dtype | str:
    """``ModelConfig.dtype`` as ``from_pretrained`` takes it (TRL's rule): ``'auto'`` stays a string, a name such as
    ``'bfloat16'`` becomes ``torch.bfloat16``; no ModelConfig means float32."""
    name = getattr(model_args, "dtype", None) or "float32"
    if name == "auto" or isinstance(name, torch.dtype):
        return name
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype: {name!r} is not a floating torch dtype (float32, bfloat16, float16) or 'auto'")
    return dtype


def resolve_cpu_precision(pa: PipelineArguments, cfg: PPOConfig, model_args: Any) -> bool:
    """bf16 only where the CPU computes it: on a run that asks for bfloat16 weights (``ModelConfig.dtype``) or bf16
    autocast (``bf16``) on a CPU without native bf16 matmuls (:attr:`PPOConfig.cpu_lacks_bf16`), and with
    ``cpu_bf16_fallback`` on, sets ``dtype`` to float32 and ``bf16`` to False in place, logs it, and returns True;
    otherwise changes nothing and returns False. A bf16 default sized for CPUs with bf16 units would otherwise take
    ~100x longer per matmul."""
    bf16_weights = model_dtype(model_args) == torch.bfloat16
    if not (pa.cpu_bf16_fallback and (cfg.bf16 or bf16_weights) and cfg.cpu_lacks_bf16):
        return False
    logger.warning("This CPU has no native bf16 matmuls (AVX512-BF16/AMX): running in float32 instead of dtype=%s, "
                   "bf16=%s (--cpu_bf16_fallback false keeps bf16). A run sized for bf16 units takes several times "
                   "longer in float32 (the README's table of measured runs names the CPUs)",
                   getattr(model_args, "dtype", None), cfg.bf16)
    if bf16_weights:  # model_dtype(None) is float32: model_args is set here
        model_args.dtype = "float32"
    cfg.bf16 = False
    if cfg.mixed_precision == "bf16":  # TrainingArguments derived it from bf16 in __post_init__; the Trainer reads it
        cfg.mixed_precision = "no"
    return True


def online_schedule(pa: PipelineArguments) -> OnlineLabelSchedule:
    """The schedule of ``label_mode=online``: ``online_rounds`` rounds of ``online_labels_per_round`` comparisons
    (default: ``num_label_queries`` split evenly), the first before RL. Errors name the field."""
    per = pa.online_labels_per_round
    try:
        if per:
            return OnlineLabelSchedule(pa.online_rounds, list(per) if len(per) > 1 else per[0])
        return OnlineLabelSchedule.even(pa.num_label_queries, pa.online_rounds)
    except ValueError as err:
        if per:
            raise ValueError(f"online_labels_per_round: {err}") from None
        raise ValueError(f"online_rounds / num_label_queries: {pa.num_label_queries} labels in {pa.online_rounds} "
                         f"rounds: {err} (set num_label_queries, or online_labels_per_round)") from None


def _check_inputs(pa: PipelineArguments, cfg: PPOConfig, model_args: Any) -> None:
    """YAML's null spellings given as text (the command line) read as None in ``pa``
    (:func:`~hf_prefs.field_types.unset_null_strings`; PPOConfig does it for its own fields when built); every field
    of ``pa``, PPOConfig's own fields and the numeric and bool fields of its TrainingArguments and of ``model_args``
    (ModelConfig) hold their declared type (:func:`~hf_prefs.field_types.check_field_types`: a YAML value is not
    converted); no ``reward_weights``
    (the recipes' reward is a model); an ``output_dir`` that is not a file; model paths written as local paths
    (absolute, ``./``, ``~``) with something there."""
    own = vars(PPOConfig).get("__annotations__", {})
    unset_null_strings(pa)  # `--query_dataset null` on the command line: None, as `null` in the YAML
    check_field_types(pa)
    check_field_types(cfg, own, numbers_elsewhere=True)
    if is_dataclass(model_args):
        check_field_types(model_args, (), numbers_elsewhere=True)
    if cfg.reward_weights is not None:
        raise ValueError("reward_weights: the recipes' reward is a reward model; reward_weights weighs a list of reward "
                         "functions given to PPOTrainer")
    defaults = PPOConfig.__dataclass_fields__
    for name, instead in (("sft_model_path", "model_name_or_path (the base ρ that PPO starts from)"),
                          ("reward_model_path", "the reward model the recipe trains from its labels (label_source, "
                           "label_file; reward_model_name_or_path: the model it starts from)")):
        if getattr(cfg, name) != defaults[name].default:  # TRL's scripts' field; the recipes ignored it, silently
            raise ValueError(f"{name}: the recipes do not read it; they use {instead}. A trained model of your own goes "
                             f"to PPOTrainer(model=..., reward_model=...) in a script of your own")
    if os.path.exists(cfg.output_dir) and not os.path.isdir(cfg.output_dir):
        raise ValueError(f"output_dir: {cfg.output_dir} is a file, not a folder")
    for name, path in (("model_name_or_path", getattr(model_args, "model_name_or_path", None)),
                       ("reward_model_name_or_path", pa.reward_model_name_or_path)):
        if path:
            try:
                check_local_path(path, name)  # a local path with nothing there, not a Hub id
            except FileNotFoundError as err:
                raise ValueError(str(err)) from None
    if pa.reward_model_name_or_path:  # a Hub id that cannot be loaded: said now, not after the labels are made
        with named_hub_errors("reward_model_name_or_path", pa.reward_model_name_or_path):
            AutoConfig.from_pretrained(pa.reward_model_name_or_path)


def validate_pipeline_config(pa: PipelineArguments, cfg: PPOConfig, model_args: Any = None) -> None:
    """Fail fast, naming the field: unknown task, label source or mode, a missing label file or one with a bad row or
    the wrong K, a human run without a queue folder, a simulated labeler without a known reward, online rounds that do not fit the PPO updates, a
    ``dtype`` that is not a floating torch dtype, an ``eval_strategy`` (the recipes evaluate after PPO, on held-out
    queries), a ``report_to`` integration that is not installed, a launch whose processes each run alone
    (:func:`~hf_prefs.trainers.launch.check_process_count`), and ``push_to_hub`` without a reachable Hub repo
    (:func:`check_hub_push`) — each of which would otherwise stop the run after its labels and reward model were made.
    (The rollout settings are checked by ``PPOConfig`` itself.) First :func:`_check_inputs`: the fields' types, the
    output folder and the model paths."""
    _check_inputs(pa, cfg, model_args)
    model_dtype(model_args)
    if (strategy := getattr(cfg.eval_strategy, "value", cfg.eval_strategy)) != "no":
        raise ValueError(f"eval_strategy: the recipes give PPO no eval set; they evaluate rho and pi on "
                         f"num_eval_queries held-out queries after PPO (eval.json). Leave eval_strategy at 'no', got "
                         f"{strategy!r}")
    for callback in get_reporting_integration_callbacks(cfg.report_to):
        try:
            callback()  # the integrations check their package when made (WandbCallback: "requires wandb ...")
        except (ImportError, RuntimeError) as err:
            raise ValueError(f"report_to: {err}") from err
    if pa.task is None:
        raise ValueError("task: set the task (sentiment, descriptiveness, tldr or cnndm)")
    spec = get_task(pa.task)
    if pa.task not in HUB_SOURCES and not 0 < pa.query_min_tokens <= spec.query_length:
        raise ValueError(f"query_min_tokens: must lie in [1, {spec.query_length}] (the {pa.task} task's query length), "
                         f"got {pa.query_min_tokens}")
    if pa.label_source not in LABEL_SOURCES:
        raise ValueError(f"label_source: {pa.label_source!r} is not one of {LABEL_SOURCES}")
    if pa.num_candidates < 2:
        raise ValueError(f"num_candidates: must be >= 2, got {pa.num_candidates}")
    if pa.label_source != "file" and pa.num_label_queries < 1 and not pa.online_labels_per_round:
        raise ValueError(f"num_label_queries: label_source={pa.label_source} labels samples of num_label_queries "
                         f"queries; got {pa.num_label_queries} (the summarization configs set 0 for their label file)")
    if pa.sampling_batch_size < 1:
        raise ValueError(f"sampling_batch_size: must be >= 1, got {pa.sampling_batch_size}")
    if pa.eval_batch_size is not None and pa.eval_batch_size < 1:
        raise ValueError(f"eval_batch_size: must be >= 1 (or unset), got {pa.eval_batch_size}")
    if pa.rm_head_init not in ("default", "paper"):
        raise ValueError(f"rm_head_init: {pa.rm_head_init!r} is not 'default' or 'paper'")
    if not 0 <= pa.rm_eval_fraction < 1:
        raise ValueError(f"rm_eval_fraction: must lie in [0, 1), got {pa.rm_eval_fraction}")
    check_label_limit(pa.label_limit)  # also for a Hub label file, which is not read here
    if pa.label_source == "file":
        if not pa.label_file:
            raise ValueError("label_file: label_source=file needs a label file or a Hub dataset id")
        if local_label_path(pa.label_file) is not None:  # every row and K checked now, not after the models are loaded
            with named_hub_errors("model_name_or_path", base_model_name(model_args)):  # renders conversational pairs
                tokenizer = AutoTokenizer.from_pretrained(base_model_name(model_args))
            try:
                load_label_file(pa.label_file, pa.num_candidates, pa.label_limit, tokenizer)
            except LabelValidationError as err:  # the row and field, and which file
                named = LabelValidationError(f"label_file {pa.label_file}: {err}")
                named.row, named.field = err.row, err.field
                raise named from None
    if pa.label_source == "human" and not pa.label_queue_dir:
        raise ValueError("label_queue_dir: label_source=human needs the labeling queue's folder")
    if pa.label_source == "simulated" and pa.known_reward in (None, "", "none"):
        raise ValueError("known_reward: the simulated labeler needs a known reward ('vader' or a model id)")
    if pa.label_mode not in LABEL_MODES:
        raise ValueError(f"label_mode: {pa.label_mode!r} is not one of {LABEL_MODES}")
    if pa.label_mode == "online":
        if pa.online_rm_init not in ("fresh", "continue"):
            raise ValueError(f"online_rm_init: {pa.online_rm_init!r} is not 'fresh' or 'continue'")
        plugin = getattr(cfg, "deepspeed_plugin", None)
        check_online_zero_stage(None if plugin is None else int(plugin.zero_stage))
        schedule = online_schedule(pa)
        if cfg.total_episodes is not None:
            batch = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * cfg.world_size
            try:
                schedule.update_boundaries(cfg.total_episodes, batch)
            except ValueError as err:
                raise ValueError(f"online_rounds: {err}") from None
    check_process_count(PartialState())  # a launch whose processes each run alone: stopped now, not after labeling twice
    check_hub_push(cfg, pa.push_reward_model_id)  # last: it makes the repos, once every other field is known good


def hub_error_advice(err: BaseException) -> str:
    """What to do about ``err`` from a Hub call: offline mode on; no answer from the Hub (the network, a proxy or
    ``HF_ENDPOINT``); an answer refusing the token (401/403: log in); another answer (its status)."""
    if isinstance(err, OfflineModeIsEnabled):
        return "unset HF_HUB_OFFLINE (offline mode is on)"
    status = getattr(getattr(err, "response", None), "status_code", None)
    if status is None:
        return "the Hub could not be reached: check the network (a proxy, HF_ENDPOINT)"
    if status in (401, 403):
        return "log in (`hf auth login`) or pass --hub_token"
    return f"the Hub answered {status}: check --hub_model_id and the token's rights (`hf auth login`, --hub_token)"


def check_hub_push(cfg: PPOConfig, reward_model_id: str | None = None) -> None:
    """With ``push_to_hub``: ``hub_model_id`` is set and the policy's and the reward model's repos
    (``reward_model_id``, default ``<hub_model_id>-reward-model``) are created (or found) now, by the main process,
    as transformers' ``Trainer`` does when it is made — so a missing id, no network or no login stops the run before
    anything is computed, not after its labels and reward model. (An existing repo the token may only read passes
    here: the Hub says so at the push.) The run pushes once, at its end (:func:`hf_prefs.pipeline.push_results`)."""
    if not cfg.push_to_hub:
        return
    if not cfg.hub_model_id:
        raise ValueError("hub_model_id: --push_to_hub needs --hub_model_id")
    if not PartialState().is_main_process:
        return
    api = HfApi(token=cfg.hub_token)
    for repo_id in (cfg.hub_model_id, reward_model_id or f"{cfg.hub_model_id}-reward-model"):
        try:
            api.create_repo(repo_id, exist_ok=True, private=cfg.hub_private_repo)
        except Exception as err:  # network, auth, offline mode: all stop the run, each with its own advice
            fix = hub_error_advice(err)
            raise ValueError(f"push_to_hub: cannot create or reach {repo_id!r} on the Hub before the run "
                             f"({type(err).__name__}: {err}); {fix}, or leave out --push_to_hub (nothing has run "
                             "yet)") from err
