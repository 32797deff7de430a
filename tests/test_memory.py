"""release_free_memory: freed heap pages go back to the OS (glibc), so the next phase starts from what is live."""

import sys

import pytest
import torch

from hf_prefs.memory import _MALLOC_TRIM, release_free_memory


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux") or _MALLOC_TRIM is None, reason="glibc's malloc_trim")
@pytest.mark.parametrize("collect_garbage", [True, False])
def test_release_returns_fragmented_heap_pages(collect_garbage):
    # 3,000 tensors of 64 KiB (below glibc's mmap threshold: on the heap); every 16th stays alive, so the freed
    # ones sit between live ones and the heap cannot shrink from its top: freed but resident
    tensors = [torch.ones(16 * 1024) for _ in range(3000)]
    keep = tensors[::16]
    del tensors
    before = _rss_mb()
    assert release_free_memory(collect_garbage=collect_garbage)
    after = _rss_mb()
    assert before - after > 100, (before, after)  # ~176 MB freed of 188 MB; the kept 12 MB stay
    assert all(float(t[0]) == 1.0 for t in keep)


@pytest.mark.parametrize("lora", [False, True])
def test_a_ppo_update_leaves_no_reference_cycles_holding_tensors(tmp_path, gpt2_tokenizer, lora):
    """PPOTrainer returns an update's heap with the trim alone (no full ``gc.collect()`` each update, 0.1-0.3 s in a
    large process): that is only right while nothing an update makes is freed by the cycle collector alone. With
    ``gc.DEBUG_SAVEALL`` through training (a checkpoint saved, samples shown), every collection's garbage is kept:
    none of it is a tensor."""
    import gc

    from test_ppo_trainer import make_policy, make_trainer

    policy = make_policy()
    if lora:
        from peft import LoraConfig, get_peft_model

        policy = get_peft_model(policy, LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True, task_type="CAUSAL_LM"))
    trainer = make_trainer(tmp_path, gpt2_tokenizer, model=policy, total_episodes=16, save_strategy="steps",
                           save_steps=1, num_sample_generations=2)
    gc.collect()  # what building the trainer left
    gc.garbage.clear()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        trainer.train()
        gc.collect()
    finally:
        gc.set_debug(0)
    kept, tensors = len(gc.garbage), [o.shape for o in gc.garbage if isinstance(o, torch.Tensor)]
    gc.garbage.clear()
    assert trainer.state.global_step == 2 and kept and not tensors, tensors
