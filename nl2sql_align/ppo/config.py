"""PPOConfig: transformers' TrainingArguments plus the PPO settings; the recipe's [train] table fills it."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments


@dataclass
class PPOConfig(TrainingArguments):
    """Batch arithmetic, per process: a rollout samples one completion for each of
    `per_device_train_batch_size x gradient_accumulation_steps x num_mini_batches` prompts; each of the
    `num_ppo_epochs` passes over it takes `num_mini_batches` optimizer steps. So one rollout = num_ppo_epochs x
    num_mini_batches optimizer steps, and `max_steps` counts optimizer steps, as in every other stage."""

    model_init_kwargs: dict | None = field(
        default=None, metadata={"help": "from_pretrained keywords for the policy (the recipe's [model] fills them)."}
    )
    num_ppo_epochs: int = field(default=4, metadata={"help": "Passes over each rollout."})
    num_mini_batches: int = field(default=1, metadata={"help": "Optimizer steps per pass over a rollout."})
    max_completion_length: int = field(default=256, metadata={"help": "Tokens sampled per completion at most."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (the log-probs use it too)."})
    top_p: float = 1.0
    top_k: int = field(default=0, metadata={"help": "0 = off."})
    stop_at_sql_block: bool = field(
        default=True, metadata={"help": "End a completion where its ```sql block closes (as well as at EOS)."}
    )
    kl_coef: float = field(default=0.05, metadata={"help": "Per-token KL penalty against the reference policy."})
    kl_target: float | None = field(
        default=None, metadata={"help": "Adapt kl_coef towards this KL per completion (nats); None = fixed."}
    )
    kl_horizon: int = field(default=10_000, metadata={"help": "Adaptive KL controller horizon, in completions."})
    cliprange: float = field(default=0.2, metadata={"help": "Policy ratio clip (epsilon)."})
    cliprange_value: float = field(default=0.2, metadata={"help": "Value clip around the rollout's values."})
    vf_coef: float = field(default=0.1, metadata={"help": "Weight of the value loss in the total loss."})
    ent_coef: float = field(default=0.0, metadata={"help": "Entropy bonus weight (0 = off)."})
    gamma: float = field(default=1.0, metadata={"help": "Discount."})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda."})
    whiten_advantages: bool = True
    whiten_rewards: bool = False
    missing_eos_penalty: float | None = field(
        default=None, metadata={"help": "Subtracted from the score of a completion cut at max_completion_length."}
    )

    def __post_init__(self):
        super().__post_init__()
        for name in ("num_ppo_epochs", "num_mini_batches", "max_completion_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be above 0 (PPO samples), got {self.temperature}")
        if not 0 < self.gamma <= 1 or not 0 <= self.lam <= 1:
            raise ValueError(f"gamma must be in (0, 1] and lam in [0, 1]; got gamma={self.gamma}, lam={self.lam}")

    @property
    def local_rollout_batch_size(self) -> int:
        return self.per_device_train_batch_size * self.gradient_accumulation_steps * self.num_mini_batches

    @property
    def micro_steps_per_rollout(self) -> int:
        """training_step calls that one rollout feeds (gradient-accumulation steps included)."""
        return self.gradient_accumulation_steps * self.num_mini_batches * self.num_ppo_epochs
