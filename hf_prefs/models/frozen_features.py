"""Training the top of a model on stored outputs of its frozen bottom blocks.

With the input embeddings and the first ``n`` transformer blocks frozen (no parameter requires a gradient) and no
dropout in them, the output ``h_n`` of block ``n`` for a row of tokens is a fixed function of that row. Every epoch
after the first would compute it again: for the offline default's reward model (28 of SmolLM2's 30 blocks frozen)
that is ~90 % of a step's forward work. :class:`FrozenFeatureCache` computes ``h_n`` once per distinct row (without
gradients) and stores it; a step whose rows are all stored runs only blocks ``n+1..`` and the head on them.

- A row is identified by its real tokens (and, for rows packed by :func:`hf_prefs.core.packing.pack_shared_prefix`,
  their segment ids): right-padded rows, the real tokens first. Padding does not change ``h_n`` at the real
  positions (causal or block-diagonal attention never reads it), so a row's stored ``h_n`` serves it in any batch.
- The stored rows live in an anonymous temporary file (deleted when closed or when the process ends), read back
  into fresh tensors: resident memory does not grow with the number of labels.
- The model runs its ordinary forward (the score-head hook of :func:`hf_prefs.models.reward_model.per_token_scores`)
  with its block list temporarily cut: to ``blocks[:n]`` (with ``h_n`` captured; inside DDP/accelerate wrappers,
  which have nothing to synchronise there) to fill the store, to ``blocks[n:]`` (with ``h_n`` fed to block ``n+1``;
  through the wrappers, which all-reduce the top's gradients) to train.
- Not used (:func:`frozen_prefix_length` returns 0, with the reason) where it could change the result: dropout
  active in the frozen part, a trainable parameter before the blocks, per-layer attention types (sliding windows),
  activation checkpointing (its backward recomputes the blocks from their original inputs), an architecture whose
  blocks it cannot find. The trainer also leaves it off under ZeRO-3/FSDP, where the frozen blocks' forward is a
  collective that every process must run together.
- On one process every distinct row is computed once. On W processes each process stores the rows it has seen; the
  sampler reshuffles every epoch, so about (1 - 1/W) of a later epoch's rows on a process are new to it and computed
  then (with 2 processes and 2 epochs ~3/4 of the plain forward's frozen work is left; a process's store holds the
  rows it has seen).
- Disk: ``d`` values per token in the frozen output's dtype (SmolLM2-135M, float32: 2.3 KB per token, ~0.33 MB per
  packed best-of-4 label of ~140 tokens, ~1.6 GB for 5,000 labels), per process; logged as ``frozen_features_gb``.

Equal to the uncached forward up to float rounding (matmuls over other batch shapes); tests compare loss and
gradients.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .dropout import active_dropout, config_dropout
from .reward_model import reads_every_position, unwrap_model
from .wrappers import unwrap_distributed

__all__ = ["transformer_blocks", "freeze_bottom_layers", "check_freeze_depth", "check_freeze_layers",
           "frozen_prefix_length", "FrozenFeatureCache", "CHECKPOINTING"]

#: Why stored outputs and activation checkpointing do not mix.
CHECKPOINTING = ("activation checkpointing is on: it recomputes the trainable blocks in the backward pass from their "
                 "original inputs, not the stored ones (set activation_checkpointing=False)")

#: Trainable modules outside the blocks that run after them (final norms): they do not stop the caching.
_AFTER_BLOCKS = ("norm", "ln_f", "final_layernorm", "final_layer_norm")
#: Randomness in training mode that is not a dropout (:mod:`.dropout` owns what is): a MoE router's jitter.
_JITTER = "router_jitter_noise"
#: Config dropout rates of heads, which run after the blocks (GPT-2's ``summary_first_dropout``, ``classifier_dropout``).
_HEAD_RATE = re.compile(r"summary|classif")
#: The tensors of a batch that are per row (``(N, L)`` or ``(N, K)``), sliced when rows are computed apart.
ROW_KEYS = ("input_ids", "attention_mask", "position_ids", "segment_ids", "last_index")


def transformer_blocks(model: Any) -> tuple[nn.Module, str, nn.ModuleList]:
    """``(base model, attribute name, blocks)``: the transformer blocks of a ``PreTrainedModel`` (Llama-style
    ``layers``, GPT-2 ``h``), through DDP/PEFT wrappers."""
    model = unwrap_model(model)
    base = getattr(model, getattr(model, "base_model_prefix", ""), model)
    for name in ("layers", "h"):
        blocks = getattr(base, name, None)
        if isinstance(blocks, nn.ModuleList):
            return base, name, blocks
    raise ValueError(f"cannot find the transformer blocks of {type(model).__name__} (no `layers` or `h` module list)")


def _before_blocks(base: nn.Module, blocks: nn.ModuleList) -> list[tuple[str, nn.Parameter]]:
    """The base model's parameters outside the blocks that run before them: all but the final norms'
    (embeddings, GPT-2's position embeddings)."""
    in_blocks = {id(p) for p in blocks.parameters()}
    return [(name, p) for name, p in base.named_parameters()
            if id(p) not in in_blocks and not name.startswith(_AFTER_BLOCKS)]


def check_freeze_depth(n: int, layers: int, model_name: str = "") -> None:
    """A ``ValueError`` naming ``rm_freeze_layers`` when ``n`` exceeds the model's ``layers`` blocks."""
    if n > layers:
        where = f" ({model_name})" if model_name else ""
        raise ValueError(f"rm_freeze_layers: {n} exceeds the model's {layers} layers{where}")


def check_freeze_layers(model: nn.Module, n: int) -> tuple[nn.Module, nn.ModuleList]:
    """``(base, blocks)`` of ``model`` where its bottom ``n`` > 0 blocks can be frozen; else a ``ValueError`` naming
    ``rm_freeze_layers`` (no blocks found, or fewer than ``n``: :func:`check_freeze_depth`)."""
    try:
        base, _, blocks = transformer_blocks(model)
    except ValueError as err:
        raise ValueError(f"rm_freeze_layers: {err}") from err
    check_freeze_depth(n, len(blocks))
    return base, blocks


def freeze_bottom_layers(model: nn.Module, n: int) -> None:
    """Freeze what runs before the blocks (the input embeddings, GPT-2's position embeddings) and the first ``n``
    transformer blocks (GPT-2 ``h``, Llama ``layers``); ``n`` <= 0 leaves the model as it is."""
    if n <= 0:
        return
    base, blocks = check_freeze_layers(model, n)
    for _, p in _before_blocks(base, blocks):
        p.requires_grad_(False)
    for p in blocks[:n].parameters():
        p.requires_grad_(False)


def _frozen(module: nn.Module) -> bool:
    return not any(p.requires_grad for p in module.parameters())


def frozen_prefix_length(model: Any) -> tuple[int, str]:
    """``(n, reason)``: how many bottom blocks can be served from stored outputs, and why not more.

    ``n`` counts the leading blocks without a trainable parameter, provided nothing trainable runs before them
    (every parameter of the base model outside the blocks is frozen, final norms excepted), no dropout is active in
    the frozen part (blocks ``1..n`` and the modules around the blocks) and all layers share one attention type.
    ``n == 0`` means no caching; ``reason`` says why (empty when ``n`` > 0 and the next block is trainable).
    """
    try:
        base, name, blocks = transformer_blocks(model)
    except ValueError as err:
        return 0, str(err)
    if not reads_every_position(model):
        return 0, "the reward model reads one pooled reward per row (no score head at every position to serve)"
    inner = unwrap_model(model)
    if getattr(inner, "is_activation_checkpointing", False):
        return 0, CHECKPOINTING
    n = 0
    while n < len(blocks) and _frozen(blocks[n]):
        n += 1
    if n == 0:
        return 0, "the first block has trainable parameters"
    if n == len(blocks):
        return 0, "every block is frozen (nothing to train on top of the stored outputs)"
    for pname, p in _before_blocks(base, blocks):
        if p.requires_grad:
            return 0, f"{pname} is trainable and runs before the blocks"
    around = [m for mname, m in base.named_children() if mname != name]
    # the frozen blocks, the modules around them, the rates the trunk keeps itself (OPT's layerdrop), the config's
    drops = [active_dropout(module) for module in [*blocks[:n], *around]]
    drops.append(active_dropout(base, recurse=False))
    drops += [f"config.{key} = {rate}" for key, rate in config_dropout(inner.config) if not _HEAD_RATE.search(key)]
    if (jitter := getattr(inner.config, _JITTER, None)) and jitter > 0:
        drops.append(f"config.{_JITTER} = {jitter}")
    if drop := next((d for d in drops if d is not None), None):
        return 0, f"dropout is active in the frozen part: {drop}"
    layer_types = getattr(inner.config, "layer_types", None)
    if layer_types and len(set(layer_types)) > 1:
        return 0, f"the layers have different attention types ({sorted(set(layer_types))})"
    return n, ""


class FrozenFeatureCache:
    """Stored outputs ``h_n`` of the frozen bottom ``n`` blocks, one per distinct row; see the module docs.

    Args:
        model: the model (any wrapper); its blocks are found by :func:`transformer_blocks`.
        n_frozen: ``n`` (from :func:`frozen_prefix_length`), >= 1.
        directory: where the temporary file is created (default: the system's temporary directory).

    ``rows_computed`` / ``rows_read`` count the rows whose ``h_n`` was computed / read back.
    """

    def __init__(self, model: Any, n_frozen: int, directory: str | None = None) -> None:
        self.base, self.attr, self.blocks = transformer_blocks(model)
        if not 1 <= n_frozen < len(self.blocks):
            raise ValueError(f"n_frozen must be in [1, {len(self.blocks) - 1}], got {n_frozen}")
        self.n = n_frozen
        self.file = tempfile.TemporaryFile(dir=directory)
        self.index: dict[bytes, tuple[int, int]] = {}  # row key -> (byte offset, tokens)
        self.dtype: torch.dtype | None = None
        self.width: int | None = None
        self.end = 0
        self.rows_computed = self.rows_read = 0

    @property
    def bytes_stored(self) -> int:
        """Size of the stored outputs on disk."""
        return self.end

    def close(self) -> None:
        """Delete the stored outputs."""
        self.file.close()
        self.index.clear()

    # ------------------------------------------------------------------ rows
    @staticmethod
    def row_keys(batch: Mapping[str, torch.Tensor]) -> tuple[list[bytes], list[int]]:
        """``(keys, lengths)`` of the rows of ``batch``: each row's real tokens (the 0/1 ``attention_mask``'s count,
        right padding) and, when packed, their segment ids."""
        ids, mask = batch["input_ids"].cpu(), batch["attention_mask"].cpu()
        if mask.dim() != 2:
            raise ValueError(f"stored outputs need a 2D 0/1 attention_mask per row, got shape {tuple(mask.shape)}")
        real = mask.bool()
        counts = real.sum(1)
        wrong = (real != (torch.arange(mask.shape[1]) < counts[:, None])).any(1)
        if wrong.any():
            row = int(wrong.nonzero()[0, 0])
            raise ValueError(f"stored outputs need right-padded rows (real tokens first); row {row} is not")
        lengths: list[int] = counts.tolist()
        segments = batch["segment_ids"].cpu() if "segment_ids" in batch else None
        keys = []
        for i, n in enumerate(lengths):
            key = ids[i, :n].numpy().tobytes()
            if segments is not None:
                key += b"|" + segments[i, :n].numpy().tobytes()
            keys.append(key)
        return keys, lengths

    def _write(self, key: bytes, features: torch.Tensor) -> None:
        data = features.contiguous()
        self.file.seek(self.end)
        self.file.write(data.view(torch.uint8).numpy())  # the tensor's own bytes, no copy
        self.index[key] = (self.end, data.shape[0])
        self.end += data.numel() * data.element_size()

    def _read(self, key: bytes, out: torch.Tensor) -> None:
        """Row ``key``'s stored ``h_n`` read straight into the first rows of ``out`` (contiguous, the stored dtype)."""
        offset, length = self.index[key]
        target = out[:length].view(torch.uint8)
        self.file.seek(offset)
        if self.file.readinto(target.numpy()) != target.numel():
            raise OSError(f"short read of the stored outputs at byte {offset}")

    # ------------------------------------------------------------------ forward passes
    @contextmanager
    def _blocks(self, blocks: list[nn.Module]) -> Iterator[None]:
        """The model runs ``blocks`` only (its block list is restored after)."""
        setattr(self.base, self.attr, nn.ModuleList(blocks))
        try:
            yield
        finally:
            setattr(self.base, self.attr, self.blocks)

    def _compute(self, model: Any, run: Callable[[Any, dict[str, torch.Tensor]], Any], rows: dict[str, torch.Tensor],
                 keys: list[bytes], lengths: list[int]) -> None:
        """Run blocks ``1..n`` on ``rows`` (no gradients) and store each row's ``h_n`` at its real positions."""
        captured: list[torch.Tensor] = []

        def capture(_module: nn.Module, _args: Any, output: Any) -> None:
            captured.append(output[0] if isinstance(output, tuple) else output)

        model = unwrap_distributed(model)  # DDP/accelerate: no gradients to synchronise in a no-grad pass
        handle = self.blocks[self.n - 1].register_forward_hook(capture)
        try:
            with torch.no_grad(), self._blocks(list(self.blocks[: self.n])):
                run(model, rows)
        finally:
            handle.remove()
        if len(captured) != 1:
            raise RuntimeError(f"expected block {self.n} to run once, it ran {len(captured)} times")
        h = captured[0].detach()  # (N, L, d)
        if self.dtype is None:
            self.dtype, self.width = h.dtype, h.shape[-1]
        h = h.to("cpu", self.dtype)  # one transfer for all rows
        for i, (key, length) in enumerate(zip(keys, lengths)):
            self._write(key, h[i, :length])
        self.rows_computed += len(keys)

    def forward(self, model: Any, run: Callable[[Any, dict[str, torch.Tensor]], Any],
                batch: dict[str, torch.Tensor]) -> Any:
        """``run(model, batch)`` (a forward that returns what the caller needs, e.g. rewards) with blocks ``1..n``
        served from the store: rows not stored yet are computed first (by ``run`` on those rows, cut to the frozen
        blocks), then ``run`` goes through blocks ``n+1..`` only, fed the stored ``h_n`` (zeros at padding)."""
        if model.training and getattr(unwrap_model(model), "is_activation_checkpointing", False):
            raise RuntimeError(f"stored outputs cannot be used: {CHECKPOINTING}")
        keys, lengths = self.row_keys(batch)
        first: dict[bytes, int] = {}  # each row not stored yet, once (a batch may hold the same label twice)
        for i, key in enumerate(keys):
            if key not in self.index:
                first.setdefault(key, i)
        missing = list(first.values())
        if missing:
            index = torch.tensor(missing, device=batch["input_ids"].device)
            rows = {k: v.index_select(0, index) for k, v in batch.items() if k in ROW_KEYS}
            self._compute(model, run, rows, [keys[i] for i in missing], [lengths[i] for i in missing])
        n_rows, width = batch["input_ids"].shape
        h = torch.zeros(n_rows, width, self.width, dtype=self.dtype)
        for i, key in enumerate(keys):
            self._read(key, h[i])
        self.rows_read += n_rows
        h = h.to(batch["input_ids"].device)

        def feed(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            if args:
                return (h, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": h}

        handle = self.blocks[self.n].register_forward_pre_hook(feed, with_kwargs=True)
        try:
            with self._blocks(list(self.blocks[self.n :])):
                return run(model, batch)
        finally:
            handle.remove()
