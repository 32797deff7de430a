"""torch_compile in hf_prefs' PPO: the repeated blocks compiled (accelerate's regional compilation), sampling eager,
the rollout's log-probs and a separate reference through the same compiled kernels."""

from __future__ import annotations

import pytest
import torch
from accelerate.utils import TorchDynamoPlugin
from accelerate.utils.other import has_compiled_regions
from torch import nn
from torch._dynamo.utils import counters

from hf_prefs.models.sharding import generation_model
from hf_prefs.trainers.compilation import DEEPSPEED_COMPILE_WARNING, compiled_as_policy, compiles, ppo_dynamo_plugin

from test_ppo_trainer import length_reward, logged, make_trainer


def test_ppo_compiles_regions_and_not_under_deepspeed(caplog):
    plugin = ppo_dynamo_plugin(TorchDynamoPlugin(backend="inductor", use_regional_compilation=False), deepspeed=False)
    assert compiles(plugin) and plugin.use_regional_compilation  # also where accelerate launch exported "False"
    off = ppo_dynamo_plugin(TorchDynamoPlugin(backend="no"), deepspeed=False)
    assert not compiles(off) and not off.use_regional_compilation
    with caplog.at_level("WARNING"):
        under_deepspeed = ppo_dynamo_plugin(TorchDynamoPlugin(backend="inductor"), deepspeed=True)
    assert not compiles(under_deepspeed) and DEEPSPEED_COMPILE_WARNING in caplog.text
    assert not compiles(None)


def test_sampling_runs_compiled_modules_eager(gpt2_tokenizer):
    """A compiled model sampled token by token: nothing is compiled (decoding with a growing cache would recompile)."""
    from accelerate.utils import compile_regions

    from hf_prefs.models.generation import sample_responses
    from test_ppo_trainer import make_policy

    torch._dynamo.reset()
    counters.clear()
    try:
        model = compile_regions(make_policy())
        ids = torch.tensor([[gpt2_tokenizer.eos_token_id, 464, 3290], [464, 3290, 318]])
        out = sample_responses(model, ids, (ids != gpt2_tokenizer.eos_token_id).long(), 4, 1.0,
                               torch.Generator().manual_seed(0))
        assert out.shape == (2, 4) and counters["stats"]["unique_graphs"] == 0
    finally:
        torch._dynamo.reset()


def test_compiled_as_policy_leaves_an_uncompiled_run_alone():
    module = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    assert compiled_as_policy(module, TorchDynamoPlugin(backend="no")) is module
    assert compiled_as_policy(module, None) is module


@pytest.mark.slow
def test_compiled_ppo_matches_eager_in_float32(tmp_path, gpt2_tokenizer):
    """Same seeds, float32: the compiled run logs the eager run's KL and losses (inductor's kernels round
    differently: within 1e-3 relative); the first rollout's KL is exactly zero (the separate reference is compiled as the policy);
    sampling runs the uncompiled model."""
    eager = make_trainer(tmp_path / "eager", gpt2_tokenizer, reward=length_reward, total_episodes=24)
    eager.train()
    torch._dynamo.reset()
    counters.clear()
    try:
        compiled = make_trainer(tmp_path / "compiled", gpt2_tokenizer, reward=length_reward, total_episodes=24,
                                torch_compile=True)
        compiled.train()
        assert has_compiled_regions(compiled.model_wrapped)
        assert compiled.accelerator.state.dynamo_plugin.use_regional_compilation
        assert counters["stats"]["unique_graphs"] > 0  # dynamo compiled graphs (not an eager fallback)
        assert has_compiled_regions(compiled._reference_scorer) and not has_compiled_regions(compiled.ref_model)
        with generation_model(compiled.model_wrapped, compiled.accelerator) as sampler:
            assert sampler is compiled.model and not has_compiled_regions(sampler)
        kl = logged(compiled, "objective/kl")
        assert kl[0] == 0.0
        for key in ("objective/kl", "loss/policy_avg", "loss/value_avg", "policy/approxkl_avg"):
            assert logged(compiled, key) == pytest.approx(logged(eager, key), rel=1e-3, abs=1e-5), key
        assert not has_compiled_regions(eager.model_wrapped)
    finally:
        torch._dynamo.reset()


@pytest.mark.slow
def test_compiled_ppo_under_bf16_warns_that_the_ratio_starts_off_one(tmp_path, gpt2_tokenizer, caplog):
    """LoRA on a bf16 base under bf16 autocast (the offline default's setting): the warning names the rounding
    difference; the first KL is still exactly zero (policy with adapters on and off share the compiled no-grad graph)."""
    from peft import LoraConfig

    from test_ppo_trainer import QUERIES, make_config, make_policy
    from datasets import Dataset
    from hf_prefs.trainers.compilation import HALF_PRECISION_COMPILE_WARNING
    from hf_prefs.trainers.ppo_trainer import PPOTrainer

    try:
        trainer = PPOTrainer(
            model=make_policy().to(torch.bfloat16), reward_model=length_reward,
            args=make_config(tmp_path, bf16=True, use_cpu=True, torch_compile=True, total_episodes=8),
            train_dataset=Dataset.from_dict({"query": QUERIES * 2}), processing_class=gpt2_tokenizer,
            peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], lora_dropout=0.0),
        )
        with caplog.at_level("WARNING"):
            trainer.train()
        assert HALF_PRECISION_COMPILE_WARNING in caplog.text
        assert has_compiled_regions(trainer.model_wrapped) and trainer._reference_scorer is None
        assert logged(trainer, "objective/kl") == [0.0]
    finally:
        torch._dynamo.reset()
