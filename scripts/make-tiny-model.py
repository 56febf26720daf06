#!/usr/bin/env python3
"""Generate a tiny, real, runnable MLX llama: random weights, a byte-level BPE tokenizer
trained on a few sentences, and a chat template. It takes a few seconds and needs only the
packages `mlx-lm` brings (mlx, tokenizers).

    python scripts/make-tiny-model.py OUT_DIR [--seed 0] [--hidden 64] [--layers 2]
                                      [--model-type llama|qwen] [--no-mlx-marker]
                                      [--shards N] [--dtype float32|float16|bfloat16]

`--hidden 1024 --layers 24` gives a model of about 860 MB of float32 weights (for benchmarks).
`--shards N` writes the weights as N shards (`model-0000i-of-0000N.safetensors`, about equal
in size, in parameter order) with a `model.safetensors.index.json`, as sharded hub models are;
`--dtype float16|bfloat16` stores them in that dtype (default float32).
`--script PIECE` (repeatable) gives a "scripted" model instead of noise: whatever the prompt, it
answers with the pieces in order, then end of sequence (each piece becomes one token; no spaces
in a piece; a piece that is a token of the vocabulary already, such as `Ã` and `©` — the bytes
C3 and A9 of `é` in the byte-level alphabet —, is that token: a character split over two). With `--tool-template` its chat template is one mlx-lm recognises as JSON tool
calling (`<tool_call>{...}</tool_call>`), so `--script '<tool_call>' --script '{"name":...}'
--script '</tool_call>'` makes a model that calls a tool: the serve tests use it.
`--model-type qwen` gives the first Qwen's architecture, which mlx-lm runs but transformers does
not know (its checkpoints ship their tokenizer as custom code): the tests of `run`'s refusal of
model-supplied code start from it.
The model is marked as MLX (README front matter) so mlxfs and mlx-knife treat it as runnable;
`--no-mlx-marker` leaves the mark out (a plain README, safetensors metadata `format: pt`), as a
transformers checkpoint would be: mlx-knife's rules then label it `PyTorch` (mlx-lm still runs it).
The tokenizer depends only on `--vocab`: models made with different seeds or layer counts share
it (a draft model for speculative decoding).
"""

import sys

sys.dont_write_bytecode = True  # no scripts/__pycache__ left in the checkout
from tiny_common import bpe_tokenizer, finish, front_matter, generation_config, parser, save_tokenizer, write_json  # noqa: E402

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

# mlx-lm infers its `json_tools` parser from `<tool_call>` and `tool_call.name` in the template.
TOOL_TEMPLATE = (
    "{% if tools %}<|system|>Tools: {{ tools | tojson }}</s>\n{% endif %}"
    "{% for message in messages %}<|{{ message['role'] }}|>"
    "{% if message.get('tool_calls') %}{% for tool_call in message['tool_calls'] %}"
    "<tool_call>{\"name\":\"{{ tool_call.function.name }}\"}</tool_call>{% endfor %}"
    "{% else %}{{ message['content'] }}{% endif %}</s>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
    "{# calls are written <tool_call>{\"name\": tool_call.name, \"arguments\": ...}</tool_call> #}"
)


def scripted(a, config, tok, ids, mx):
    """Weights whose greedy (and near-greedy) answer to anything is `a.script`, then `</s>`.

    Every layer's output projections are zero, so the last hidden state is the current token's
    embedding; embeddings are one-hot (hidden >= vocab), and `lm_head` maps each token to its
    successor: a script piece to the next piece, the last piece to `</s>`, anything else to
    the first piece.
    """
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    vocab = tok.get_vocab_size()
    hidden = max(a.hidden, -(-vocab // 64) * 64)
    heads = hidden // 16
    config.update({"hidden_size": hidden, "intermediate_size": hidden * 2, "vocab_size": vocab,
                   "num_attention_heads": heads, "num_key_value_heads": max(1, heads // 2),
                   "tie_word_embeddings": False})
    write_json(a.out / "config.json", config)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    weights = {k: v.astype(mx.float32) for k, v in tree_flatten(model.parameters())}
    for k in weights:
        if k.endswith(("o_proj.weight", "down_proj.weight")):
            weights[k] = mx.zeros_like(weights[k])
        elif k.endswith("norm.weight"):
            weights[k] = mx.ones_like(weights[k])
    weights["model.embed_tokens.weight"] = mx.eye(vocab, hidden, dtype=mx.float32)
    pieces = [tok.token_to_id(p) for p in a.script]
    succ = {t: pieces[0] for t in range(vocab)}
    for here, nxt in zip(pieces, pieces[1:] + [ids["</s>"]]):
        succ[here] = nxt
    rows = [[0.0] * hidden for _ in range(vocab)]
    for t, u in succ.items():
        rows[u][t] = 1.0
    weights["lm_head.weight"] = mx.array(rows, dtype=mx.float32)
    return weights


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=384, help="BPE vocabulary size (>= 260)")
    ap.add_argument("--model-type", choices=["llama", "qwen"], default="llama")
    ap.add_argument("--script", action="append", default=[], metavar="PIECE",
                    help="answer every prompt with these pieces, then end (llama only)")
    ap.add_argument("--tool-template", action="store_true",
                    help="a chat template mlx-lm reads as JSON tool calling")
    ap.add_argument("--shards", type=int, default=1, metavar="N",
                    help="write N weight shards and an index (default: one model.safetensors)")
    ap.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                    help="dtype of the stored weights")
    ap.add_argument("--no-mlx-marker", action="store_true",
                    help="no MLX marker (README front matter): labelled PyTorch by mlx-knife's rules")
    a = ap.parse_args()

    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama, qwen

    out = a.out
    out.mkdir(parents=True, exist_ok=True)

    # Tokenizer: byte-level BPE, deterministic for the fixed sentences.
    specials = ["<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
    tok = bpe_tokenizer(SENTENCES, specials, a.vocab)
    if a.script:
        from tokenizers import AddedToken
        for piece in a.script:
            if " " in piece or not piece:
                ap.error(f"--script {piece!r}: a piece is one token: no spaces")
        # A piece that is a token already (a byte of the byte-level alphabet: `Ã` is 0xC3) is
        # that token, so a script can split a character over two tokens.
        tok.add_tokens([AddedToken(p, special=False, normalized=False) for p in a.script
                        if tok.token_to_id(p) is None])
    vocab_size, ids = save_tokenizer(out, tok, specials, 512, TOOL_TEMPLATE if a.tool_template else CHAT_TEMPLATE)

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
    write_json(out / "config.json", config)

    mx.random.seed(a.seed)
    arch = llama if a.model_type == "llama" else qwen
    args = arch.ModelArgs.from_dict(config)
    model = arch.Model(args)
    weights = dict(tree_flatten(model.parameters()))
    # Small random weights keep the logits tame (and generation varied).
    weights = {k: (v * 2.0).astype(mx.float32) for k, v in weights.items()}
    if a.script:
        weights = scripted(a, config, tok, ids, mx)
    if a.dtype != "float32":
        weights = {k: v.astype(getattr(mx, a.dtype)) for k, v in weights.items()}
    metadata = {"format": "pt" if a.no_mlx_marker else "mlx"}
    if a.shards <= 1:
        mx.save_safetensors(str(out / "model.safetensors"), weights, metadata=metadata)
    else:
        # About equal shards, in parameter order; each written and released in turn.
        total = sum(v.nbytes for v in weights.values())
        per = -(-total // a.shards)
        groups, size = [[]], 0
        for k, v in weights.items():
            if groups[-1] and size + v.nbytes > per and len(groups) < a.shards:
                groups.append([])
                size = 0
            groups[-1].append(k)
            size += v.nbytes
        n = len(groups)
        weight_map = {}
        for i, keys in enumerate(groups):
            name = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
            mx.save_safetensors(str(out / name), {k: weights[k] for k in keys}, metadata=metadata)
            for k in keys:
                weight_map[k] = name
        write_json(out / "model.safetensors.index.json",
                   {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, indent=4)

    generation_config(out, ids)
    front = "" if a.no_mlx_marker else front_matter()
    finish(out, "model", front +
           f"# tiny-{a.model_type}\n\nA random-weight {a.model_type} ({a.layers} layers, hidden {a.hidden}) made by "
           "scripts/make-tiny-model.py for tests. It produces noise, deterministically.\n", f", vocab {vocab_size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
