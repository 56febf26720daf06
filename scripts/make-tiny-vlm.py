#!/usr/bin/env python3
"""Generate a tiny, real, runnable vision-language model: a random-weight Pixtral (mlx-vlm's
`pixtral`: a Pixtral vision tower, a projector and a Mistral language model) with a byte-level
BPE tokenizer trained on a few sentences, Pixtral's image tokens, a chat template and the
processor files (PixtralProcessor, PixtralImageProcessor), all made here: nothing is
downloaded. It needs mlx, mlx-vlm and tokenizers.

    python scripts/make-tiny-vlm.py OUT_DIR [--seed 0] [--hidden 64] [--layers 2]
                                    [--vision-hidden 32] [--vision-layers 1]
                                    [--image-size 64] [--patch 8]

Images are scaled so that their longest edge is at most `--image-size` pixels and cut into
`--patch`-pixel patches, one image token each. `--hidden 1024 --layers 16 --vision-hidden 256
--vision-layers 4 --image-size 256 --patch 16` gives a model of about 1 GB of weights (for
benchmarks). The weights are random: the model describes nothing, deterministically — and
differently for different images, since the image's patches enter the prompt.
"""

import sys

sys.dont_write_bytecode = True  # no scripts/__pycache__ left in the checkout
from tiny_common import bpe_tokenizer, finish, front_matter, generation_config, parser, save_tokenizer, write_json  # noqa: E402

SENTENCES = [
    "Describe the image in one sentence.",
    "A red square on a white background.",
    "What colour is the circle?",
    "The quick brown fox jumps over the lazy dog.",
    "A photo of a cat sitting on a mat.",
    "Hello, world! How are you today?",
    "mlxfs runs vision models through mlx-vlm.",
    "There are two shapes: a triangle and a square.",
]

# Pixtral's prompt format: [INST] with the images as [IMG] before the text.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}[INST]"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}[IMG]"
    "{% elif c['type'] == 'text' %}{{ c['text'] if c['text'] is defined else c['content'] }}{% endif %}"
    "{% endfor %}{% endif %}[/INST]"
    "{% elif message['role'] == 'system' %}"
    "{{ message['content'] if message['content'] is string else message['content'][0]['text'] }}\n\n"
    "{% else %}"
    "{{ message['content'] if message['content'] is string else message['content'][0]['text'] }}{{ eos_token }}"
    "{% endif %}{% endfor %}"
)

SPECIALS = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[IMG]", "[IMG_BREAK]", "[IMG_END]"]


def tower(model_type, hidden, layers):
    """The start of a tower's config (text or vision), the keys both have, in their order."""
    heads = max(1, hidden // 16)
    return {
        "model_type": model_type,
        "hidden_size": hidden,
        "head_dim": hidden // heads,
        "num_hidden_layers": layers,
        "intermediate_size": hidden * 2,
        "num_attention_heads": heads,
    }


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vision-hidden", type=int, default=32)
    ap.add_argument("--vision-layers", type=int, default=1)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--patch", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=384, help="BPE vocabulary size (>= 270)")
    a = ap.parse_args()

    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_vlm.models import pixtral

    out = a.out
    out.mkdir(parents=True, exist_ok=True)

    tok = bpe_tokenizer(SENTENCES, SPECIALS, a.vocab)
    vocab, ids = save_tokenizer(out, tok, SPECIALS, 4096, CHAT_TEMPLATE)
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE + "\n")
    image_processor = {
        "image_processor_type": "PixtralImageProcessor",
        "processor_class": "PixtralProcessor",
        "size": {"longest_edge": a.image_size},
        "patch_size": {"height": a.patch, "width": a.patch},
        "do_resize": True, "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "do_convert_rgb": True, "resample": 3,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
    }
    write_json(out / "preprocessor_config.json", image_processor)
    write_json(out / "processor_config.json", {
        "processor_class": "PixtralProcessor",
        "patch_size": a.patch,
        "spatial_merge_size": 1,
        "image_token": "[IMG]",
        "image_break_token": "[IMG_BREAK]",
        "image_end_token": "[IMG_END]",
    })

    text_config = tower("mistral", a.hidden, a.layers)
    text_config.update({
        "num_key_value_heads": max(1, text_config["num_attention_heads"] // 2),
        "rms_norm_eps": 1e-5,
        "vocab_size": vocab,
        "rope_theta": 10000.0,
        "max_position_embeddings": 4096,
    })
    vision_config = tower("pixtral", a.vision_hidden, a.vision_layers)
    vision_config.update({
        "image_size": a.image_size,
        "patch_size": a.patch,
        "num_channels": 3,
        "rope_theta": 10000.0,
    })
    config = {
        "model_type": "pixtral",
        "architectures": ["LlavaForConditionalGeneration"],
        "text_config": text_config,
        "vision_config": vision_config,
        "image_token_index": ids["[IMG]"],
        "vision_feature_layer": -1,
        "vision_feature_select_strategy": "full",
        "vocab_size": vocab,
        "bos_token_id": ids["<s>"],
        "eos_token_id": ids["</s>"],
    }
    write_json(out / "config.json", config)

    mx.random.seed(a.seed)
    cfg = pixtral.ModelConfig.from_dict(config)
    cfg.text_config = pixtral.TextConfig.from_dict(text_config)
    cfg.vision_config = pixtral.VisionConfig.from_dict(vision_config)
    model = pixtral.Model(cfg)
    weights = {k: (v * 2.0).astype(mx.float32) if "norm" not in k else v.astype(mx.float32)
               for k, v in tree_flatten(model.parameters())}
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    generation_config(out, ids)
    finish(out, "vlm", front_matter("mlx-vlm") +
           f"# tiny-pixtral\n\nA random-weight Pixtral (text {a.layers} layers, hidden {a.hidden}; vision "
           f"{a.vision_layers} layers, hidden {a.vision_hidden}, {a.patch}-pixel patches) made by "
           "scripts/make-tiny-vlm.py for tests. It produces noise, deterministically.\n", f", vocab {vocab}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
