"""PPOTrainer: a transformers.Trainer whose batches are PPO rollouts.

One optimizer step is one minibatch of a rollout, so everything the Trainer does per step (gradient
accumulation and clipping, LR schedule, logging, checkpoints, resume, DDP/DeepSpeed/FSDP through Accelerate)
works unchanged. The data side follows TRL's GRPOTrainer: the dataloader yields a whole rollout's prompts,
repeated once per training_step call it feeds; `_prepare_inputs` samples and scores on the first call and
hands out the buffered minibatches after. The equations are in nl2sql_align/ppo/__init__.py.
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, Trainer

from nl2sql_align.data.prompts import has_sql_block
from nl2sql_align.ppo import core
from nl2sql_align.ppo.config import PPOConfig
from nl2sql_align.ppo.model import ValueHeadModel, is_peft
from nl2sql_align.stages.rl import question_of, rounded  # the completions log's fields, as GRPO writes them

PPO_STATE_FILE = "ppo_state.json"
REWARD_COLUMNS = ("gold_sql", "db_path", "db_engine", "gold_dialect")


class SQLBlockStop(StoppingCriteria):
    """Stop a sequence once its completion has closed a ```sql block; remember where (in completion tokens)."""

    def __init__(self, tokenizer, prompt_len: int, batch: int):
        self.tokenizer, self.prompt_len = tokenizer, prompt_len
        self.stop_at = [None] * batch

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        n = input_ids.shape[1] - self.prompt_len
        for i in range(input_ids.shape[0]):
            if self.stop_at[i] is not None:
                done[i] = True
                continue
            # Only a token that contains a backtick can close the block: decode the rest rarely.
            if "`" in self.tokenizer.decode(input_ids[i, -1:]):
                if has_sql_block(self.tokenizer.decode(input_ids[i, self.prompt_len :], skip_special_tokens=True)):
                    self.stop_at[i] = n
                    done[i] = True
        return done


class PPOTrainer(Trainer):
    def __init__(
        self,
        model: ValueHeadModel,
        args: PPOConfig,
        train_dataset,
        processing_class,
        reward_funcs: list,
        reward_weights: list[float],
        ref_model=None,
        callbacks=None,
        completions_path: Path | None = None,
        log_completions: int = 8,
    ):
        from trl.trainer.utils import disable_dropout_in_model, identity

        # PPO's ratio compares two forward passes of the same weights: dropout would make it noise (Huang et al.).
        disable_dropout_in_model(model)
        if ref_model is not None:
            disable_dropout_in_model(ref_model)
        super().__init__(
            model=model,
            args=args,
            data_collator=identity,  # rows stay dicts: prompts are tokenized at rollout time
            train_dataset=train_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
        )
        self.ref_model = ref_model.to(self.accelerator.device) if ref_model is not None else None
        self.reward_funcs = reward_funcs
        self.reward_weights = list(reward_weights)
        self.kl_ctl = core.KLController(args.kl_coef, args.kl_target, args.kl_horizon)
        self.completions_path = completions_path
        self.log_completions = log_completions
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self._buffer: list[dict[str, Any]] | None = None
        self._step: int | None = None  # training_step calls so far; set from the global step at the first one
        self._resume_dir: str | None = None
        self._shuffle = torch.Generator().manual_seed(args.seed + self.accelerator.process_index)

    # -- data --------------------------------------------------------------------------------------------------

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["prompt", *REWARD_COLUMNS]

    def get_train_dataloader(self):
        return self._get_dataloader(
            dataset=self.train_dataset,
            description="Training",
            batch_size=self.args.local_rollout_batch_size,
            sampler_fn=self._get_train_sampler,
            is_training=True,
        )

    def _get_train_sampler(self, dataset=None):
        from trl.trainer.utils import RepeatSampler

        # Each chunk holds one rollout for every process and is repeated once per training_step call it feeds:
        # process k reads the k-th slice of the chunk each time (Accelerate deals batches round-robin).
        return RepeatSampler(
            data_source=dataset if dataset is not None else self.train_dataset,
            mini_repeat_count=1,
            batch_size=self.args.local_rollout_batch_size * self.accelerator.num_processes,
            repeat_count=self.args.micro_steps_per_rollout,
            shuffle=True,
            seed=self.args.seed,
        )

    # -- the loop ----------------------------------------------------------------------------------------------

    def train(self, resume_from_checkpoint=None, **kwargs):
        self._resume_dir = resume_from_checkpoint if isinstance(resume_from_checkpoint, str) else None
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self._step is None:  # first call of this run, after any checkpoint was loaded
            self._step = self.state.global_step * self.args.gradient_accumulation_steps
            if self._resume_dir and (Path(self._resume_dir) / PPO_STATE_FILE).is_file():
                saved = json.loads((Path(self._resume_dir) / PPO_STATE_FILE).read_text())
                self.kl_ctl.value = saved["kl_coef"]
        loss = super().training_step(model, inputs, num_items_in_batch)
        self._step += 1
        return loss

    def _prepare_inputs(self, rows):
        per_rollout = self.args.micro_steps_per_rollout
        if self._step % per_rollout == 0 or self._buffer is None:
            # A resumed run may start mid-rollout: the batch is still that rollout's prompts, sample them again.
            self._buffer = self._make_minibatches(self._rollout(rows))
        return self._buffer[self._step % per_rollout]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        from trl.trainer.utils import entropy_from_logits

        args = self.args
        mask = inputs["response_mask"]
        logits, logprobs, values = self._response_outputs(
            model, inputs["input_ids"], inputs["attention_mask"], inputs["position_ids"], mask.shape[1]
        )
        pg_loss, clip_frac, approx_kl = core.policy_loss(
            logprobs, inputs["old_logprobs"], inputs["advantages"], mask, args.cliprange
        )
        vf_loss, vf_clip_frac = core.value_loss(
            values, inputs["old_values"], inputs["returns"], mask, args.cliprange_value
        )
        loss = pg_loss + args.vf_coef * vf_loss
        with torch.no_grad() if not args.ent_coef else torch.enable_grad():
            entropy = core.masked_mean(entropy_from_logits(logits), mask)
        if args.ent_coef:
            loss = loss - args.ent_coef * entropy
        # One all-gather per step for all six numbers (this is the training step's hot path).
        names = ("policy_loss", "value_loss", "clip_fraction", "value_clip_fraction", "approx_kl", "entropy")
        stats = torch.stack([pg_loss, vf_loss, clip_frac, vf_clip_frac, approx_kl, entropy]).detach().float()
        means = self.accelerator.gather(stats[None]).mean(0).tolist()
        for key, value in zip(names, means, strict=True):
            self._metrics[key].append(value)
        return loss

    # -- rollout -----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def _rollout(self, rows: list[dict]) -> dict[str, Any]:
        from trl.models.utils import unwrap_model_for_generation

        args, tok = self.args, self.processing_class
        device = self.accelerator.device
        prompts = [r["prompt"] for r in rows]
        texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
        tok.padding_side = "left"  # decoder-only batching: generation continues right after each prompt
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        P = enc["input_ids"].shape[1]
        stop = SQLBlockStop(tok, P, len(rows)) if args.stop_at_sql_block else None
        with unwrap_model_for_generation(
            self.model_wrapped, self.accelerator, gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs
        ) as unwrapped:
            sequences = unwrapped.policy.generate(
                **enc,
                do_sample=True,
                temperature=args.temperature,
                top_p=args.top_p,
                top_k=args.top_k or None,
                max_new_tokens=args.max_completion_length,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
                stopping_criteria=StoppingCriteriaList([stop]) if stop else None,
            )
        response = sequences[:, P:]
        lengths, ended = self._response_lengths(response, tok.eos_token_id, stop)
        T = max(1, int(lengths.max()))
        response = response[:, :T]
        response_mask = (torch.arange(T, device=device)[None, :] < lengths[:, None]).long()
        response = torch.where(response_mask.bool(), response, torch.full_like(response, tok.pad_token_id))
        input_ids = torch.cat([enc["input_ids"], response], dim=1)
        attention_mask = torch.cat([enc["attention_mask"], response_mask], dim=1)
        # Left padding shifts positions; number the real tokens from 0, as generate() did.
        position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)
        completions = tok.batch_decode([response[i, : lengths[i]] for i in range(len(rows))], skip_special_tokens=True)

        logprobs, values = self._forward_logprobs(input_ids, attention_mask, position_ids, T, value=True)
        ref_logprobs = self._reference_logprobs(input_ids, attention_mask, position_ids, T)
        scores, components, extra = self._score(rows, prompts, completions)
        if args.missing_eos_penalty is not None:
            scores = scores - args.missing_eos_penalty * (~ended).float()

        rewards, kl = core.token_rewards(scores, logprobs, ref_logprobs, response_mask, self.kl_ctl.value)
        if args.whiten_rewards:
            rewards = core.masked_whiten(rewards, response_mask, shift_mean=False)
        advantages, returns = core.gae(rewards, values, response_mask, args.gamma, args.lam)
        if args.whiten_advantages:
            advantages = core.masked_whiten(advantages, response_mask)

        kl_per_sequence = kl.sum(1)
        gather = self.accelerator.gather
        mean_kl = gather(kl_per_sequence).mean().item()
        all_scores = gather(scores)
        self._metrics["kl_coef"].append(self.kl_ctl.value)
        self._metrics["kl"].append(mean_kl)
        self._metrics["score"].append(all_scores.mean().item())
        self._metrics["reward"].append(gather(scores - self.kl_ctl.value * kl_per_sequence).mean().item())
        self._metrics["reward_std"].append(all_scores.std().item() if all_scores.numel() > 1 else 0.0)
        self._metrics["completions/mean_length"].append(gather(lengths.float()).mean().item())
        self._metrics["completions/ended_fraction"].append(gather(ended.float()).mean().item())
        for name, vals in components.items():
            g = gather(vals)
            valid = g[~torch.isnan(g)]
            self._metrics[f"rewards/{name}/mean"].append(valid.mean().item() if valid.numel() else math.nan)
        self.state.num_input_tokens_seen += int(gather(attention_mask.sum().reshape(1)).sum().item())
        self.kl_ctl.update(mean_kl, len(rows) * self.accelerator.num_processes)
        self._write_completions(prompts, completions, components, scores, extra)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            "response_mask": response_mask,
            "old_logprobs": logprobs,
            "old_values": values,
            "advantages": advantages,
            "returns": returns,
        }

    @staticmethod
    def _response_lengths(response: torch.Tensor, eos_id: int, stop: SQLBlockStop | None):
        """Tokens that belong to each completion: up to and including the first EOS, or up to where its SQL block
        closed; `ended` is False for completions cut at max_completion_length."""
        T = response.shape[1]
        is_eos = response == eos_id
        first_eos = torch.where(
            is_eos.any(1), is_eos.int().argmax(1) + 1, torch.full_like(is_eos[:, 0], T, dtype=torch.long)
        )
        lengths = first_eos.clone()
        ended = is_eos.any(1)
        if stop is not None:
            for i, at in enumerate(stop.stop_at):
                if at is not None and at < lengths[i]:
                    lengths[i] = at
                    ended[i] = True
        return lengths.clamp(min=1), ended

    def _response_outputs(self, model, input_ids, attention_mask, position_ids, T):
        """(logits at the sampling temperature, log-probs, values or None) of the last T (response) tokens.

        The one place where training and the rollout read the model, so their log-probs agree exactly."""
        from trl.trainer.utils import selective_log_softmax

        if isinstance(model, ValueHeadModel) or isinstance(getattr(model, "module", None), ValueHeadModel):
            logits, values = model(input_ids, attention_mask, position_ids, logits_to_keep=T + 1)
            values = values[:, :-1]
        else:  # the reference: a causal LM without a value head
            out = model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=False,
                logits_to_keep=T + 1,
            )
            logits, values = out.logits, None
        logits = logits[:, :-1].float() / self.args.temperature
        return logits, selective_log_softmax(logits, input_ids[:, -T:]), values

    def _forward_logprobs(self, input_ids, attention_mask, position_ids, T, value=False, model=None):
        """Per-token log-probs (and values) of the response tokens, in minibatch-sized chunks, without grad."""
        model = model if model is not None else self.accelerator.unwrap_model(self.model)
        chunk = self.args.per_device_train_batch_size
        all_logprobs, all_values = [], []
        for s in range(0, input_ids.shape[0], chunk):
            part = (input_ids[s : s + chunk], attention_mask[s : s + chunk], position_ids[s : s + chunk])
            _, logprobs, values = self._response_outputs(model, *part, T)
            all_logprobs.append(logprobs)
            if values is not None:
                all_values.append(values.float())
        logprobs = torch.cat(all_logprobs)
        return (logprobs, torch.cat(all_values)) if value else logprobs

    def _reference_logprobs(self, input_ids, attention_mask, position_ids, T):
        """log pi_ref: the base with adapters disabled (LoRA: no second copy), or the frozen reference copy."""
        if self.args.kl_coef == 0 and self.args.kl_target is None:
            return None
        unwrapped = self.accelerator.unwrap_model(self.model)
        if is_peft(unwrapped.policy):
            with unwrapped.policy.disable_adapter():
                return self._forward_logprobs(input_ids, attention_mask, position_ids, T, model=unwrapped.policy)
        if self.ref_model is None:
            return None
        return self._forward_logprobs(input_ids, attention_mask, position_ids, T, model=self.ref_model)

    def _score(self, rows, prompts, completions) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, list]]:
        """Weighted sum of the reward functions (a None, "not scored", adds nothing, as in TRL's GRPO)."""
        device = self.accelerator.device
        extra: dict[str, list] = {}
        columns = {k: [r.get(k) for r in rows] for k in REWARD_COLUMNS if k in rows[0]}
        messages = [[{"role": "assistant", "content": c}] for c in completions]
        total = torch.zeros(len(rows), device=device)
        components = {}
        for fn, weight in zip(self.reward_funcs, self.reward_weights, strict=True):
            out = fn(
                prompts=prompts,
                completions=messages,
                log_extra=extra.__setitem__,
                log_metric=lambda *a: None,
                **columns,
            )
            vals = torch.tensor([math.nan if v is None else float(v) for v in out], device=device)
            components[fn.__name__] = vals
            total += weight * torch.nan_to_num(vals, nan=0.0)
        return total, components, extra

    def _make_minibatches(self, rollout: dict[str, Any]) -> list[dict[str, Any]]:
        """num_ppo_epochs shuffled passes, each cut into num_mini_batches x grad-accum micro-batches."""
        n = rollout["input_ids"].shape[0]
        size = self.args.per_device_train_batch_size
        out = []
        for _ in range(self.args.num_ppo_epochs):
            perm = torch.randperm(n, generator=self._shuffle).to(rollout["input_ids"].device)
            for s in range(0, n, size):
                idx = perm[s : s + size]
                out.append({k: (v[idx] if torch.is_tensor(v) else v) for k, v in rollout.items()})
        return out

    # -- logs, saving, resuming ------------------------------------------------------------------------------

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        for key, values in self._metrics.items():
            valid = [v for v in values if not math.isnan(v)]
            if valid:
                logs[key] = sum(valid) / len(valid)
        self._metrics.clear()
        logs["num_tokens"] = self.state.num_input_tokens_seen  # prompt + completion tokens so far, all processes
        super().log(logs, start_time)

    def _write_completions(self, prompts, completions, components, scores, extra) -> None:
        if self.completions_path is None or not self.accelerator.is_main_process or not self.log_completions:
            return
        rng = random.Random(self._step // self.args.micro_steps_per_rollout + 1)  # the rollout's number
        idx = sorted(rng.sample(range(len(completions)), min(self.log_completions, len(completions))))
        with self.completions_path.open("a", encoding="utf-8") as f:
            for i in idx:
                row = {"step": self.state.global_step, "prompt": question_of(prompts[i]), "completion": completions[i]}
                row["score"] = round(float(scores[i]), 4)
                row["rewards"] = {k: rounded(v[i]) for k, v in components.items()}
                for k, v in extra.items():
                    if isinstance(v, list) and i < len(v):
                        row[k] = v[i]
                f.write(json.dumps(row, ensure_ascii=False) + "\n")

    @property
    def eval_model(self):
        """The policy alone (what `eval` and the after-training evaluation generate with)."""
        return self.accelerator.unwrap_model(self.model).policy

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """The policy as save_pretrained writes it (a LoRA adapter, or a full model that eval/merge can load),
        with the value head beside it in value_head.safetensors."""
        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model)
        if state_dict is not None:  # DeepSpeed/FSDP gathered it for us
            policy_state = {k.removeprefix("policy."): v for k, v in state_dict.items() if k.startswith("policy.")}
            model.policy.save_pretrained(output_dir, state_dict=policy_state)
        else:
            model.policy.save_pretrained(output_dir)
        model.save_value_head(output_dir)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            folder = Path(self.args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            (folder / PPO_STATE_FILE).write_text(json.dumps({"kl_coef": self.kl_ctl.value}) + "\n", encoding="utf-8")

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        model = self.accelerator.unwrap_model(model if model is not None else self.model)
        folder = Path(resume_from_checkpoint)
        if is_peft(model.policy):
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            set_peft_model_state_dict(model.policy, load_file(str(folder / "adapter_model.safetensors")))
        else:
            from transformers.trainer_utils import load_sharded_checkpoint

            if (folder / "model.safetensors").is_file():
                from safetensors.torch import load_file

                missing, unexpected = model.policy.load_state_dict(
                    load_file(str(folder / "model.safetensors")), strict=False
                )
                tied = set(getattr(model.policy, "_tied_weights_keys", None) or {})
                if unexpected or [k for k in missing if k not in tied and not k.endswith("lm_head.weight")]:
                    raise RuntimeError(
                        f"{folder}: checkpoint does not match the policy (missing {missing}, unexpected {unexpected})"
                    )
            else:
                load_sharded_checkpoint(model.policy, str(folder), strict=False)
        model.load_value_head(folder)
