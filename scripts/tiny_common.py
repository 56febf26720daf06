"""What the tiny-model generators (make-tiny-model.py, make-tiny-vlm.py, make-tiny-whisper.py)
share: the start of their command line, the byte-level BPE tokenizer and its files, and the
last files and line they write. They import it from their own folder (scripts/, on sys.path
when a script is run by its path). Standard library only at import time, so `--help` needs
no mlx; `tokenizers` is imported by the functions that use it.

The tests check the exact text these models generate: what is written here must stay byte for
byte what the scripts wrote before (key order included).
"""

import argparse
import json
import sys
from pathlib import Path


def parser(doc):
    """The generators' argument parser: their docstring as help, OUT_DIR and `--seed`."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    return ap


def write_json(path, obj, indent=2):
    """`obj` as indented JSON and a newline into `path`."""
    path.write_text(json.dumps(obj, indent=indent) + "\n")


def bpe_tokenizer(sentences, specials, vocab):
    """A byte-level BPE tokenizer of `vocab` tokens (`specials` first), trained on `sentences`
    (four times over): deterministic for fixed sentences."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(sentences * 4, trainer=trainer)
    return tok


def save_tokenizer(out, tok, specials, max_length, chat_template):
    """tokenizer.json, tokenizer_config.json (a fast tokenizer with <s>, </s>, <unk> and
    `chat_template`) and special_tokens_map.json into `out`; returns the vocabulary size and the
    ids of `specials` (a dict)."""
    tok.save(str(out / "tokenizer.json"))
    ids = {t: tok.token_to_id(t) for t in specials}
    write_json(out / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "model_max_length": max_length,
        "clean_up_tokenization_spaces": False,
        "chat_template": chat_template,
    })
    write_json(out / "special_tokens_map.json", {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})
    return tok.get_vocab_size(), ids


def generation_config(out, ids):
    """generation_config.json: the ids of <s> and </s>."""
    write_json(out / "generation_config.json", {"bos_token_id": ids["<s>"], "eos_token_id": ids["</s>"]})


def front_matter(*tags):
    """README front matter that marks a model as MLX: library mlx, tags mlx, `tags`, test."""
    return "---\nlibrary_name: mlx\ntags:\n" + "".join(f"- {t}\n" for t in ("mlx", *tags, "test")) + "---\n\n"


def finish(out, kind, readme, note=""):
    """README.md (`readme`) into `out`, then `tiny KIND in OUT (SIZE MB NOTE)` on stderr."""
    (out / "README.md").write_text(readme)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"tiny {kind} in {out} ({size / 1e6:.1f} MB{note})", file=sys.stderr)
