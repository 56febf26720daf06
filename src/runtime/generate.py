"""Text generation for `mlxfs run`, shared by the embedded interpreter and the subprocess
fallback so both give the same output.

`run(request_json, emit, should_stop)`: `emit(event_json)` receives one JSON object per event:
  {"event": "env", "executable", "prefix", "hf_home", "hub_cache", "caches", "offline", "python"}
      ("caches": where each library will cache, as the libraries themselves resolved it)
  {"event": "token", "text": "..."}             (streamed pieces of text)
  {"event": "done", "text", "prompt_tokens", "generation_tokens", "prompt_tps",
   "generation_tps", "peak_memory_gb", "finish_reason", "chat_template", "draft_tokens"}
      ("draft_tokens": with a `draft_model`, how many generated tokens the draft proposed and
       the model accepted; else null)
  {"event": "error", "type", "message"}
It returns None after a `done` event, or the error type after an `error` event.

Events never travel on stdout: libraries print there (transformers asks "Do you wish to run the
custom code? [y/N] " without a newline), and such text would merge into an event line. As a
script, `python -c GENERATE_PY REQUEST_JSON EVENTS_FD SHARED` (SHARED: the sources of
`mlxfs_common` and `mlxfs_audio`, mlxfs_common.py says how) writes the events as JSON lines to
the file descriptor EVENTS_FD, a pipe of their own, and exits 1 after an `error` event (130
when interrupted before a result). mlxfs captures stdout and stderr separately.

The generation itself — `chat_prompt`, `encode`, `sampling`, `fit_completion`, the vision
helpers and `transcribe` — is also worker.py's (the long-lived process of `mlxfs serve`), which
imports this file as the module `mlxfs_generate`; what every script shares (imports, the
environment report, the guards, events and signals) is mlxfs_common.py's.

Nothing a model ships is ever run: `trust_remote_code=False` is passed to mlx-lm and to
transformers, and a model that needs its own code is a `remote_code_required` error naming the
file that asks for it.
"""

import io
import json
import os
import sys

if __name__ == "__main__":  # a subprocess: its last argument has the shared modules
    for _name, _source in json.loads(sys.argv.pop()):  # as `mlxfs_common.install`
        sys.modules[_name] = __import__("types").ModuleType(_name)
        exec(compile(_source, _name + ".py", "exec"), sys.modules[_name].__dict__)

from mlxfs_audio import SAMPLE_RATE, load_audio  # noqa: E402
from mlxfs_common import (MediaError, Refused, check_imports, code_requests, env_info,  # noqa: E402
                          load_model, main, needs_remote_code, read_json, remote_code_error, run_job)


def run(request_json, emit, should_stop):
    def on_interrupt(send, final):
        # Ctrl-C in a subprocess before generation began (imports, loading): the answer of
        # the embedded interpreter, whose stop flag is read once generation begins — an
        # interrupted run with nothing generated.
        if final:
            raise
        send(_interrupted(peak_memory_gb=0.0))
        return None

    return run_job(request_json, emit, lambda req, send: _run(req, send, should_stop), on_interrupt)


def chat_prompt(tokenizer, messages, tools=None):
    """`messages` (OpenAI chat messages whose content is a string) through the model's chat
    template with the generation prompt added, as text; None when the tokenizer has none."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    extra = {"tools": tools} if tools else {}
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **extra)


def encode(tokenizer, text):
    """`text`'s token ids as mlx-lm's `stream_generate` encodes a string: with the
    tokenizer's special tokens unless the text already starts with its BOS token."""
    special = tokenizer.bos_token is None or not text.startswith(tokenizer.bos_token)
    return tokenizer.encode(text, add_special_tokens=special)



class ContextLengthExceeded(Refused):
    """A prompt longer than the model's context length: refused before any token of it is
    processed (a 100,000-token prompt holds a model for many minutes, and its answer would
    be the model's output past the length it was trained for). `message` replaces the
    default one."""

    def __init__(self, tokens, limit, at_least=False, message=None):
        super().__init__("context_length_exceeded", message or
                         f"the prompt is {'at least ' if at_least else ''}{tokens} tokens; "
                         f"this model's context length is {limit}")


class BadRequest(Refused):
    """What only the model can refuse of a job (an empty prompt, messages its chat template
    rejects, a token id past its vocabulary): `invalid_request`, never a crash. mlxfs checks
    what it can before a job reaches Python."""

    def __init__(self, message):
        super().__init__("invalid_request", message)


def check_context(tokens, limit, at_least=False):
    """Raise `ContextLengthExceeded` when `tokens` (a count; `at_least`: a lower bound) is over
    `limit` (the model's context length from its config.json; None or 0: unknown, no check)."""
    if limit and tokens > int(limit):
        raise ContextLengthExceeded(tokens, int(limit), at_least)


def fit_completion(prompt_tokens, max_tokens, limit, explicit, at_least=False):
    """How many tokens a completion may have beside a prompt of `prompt_tokens` tokens
    (`at_least`: a lower bound) in a context of `limit` tokens (the model's context length;
    None or 0: unknown, `max_tokens` as it is) — the one rule of `run` and `serve`:
    `max_tokens` when prompt and completion fit; else, when the user gave it (`explicit`), a
    `ContextLengthExceeded` in OpenAI's terms ("you requested N tokens (P in the prompt, C for
    the completion)"), and a default one cut to the room left (the text then ends with
    finish_reason `length` there). A prompt that leaves no room is refused either way."""
    if not limit:
        return max_tokens
    limit = int(limit)
    check_context(prompt_tokens, limit, at_least)
    room = limit - prompt_tokens
    more = "at least " if at_least else ""
    if room < 1:
        raise ContextLengthExceeded(prompt_tokens, limit, at_least, message=(
            f"the prompt is {more}{prompt_tokens} tokens: it fills this model's context length "
            f"of {limit} and leaves no room for a completion"))
    if max_tokens <= room:
        return max_tokens
    if explicit:
        raise ContextLengthExceeded(prompt_tokens, limit, at_least, message=(
            f"this model's context length is {limit} tokens, but you requested {more}"
            f"{prompt_tokens + max_tokens} tokens ({more}{prompt_tokens} in the prompt, {max_tokens} "
            f"for the completion): ask for at most {room} completion tokens, or shorten the prompt"))
    return room


def sampling(req):
    """The sampler and logits processors for a request's `temperature` (default 0: greedy),
    `top_p` (1: off), `min_p` (0), `top_k` (0: off) — mlx-lm's defaults (mlxfs sends them all), `repetition_penalty`, `presence_penalty`,
    `frequency_penalty` and `logit_bias` (token id → bias; each None: off); seeds MLX's
    random generator first when the request has a `seed`."""
    import mlx.core as mx
    from mlx_lm.sample_utils import make_logits_processors, make_sampler

    if req.get("seed") is not None:
        mx.random.seed(int(req["seed"]))
    sampler = make_sampler(temp=float(req.get("temperature", 0.0)), top_p=float(req.get("top_p", 1.0)),
                           min_p=float(req.get("min_p") or 0.0), top_k=int(req.get("top_k") or 0))
    bias = req.get("logit_bias")
    return sampler, make_logits_processors(
        logit_bias={int(k): float(v) for k, v in bias.items()} if bias else None,
        repetition_penalty=req.get("repetition_penalty"),
        presence_penalty=req.get("presence_penalty"),
        frequency_penalty=req.get("frequency_penalty"))


def _fail(send, event):
    """Send the error event `event`; its type (what `run` returns)."""
    send(event)
    return event["type"]


def _run(req, send, should_stop):
    backend = req.get("backend") or "mlx-lm"
    if backend == "mlx-vlm":
        return _run_vlm(req, send, should_stop)
    if backend == "mlx-whisper":
        return _run_whisper(req, send, should_stop)

    missing = check_imports()
    if missing:
        return _fail(send, missing)
    send({"event": "env", **env_info()})

    from mlx_lm import stream_generate

    path = req["model_path"]
    model, tokenizer, error = load_model(path)
    if error:
        return _fail(send, error)
    draft_model = None
    if req.get("draft_model"):
        draft_model, error = _load_draft(req["draft_model"], tokenizer)
        if error:
            return _fail(send, error)

    prompt = req["prompt"]
    use_template = req.get("chat_template", True) and getattr(tokenizer, "chat_template", None)
    if use_template:
        prompt = chat_prompt(tokenizer, [{"role": "user", "content": prompt}])
    # Encoded here as stream_generate would, to refuse a prompt over the context length
    # before any of it is processed.
    prompt = encode(tokenizer, prompt)
    try:
        max_tokens = fit_completion(len(prompt), int(req.get("max_tokens", 256)),
                                    req.get("context_length"), bool(req.get("max_tokens_explicit")))
    except ContextLengthExceeded as e:
        return _fail(send, e.event)
    sampler, processors = sampling(req)

    pieces = []
    last = None
    finish = None
    from_draft = 0
    extra = {}
    if draft_model is not None:
        extra = {"draft_model": draft_model, "num_draft_tokens": int(req.get("num_draft_tokens") or 3)}
    try:
        for resp in stream_generate(model, tokenizer, prompt, max_tokens=max_tokens,
                                    sampler=sampler, logits_processors=processors, **extra):
            last = resp
            if getattr(resp, "from_draft", False):
                from_draft += 1
            if resp.text:
                pieces.append(resp.text)
                send({"event": "token", "text": resp.text})
            if should_stop():
                finish = "interrupted"
                break
    except KeyboardInterrupt:
        finish = "interrupted"
    send({
        "event": "done",
        "text": "".join(pieces),
        "prompt_tokens": last.prompt_tokens if last else 0,
        "generation_tokens": last.generation_tokens if last else 0,
        "prompt_tps": last.prompt_tps if last else 0.0,
        "generation_tps": last.generation_tps if last else 0.0,
        "peak_memory_gb": last.peak_memory if last else 0.0,
        "finish_reason": finish or (last.finish_reason if last else None) or "stop",
        "chat_template": bool(use_template),
        "draft_tokens": from_draft if draft_model is not None else None,
    })
    return None


# ---------------------------------------------------------------------------------------------
# Vision (mlx-vlm) and speech to text (mlx-whisper): shared with worker.py.


def _processor_code_requests(model_path):
    """What a vision model's processor files ask to run: `auto_map` entries for a processor,
    an image processor or a tokenizer (transformers loads them only as model-supplied code)."""
    out = [a for a in code_requests(model_path)]
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        auto_map = (read_json(os.path.join(model_path, name)) or {}).get("auto_map")
        if isinstance(auto_map, dict):
            for key in ("AutoProcessor", "AutoImageProcessor", "AutoFeatureExtractor"):
                ref = auto_map.get(key)
                if ref:
                    out.append(f"{name}: auto_map.{key} = {ref}")
    return out


def load_vlm(path):
    """mlx-vlm's load of the folder `path` (never a hub id: an existing folder is used as it
    is), model-supplied code refused: `(model, processor, None)` or `(None, None, error)`."""
    asks = _processor_code_requests(path)
    if asks:
        return None, None, {"event": "error", "type": "remote_code_required",
                            "message": f"{path} requires executing model-supplied code ({'; '.join(asks)}); "
                                       "mlxfs never runs code a model ships (trust_remote_code=False)"}
    from mlx_vlm import load
    try:
        model, processor = load(path, trust_remote_code=False)
    except Exception as e:
        if needs_remote_code(e):
            return None, None, remote_code_error(path, e)
        return None, None, {"event": "error", "type": "load_failed",
                            "message": f"{type(e).__name__}: {e}"}
    return model, processor, None


def open_image(src):
    """A PIL image, RGB, EXIF orientation applied, from a path or base64 bytes (`{"data"}`)."""
    import base64
    from PIL import Image, ImageOps

    if isinstance(src, dict):
        img = Image.open(io.BytesIO(base64.b64decode(src["data"])))
    else:
        img = Image.open(src)
    img.load()
    img = ImageOps.exif_transpose(img)
    return img.convert("RGB")


def _media_error(kind, message):
    return {"event": "error", "type": kind, "message": message}


def vlm_prompt(model, processor, messages_or_prompt, num_images, chat_template=True):
    """The prompt text through mlx-vlm's chat template for `num_images` images."""
    if not chat_template:
        return messages_or_prompt
    from mlx_vlm.prompt_utils import apply_chat_template
    return apply_chat_template(processor, model.config, messages_or_prompt, num_images=num_images)


def check_images(processor, images, names=None):
    """Each image put to the model's own image processor first (`processor.image_processor`,
    as transformers' processors have it; one without it is not asked): an image it refuses —
    a 200×1 strip whose resize leaves a side of 0 pixels, an aspect ratio past its bound — is
    the `invalid_media` error naming the image and its size, not a failed generation. mlxfs
    checked what a header tells (format, size, pixels) before Python started."""
    image_processor = getattr(processor, "image_processor", None)
    if not callable(image_processor):
        return
    for i, img in enumerate(images):
        try:
            image_processor(images=[img], return_tensors="np")
        except Exception as e:
            name = names[i] if names and i < len(names) else f"image {i + 1}"
            raise MediaError("invalid_media",
                             f"{name} ({img.width}×{img.height} pixels): the model's image processor "
                             f"cannot take it: {type(e).__name__}: {e}")


def vlm_generate(model, processor, prompt, images, req, on_text, should_stop, names=None):
    """mlx-vlm's stream_generate: `on_text(piece)` per piece; the `done` fields. `names`: how
    messages name the images (else "image N")."""
    import mlx.core as mx
    from mlx_vlm import stream_generate

    if req.get("seed") is not None:
        mx.random.seed(int(req["seed"]))
    kwargs = {"max_tokens": int(req.get("max_tokens", 256)),
              "temperature": float(req.get("temperature", 0.0)),
              "top_p": float(req.get("top_p", 1.0))}
    if req.get("repetition_penalty"):
        kwargs["repetition_penalty"] = float(req["repetition_penalty"])
    # The text's own tokens, before mlx-vlm adds the images' (so a lower bound).
    tokenizer = getattr(processor, "tokenizer", processor)
    if req.get("context_length") and isinstance(prompt, str):
        kwargs["max_tokens"] = fit_completion(len(tokenizer.encode(prompt)), kwargs["max_tokens"],
                                              req["context_length"], bool(req.get("max_tokens_explicit")),
                                              at_least=True)
    check_images(processor, images, names)
    pieces, last, finish = [], None, None
    try:
        for resp in stream_generate(model, processor, prompt, image=images or None, **kwargs):
            last = resp
            if resp.text:
                pieces.append(resp.text)
                on_text(resp.text)
            if should_stop():
                finish = "interrupted"
                break
    except KeyboardInterrupt:
        finish = "interrupted"
    n = last.generation_tokens if last else 0
    return {
        "text": "".join(pieces),
        "prompt_tokens": last.prompt_tokens if last else 0,
        "generation_tokens": n,
        "prompt_tps": last.prompt_tps if last else 0.0,
        "generation_tps": last.generation_tps if last else 0.0,
        "peak_memory_gb": last.peak_memory if last else 0.0,
        "finish_reason": finish or (last.finish_reason if last else None)
                         or ("length" if n >= kwargs["max_tokens"] else "stop"),
    }


def _run_vlm(req, send, should_stop):
    missing = check_imports("mlx-vlm")
    if missing:
        return _fail(send, missing)
    send({"event": "env", **env_info()})
    path = req["model_path"]
    model, processor, error = load_vlm(path)
    if error:
        return _fail(send, error)
    images = []
    for p in req.get("images") or []:
        try:
            images.append(open_image(p))
        except Exception as e:
            return _fail(send, _media_error("invalid_media",
                                            f"{p}: cannot read the image: {type(e).__name__}: {e}"))
    use_template = bool(req.get("chat_template", True))
    try:
        prompt = vlm_prompt(model, processor, req["prompt"], len(images), use_template)
        done = vlm_generate(model, processor, prompt, images, req,
                            lambda t: send({"event": "token", "text": t}), should_stop,
                            names=[str(p) for p in req.get("images") or []])
    except Refused as e:
        return _fail(send, e.event)
    except Exception as e:
        return _fail(send, {"event": "error", "type": "generation_failed", "message": f"{type(e).__name__}: {e}"})
    send({"event": "done", **done, "chat_template": use_template, "draft_tokens": None})
    return None



class Stopped(Exception):
    """A transcription ended early because `should_stop()` said so."""


def _stoppable(real, should_stop):
    """A stand-in for the `tqdm` module (`real`) that mlx-whisper's transcribe.py reports
    progress with: its bar's `update`, called after each 30-second window is decoded, raises
    `Stopped` once `should_stop()` is true, so a transcription ends within one window
    (mlx-whisper has no hook of its own)."""

    class Bar(real.tqdm):
        def update(self, n=1):
            if should_stop():
                raise Stopped()
            return super().update(n)

    shim = type(real)("tqdm", "mlx-whisper's progress bars, stoppable")
    shim.tqdm = Bar
    # Any other name (`trange`, `auto`, ...) is the real module's (PEP 562).
    shim.__getattr__ = lambda name: getattr(real, name)
    return shim


def transcribe(path, samples, req, should_stop=lambda: False):
    """mlx-whisper's transcription of 16 kHz samples: text, segments (id, start, end, text),
    language, token count, and with `req["word_timestamps"]` the words (`[{"word", "start",
    "end"}]`, seconds, mlx-whisper's `word_timestamps=True`; without it, None). Temperature 0
    (the default) decodes greedily without fallback.
    Raises `Stopped` when `should_stop()` turns true: before the first window, or after any
    window (where mlx-whisper's module has the shape this knows; else only before)."""
    import mlx_whisper

    t = float(req.get("temperature") or 0.0)
    kwargs = {
        "path_or_hf_repo": path,
        "verbose": None,
        "temperature": (t,),
        "task": req.get("task") or "transcribe",
        "condition_on_previous_text": True,
        "word_timestamps": bool(req.get("word_timestamps")),
    }
    if req.get("language"):
        kwargs["language"] = req["language"]
    if req.get("prompt"):
        kwargs["initial_prompt"] = req["prompt"]
    if req.get("seed") is not None:
        import mlx.core as mx
        mx.random.seed(int(req["seed"]))
    if should_stop():
        raise Stopped()
    module = sys.modules.get("mlx_whisper.transcribe")
    real = getattr(module, "tqdm", None)
    patched = module is not None and hasattr(real, "tqdm")
    if patched:
        module.tqdm = _stoppable(real, should_stop)
    try:
        result = mlx_whisper.transcribe(samples, **kwargs)
    finally:
        if patched:
            module.tqdm = real
    segments = [{"id": s.get("id", i), "start": round(float(s["start"]), 3),
                 "end": round(float(s["end"]), 3), "text": s["text"]}
                for i, s in enumerate(result.get("segments") or [])]
    tokens = sum(len(s.get("tokens") or []) for s in result.get("segments") or [])
    words = None
    if kwargs["word_timestamps"]:
        words = [{"word": w["word"].strip(), "start": round(float(w["start"]), 3),
                  "end": round(float(w["end"]), 3)}
                 for s in result.get("segments") or [] for w in s.get("words") or []]
    return {"text": (result.get("text") or "").strip(), "segments": segments, "words": words,
            "language": result.get("language"), "generation_tokens": tokens,
            "audio_seconds": round(len(samples) / SAMPLE_RATE, 3)}


def _interrupted(**extra):
    """The `done` event of a run stopped before it produced anything, with `extra` fields."""
    return {"event": "done", "text": "", "prompt_tokens": 0, "generation_tokens": 0,
            "prompt_tps": 0.0, "generation_tps": 0.0, "finish_reason": "interrupted",
            "chat_template": False, "draft_tokens": None, **extra}


def _run_whisper(req, send, should_stop):
    """A transcription. Stopped at any point after it began (`should_stop()`, or Ctrl-C as
    KeyboardInterrupt in a subprocess: imports, audio, model, any window), it still answers
    `done` with finish_reason "interrupted" and no text."""
    samples = []
    decoder = None

    try:
        missing = check_imports("mlx-whisper")
        if missing:
            return _fail(send, missing)
        send({"event": "env", **env_info()})
        try:
            samples, decoder = load_audio(req["audio"])
        except MediaError as e:
            return _fail(send, _media_error(e.kind, e.message))
        except OSError as e:
            return _fail(send, _media_error("invalid_media", f"{req['audio']}: {e}"))
        try:
            out = transcribe(req["model_path"], samples, req, should_stop)
        except Stopped:
            raise
        except Exception as e:
            return _fail(send, {"event": "error", "type": "generation_failed", "message": f"{type(e).__name__}: {e}"})
    except (Stopped, KeyboardInterrupt):
        send(_interrupted(segments=[], language=None, decoder=decoder,
                          audio_seconds=round(len(samples) / SAMPLE_RATE, 3)))
        return None
    if out["text"]:
        send({"event": "token", "text": out["text"]})
    send({"event": "done", **out, "decoder": decoder, "prompt_tokens": 0, "prompt_tps": 0.0,
          "generation_tps": 0.0, "finish_reason": "stop", "chat_template": False,
          "draft_tokens": None})
    return None


def _vocab(tokenizer):
    for t in (tokenizer, getattr(tokenizer, "_tokenizer", None)):
        try:
            return t.get_vocab()
        except Exception:
            continue
    return None


def _load_draft(name, tokenizer):
    """The draft model of speculative decoding: a folder, or a hub id that mlx-lm downloads
    (huggingface_hub, into the isolated cache HF_HOME points at). `(model, None)`, or
    `(None, error_event)` (`load_failed`, `remote_code_required`, `draft_mismatch` when its
    tokenizer is not the model's)."""
    draft, draft_tokenizer, error = load_model(name)
    if error:
        if error["type"] == "load_failed":
            error = dict(error, message=f"draft model {name}: {error['message']}")
        return None, error
    # mlx-lm's own check compares vocabulary sizes; the tokens themselves must agree too.
    size, draft_size = tokenizer.vocab_size, draft_tokenizer.vocab_size
    if size != draft_size:
        why = f"vocabulary sizes differ ({draft_size} vs the model's {size})"
    else:
        mine, theirs = _vocab(tokenizer), _vocab(draft_tokenizer)
        why = "their vocabularies differ" if mine is not None and theirs is not None and mine != theirs else None
    if why:
        return None, {"event": "error", "type": "draft_mismatch",
                      "message": f"draft model {name} does not share the model's tokenizer: {why}; "
                                 "speculative decoding needs the same token ids"}
    return draft, None


if __name__ == "__main__":
    main(run)
