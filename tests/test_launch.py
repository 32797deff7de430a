"""How a run was launched: the process-count checks (hf_prefs/trainers/launch.py), without launching processes."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from hf_prefs.trainers.launch import check_process_count

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
