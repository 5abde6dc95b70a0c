"""Model selection on validation: which round a run reports, and when it stops (early stopping).

Every evaluation round measures the validation set and the test set (`fedge.recsys.protocol`). `Selection` reads
the validation metric only — `val_hr@10` (higher is better) under the implicit protocol, `val_rmse` (lower) under the
explicit one — keeps the round with the best value (the earliest on a tie: HR@10 moves in steps of 1/U) and a copy
of the scoring state it was measured with, and says when `patience` rounds have passed without a better one. The
run then reports that round's validation *and* test metrics, and exports that round's model: the test metric is
recorded, never compared. (Tested: replacing the test items changes no choice, no parameter, no validation number.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from fedge.recsys.algorithms.base import RecState


def clone_state(state: RecState) -> RecState:
    """A detached copy: the training state keeps changing in place after the round it was measured at."""
    return RecState({k: v.detach().clone() for k, v in state.shared.items()},
                    None if state.user is None else state.user.detach().clone())


@dataclass
class Selection:
    """The best validation round so far (`best_round` 0: none evaluated yet), its metrics and its scoring state."""

    protocol: str
    patience: int = 0  # rounds without a better validation metric after which the run stops; 0 = never
    best_round: int = 0
    best_value: float | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    best_state: RecState | None = None

    @property
    def key(self) -> str:
        return "val_hr@10" if self.protocol == "implicit" else "val_rmse"

    def better(self, value: float) -> bool:
        if self.best_value is None:
            return True
        return value > self.best_value if self.protocol == "implicit" else value < self.best_value

    def offer(self, rnd: int, metrics: dict[str, float], scoring: RecState | None = None) -> bool:
        """Round `rnd`'s evaluation; True (and kept, with a copy of `scoring`) if its validation metric is better."""
        value = metrics[self.key]
        if not self.better(value):
            return False
        self.best_round, self.best_value = rnd, value
        self.best_metrics = {k: v for k, v in metrics.items() if _metric(k)}
        self.best_state = None if scoring is None else clone_state(scoring)
        return True

    def exhausted(self, rnd: int) -> bool:
        """Whether, after round `rnd`, `patience` rounds have passed since the best validation round."""
        return self.patience > 0 and self.best_round > 0 and rnd - self.best_round >= self.patience

    def stop_reason(self, rnd: int) -> str:
        return (f"early stopping: no better {self.key} in the {rnd - self.best_round} rounds after round "
                f"{self.best_round} (train.patience {self.patience})")

    @classmethod
    def replay(cls, protocol: str, patience: int, history: list[dict[str, Any]]) -> Selection:
        """The selection a run's `history` (its metrics.jsonl records) made, without the state (a resumed run takes
        that from its checkpoint)."""
        selection = cls(protocol, patience)
        for record in history:
            if selection.key in record:
                selection.offer(int(record["round"]), record)
        return selection

    def state_dict(self) -> dict[str, Any]:
        best = self.best_state
        return {"round": self.best_round, "shared": None if best is None else best.shared,
                "user": None if best is None else best.user}

    def load_state(self, saved: dict[str, Any] | None) -> None:
        """The best state a checkpoint carried (its round must be the one the history replays to)."""
        if saved and saved.get("shared") is not None and int(saved["round"]) == self.best_round:
            user = saved.get("user")
            self.best_state = RecState({k: torch.as_tensor(v) for k, v in saved["shared"].items()}, user)


def _metric(key: str) -> bool:
    return key.startswith(("val_", "test_"))


__all__ = ["Selection", "clone_state"]
