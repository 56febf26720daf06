#!/usr/bin/env python3
"""Generate a tiny, real, runnable Whisper in mlx-whisper's layout (the layout of the
mlx-community/whisper-* conversions: `config.json` with the model's dimensions and
`weights.safetensors`), with random weights. Like those repos it has no tokenizer or processor
files: mlx-whisper ships Whisper's tokenizer (tiktoken vocabularies) in its package, so the
model runs offline. It needs mlx and mlx-whisper; nothing is downloaded.

    python scripts/make-tiny-whisper.py OUT_DIR [--seed 0] [--state 64] [--layers 1]
                                        [--text-ctx 64] [--english-only]

The vocabulary is Whisper's own (51865 tokens, multilingual; 51864 with `--english-only`), so
the embedding dominates the size: about 7 MB at `--state 64`. `--state 384 --layers 4
--text-ctx 448` has the dimensions of whisper-tiny (about 75 MB in float16; for benchmarks).
`--text-ctx` bounds the tokens decoded per 30-second window (half of it), which keeps random
weights from decoding for long. The transcript of random weights is noise, deterministically.
"""

import sys

sys.dont_write_bytecode = True  # no scripts/__pycache__ left in the checkout
from tiny_common import finish, front_matter, parser, write_json  # noqa: E402


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--state", type=int, default=64)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--text-ctx", type=int, default=64)
    ap.add_argument("--english-only", action="store_true")
    a = ap.parse_args()

    import mlx.core as mx
    from mlx.utils import tree_flatten
    try:
        import numba  # noqa: F401
    except ImportError:
        # mlx-whisper imports numba only for word timestamps (as mlxfs's generate.py explains);
        # the test venv leaves it out.
        import types
        sys.modules["numba"] = types.ModuleType("numba")
        sys.modules["numba"].jit = lambda *a, **k: (lambda f: f)
    from mlx_whisper import whisper

    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    heads = max(1, a.state // 64)
    dims = {
        "n_mels": 80,
        "n_audio_ctx": 1500,
        "n_audio_state": a.state,
        "n_audio_head": heads,
        "n_audio_layer": a.layers,
        "n_vocab": 51864 if a.english_only else 51865,
        "n_text_ctx": a.text_ctx,
        "n_text_state": a.state,
        "n_text_head": heads,
        "n_text_layer": a.layers,
    }
    write_json(out / "config.json", {"model_type": "whisper", **dims})
    mx.random.seed(a.seed)
    model = whisper.Whisper(whisper.ModelDimensions(**dims), mx.float16)
    # float16, as the mlx-community conversions store them (mlx-whisper decodes in float16
    # by default and checks the encoder's output type); `alignment_heads` (the cross-attention
    # heads word timestamps follow: layer and head indices) stays integer, as there.
    weights = {k: v.astype(mx.float16) if mx.issubdtype(v.dtype, mx.floating) else v
               for k, v in tree_flatten(model.parameters())}
    mx.save_safetensors(str(out / "weights.safetensors"), weights, metadata={"format": "mlx"})
    finish(out, "whisper", front_matter("whisper") +
           f"# tiny-whisper\n\nA random-weight Whisper ({a.layers} layer(s), state {a.state}) in mlx-whisper's "
           "layout, made by scripts/make-tiny-whisper.py for tests. It transcribes noise, deterministically.\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
