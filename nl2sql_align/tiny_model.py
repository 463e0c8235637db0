"""A tiny Qwen2-architecture model built locally: random weights, and a byte-level BPE tokenizer trained with
the `tokenizers` library on the demo's questions, schemas and SQL. Nothing is downloaded.

It is what the demo, the tests and CI train. Byte-level BPE covers any text (Spider and BIRD prompts included),
and training it on our own SQL keeps prompts short, which is what makes CPU training fast.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

# ChatML, as Qwen2 uses it. The generation prompt ends with "assistant\n", which byte-level pre-tokenization
# keeps separate from the answer's first token, so prompt tokens are a prefix of prompt+answer tokens (TRL's
# completion-only loss relies on that).
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Qwen2's pre-tokenizer regex, as transformers' Qwen2Tokenizer applies it.
QWEN2_SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

SIZES = {
    # hidden, layers, heads, kv heads, intermediate
    "tiny": (192, 4, 4, 2, 512),
    "micro": (64, 2, 2, 1, 128),  # for tests that only need a model that runs
}


def training_corpus() -> list[str]:
    """Demo questions, gold SQL, the rendered schemas and the prompt wording."""
    from nl2sql_align.data import load_examples
    from nl2sql_align.data.prompts import DEFAULT_SYSTEM_PROMPT, build_messages, format_answer
    from nl2sql_align.recipe import SchemaSection

    texts = []
    seen_db = set()
    for split in ("train", "dev"):
        for ex in load_examples(f"demo:{split}"):
            texts.append(ex.question)
            texts.append(format_answer(ex.sql))
            if ex.db_id not in seen_db:
                seen_db.add(ex.db_id)
                for schema in (SchemaSection(), SchemaSection(format="compact", example_values=0)):
                    for msg in build_messages(ex, schema):
                        texts.append(msg["content"])
    for engine in ("SQLite", "DuckDB"):
        texts.append(DEFAULT_SYSTEM_PROMPT.replace("{engine}", engine))
    return texts


def build_tokenizer(vocab_size: int = 2048):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # Merges are learnt on GPT-2's byte-level split. At run time transformers loads every model_type=qwen2
    # tokenizer as Qwen2Tokenizer, which splits with Qwen2's own regex whatever tokenizer.json says (so we
    # write that regex into tokenizer.json below, and every loader agrees). The two splits differ in details
    # only: Qwen2 cuts numbers into single digits and lets a quote stick to the word after it.
    # Measured on the demo (6 epochs, dev EX): these merges 53%; merges learnt on a variant of Qwen2's split
    # that keeps a value the same token in question and SQL 45%. Copying multi-token values is what a tiny
    # model trained from scratch finds hardest either way.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte is a token: no unknowns, ever
        show_progress=False,
    )
    tok.train_from_iterator(training_corpus(), trainer=trainer)
    # At run time Qwen2Tokenizer splits with its own regex; set it here too so that the tokenizer.json is
    # what every loader sees.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
        model_max_length=2048,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(out_dir: str | Path, size: str = "tiny", vocab_size: int = 2048, seed: int = 0) -> Path:
    """Write a randomly initialised Qwen2 causal LM and its tokenizer to out_dir (atomically)."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    out_dir = Path(out_dir)
    hidden, layers, heads, kv_heads, inter = SIZES[size]
    tokenizer = build_tokenizer(vocab_size)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "tiny_model.json").write_text(json.dumps({"size": size, "vocab_size": len(tokenizer), "seed": seed}))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def ensure_tiny_model(out_dir: str | Path, size: str = "tiny") -> Path:
    out_dir = Path(out_dir)
    if (out_dir / "tiny_model.json").is_file():
        return out_dir
    return build_tiny_model(out_dir, size=size)
