"""What ``torch_compile=True`` compiles in hf_prefs' PPO: the model's repeated blocks, one at a time.

transformers' ``Trainer`` hands ``torch_compile`` to accelerate as a ``TorchDynamoPlugin``, and ``prepare`` then
compiles the whole model. For PPO's policy (with its value head, LoRA adapters and, on a separate trunk, a value
model) :class:`RegionalCompileMixin` always turns on accelerate's regional compilation instead
(``accelerate.utils.compile_regions``: each repeated transformer block is compiled once and the compiled code is
reused by every block of its class; ``accelerate launch`` exports its own regional flag, "False" unless asked, which
PPO does not follow). Measured on a 2-vCPU CPU for SmolLM2-135M + LoRA: the whole model took 417 s to compile and ran
slower than eager; its blocks compile in well under a minute (``benchmarks/README.md``). Under DeepSpeed
``torch_compile`` is switched off with a warning (accelerate compiles a DeepSpeed model in place, untested here).

The PPO epochs' forward and backward, the rollout's log-prob and value passes and the reference's run through the
compiled blocks (the same kernels on both sides of the ratio pi / pi_old and of the KL; :func:`compiled_as_policy`
for a separate reference). Sampling runs eager (``hf_prefs.models.generation.sample_responses``), since decoding with
a growing cache would recompile at every step.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from accelerate.utils import DynamoBackend, compile_regions
from transformers.utils import logging

logger = logging.get_logger(__name__)

#: Logged when a PPO run compiles under bf16/fp16 autocast (measured: SmolLM2-135M + LoRA, bf16, CPU, 4 x 72 tokens).
HALF_PRECISION_COMPILE_WARNING = (
    "torch_compile under bf16/fp16: the compiled training graph (PPO epochs) and no-grad graph (rollout log-probs) "
    "round differently, so the ratio pi / pi_old starts off 1 (SmolLM2-135M: mean |delta log p| 0.015 per token, "
    "max 0.16); in float32 the two graphs gave equal log-probs. The reference and the rollout policy share the "
    "no-grad graph, so the first KL is 0."
)
DEEPSPEED_COMPILE_WARNING = "torch_compile is ignored under DeepSpeed by hf_prefs' PPO (not tested there); it runs eager."


def compiles(dynamo_plugin: Any) -> bool:
    """Whether accelerate compiles with ``dynamo_plugin`` (a backend other than "no")."""
    return dynamo_plugin is not None and dynamo_plugin.backend != DynamoBackend.NO  # the test prepare() makes


def ppo_dynamo_plugin(dynamo_plugin: Any, deepspeed: bool) -> Any:
    """``dynamo_plugin`` as PPO uses it: regional compilation when it compiles; under DeepSpeed backend "no"."""
    if not compiles(dynamo_plugin):
        return dynamo_plugin
    if deepspeed:
        logger.warning(DEEPSPEED_COMPILE_WARNING)
        dynamo_plugin.backend = DynamoBackend.NO
        return dynamo_plugin
    dynamo_plugin.use_regional_compilation = True
    return dynamo_plugin


class RegionalCompileMixin:
    """For a ``transformers.Trainer`` subclass: its Accelerator's dynamo plugin is :func:`ppo_dynamo_plugin`'s. Put it
    before the Trainer base class."""

    def _build_accelerator_args(self, **kwargs: Any) -> dict[str, Any]:
        args = super()._build_accelerator_args(**kwargs)  # type: ignore[misc]
        if "dynamo_plugin" in args:
            deepspeed = (args.get("deepspeed_plugin") is not None or bool(getattr(self.args, "deepspeed", None))  # type: ignore[attr-defined]
                         or os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true")
            args["dynamo_plugin"] = ppo_dynamo_plugin(args["dynamo_plugin"], deepspeed)
        return args


def compiled_as_policy(module: Any, dynamo_plugin: Any) -> Any:
    """``module`` compiled as ``accelerator.prepare`` compiles the policy with ``dynamo_plugin`` (its backend, mode and
    regional choice), or ``module`` itself without one (``torch_compile=False``). For a separate reference model:
    log rho and log pi then come from the same kernels, so the first rollout's KL is zero up to rounding, as without
    compilation. A new module sharing ``module``'s parameters (``compile_regions``) or a ``torch.compile`` wrapper."""
    if not compiles(dynamo_plugin):
        return module
    if dynamo_plugin.use_regional_compilation:
        return compile_regions(module, **dynamo_plugin.to_kwargs())
    return torch.compile(module, **dynamo_plugin.to_kwargs())
