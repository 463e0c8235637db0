"""A learned reward: the score of a reward model trained by `nl2sql-align rm`, as a reward function.

It follows the same contract as the execution components (`f(prompts=..., completions=..., **columns)` ->
one float per completion), so ppo mixes it with them by weight, and grpo could take it as one more function.
Each prompt + completion is tokenized exactly as TRL's RewardTrainer tokenized the pairs the model learned
from (the chat template over the whole conversation), and scored at the last non-pad token.
"""

from __future__ import annotations

from pathlib import Path

from nl2sql_align.errors import UserError


class RewardModelScore:
    __name__ = "reward_model"

    def __init__(self, path: str | Path, device=None, batch_size: int = 16, dtype: str = "auto"):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        folder = Path(path)
        if not (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file():
            raise UserError(
                f"reward.model = {str(path)!r}: not a reward model folder (no config.json or adapter_config.json); "
                "train one with `nl2sql-align rm --recipe ...` and point reward.model at its output_dir"
            )
        if (folder / "adapter_config.json").is_file():
            from peft import AutoPeftModelForSequenceClassification

            # LoRA reward model: fold the adapters (and the trained score head) into the base once, for speed.
            model = AutoPeftModelForSequenceClassification.from_pretrained(
                str(folder), num_labels=1, dtype=dtype
            ).merge_and_unload()
        else:
            model = AutoModelForSequenceClassification.from_pretrained(str(folder), num_labels=1, dtype=dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # As RewardTrainer set it: sequence-classification models find the last real token through pad_token_id.
        model.config.pad_token_id = self.tokenizer.pad_token_id
        model.requires_grad_(False)
        model.eval()
        self.model = model.to(device) if device is not None else model
        self.batch_size = batch_size

    @property
    def device(self):
        return next(self.model.parameters()).device

    def __call__(self, prompts=None, completions=(), completion_ids=None, **kw) -> list[float]:
        import torch
        from trl.data_utils import _tokenize  # RewardTrainer's own tokenization of a conversation
        from trl.trainer.utils import pad

        ids = []
        for prompt, completion in zip(prompts, completions, strict=True):
            if isinstance(prompt, list):
                conversation = prompt + (
                    completion if isinstance(completion, list) else [{"role": "assistant", "content": str(completion)}]
                )
                ids.append(_tokenize(self.tokenizer, conversation)["input_ids"])
            else:
                text = prompt + (completion if isinstance(completion, str) else str(completion))
                if not text.endswith(self.tokenizer.eos_token):
                    text += self.tokenizer.eos_token  # RewardTrainer appends EOS to plain-text examples
                ids.append(_tokenize(self.tokenizer, text)["input_ids"])
        scores: list[float] = []
        device = self.device
        with torch.inference_mode():
            for start in range(0, len(ids), self.batch_size):
                rows = [torch.tensor(x) for x in ids[start : start + self.batch_size]]
                input_ids = pad(rows, padding_value=self.tokenizer.pad_token_id)  # right padding, as RewardTrainer
                mask = pad([torch.ones_like(x) for x in rows], padding_value=0)
                logits = self.model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
                scores += logits[:, 0].float().cpu().tolist()
        return scores
