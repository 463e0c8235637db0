"""Build the tiny local model: a random-weight Qwen2 causal LM and a BPE tokenizer trained on the demo data.

    python scripts/make_tiny_model.py out/tiny-model [--size tiny|micro] [--vocab-size 2048]

No network: the tokenizer is trained here with the `tokenizers` library and the weights come from a config.
"""

import argparse

from nl2sql_align.tiny_model import SIZES, build_tiny_model

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", nargs="?", default="out/tiny-model")
    p.add_argument("--size", choices=sorted(SIZES), default="tiny")
    p.add_argument("--vocab-size", type=int, default=2048)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    path = build_tiny_model(a.out_dir, size=a.size, vocab_size=a.vocab_size, seed=a.seed)
    print(f"tiny model written to {path}")
