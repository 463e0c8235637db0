"""A compute budget for a training run ([budget] seconds / tokens): training stops at the end of the first
optimizer step that reaches it. This is how a pipeline trains "SFT for as long again" beside an RL step
(pipeline `match`), the choice a user actually faces: more SFT minutes, or those minutes spent on RL."""

from __future__ import annotations

import time
from collections.abc import Callable


class BudgetStop:
    """A TrainerCallback (duck-typed; `make()` gives the real one) that ends training once the training loop has
    run `seconds` or seen `tokens` input tokens (Trainer's `num_input_tokens_seen`, padding excluded).
    `clock` is injectable so that the rule can be tested without waiting."""

    def __init__(self, seconds: float | None, tokens: int | None, clock: Callable[[], float] = time.monotonic):
        self.seconds, self.tokens, self.clock = seconds, tokens, clock
        self.started: float | None = None
        self.stopped_at: dict | None = None  # what the budget read when it stopped the run

    def reached(self, tokens_seen: float | None) -> dict | None:
        elapsed = self.clock() - self.started if self.started is not None else 0.0
        if self.seconds is not None and elapsed >= self.seconds:
            return {"budget": "seconds", "limit": self.seconds, "used": round(elapsed, 3)}
        if self.tokens is not None and tokens_seen is not None and tokens_seen >= self.tokens:
            return {"budget": "tokens", "limit": self.tokens, "used": tokens_seen}
        return None

    def make(self):
        from transformers import TrainerCallback

        budget = self

        class _CB(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                budget.started = budget.clock()

            def on_step_end(self, args, state, control, **kwargs):
                hit = budget.reached(getattr(state, "num_input_tokens_seen", None))
                if budget.seconds is not None and _any_rank(hit is not None, getattr(args, "device", None)):
                    hit = hit or {"budget": "seconds", "limit": budget.seconds, "used": "another rank's clock"}
                if hit is not None and budget.stopped_at is None:
                    budget.stopped_at = {**hit, "step": state.global_step}
                    control.should_training_stop = True

        return _CB()


def _any_rank(flag: bool, device) -> bool:
    """`flag` OR-ed over the processes of a distributed run (every rank calls it every step): each rank reads
    its own clock, and ranks that stopped a step apart would leave the others waiting in a collective forever.
    The token count needs no such step, the Trainer gathers it already."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1 if flag else 0], device=device if device is not None else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
