"""When the rounds of online label collection happen and how many labels each collects (paper §2: 20 rounds, the
first before RL, the others evenly spaced over it)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["OnlineLabelSchedule"]


def _is_count(value: object) -> bool:
    """An integer (numpy's too, as ``len`` or ``np.sum`` give), not a ``bool``."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OnlineLabelSchedule:
    """How many labels each round collects and at which episode counts the rounds happen.

    With ``first_round_before_rl`` (paper) round r of R happens at episode ``floor(r·T/R)``: round 0 before the
    first PPO episode, the others evenly spaced over the ``T = total_episodes`` (paper: R = 20, i.e. 19
    retrainings during RL). Without it, the R rounds split (0, T) evenly: episode ``floor((r+1)·T/(R+1))`` (the
    reward model used before round 0 must then come from elsewhere). ``rounds=1`` with the first round before RL is
    offline collection.

    Args:
        rounds: R >= 1.
        labels_per_round: comparisons per round: one int for every round, or one per round.
        first_round_before_rl: round 0 at episode 0.
    """

    rounds: int
    labels_per_round: int | Sequence[int]
    first_round_before_rl: bool = True

    def __post_init__(self) -> None:
        if not _is_count(self.rounds) or self.rounds < 1:
            raise ValueError(f"rounds must be an int >= 1, got {self.rounds!r}")
        object.__setattr__(self, "rounds", int(self.rounds))
        per = self.labels_per_round
        per = [per] * self.rounds if _is_count(per) else list(per)
        if len(per) != self.rounds:
            raise ValueError(f"labels_per_round has {len(per)} entries for {self.rounds} rounds")
        for r, n in enumerate(per):
            if not _is_count(n) or n < 1:
                raise ValueError(f"labels_per_round[{r}] must be an int >= 1, got {n!r}")
        object.__setattr__(self, "labels_per_round", tuple(int(n) for n in per))

    @classmethod
    def even(cls, total_labels: int, rounds: int, first_round_before_rl: bool = True) -> OnlineLabelSchedule:
        """``total_labels`` split over ``rounds`` as evenly as possible (the first rounds get the remainder)."""
        if total_labels < rounds:
            raise ValueError(f"total_labels ({total_labels}) must be >= rounds ({rounds}): every round needs a label")
        q, rem = divmod(total_labels, rounds)
        return cls(rounds, [q + (r < rem) for r in range(rounds)], first_round_before_rl)

    @classmethod
    def offline(cls, labels: int) -> OnlineLabelSchedule:
        """All labels in one round before RL."""
        return cls(1, labels, True)

    def labels_in_round(self, r: int) -> int:
        return self.labels_per_round[r]  # type: ignore[index]

    @property
    def total_labels(self) -> int:
        return sum(self.labels_per_round)  # type: ignore[arg-type]

    def cumulative_labels(self) -> list[int]:
        """Labels collected after each round: ``[n_0, n_0 + n_1, ...]``."""
        out, total = [], 0
        for n in self.labels_per_round:  # type: ignore[union-attr]
            total += n
            out.append(total)
        return out

    def episode_boundaries(self, total_episodes: int) -> list[int]:
        """Episode count at which each round happens (strictly increasing, all < ``total_episodes``)."""
        t, r_total = int(total_episodes), self.rounds
        if t < 1:
            raise ValueError(f"total_episodes must be >= 1, got {total_episodes}")
        if self.first_round_before_rl:
            out = [r * t // r_total for r in range(r_total)]
        else:
            out = [(r + 1) * t // (r_total + 1) for r in range(r_total)]
        if any(b <= a for a, b in zip(out, out[1:])) or (not self.first_round_before_rl and out[0] == 0):
            raise ValueError(f"rounds: {r_total} rounds do not fit in {t} episodes (boundaries {out})")
        return out

    def update_boundaries(self, total_episodes: int, batch_size: int) -> list[int]:
        """PPO update (0-based) before which each round runs: the first update starting at or after the round's
        episode, ``ceil(episode / batch_size)``. Raises when two rounds fall before the same update or a round
        after the last one (``ceil(total_episodes / batch_size)`` updates)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        episodes = self.episode_boundaries(total_episodes)
        updates = [-(-e // batch_size) for e in episodes]
        n_updates = -(-int(total_episodes) // batch_size)
        if any(b <= a for a, b in zip(updates, updates[1:])) or updates[-1] >= n_updates:
            raise ValueError(
                f"rounds: {self.rounds} rounds at episodes {episodes} do not fall before distinct PPO updates of "
                f"{batch_size} episodes ({n_updates} updates in all; got updates {updates}); use fewer rounds or "
                "more episodes"
            )
        return updates
