"""What rm and dpo share: loading preference data (with a held-out split) and measuring held-out pairs.

Held-out measures are taken on the same pairs before and after training (runner `heldout` hook):
- a policy (dpo and its variants): the log-probability margin log p(chosen | prompt) - log p(rejected | prompt)
  summed over answer tokens, its mean, and the fraction of pairs where it is positive;
- a reward model: TRL's own pairwise accuracy and margin (RewardTrainer.evaluate).
"""

from __future__ import annotations

from nl2sql_align.data.preferences import PreferenceRecord, load_preferences, split_holdout
from nl2sql_align.errors import DataError
from nl2sql_align.recipe import Recipe


def load_preference_data(recipe: Recipe, *, generates: bool = True) -> tuple[list, list, list]:
    """(train records, eval Examples for EX after training, held-out records)."""
    from nl2sql_align.data import examples_for

    d = recipe.data
    if not d.train:
        raise DataError("data.train is not set: give a preference JSONL file (from `nl2sql-align pairs`)")
    records = load_preferences(d.train, d, limit=d.train_limit)
    train, held = split_holdout(records, d.holdout, recipe.seed)
    if d.eval_pairs:
        held = held + load_preferences(d.eval_pairs, d)
    evals = []
    if generates and d.eval:
        evals = examples_for(d, d.eval, limit=d.eval_limit)
    return train, evals, held


def _ids(tokenizer, prompt, answer) -> tuple[list[int], list[int]]:
    """Token ids of the prompt and of the answer that follows it, as the chat template renders them."""
    if isinstance(prompt, list):
        p = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(prompt + answer, tokenize=False)
        if not full.startswith(p):  # templates that rewrite earlier turns: fall back to the whole tail
            p = tokenizer.apply_chat_template(prompt, tokenize=False)
        return (
            tokenizer(p, add_special_tokens=False)["input_ids"],
            tokenizer(full[len(p) :], add_special_tokens=False)["input_ids"],
        )
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return tokenizer(prompt)["input_ids"], tokenizer(answer, add_special_tokens=False)["input_ids"] + eos


def answer_logprobs(model, tokenizer, prompts: list, answers: list, batch_size: int = 16) -> list[float]:
    """Sum of log p(answer token | prefix) over the answer tokens, one value per (prompt, answer)."""
    import torch
    from trl.trainer.utils import selective_log_softmax

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[float] = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            seqs, starts = [], []
            for prompt, answer in zip(
                prompts[start : start + batch_size], answers[start : start + batch_size], strict=True
            ):
                p, a = _ids(tokenizer, prompt, answer)
                seqs.append(p + a)
                starts.append(len(p))
            width = max(map(len, seqs))
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, s in enumerate(seqs):  # right padding: positions of real tokens do not move
                ids[i, : len(s)] = torch.tensor(s)
                mask[i, : len(s)] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            logp = selective_log_softmax(logits[:, :-1], ids[:, 1:].to(device))  # TRL's, memory-light
            for i, s in enumerate(seqs):
                out.append(float(logp[i, starts[i] - 1 : len(s) - 1].sum()))
    if was_training:
        model.train()
    return out


def policy_margins(model, tokenizer, records: list[PreferenceRecord]) -> dict[str, float]:
    """Held-out log-probability margins (pairs) or desirable-minus-undesirable mean log-probabilities."""
    if not records:
        return {}
    paired = [r for r in records if r.paired]
    if paired:
        lp_c = answer_logprobs(model, tokenizer, [r.prompt for r in paired], [r.chosen for r in paired])
        lp_r = answer_logprobs(model, tokenizer, [r.prompt for r in paired], [r.rejected for r in paired])
        margins = [c - r for c, r in zip(lp_c, lp_r, strict=True)]
        return {
            "pairs": len(paired),
            "logprob_margin": sum(margins) / len(margins),
            "preference_accuracy": sum(m > 0 for m in margins) / len(margins),
            "logprob_chosen": sum(lp_c) / len(lp_c),
            "logprob_rejected": sum(lp_r) / len(lp_r),
        }
    lp = answer_logprobs(model, tokenizer, [r.prompt for r in records], [r.completion for r in records])
    good = [x for x, r in zip(lp, records, strict=True) if r.label]
    bad = [x for x, r in zip(lp, records, strict=True) if not r.label]
    if not good or not bad:
        return {}
    return {"completions": len(records), "logprob_gap": sum(good) / len(good) - sum(bad) / len(bad)}
