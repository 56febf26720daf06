#!/usr/bin/env python3
"""Generate a tiny, real, runnable MLX llama: random weights, a byte-level BPE tokenizer
trained on a few sentences, and a chat template. It takes a few seconds and needs only the
packages `mlx-lm` brings (mlx, tokenizers).

    python scripts/make-tiny-model.py OUT_DIR [--seed 0] [--hidden 64] [--layers 2]
                                      [--model-type llama|qwen] [--no-mlx-marker]

`--hidden 1024 --layers 24` gives a model of about 500 MB of weights (for benchmarks).
`--model-type qwen` gives the first Qwen's architecture, which mlx-lm runs but transformers does
not know (its checkpoints ship their tokenizer as custom code): the tests of `run`'s refusal of
model-supplied code start from it.
The model is marked as MLX (README front matter) so mlxfs and mlx-knife treat it as runnable;
`--no-mlx-marker` leaves the mark out (a plain README, safetensors metadata `format: pt`), as a
transformers checkpoint would be: mlx-knife's rules then label it `PyTorch` (mlx-lm still runs it).
The tokenizer depends only on `--vocab`: models made with different seeds or layer counts share
it (a draft model for speculative decoding).
"""

import argparse
import json
import os
import sys
from pathlib import Path

SENTENCES = [
    "Explain FUSE in one sentence.",
    "A file system in user space lets a program serve files.",
    "MLX runs models on Apple silicon and on Linux CPUs.",
    "The quick brown fox jumps over the lazy dog.",
    "Models live in workspaces and in the hub cache.",
    "Hello, world! How are you today?",
    "mlxfs mounts every model as one read-only tree.",
    "Tokens stream to the terminal as they come.",
]

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}</s>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=384, help="BPE vocabulary size (>= 260)")
    ap.add_argument("--model-type", choices=["llama", "qwen"], default="llama")
    ap.add_argument("--no-mlx-marker", action="store_true",
                    help="no MLX marker (README front matter): labelled PyTorch by mlx-knife's rules")
    a = ap.parse_args()

    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama, qwen
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    out = a.out
    out.mkdir(parents=True, exist_ok=True)

    # Tokenizer: byte-level BPE, deterministic for the fixed sentences.
    specials = ["<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=a.vocab,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(SENTENCES * 4, trainer=trainer)
    tok.save(str(out / "tokenizer.json"))
    vocab_size = tok.get_vocab_size()
    ids = {t: tok.token_to_id(t) for t in specials}

    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "model_max_length": 512,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, indent=2) + "\n")

    heads = max(1, a.hidden // 16)
    config = {
        "model_type": a.model_type,
        "architectures": ["LlamaForCausalLM" if a.model_type == "llama" else "QWenLMHeadModel"],
        "hidden_size": a.hidden,
        "num_hidden_layers": a.layers,
        "intermediate_size": a.hidden * 2,
        "num_attention_heads": heads,
        "num_key_value_heads": max(1, heads // 2),
        "rms_norm_eps": 1e-5,
        "vocab_size": vocab_size,
        "max_position_embeddings": 512,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "bos_token_id": ids["<s>"],
        "eos_token_id": ids["</s>"],
    }
    if a.model_type == "qwen":
        config.update({"kv_channels": a.hidden // heads, "layer_norm_epsilon": 1e-5})
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    mx.random.seed(a.seed)
    arch = llama if a.model_type == "llama" else qwen
    args = arch.ModelArgs.from_dict(config)
    model = arch.Model(args)
    weights = dict(tree_flatten(model.parameters()))
    # Small random weights keep the logits tame (and generation varied).
    weights = {k: (v * 2.0).astype(mx.float32) for k, v in weights.items()}
    mx.save_safetensors(str(out / "model.safetensors"), weights,
                        metadata={"format": "pt" if a.no_mlx_marker else "mlx"})

    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": ids["<s>"], "eos_token_id": ids["</s>"]}, indent=2) + "\n")
    front = "" if a.no_mlx_marker else "---\nlibrary_name: mlx\ntags:\n- mlx\n- test\n---\n\n"
    (out / "README.md").write_text(
        front +
        f"# tiny-{a.model_type}\n\nA random-weight {a.model_type} ({a.layers} layers, hidden {a.hidden}) made by "
        "scripts/make-tiny-model.py for tests. It produces noise, deterministically.\n")
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"tiny model in {out} ({size / 1e6:.1f} MB, vocab {vocab_size})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
