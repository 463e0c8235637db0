"""Generation from a model folder: HF `generate` (batched, left padding), or vLLM where it is installed.

One interface, `Generator.complete(examples, ...) -> completions per example`, serves greedy eval,
self-consistency samples, compare and pairs. Both backends build the prompt the same way: the folder's chat
template applied to the recipe's messages, tokenized once by the folder's tokenizer, so the token ids a model
sees do not depend on the backend. (vLLM is given those ids, not text: given text it would tokenize again and
could add a second BOS to templates that already carry one.)

`backend = "auto"` takes vLLM when it imports and a CUDA device is present, HF otherwise. Greedy answers agree
between the two up to kernel numerics; sampled answers differ (each backend has its own random stream).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Protocol

from nl2sql_align.data import Example, build_messages
from nl2sql_align.errors import UserError
from nl2sql_align.progress import progress as show_progress
from nl2sql_align.recipe import SchemaSection

BACKENDS = ("auto", "hf", "vllm")
VLLM_HINT = "pip install 'nl2sql-align[vllm]' on a machine with a CUDA GPU"


def prompt_texts(
    tokenizer, examples: list[Example], schema: SchemaSection | None, system_prompt: str | None
) -> list[str]:
    """The chat-templated prompt of each example, ending where the assistant's answer starts."""
    return [
        tokenizer.apply_chat_template(
            build_messages(ex, schema, system_prompt), tokenize=False, add_generation_prompt=True
        )
        for ex in examples
    ]


def check_sampling(num_samples: int, temperature: float) -> None:
    if num_samples > 1 and temperature <= 0:
        raise UserError(f"{num_samples} samples per question need a sampling temperature above 0")


# ---------------------------------------------------------------------------------------------------------
# HF generate


def sample_completions(
    model,
    tokenizer,
    examples: list[Example],
    *,
    num_samples: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    schema: SchemaSection | None = None,
    system_prompt: str | None = None,
    max_new_tokens: int = 256,
    batch_size: int = 16,
    progress: bool = True,
    seed: int | None = None,
) -> list[list[str]]:
    """`num_samples` completions (raw text) per example, in order; temperature 0 means greedy.

    `batch_size` counts sequences, so a batch holds batch_size // num_samples prompts (at least one)."""
    import torch

    check_sampling(num_samples, temperature)
    if seed is not None:
        torch.manual_seed(seed)
    tokenizer.padding_side = "left"  # decoder-only batching: pad on the left so generation continues the prompt
    prompts = prompt_texts(tokenizer, examples, schema, system_prompt)
    # Sorting by length wastes less compute on padding; results are put back in order.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    outputs: list[list[str]] = [[] for _ in prompts]
    sampling = (
        {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {"do_sample": False}
    )
    per_batch = max(1, batch_size // num_samples)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    label = "sample" if num_samples > 1 else "generate"
    with show_progress(label, len(prompts), enabled=progress) as advance, torch.inference_mode():
        for start in range(0, len(order), per_batch):
            idx = order[start : start + per_batch]
            enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False).to(
                device
            )
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                num_return_sequences=num_samples,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                **sampling,
            )
            texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            for j, i in enumerate(idx):  # generate returns each prompt's samples consecutively
                outputs[i] = texts[j * num_samples : (j + 1) * num_samples]
            advance(len(idx))
    if was_training:
        model.train()
    return outputs


def continue_texts(model, tokenizer, texts: list[str], budgets: list[int], batch_size: int = 16) -> list[str]:
    """Greedy continuation of already rendered conversations (the agent loop's next turn), each at most its
    budget of new tokens; special tokens are kept, so the caller sees where the turn ended."""
    import torch

    tokenizer.padding_side = "left"
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    outputs = [""] * len(texts)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.inference_mode():
        for start in range(0, len(order), max(1, batch_size)):
            idx = order[start : start + batch_size]
            enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = enc.to(device)
            out = model.generate(
                **enc,
                max_new_tokens=max(1, max(budgets[i] for i in idx)),
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            new = out[:, enc["input_ids"].shape[1] :]
            for j, i in enumerate(idx):
                outputs[i] = tokenizer.decode(new[j, : max(1, budgets[i])], skip_special_tokens=False)
    if was_training:
        model.train()
    return outputs


def load_tokenizer(model_dir: str):
    """The folder's tokenizer, with a pad token and the chat template every prompt is built with."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise UserError(f"{model_dir}: the tokenizer has no chat template; eval needs one to build prompts")
    return tokenizer


def load_model_for_eval(model_dir: str):
    """A full model or a PEFT adapter directory (the base model is named in adapter_config.json)."""
    from transformers import AutoModelForCausalLM

    path = Path(model_dir)
    if path.exists() and (path / "adapter_config.json").is_file():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(model_dir, dtype="auto")
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto")
    return model, load_tokenizer(model_dir)


# ---------------------------------------------------------------------------------------------------------
# Generators


class Generator(Protocol):
    backend: str

    def complete(
        self,
        examples: list[Example],
        *,
        num_samples: int = 1,
        temperature: float = 0.0,
        top_p: float = 1.0,
        schema: SchemaSection | None = None,
        system_prompt: str | None = None,
        max_new_tokens: int = 256,
        batch_size: int = 16,
        seed: int | None = None,
        progress: bool = True,
    ) -> list[list[str]]: ...

    def close(self) -> None: ...


class HFGenerator:
    """A transformers model already in memory (after training) or loaded from a folder."""

    backend = "hf"

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer

    def complete(self, examples, **kw) -> list[list[str]]:
        return sample_completions(self.model, self.tokenizer, examples, **kw)

    def continue_texts(self, texts: list[str], budgets: list[int], batch_size: int = 16) -> list[str]:
        return continue_texts(self.model, self.tokenizer, texts, budgets, batch_size)

    def close(self) -> None:
        self.model = None


class VLLMGenerator:
    """vLLM's offline engine on a model folder; a LoRA/QLoRA folder is served as its base plus a LoRARequest
    (the base in full precision, as `merge` does: vLLM does not run bitsandbytes 4-bit adapters' base)."""

    backend = "vllm"

    def __init__(self, model_dir: str, *, seed: int | None = None, gpu_memory_utilization: float = 0.9):
        from vllm import LLM

        self.tokenizer = load_tokenizer(model_dir)
        base, self.lora, lora_rank = vllm_model_source(model_dir)
        engine = {"enable_lora": True, "max_lora_rank": lora_rank} if self.lora is not None else {}
        self.llm = LLM(
            model=base,
            tokenizer=model_dir,
            seed=seed if seed is not None else 0,
            gpu_memory_utilization=gpu_memory_utilization,
            **engine,
        )

    def complete(
        self,
        examples,
        *,
        num_samples=1,
        temperature=0.0,
        top_p=1.0,
        schema=None,
        system_prompt=None,
        max_new_tokens=256,
        batch_size=16,
        seed=None,
        progress=True,
    ) -> list[list[str]]:
        from vllm import SamplingParams

        del batch_size  # vLLM schedules its own batches
        check_sampling(num_samples, temperature)
        texts = prompt_texts(self.tokenizer, examples, schema, system_prompt)
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        greedy = temperature <= 0
        params = SamplingParams(
            n=num_samples,
            temperature=0.0 if greedy else temperature,
            top_p=1.0 if greedy else top_p,
            max_tokens=max_new_tokens,
            seed=seed,
            stop_token_ids=[self.tokenizer.eos_token_id],
            skip_special_tokens=True,
        )
        # vLLM's own bar on a terminal; in a log file (where tqdm would write a wall of carriage returns) our
        # plain lines, here one at the end: vLLM generates the whole list in one call.
        bar = progress and sys.stderr.isatty()
        label = "sample" if num_samples > 1 else "generate"
        with show_progress(label, len(ids), enabled=progress and not bar) as advance:
            outs = self.llm.generate(
                [{"prompt_token_ids": list(i)} for i in ids], params, use_tqdm=bar, lora_request=self.lora
            )
            advance(len(outs))
        return [[c.text for c in o.outputs] for o in outs]  # vLLM returns requests in the order given

    def continue_texts(self, texts: list[str], budgets: list[int], batch_size: int = 16) -> list[str]:
        """Greedy continuation of rendered conversations (the agent loop), each at most its budget of tokens."""
        from vllm import SamplingParams

        del batch_size
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        params = [
            SamplingParams(
                temperature=0.0,
                max_tokens=max(1, b),
                stop_token_ids=[self.tokenizer.eos_token_id],
                skip_special_tokens=False,
            )
            for b in budgets
        ]
        outs = self.llm.generate(
            [{"prompt_token_ids": list(i)} for i in ids], params, use_tqdm=False, lora_request=self.lora
        )
        return [o.outputs[0].text for o in outs]

    def close(self) -> None:
        # vLLM keeps GPU memory and process groups after the engine is dropped; compare loads one model after
        # another, so give them back.
        self.llm = None
        try:
            from vllm.distributed import cleanup_dist_env_and_memory
        except ImportError:
            return
        cleanup_dist_env_and_memory()


def vllm_model_source(model_dir: str):
    """(model for vLLM to load, LoRARequest or None, LoRA rank or None) for an output folder."""
    cfg_path = Path(model_dir) / "adapter_config.json"
    if not cfg_path.is_file():
        return model_dir, None, None
    cfg = json.loads(cfg_path.read_text())
    base = cfg.get("base_model_name_or_path")
    if not base:
        raise UserError(f"{cfg_path}: no base_model_name_or_path, so vLLM cannot load the base of this adapter")
    from vllm.lora.request import LoRARequest

    rank = max([int(cfg.get("r") or 8), *(int(v) for v in (cfg.get("rank_pattern") or {}).values())])
    return base, LoRARequest(Path(model_dir).name or "adapter", 1, str(Path(model_dir).resolve())), rank


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def resolve_backend(backend: str) -> str:
    """ "hf" or "vllm" for a recipe's eval.backend; "vllm" asked for but not installed is an error."""
    if backend not in BACKENDS:
        raise UserError(f"eval.backend = {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "vllm" and not vllm_installed():
        raise UserError(f"eval.backend = 'vllm', but vLLM is not installed: {VLLM_HINT}, or set eval.backend = 'hf'")
    if backend == "auto":
        if not vllm_installed():
            return "hf"
        import torch

        return "vllm" if torch.cuda.is_available() else "hf"
    return backend


def load_generator(model_dir: str, recipe) -> Generator:
    """The generator for a model folder (or a .gguf file, imported once) under a recipe's [eval] backend settings."""
    from nl2sql_align.gguf import resolve_model_path

    model_dir = resolve_model_path(model_dir)
    if resolve_backend(recipe.eval.backend) == "vllm":
        return VLLMGenerator(
            model_dir, seed=recipe.seed, gpu_memory_utilization=recipe.eval.vllm_gpu_memory_utilization
        )
    return HFGenerator(*load_model_for_eval(model_dir))
