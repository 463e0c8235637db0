"""The policy with its value head, and how it is loaded (full, LoRA or QLoRA).

The critic is a linear value head on the policy's last hidden state (shared backbone), as in the original
OpenAI lm-human-preferences code and TRL's old AutoModelForCausalLMWithValueHead. We chose it over a separate
critic model because it keeps one backbone in memory: with LoRA the reference policy is the same backbone with
adapters disabled, so policy, critic and reference together cost one model plus adapters, which is what makes
PPO fit where GRPO fits. The price is that value-loss gradients also reach the shared weights; `vf_coef`
(0.1 by default) keeps them small, and the head starts at zero so the first updates are the policy's alone.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

VALUE_HEAD_FILE = "value_head.safetensors"


def is_peft(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


class ValueHeadModel(nn.Module):
    """policy(input) -> (logits, values). `policy` is a causal LM (possibly a PeftModel on a 4-bit base)."""

    def __init__(self, policy: nn.Module):
        super().__init__()
        self.policy = policy
        hidden = policy.config.get_text_config().hidden_size
        # float32 whatever the backbone's dtype: the value regression is the numerically touchy part.
        self.v_head = nn.Linear(hidden, 1, dtype=torch.float32)
        nn.init.zeros_(self.v_head.weight)
        nn.init.zeros_(self.v_head.bias)
        device = next(policy.parameters()).device
        self.v_head.to(device)
        # transformers.Trainer must not .to() a bitsandbytes model (it is placed at load time).
        method = getattr(policy, "quantization_method", None) or getattr(
            getattr(policy, "base_model", None), "quantization_method", None
        )
        if method is not None:
            self.quantization_method = method

    # Trainer and TRL's generation helpers look for these on the model they hold.
    @property
    def config(self):
        return self.policy.config

    @property
    def is_activation_checkpointing(self) -> bool:
        base = self.policy.get_base_model() if is_peft(self.policy) else self.policy
        return bool(getattr(base, "is_activation_checkpointing", False))

    is_gradient_checkpointing = is_activation_checkpointing  # the name TRL's generation helper reads

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, **kwargs):
        base = self.policy.get_base_model() if is_peft(self.policy) else self.policy
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=activation_checkpointing_kwargs, **kwargs)
        if is_peft(self.policy):  # adapters on a frozen base need grads on the inputs (transformers#42489)
            self.policy.enable_input_require_grads()

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
        self.activation_checkpointing_enable(gradient_checkpointing_kwargs)

    def gradient_checkpointing_disable(self):
        base = self.policy.get_base_model() if is_peft(self.policy) else self.policy
        base.activation_checkpointing_disable()

    def forward(self, input_ids, attention_mask, position_ids=None, logits_to_keep: int = 0):
        out = self.policy(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_hidden_states=True,
            use_cache=False,
            logits_to_keep=logits_to_keep,
        )
        hidden = out.hidden_states[-1]
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        # The head's device and dtype: a model spread over GPUs (device_map="auto") ends on its last one.
        values = self.v_head(hidden.to(self.v_head.weight.device, self.v_head.weight.dtype)).squeeze(-1)
        values = values.to(out.logits.device)
        return out.logits, values

    def save_value_head(self, folder: str | Path) -> None:
        from safetensors.torch import save_file

        save_file(
            {k: v.detach().contiguous().cpu() for k, v in self.v_head.state_dict().items()},
            str(Path(folder) / VALUE_HEAD_FILE),
        )

    def load_value_head(self, folder: str | Path) -> None:
        from safetensors.torch import load_file

        state = load_file(str(Path(folder) / VALUE_HEAD_FILE))
        self.v_head.load_state_dict({k: v.to(self.v_head.weight.device) for k, v in state.items()})


def load_policy(path: str, model_init_kwargs: dict, quantization_config, peft_config, distributed: bool):
    """The causal LM to train: TRL's loader (dtype strings, CPU/GPU device map), then LoRA adapters if asked.

    With QLoRA the trainable adapter weights stay in the compute dtype of the recipe (TRL's GRPO casts them to
    bf16, which a float32-compute CPU run cannot use)."""
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import create_model_from_path

    kwargs = dict(model_init_kwargs or {})
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    if distributed:  # each process holds its own replica; "auto" would spread one over every GPU
        import torch.cuda
        from accelerate import PartialState

        # A quantized model is placed at load time (Trainer cannot move it later): on this process's GPU.
        quantized_on_gpu = quantization_config is not None and torch.cuda.is_available()
        kwargs["device_map"] = {"": PartialState().local_process_index} if quantized_on_gpu else None
    policy = create_model_from_path(path, AutoModelForCausalLM, **kwargs)
    if peft_config is not None:
        from peft import get_peft_model

        policy = get_peft_model(policy, peft_config)
    return policy
