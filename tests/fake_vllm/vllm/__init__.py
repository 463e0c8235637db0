"""A stand-in for vLLM's offline API, backed by transformers, for tests on machines where vLLM cannot run.

vLLM needs a CUDA GPU; this package has the same surface our `VLLMGenerator` uses (`LLM(...)`,
`LLM.generate(prompts, sampling_params, use_tqdm=, lora_request=)`, `SamplingParams`, `RequestOutput.outputs[i].text`,
`vllm.lora.request.LoRARequest`, `vllm.distributed.cleanup_dist_env_and_memory`) and refuses what vLLM refuses:
unknown SamplingParams fields, a LoRA request on an engine built without `enable_lora`, an adapter whose rank
exceeds `max_lora_rank`, prompts that are neither text nor {"prompt_token_ids": [...]}. Every engine and call is
recorded in `EVENTS` so tests can check what reached "vLLM". It is put on sys.path by tests only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from vllm.lora.request import LoRARequest  # where vLLM defines it (no import of this package: no cycle)

EVENTS: list[tuple[str, dict]] = []


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = 16
    seed: int | None = None
    stop_token_ids: list[int] | None = None
    skip_special_tokens: bool = True


class LLM:
    def __init__(
        self,
        model: str,
        *,
        tokenizer: str | None = None,
        seed: int = 0,
        gpu_memory_utilization: float = 0.9,
        enable_lora: bool = False,
        max_lora_rank: int = 16,
        **kwargs,
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        EVENTS.append(
            (
                "LLM",
                {
                    "model": model,
                    "tokenizer": tokenizer,
                    "seed": seed,
                    "enable_lora": enable_lora,
                    "max_lora_rank": max_lora_rank,
                    "gpu_memory_utilization": gpu_memory_utilization,
                    **kwargs,
                },
            )
        )
        self.base = AutoModelForCausalLM.from_pretrained(model)
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer or model)
        self.enable_lora, self.max_lora_rank = enable_lora, max_lora_rank
        self.adapters: dict[str, object] = {}

    def _model(self, lora_request):
        if lora_request is None:
            return self.base
        if not isinstance(lora_request, LoRARequest):
            raise TypeError(f"lora_request must be a LoRARequest, got {type(lora_request).__name__}")
        if not self.enable_lora:
            raise ValueError("LoRA is not enabled! Please set `enable_lora` to True.")
        rank = json.loads((Path(lora_request.lora_path) / "adapter_config.json").read_text())["r"]
        if rank > self.max_lora_rank:
            raise ValueError(f"LoRA rank {rank} is greater than max_lora_rank {self.max_lora_rank}.")
        if lora_request.lora_path not in self.adapters:
            from peft import PeftModel

            self.adapters[lora_request.lora_path] = PeftModel.from_pretrained(self.base, lora_request.lora_path)
        return self.adapters[lora_request.lora_path]

    def generate(
        self, prompts, sampling_params: SamplingParams | None = None, *, use_tqdm: bool = True, lora_request=None
    ):
        import torch

        params = sampling_params or SamplingParams()
        model = self._model(lora_request)
        model.eval()
        EVENTS.append(("generate", {"prompts": prompts, "params": params, "lora_request": lora_request}))
        if params.seed is not None:
            torch.manual_seed(params.seed)
        outputs = []
        for p in prompts if isinstance(prompts, list) else [prompts]:
            if isinstance(p, str):
                ids = self.tokenizer(p)["input_ids"]
            elif isinstance(p, dict) and "prompt_token_ids" in p:
                ids = p["prompt_token_ids"]
            else:
                raise TypeError(f"unsupported prompt {p!r}")
            sample = params.temperature > 0
            kw = (
                {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p}
                if sample
                else {"do_sample": False}
            )
            with torch.inference_mode():
                out = model.generate(
                    torch.tensor([ids]),
                    attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                    max_new_tokens=params.max_tokens,
                    num_return_sequences=params.n,
                    eos_token_id=params.stop_token_ids or self.tokenizer.eos_token_id,
                    pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                    **kw,
                )
            texts = self.tokenizer.batch_decode(out[:, len(ids) :], skip_special_tokens=params.skip_special_tokens)
            outputs.append(SimpleNamespace(prompt_token_ids=ids, outputs=[SimpleNamespace(text=t) for t in texts]))
        return outputs
