"""How a run was launched and how it ends (hf_prefs/trainers/launch.py), without launching processes: the
process-count checks, and what a destroyed group leaves behind."""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from hf_prefs.trainers.launch import check_process_count, release_destroyed_groups

from multiproc.exit_run import gloo_threads  # the 2-process exit test's script reads the threads the same way

LAUNCH_VARS = ("MASTER_ADDR", "MASTER_PORT", "ACCELERATE_USE_CPU", "WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


@pytest.fixture
def launch_env(monkeypatch):
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_accelerate_asked_for_several_processes_but_starting_one_is_warned(launch_env, caplog):
    """accelerate's simple launcher (a MULTI_CPU config without mpirun) exports MASTER_ADDR for num_processes > 1 and
    starts one process: said, not silent. A plain run, torchrun (WORLD_SIZE) and mpirun (PMI_SIZE) are not."""
    alone = SimpleNamespace(num_processes=1)
    with caplog.at_level(logging.WARNING, logger="hf_prefs.trainers.launch"):
        check_process_count(alone)  # python recipes/sentiment.py
        launch_env.setenv("ACCELERATE_USE_CPU", "True")
        check_process_count(alone)  # accelerate launch with one process
        assert caplog.text == ""
        launch_env.setenv("MASTER_ADDR", "127.0.0.1")
        launch_env.setenv("MASTER_PORT", "29500")
        check_process_count(alone)
        assert "asked for several processes (a MULTI_CPU config" in caplog.text and "started one" in caplog.text
        caplog.clear()
        launch_env.setenv("PMI_SIZE", "1")  # under mpirun
        check_process_count(alone)
        launch_env.delenv("PMI_SIZE")
        launch_env.setenv("WORLD_SIZE", "2")
        check_process_count(SimpleNamespace(num_processes=2))
        assert caplog.text == ""
    with pytest.raises(RuntimeError, match="2 processes were launched .* set use_cpu: true"):
        check_process_count(alone)  # torchrun's processes that do not see each other


def test_a_launch_whose_processes_run_alone_stops_before_the_recipe_labels(launch_env, tmp_path):
    """torchrun's 2 processes on a CPU launch without use_cpu each ran the whole labels stage alone, both writing
    labels.jsonl, and stopped at the reward model: the recipe's config check stops them first."""
    from hf_prefs import PPOConfig
    from hf_prefs.pipeline import PipelineArguments, validate_pipeline_config

    cfg = PPOConfig(output_dir=str(tmp_path / "run"), report_to="none")
    pa = PipelineArguments(task="sentiment", label_source="human", label_queue_dir=str(tmp_path / "q"))
    validate_pipeline_config(pa, cfg)
    launch_env.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="2 processes were launched .* set use_cpu: true"):
        validate_pipeline_config(pa, cfg)


def test_labels_that_do_not_fill_the_processes_last_batch_are_said():
    """On 2 processes the reward trainer's last batch of an epoch is filled with repeated labels (accelerate's
    even_batches): the run departs there from one process's (20 labels, batches of 4: its third step trained on 8)."""
    import warnings

    from datasets import Dataset

    from hf_prefs.trainers.reward_trainer import _warn_uneven_batches

    labels = Dataset.from_dict({"best": [0] * 20})
    with pytest.warns(UserWarning, match=r"20 train labels on 2 processes: the last batch of each epoch holds 4 of "
                                         r"per_device_train_batch_size x processes = 8, and accelerate fills it with 4"):
        _warn_uneven_batches(labels, 4, 2, drop_last=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for per_device, processes, drop_last in ((5, 2, False), (4, 1, False), (4, 2, True)):
            _warn_uneven_batches(labels, per_device, processes, drop_last)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads thread names from /proc")
def test_a_destroyed_group_held_by_a_ddp_module_and_a_default_argument_is_freed(tmp_path):
    """``destroy_process_group`` leaves the gloo group alive while a DDP module or a function default holds it (its
    threads run on through interpreter finalization); releasing them frees it, and the default becomes ``None``."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model = DistributedDataParallel(torch.nn.Linear(4, 4))
        model(torch.ones(2, 4)).sum().backward()
        namespace: dict = {}
        # as a module imported after init_process_group binds it (torch.distributed.nn.functional, DeepSpeed's comm)
        exec("def barrier(group=dist.group.WORLD, *, also=dist.group.WORLD):\n    return group, also", {"dist": dist},
             namespace)
        group = dist.group.WORLD
        assert namespace["barrier"]() == (group, group)
    finally:
        dist.destroy_process_group()
    assert gloo_threads()  # pt_gloo_runloop, gloo_tcp_loop (2 or 3 of them when read): the module and defaults hold it
    assert release_destroyed_groups(None) == 1  # without a default group: only the DDP module (no None default moved)
    assert namespace["barrier"]() == (group, group)
    assert release_destroyed_groups(group) == 2  # the defaults, the keyword-only defaults
    del group
    gc.collect()
    assert gloo_threads() == []
    assert namespace["barrier"]() == (None, None)  # None: whichever default group there is when called
    assert "process_group" not in vars(model) and "reducer" not in vars(model)
