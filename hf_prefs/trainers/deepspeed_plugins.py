"""Several Trainers under DeepSpeed in one process: each with its own DeepSpeed plugin.

accelerate keeps one ``AcceleratorState`` per process, and the first ``Accelerator`` fixes its DeepSpeed plugins: a
second ``Accelerator(deepspeed_plugin=...)`` raises ``NotImplementedError`` ("You cannot pass in a
`deepspeed_plugin` when creating a second `Accelerator`"). transformers' Trainer always passes its arguments' plugin,
so the pipeline's second trainer — PPO after the reward model's, or a reward model retrained between PPO updates in
online mode — could not start under DeepSpeed. accelerate's own way to hold several models' configurations is several
named plugins in the state, one selected at a time (``AcceleratorState.select_deepspeed_plugin``): a later trainer's
plugin is added to the state under a name of its own and selected, and its ``Accelerator`` is created without a plugin
(it adopts the state's, with this one selected). Each trainer keeps its own DeepSpeed config (batch sizes, gradient
accumulation, "auto" values filled from its own arguments).
"""

from __future__ import annotations

from typing import Any

from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType

from .._compat import accelerator_state_exists

__all__ = ["DeepSpeedPluginMixin", "plugin_for_new_accelerator", "select_plugin"]


def _deepspeed_state() -> AcceleratorState | None:
    """The process's AcceleratorState if an Accelerator already set it up with DeepSpeed plugins, else None."""
    if not accelerator_state_exists():
        return None
    state = AcceleratorState()
    if state.distributed_type != DistributedType.DEEPSPEED or not state.deepspeed_plugins:
        return None
    return state


def _named_plugins(state: AcceleratorState) -> dict[str, Any]:
    """The state's plugins by name (a first Accelerator given one plugin stores it bare: it becomes "default")."""
    if not isinstance(state.deepspeed_plugins, dict):
        state.deepspeed_plugins = {"default": state.deepspeed_plugins}
    return state.deepspeed_plugins


def _name_of(state: AcceleratorState, plugin: Any) -> str | None:
    return next((name for name, p in _named_plugins(state).items() if p is plugin), None)


def plugin_for_new_accelerator(plugin: Any) -> Any:
    """The ``deepspeed_plugin`` to create a Trainer's ``Accelerator`` with: ``plugin`` itself for the process's first
    DeepSpeed Accelerator (or without DeepSpeed); else None, after registering ``plugin`` in the state under its own
    name and selecting it."""
    state = _deepspeed_state()
    if plugin is None or state is None:
        return plugin
    name = _name_of(state, plugin)
    if name is None:
        plugins = _named_plugins(state)
        name = f"trainer_{len(plugins)}"
        plugins[name] = plugin
    state.select_deepspeed_plugin(name)
    return None


def select_plugin(plugin: Any) -> None:
    """Select ``plugin`` again (a trainer that goes on after another one was created, e.g. PPO after an online round's
    reward model): the state's selected plugin is the one ``accelerator.state.deepspeed_plugin`` returns and the one
    transformers reads for ZeRO-3 loading. A no-op without DeepSpeed or for a plugin the state does not hold."""
    state = _deepspeed_state()
    if plugin is None or state is None:
        return
    name = _name_of(state, plugin)
    if name is not None:
        state.select_deepspeed_plugin(name)


class DeepSpeedPluginMixin:
    """For a ``transformers.Trainer`` subclass: its Accelerator is created with
    :func:`plugin_for_new_accelerator` (so the reward model's and PPO's trainers can follow each other in one
    process). Put it before the Trainer base class."""

    def _build_accelerator_args(self, **kwargs: Any) -> dict[str, Any]:
        """Trainer's, with this trainer's DeepSpeed plugin added to the process's state when an Accelerator exists
        already."""
        args = super()._build_accelerator_args(**kwargs)
        args["deepspeed_plugin"] = plugin_for_new_accelerator(args.get("deepspeed_plugin"))
        return args
