"""What a response is: the rollout spec (one owner of the cut and penalty rules), as lm-human-preferences'
``TaskHParams``.

Every user of a sampled response — PPO, the labelers, the reward-normalization sampler, the online label loop and
the held-out evaluation — takes one :class:`RolloutSpec` and calls :func:`cut_responses` on it, so a sample is cut
at the same place everywhere.

- Sampling is fixed-length: exactly ``response_length`` tokens from softmax(logits / T), no stop at EOS (paper).
- The cut: a response keeps its tokens up to and including the first ``truncate_token_id`` at index >=
  ``truncate_after``; only the reward (and the labeler) sees the cut text. No such token: the row is kept whole.
  The token is the paper's ``truncate_token`` (books: ".") or TRL's ``stop_token``/``stop_token_id`` ("eos" or an id).
  TRL's ``missing_eos_penalty`` alone cuts nothing: TRL 1.12 set the policy's ``generation_config.eos_token_id`` to
  the stop token, None without one, so its rows ran past a sampled EOS to the full length, as here.
- Validity: a row is valid when its kept part holds ``penalty_token_id`` at index >= ``truncate_after``. Paper:
  the penalty token is the truncate token (valid = "was cut"); TRL's ``missing_eos_penalty``: it is EOS; TRL's stop
  token without ``missing_eos_penalty``: none (every row valid, as in TRL).
- The penalty of an invalid row: ``"replace"`` its score by ``penalty_value`` (paper: -1) or ``"subtract"``
  ``penalty_value`` from it (TRL's ``missing_eos_penalty``).
- Text: the kept tokens decoded with ``skip_special_tokens=True`` (a sampled EOS is not shown to the labeler or a
  reward function). A reward *model* under TRL's stop token reads the stop token too (:meth:`RolloutSpec.model_texts`),
  as TRL gave it the ids through the stop token.
- What PPO learns from (:meth:`RolloutSpec.masks`): the paper's cut is for the reward only — KL, values and the PPO
  losses use every sampled token and the score sits on the last one. TRL's stop token ends the episode
  (``mask_after_cut``): tokens after it are masked out of the KL and the policy loss, the value mask reaches one
  step further, and the score sits one position after the stop token (on the last token when there is no room).

Shapes: B = batch, Lr = response length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch

__all__ = [
    "RolloutSpec",
    "Cut",
    "cut_responses",
    "apply_penalty",
    "check_truncate_after",
    "token_id_of",
    "pad_token_id_of",
    "left_pad",
    "position_ids",
]

PenaltyMode = Literal["replace", "subtract"]


class Cut(NamedTuple):
    """Where each response is cut: ``lengths`` (B,) tokens kept, ``valid`` (B,) bool (no penalty)."""

    lengths: torch.Tensor
    valid: torch.Tensor


def token_id_of(tokenizer: Any, token: str | int | None, field: str = "truncate_token") -> int | None:
    """The id of a single-token string (``"."`` is GPT-2 id 13), an id as given, or None.

    Tokens that merely contain the character (GPT-2's '."', '...', ' .') are other ids and do not count, as in the
    paper. A string that is not exactly one token raises, naming ``field``.
    """
    if token is None or isinstance(token, int):
        return token
    ids = tokenizer(token, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(
            f"{field}={token!r} is {len(ids)} tokens ({ids}) for this tokenizer; it must be exactly one token "
            "(or set truncate_token_id)"
        )
    return int(ids[0])


@dataclass(frozen=True)
class RolloutSpec:
    """The settings that decide what a response is, resolved once (see the module docstring).

    Build it with :meth:`from_config` (a ``PPOConfig`` or anything with its field names) or :meth:`build`.
    """

    response_length: int = 24
    temperature: float = 0.7
    truncate_token_id: int | None = None
    truncate_after: int = 0
    penalty_token_id: int | None = None
    penalty: PenaltyMode = "replace"
    penalty_value: float = -1.0
    pad_token_id: int = 0
    mask_after_cut: bool = False

    def __post_init__(self) -> None:
        if self.response_length < 1:
            raise ValueError(f"response_length: must be >= 1, got {self.response_length}")
        if not self.temperature > 0:
            raise ValueError(f"temperature: must be > 0, got {self.temperature}")
        check_truncate_after(self.truncate_after, self.response_length, self.truncate_token_id is not None)
        if self.penalty not in ("replace", "subtract"):
            raise ValueError(f"penalty: must be 'replace' or 'subtract', got {self.penalty!r}")

    @classmethod
    def build(
        cls,
        tokenizer: Any,
        *,
        response_length: int = 24,
        temperature: float = 0.7,
        truncate_token: str | int | None = None,
        truncate_token_id: int | None = None,
        stop_token: str | None = None,
        stop_token_id: int | None = None,
        truncate_after: int = 0,
        penalty_reward_value: float = -1.0,
        missing_eos_penalty: float | None = None,
    ) -> RolloutSpec:
        """Resolve the paper's and TRL's names into one spec.

        The cut token, first match wins: ``stop_token="eos"`` (TRL) -> the tokenizer's EOS; ``stop_token_id`` (TRL);
        ``truncate_token_id``; ``truncate_token`` (one token of text, paper "."). None of them: no cut, with
        ``missing_eos_penalty`` too (TRL 1.12 generated past EOS without a stop token: it set the policy's
        ``generation_config.eos_token_id`` to None, so its rows ran the full length and were scored whole).
        The penalty: ``missing_eos_penalty`` set (TRL) -> subtract it from rows without EOS; else with TRL's stop
        token none (TRL applies none without ``missing_eos_penalty``); else the paper's rule, replace the score of
        rows without the cut token by ``penalty_reward_value``.
        """
        if stop_token not in (None, "eos"):
            raise ValueError(f"stop_token: must be 'eos' or None, got {stop_token!r}")
        if stop_token is not None and stop_token_id is not None:
            raise ValueError("stop_token: set either stop_token or stop_token_id, not both")
        eos = getattr(tokenizer, "eos_token_id", None)
        stop = stop_token is not None or stop_token_id is not None  # TRL's stop token ends the episode (masks)
        if stop_token == "eos":
            if eos is None:
                raise ValueError("stop_token: 'eos' but the tokenizer has no eos token")
            cut_id: int | None = int(eos)
        elif stop_token_id is not None:
            cut_id = _token_id_in(tokenizer, stop_token_id, "stop_token_id")
        elif truncate_token_id is not None:
            cut_id = _token_id_in(tokenizer, truncate_token_id, "truncate_token_id")
        else:
            cut_id = token_id_of(tokenizer, truncate_token)
        if missing_eos_penalty is not None:
            if missing_eos_penalty < 0:
                raise ValueError(f"missing_eos_penalty: must be >= 0 (it is subtracted), got {missing_eos_penalty}")
            if eos is None:
                raise ValueError("missing_eos_penalty: the tokenizer has no eos token")
            penalty: PenaltyMode = "subtract"
            penalty_token, value = int(eos), float(missing_eos_penalty)
        else:  # TRL's stop token alone penalizes nothing; the paper's truncate token replaces
            penalty, penalty_token, value = "replace", None if stop else cut_id, float(penalty_reward_value)
        return cls(
            response_length=int(response_length),
            temperature=float(temperature),
            truncate_token_id=cut_id,
            truncate_after=int(truncate_after),
            penalty_token_id=penalty_token,
            penalty=penalty,
            penalty_value=value,
            pad_token_id=pad_token_id_of(tokenizer),
            mask_after_cut=stop,
        )

    @classmethod
    def from_config(cls, args: Any, tokenizer: Any) -> RolloutSpec:
        """The spec of a ``PPOConfig`` (or any object with its field names; missing fields take the defaults)."""
        names = ("response_length", "temperature", "truncate_token", "truncate_token_id", "stop_token", "stop_token_id",
                 "truncate_after", "penalty_reward_value", "missing_eos_penalty")
        return cls.build(tokenizer, **{n: getattr(args, n) for n in names if hasattr(args, n)})

    # ---- the rules ---------------------------------------------------------------------------------------------
    def cut(self, response_ids: torch.Tensor) -> Cut:
        """:func:`cut_responses` with this spec."""
        return cut_responses(response_ids, self)

    def penalize(self, scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """:func:`apply_penalty` with this spec."""
        return apply_penalty(scores, valid, self.penalty, self.penalty_value)

    @staticmethod
    def kept_ids(response_ids: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        """The token ids of each cut response: row i's first ``lengths[i]``."""
        return [ids[:n].tolist() for ids, n in zip(response_ids.cpu(), lengths.cpu().tolist())]

    def texts(self, tokenizer: Any, response_ids: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        """The text of each cut response (what the labeler, reward functions and a reward model trained here see; a
        reward model from elsewhere under TRL's stop token reads :meth:`model_texts`)."""
        return tokenizer.batch_decode(self.kept_ids(response_ids, lengths), skip_special_tokens=True)

    def model_texts(self, tokenizer: Any, texts: list[str], response_ids: torch.Tensor, lengths: torch.Tensor,
                    reader: Any) -> list[str]:
        """What a reward *model* reads of each cut response: ``texts`` (:meth:`texts`), and under TRL's stop token
        (``mask_after_cut``) the stop token's text after the rows cut at it where decoding dropped it (a special token:
        EOS). TRL 1.12 scored the ids through the stop token, read at the last one that is not the pad, so a reward
        model trained by ``trl.RewardTrainer`` on text rows (it appends EOS) is read at the EOS it learned at. Not
        appended where the reward model's tokenizer ``reader`` does not hold the token as a special token, or pads with
        it (its EOS where it has no pad, as TRL's RewardTrainer pads): TRL's read, and a sequence classifier's, is then
        the token before it — the text's last."""
        stop = self.truncate_token_id
        if not self.mask_after_cut or stop is None or stop not in getattr(tokenizer, "all_special_ids", ()):
            return list(texts)
        stop_text = tokenizer.decode([stop])
        pad = getattr(reader, "pad_token", None)
        if (stop_text not in getattr(reader, "all_special_tokens", ())  # a reader without the token: its text is junk
                or stop_text == (pad if pad is not None else getattr(reader, "eos_token", None))):
            return list(texts)
        return [text + stop_text if end else text for text, end in zip(texts, self.stop_ended(response_ids, lengths))]

    def stop_ended(self, response_ids: torch.Tensor, lengths: torch.Tensor) -> list[bool]:
        """Whether each cut response ends at TRL's stop token (``mask_after_cut``: its episode ended there); all False
        without one."""
        stop = self.truncate_token_id
        if not self.mask_after_cut or stop is None:
            return [False] * len(lengths)
        return [n > 0 and int(ids[n - 1]) == stop for ids, n in zip(response_ids.cpu(), lengths.cpu().tolist())]

    def turn_texts(self, tokenizer: Any, texts: list[str], response_ids: torch.Tensor, lengths: torch.Tensor,
                   turn_end: str) -> list[str]:
        """What a reward model trained here on chats reads of each cut response: ``texts``, and ``turn_end`` (the text
        its chat template writes after an assistant message, e.g. ``"<|im_end|>\\n"``: every sample it was trained on
        ended so) after the rows that end at TRL's stop token when that token's text is in ``turn_end`` (the turn
        ended there; decoding dropped the token). A response that ran to its length is an unfinished turn, read as
        it is."""
        stop = self.truncate_token_id
        if (not turn_end or stop is None or stop not in getattr(tokenizer, "all_special_ids", ())  # decoding kept it
                or tokenizer.decode([stop]) not in turn_end):
            return list(texts)
        return [text + turn_end if end else text for text, end in zip(texts, self.stop_ended(response_ids, lengths))]

    def masks(self, lengths: torch.Tensor, response_length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(token_mask, value_mask, score_index)`` for PPO from the cut ``lengths`` (B,): ``(B, Lr)`` bool masks of
        the tokens whose log-probs, KL and policy loss count and of the steps whose values and returns count, and
        ``(B,)`` the position that receives the score. Without ``mask_after_cut`` (the paper): all tokens, score on
        the last one. With it (TRL's stop token): tokens up to the stop token, values one step further, the score one
        position after the stop token (the last position when the response fills the length)."""
        n = lengths.shape[0]
        last = torch.full((n,), response_length - 1, dtype=torch.long, device=lengths.device)
        if not self.mask_after_cut:
            ones = torch.ones((n, response_length), dtype=torch.bool, device=lengths.device)
            return ones, ones, last
        idx = torch.arange(response_length, device=lengths.device)[None, :]
        score_index = torch.minimum(lengths, last)
        return idx < lengths[:, None], idx <= score_index[:, None], score_index

    def cut_ids(self, response_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(B, Lr)`` ids with every token after the cut set to ``pad_token_id``."""
        keep = torch.arange(response_ids.shape[1], device=response_ids.device)[None, :] < lengths[:, None]
        return torch.where(keep, response_ids, torch.full_like(response_ids, self.pad_token_id))


def check_truncate_after(truncate_after: int, response_length: int, truncating: bool) -> None:
    """``truncate_after`` must be >= 0, and below ``response_length`` when responses are cut (else no response could
    ever be cut and every score would be the penalty)."""
    if truncate_after < 0 or (truncating and truncate_after >= response_length):
        raise ValueError(
            f"truncate_after: must lie in [0, response_length={response_length}) (every response would get the "
            f"penalty otherwise), got {truncate_after}"
        )


def _first_hit(response_ids: torch.Tensor, token_id: int, after: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(found (B,), index (B,))`` of the first ``token_id`` at index >= ``after`` (index 0 where not found)."""
    idx = torch.arange(response_ids.shape[1], device=response_ids.device)
    hit = (response_ids == token_id) & (idx >= after)  # (B, Lr)
    return hit.any(dim=1), hit.float().argmax(dim=1)


def cut_responses(response_ids: torch.Tensor, spec: RolloutSpec) -> Cut:
    """Where each ``(B, Lr)`` response is cut and whether it is valid (the module docstring's rules).

    ``lengths``: up to and including the first cut token at index >= ``truncate_after``, else ``Lr``; counted from
    positions, so a sampled token equal to the pad id still counts. ``valid``: the kept part holds the penalty token
    at index >= ``truncate_after`` (all rows valid when there is no penalty token).
    """
    n, lr = response_ids.shape
    lengths = torch.full((n,), lr, dtype=torch.long, device=response_ids.device)
    if spec.truncate_token_id is not None:
        found, first = _first_hit(response_ids, spec.truncate_token_id, spec.truncate_after)
        lengths = torch.where(found, first + 1, lengths)
    if spec.penalty_token_id is None:
        valid = torch.ones(n, dtype=torch.bool, device=response_ids.device)
    else:
        found, first = _first_hit(response_ids, spec.penalty_token_id, spec.truncate_after)
        valid = found & (first < lengths)
    return Cut(lengths, valid)


def _token_id_in(tokenizer: Any, token_id: int, field: str) -> int:
    """``token_id`` as an int, checked against the tokenizer's ids (``0 .. len(tokenizer) - 1``) where it has a length:
    an id outside them is never sampled, so nothing would ever be cut."""
    token_id = int(token_id)
    size = len(tokenizer) if hasattr(tokenizer, "__len__") else None
    if token_id < 0 or (size is not None and token_id >= size):
        raise ValueError(f"{field}: {token_id} is not a token id of the tokenizer (0 .. {size - 1 if size else '?'})")
    return token_id


def apply_penalty(scores: torch.Tensor, valid: torch.Tensor, mode: PenaltyMode = "replace", value: float = -1.0) -> torch.Tensor:
    """Scores of invalid rows: ``"replace"``d by ``value`` (paper) or ``value`` ``"subtract"``ed (TRL)."""
    if mode == "replace":
        return torch.where(valid, scores, torch.full_like(scores, value))
    if mode == "subtract":
        return torch.where(valid, scores, scores - value)
    raise ValueError(f"penalty mode must be 'replace' or 'subtract', got {mode!r}")


def pad_token_id_of(tokenizer: Any) -> int:
    """The tokenizer's pad id, else its EOS id (padding is always masked explicitly, never pooled on)."""
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = getattr(tokenizer, "eos_token_id", None)
    if pad is None:
        raise ValueError("the tokenizer has neither a pad nor an eos token; set tokenizer.pad_token")
    return int(pad)


def left_pad(sequences: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token-id lists to ``(B, L)`` ids and a 0/1 attention mask."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        if s:
            ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s) :] = 1
    return ids, mask


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 on the first real token of each left-padded row."""
    return (mask.cumsum(-1) - 1).clamp(min=0)
