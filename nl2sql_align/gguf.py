"""GGUF files as a model source: `[model] name_or_path` may be a path to a `.gguf` file.

A GGUF file is imported ONCE into an ordinary transformers folder (safetensors weights dequantised to float32,
config.json without `quantization_config`, the tokenizer with its chat template, generation_config.json), and
every command then sees that folder: stages, eval, merge, compare, pairs, vLLM and --resume. `resolve_model_path`
is the one place that turns a recipe's `name_or_path` into what `from_pretrained` loads; anything that is not a
`.gguf` path passes through unchanged.

Why a folder rather than `from_pretrained(..., gguf_file=...)` everywhere: transformers dequantises a GGUF on
every load (~10 s for a 135M model, minutes for a 7B), its `save_pretrained` refuses a GGUF-loaded model, the
Trainer refuses to train a config that says `quant_method: gguf`, and a LoRA adapter must name a base folder that
`merge`, `eval` and vLLM can load.

The cache: `$NL2SQL_ALIGN_CACHE/gguf/<key>/` (default `~/.cache/nl2sql_align/gguf/<key>/`), where the key
hashes the file's size, its first and last 8 MiB (the metadata and tensor data; hashing a 7B file whole would
take seconds on every command) and the transformers version (its GGUF mapping decides the converted weights).
Guarantee: the folder is written in a temporary sibling and renamed into place when complete, so it either
exists complete or not at all; an unsupported architecture or quantisation type raises a UserError and writes
nothing. Concurrent processes (a multi-process launch) take a file lock, so one imports and the others reuse it.
recipe.resolved.toml keeps the user's `.gguf` path (resolution is cached, so cheap).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from importlib import metadata
from pathlib import Path

from nl2sql_align.errors import UserError
from nl2sql_align.paths import refuse_existing

log = logging.getLogger(__name__)

SUFFIX = ".gguf"
# Bumped when the conversion below changes what it writes, so that older cache folders are not reused.
CONVERTER_VERSION = "1"
SOURCE_NAME = "gguf_source.json"  # provenance, written into the imported folder
_SAMPLE = 8 * 2**20  # bytes hashed from each end of the file
# Candidates for a pad token distinct from EOS, in order (see _pick_pad_token).
_PAD_CANDIDATES = ("<|endoftext|>", "<pad>", "<|pad|>", "<unk>")
# GGUF "architectures" that transformers lists in its mapping but that are not model architectures.
_NOT_ARCHITECTURES = ("general", "tokenizer")


def is_gguf_path(name_or_path: str | os.PathLike | None) -> bool:
    return bool(name_or_path) and str(name_or_path).lower().endswith(SUFFIX)


def cache_root() -> Path:
    """$NL2SQL_ALIGN_CACHE/gguf, else ~/.cache/nl2sql_align/gguf (the demo's cache lives beside it)."""
    base = os.environ.get("NL2SQL_ALIGN_CACHE")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "nl2sql_align") / "gguf"


def cache_key(path: Path) -> str:
    """A content-derived name: size + first and last 8 MiB + the transformers version + CONVERTER_VERSION."""
    size = path.stat().st_size
    h = hashlib.sha256(f"{size}:{_transformers_version()}:{CONVERTER_VERSION}:".encode())
    with path.open("rb") as f:
        h.update(f.read(_SAMPLE))
        if size > 2 * _SAMPLE:
            f.seek(size - _SAMPLE)
            h.update(f.read(_SAMPLE))
        elif size > _SAMPLE:
            h.update(f.read())
    return f"{path.stem[:60]}-{h.hexdigest()[:16]}"


def cached_folder(file: str | os.PathLike) -> Path:
    """Where `resolve_model_path` imports (or has imported) this GGUF file."""
    return cache_root() / cache_key(_check_file(Path(file).expanduser()))


def resolve_model_path(name_or_path: str) -> str:
    """What `from_pretrained` should load for a recipe's model.name_or_path: the imported folder of a `.gguf`
    file (importing it on first use), else `name_or_path` unchanged (a folder or a hub id)."""
    if not is_gguf_path(name_or_path):
        return name_or_path
    src = _check_file(Path(name_or_path).expanduser())
    dest = cache_root() / cache_key(src)
    if (dest / "config.json").is_file():
        return str(dest)
    inspect_gguf(src)  # an unsupported file stops here, before anything is written
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _lock(dest.parent / f".{dest.name}.lock"):
        if not (dest / "config.json").is_file():  # another process may have imported it while we waited
            log.info("importing %s into %s (once: later runs reuse it)", src, dest)
            _import(src, dest)
    return str(dest)


def import_gguf(file: str | os.PathLike, output: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Convert a GGUF file into a transformers folder at `output` (the `import-gguf` command). `output` must not
    exist unless `overwrite`. Written in a temporary sibling folder, then renamed: a failure leaves nothing."""
    src = _check_file(Path(file).expanduser())
    out = Path(output).expanduser()
    refuse_existing(out, overwrite, "--output")
    inspect_gguf(src)  # unsupported architecture / quantisation: a clear error before minutes of dequantising
    return _import(src, out)


def _import(src: Path, out: Path) -> Path:
    """Convert into a temporary sibling of `out`, then rename it into place (replacing `out`, if any)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.importing-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _convert(src, tmp)
        if out.is_dir():  # overwrite (or an empty folder): replaced only now that the new one is complete
            shutil.rmtree(out)
        elif out.exists():
            out.unlink()
        os.replace(tmp, out)
    except (ValueError, NotImplementedError) as e:  # what transformers / gguf raise for what they cannot convert
        raise _unsupported(src, str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def inspect_gguf(file: Path) -> dict:
    """The GGUF's metadata as transformers reads it (no tensors loaded, a second or so); raises a UserError for an
    architecture or tensor type that cannot be converted."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(file))
    except Exception as e:  # not a GGUF file, or a truncated one
        raise UserError(f"{file}: not a readable GGUF file ({type(e).__name__}: {e})") from None
    supported_types = supported_quantization_types()
    bad = sorted({t.tensor_type.name for t in reader.tensors if t.tensor_type.name not in supported_types})
    if bad:
        raise _unsupported(file, f"tensor type(s) {', '.join(bad)} cannot be dequantised")
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    try:
        parsed = load_gguf_checkpoint(str(file), return_tensors=False)
    except (ValueError, NotImplementedError, KeyError) as e:
        raise _unsupported(file, str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    return parsed


def supported_architectures() -> list[str]:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return [a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in _NOT_ARCHITECTURES]


def supported_quantization_types() -> list[str]:
    """GGML tensor types the installed `gguf` package can dequantise."""
    from gguf import GGMLQuantizationType, quants

    traits = getattr(quants, "_type_traits", {})
    return [t.name for t in GGMLQuantizationType if t.name in ("F32", "F16") or t in traits]


def _unsupported(file: Path, why: str) -> UserError:
    return UserError(
        f"{file}: cannot import this GGUF: {why}. transformers {_transformers_version()} converts the architectures "
        f"{', '.join(supported_architectures())} with tensor types {', '.join(supported_quantization_types())}; "
        "use a GGUF of one of those, or the model's original (safetensors) folder"
    )


def _check_file(path: Path) -> Path:
    if not path.is_file():
        raise UserError(f"{path}: no such GGUF file")
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise UserError(f"{path}: not a GGUF file (it does not start with the GGUF magic bytes)")
    return path


def _convert(src: Path, out: Path) -> None:
    """Dequantise `src` into a plain model folder at `out` (which must not exist)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(src.parent), src.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # save_pretrained refuses a GGUF-loaded model ("not serializable"), and a config that still says
    # quant_method = gguf makes the Trainer refuse to train: rebuild a plain model from a clean config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    pad = _pick_pad_token(tokenizer)
    if pad is not None:
        tokenizer.pad_token = pad
    config.pad_token_id = tokenizer.pad_token_id
    if tokenizer.eos_token_id is not None:
        config.eos_token_id = tokenizer.eos_token_id
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    del loaded
    gen = model.generation_config
    gen.eos_token_id, gen.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    if tokenizer.bos_token_id is not None:
        gen.bos_token_id = tokenizer.bos_token_id
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    if tokenizer.chat_template is None:
        log.warning("%s carries no chat template: set model.chat_template in the recipe", src)
    (out / SOURCE_NAME).write_text(
        json.dumps(
            {
                "source": str(src.resolve()),
                "size": src.stat().st_size,
                "transformers": _transformers_version(),
                "converter": CONVERTER_VERSION,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )


def _pick_pad_token(tokenizer) -> str | None:
    """A pad token distinct from EOS, when the GGUF has none or pads with EOS (SmolLM2 pads with <|im_end|>).

    With pad == EOS, any collator or reward head that masks tokens equal to the pad id also masks the real EOS
    ending each answer, and the model learns not to stop. None: keep what the tokenizer has."""
    pad, eos = tokenizer.pad_token, tokenizer.eos_token
    if pad is not None and pad != eos:
        return None
    vocab = tokenizer.get_vocab()
    for cand in (tokenizer.unk_token, *_PAD_CANDIDATES):
        if cand and cand in vocab and cand not in (eos, tokenizer.bos_token):
            return cand
    return None if pad is not None else eos


@contextlib.contextmanager
def _lock(path: Path):
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock; the rename still keeps the folder whole
        yield
        return
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _transformers_version() -> str:
    try:
        return metadata.version("transformers")
    except metadata.PackageNotFoundError:
        return "unknown"
