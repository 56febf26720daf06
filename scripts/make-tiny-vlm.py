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

import argparse
import json
import sys
from pathlib import Path

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
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
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    out = a.out
    out.mkdir(parents=True, exist_ok=True)

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=a.vocab, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(SENTENCES * 4, trainer=trainer)
    tok.save(str(out / "tokenizer.json"))
    vocab = tok.get_vocab_size()
    ids = {t: tok.token_to_id(t) for t in SPECIALS}

    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "model_max_length": 4096,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, indent=2) + "\n")
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
    (out / "preprocessor_config.json").write_text(json.dumps(image_processor, indent=2) + "\n")
    (out / "processor_config.json").write_text(json.dumps({
        "processor_class": "PixtralProcessor",
        "patch_size": a.patch,
        "spatial_merge_size": 1,
        "image_token": "[IMG]",
        "image_break_token": "[IMG_BREAK]",
        "image_end_token": "[IMG_END]",
    }, indent=2) + "\n")

    heads = max(1, a.hidden // 16)
    vheads = max(1, a.vision_hidden // 16)
    text_config = {
        "model_type": "mistral",
        "hidden_size": a.hidden,
        "head_dim": a.hidden // heads,
        "num_hidden_layers": a.layers,
        "intermediate_size": a.hidden * 2,
        "num_attention_heads": heads,
        "num_key_value_heads": max(1, heads // 2),
        "rms_norm_eps": 1e-5,
        "vocab_size": vocab,
        "rope_theta": 10000.0,
        "max_position_embeddings": 4096,
    }
    vision_config = {
        "model_type": "pixtral",
        "hidden_size": a.vision_hidden,
        "head_dim": a.vision_hidden // vheads,
        "num_hidden_layers": a.vision_layers,
        "intermediate_size": a.vision_hidden * 2,
        "num_attention_heads": vheads,
        "image_size": a.image_size,
        "patch_size": a.patch,
        "num_channels": 3,
        "rope_theta": 10000.0,
    }
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
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    mx.random.seed(a.seed)
    cfg = pixtral.ModelConfig.from_dict(config)
    cfg.text_config = pixtral.TextConfig.from_dict(text_config)
    cfg.vision_config = pixtral.VisionConfig.from_dict(vision_config)
    model = pixtral.Model(cfg)
    weights = {k: (v * 2.0).astype(mx.float32) if "norm" not in k else v.astype(mx.float32)
               for k, v in tree_flatten(model.parameters())}
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": ids["<s>"], "eos_token_id": ids["</s>"]}, indent=2) + "\n")
    (out / "README.md").write_text(
        "---\nlibrary_name: mlx\ntags:\n- mlx\n- mlx-vlm\n- test\n---\n\n"
        f"# tiny-pixtral\n\nA random-weight Pixtral (text {a.layers} layers, hidden {a.hidden}; vision "
        f"{a.vision_layers} layers, hidden {a.vision_hidden}, {a.patch}-pixel patches) made by "
        "scripts/make-tiny-vlm.py for tests. It produces noise, deterministically.\n")
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"tiny vlm in {out} ({size / 1e6:.1f} MB, vocab {vocab})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
