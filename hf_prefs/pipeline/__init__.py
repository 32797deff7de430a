"""The paper's pipeline as stage functions; ``recipes/*.py`` and :func:`run_pipeline` call them in this order:

================================  =========================================================================
stage                             function
================================  =========================================================================
arguments                         :class:`PipelineArguments`, :func:`validate_pipeline_config`,
                                  :func:`resolve_cpu_precision`
base model, queries               :func:`load_base`, :func:`split_queries`, :func:`check_stages_fit`
labels                            :func:`collect_labels` (or :func:`online_label_loop` for online rounds),
                                  :func:`save_labels`; a resumed run: :func:`saved_labels`
reward model                      :func:`train_reward_model`; a resumed run: :func:`saved_reward_model`
policy                            :func:`make_ppo_trainer`, :func:`train_policy`, :func:`share_rho_weights`
evaluation                        :func:`evaluate_policy` (rho and pi on the held-out queries), :func:`learned_reward`
results, models, cards            :func:`write_results`, :func:`push_results`
================================  =========================================================================
"""

from .arguments import (
    LABEL_MODES,
    LABEL_SOURCES,
    PipelineArguments,
    model_dtype,
    online_schedule,
    resolve_cpu_precision,
    validate_pipeline_config,
)
from .evaluate import PolicyEvaluation, compare_policies, evaluate_policy
from .labels import collect_labels, label_source, make_labeler
from .policy import (
    KnownRewardTrackingPPOTrainer,
    learned_reward,
    make_ppo_trainer,
    online_label_loop,
    resume_checkpoint,
    resume_requested,
    share_rho_weights,
    train_policy,
    trained_policy,
)
from .results import (
    MetricsFileCallback,
    StageTimer,
    plot_kl_vs_reward,
    push_results,
    rouge_before_after,
    run_precision,
    samples_markdown,
    write_metrics,
    write_results,
)
from .reward import train_reward_model
from .saved_stages import online_label_info, save_labels, saved_labels, saved_reward_model, warn_replacing_earlier_run
from .run import configure_logging, main, parse_args, run_pipeline
from .setup import Base, QuerySplit, check_stages_fit, load_base, split_queries

__all__ = [
    "LABEL_MODES",
    "LABEL_SOURCES",
    "PipelineArguments",
    "model_dtype",
    "online_schedule",
    "validate_pipeline_config",
    "resolve_cpu_precision",
    "PolicyEvaluation",
    "compare_policies",
    "evaluate_policy",
    "collect_labels",
    "label_source",
    "make_labeler",
    "KnownRewardTrackingPPOTrainer",
    "learned_reward",
    "make_ppo_trainer",
    "online_label_info",
    "online_label_loop",
    "resume_checkpoint",
    "resume_requested",
    "share_rho_weights",
    "train_policy",
    "trained_policy",
    "MetricsFileCallback",
    "StageTimer",
    "plot_kl_vs_reward",
    "run_precision",
    "push_results",
    "rouge_before_after",
    "samples_markdown",
    "save_labels",
    "saved_labels",
    "saved_reward_model",
    "warn_replacing_earlier_run",
    "write_metrics",
    "write_results",
    "train_reward_model",
    "configure_logging",
    "main",
    "parse_args",
    "run_pipeline",
    "Base",
    "QuerySplit",
    "load_base",
    "split_queries",
    "check_stages_fit",
]
