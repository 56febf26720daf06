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
script, `python -c GENERATE_PY REQUEST_JSON EVENTS_FD` writes the events as JSON lines to the
file descriptor EVENTS_FD, a pipe of their own, and exits 1 after an `error` event (130 when
interrupted before a result). mlxfs captures stdout and stderr separately.

The helpers `check_imports`, `env_info`, `load_model`, `chat_prompt`, `sampling` and
`line_writer` are shared with worker.py (the long-lived process of `mlxfs serve`), which runs
this file as a module.

Nothing a model ships is ever run: `trust_remote_code=False` is passed to mlx-lm and to
transformers, and a model that needs its own code is a `remote_code_required` error naming the
file that asks for it.
"""

import io
import json
import os
import sys


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _code_requests(model_path):
    """What the model's files ask to run, as "file: key = value" strings: config.json's
    `model_file` (mlx-lm's own custom architectures) and the `AutoTokenizer` entry of an
    `auto_map` in tokenizer_config.json or config.json (transformers' custom tokenizers).
    The `auto_map` entries for models are left out: mlx-lm builds models by itself."""
    out = []
    cfg = _read_json(os.path.join(model_path, "config.json")) or {}
    if cfg.get("model_file") is not None:
        out.append(f"config.json: model_file = {cfg['model_file']}")
    for name, data in (("tokenizer_config.json", _read_json(os.path.join(model_path, "tokenizer_config.json"))),
                       ("config.json", cfg)):
        auto_map = (data or {}).get("auto_map")
        if isinstance(auto_map, dict):
            refs = auto_map.get("AutoTokenizer")
        elif isinstance(auto_map, (list, tuple)) and name == "tokenizer_config.json":
            refs = auto_map  # the legacy form: [slow, fast]
        else:
            refs = None
        if isinstance(refs, str):
            refs = [refs]
        refs = [r for r in (refs or []) if isinstance(r, str)]
        if refs:
            out.append(f"{name}: auto_map.AutoTokenizer = {', '.join(refs)}")
    return out


def _needs_remote_code(exc):
    # transformers (resolve_trust_remote_code) and mlx-lm (load_model, `model_file`) both name
    # the switch in the error they raise when it is off.
    return "trust_remote_code" in str(exc)


def _remote_code_error(model_path, exc):
    asks = _code_requests(model_path)
    if asks:
        what = "; ".join(asks)
    else:
        first = str(exc).strip().splitlines()
        what = f"{type(exc).__name__}: {first[0] if first else ''}"
    return {"event": "error", "type": "remote_code_required",
            "message": f"{model_path} requires executing model-supplied code ({what}); "
                       "mlxfs never runs code a model ships (trust_remote_code=False)"}


def _caches():
    """Where each library caches, as it resolved it from the environment."""
    out = {}
    try:
        import huggingface_hub.constants as hc
        for name in ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ASSETS_CACHE",
                     "HUGGINGFACE_ASSETS_CACHE", "HF_XET_CACHE", "HF_TOKEN_PATH"):
            if isinstance(getattr(hc, name, None), str):
                out["huggingface_hub." + name] = getattr(hc, name)
    except Exception:  # huggingface_hub missing: mlx_lm's import below reports it
        pass
    try:
        if "transformers" not in sys.modules:
            # mlx-whisper never imports it; importing it here would only print its advice
            # that PyTorch is missing.
            raise ImportError
        import transformers.utils.hub as th
        for name in ("HF_MODULES_CACHE", "TRANSFORMERS_CACHE", "PYTORCH_TRANSFORMERS_CACHE",
                     "PYTORCH_PRETRAINED_BERT_CACHE"):
            if isinstance(getattr(th, name, None), str):
                out["transformers." + name] = getattr(th, name)
    except Exception:
        pass
    for name in ("XDG_CACHE_HOME", "TORCH_HOME", "HF_DATASETS_CACHE", "HF_METRICS_CACHE"):
        if os.environ.get(name):
            out["env." + name] = os.environ[name]
    return out


def run(request_json, emit, should_stop):
    # No library may ask a question: stdin is empty (the subprocess's is /dev/null already),
    # and whatever stayed in Python's own buffers is flushed while mlxfs still captures it.
    saved_stdin = sys.stdin
    sys.stdin = io.StringIO("")
    final = []

    def send(obj):
        # Noted first: a Ctrl-C held back while the line was written is raised by `emit`.
        if obj.get("event") in ("done", "error"):
            final.append(obj["event"])
        emit(json.dumps(obj))

    try:
        return _run(json.loads(request_json), send, should_stop)
    except KeyboardInterrupt:
        # Ctrl-C in a subprocess before generation began (imports, loading): the answer of
        # the embedded interpreter, whose stop flag is read once generation begins — an
        # interrupted run with nothing generated.
        if final:
            raise
        send(_interrupted(peak_memory_gb=0.0))
        return None
    finally:
        sys.stdin = saved_stdin
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass


BLAS = {"blas": None}


def _fast_blas():
    """Load an optimised BLAS into the global symbol scope before mlx is imported, so that
    mlx's float32 matrix products (`cblas_sgemm`: prompt processing, batched decoding) use it.

    mlx-cpu's Linux wheel bundles the reference BLAS (netlib, `mlx_cpu.libs/libblas-*.so`),
    about 4 GFLOP/s on one core; OpenBLAS does the same products 10-20x faster. Quantized and
    half-precision models use mlx's own kernels and gain nothing. `MLXFS_BLAS`: unset or
    `auto` = the system's OpenBLAS when mlx bundles the reference one; `bundled` = never;
    a path = that library. Returns the library loaded, or None."""
    import ctypes
    import ctypes.util
    import glob
    import importlib.util
    choice = os.environ.get("MLXFS_BLAS", "").strip() or "auto"
    if choice == "bundled":
        return None
    if choice == "auto":
        try:
            spec = importlib.util.find_spec("mlx")
        except (ImportError, ValueError):
            return None
        roots = list(spec.submodule_search_locations or []) if spec else []
        if not any(glob.glob(os.path.join(os.path.dirname(r), "mlx_cpu.libs", "libblas-*.so*"))
                   for r in roots):
            return None
        found = ctypes.util.find_library("openblas")
        candidates = [found] if found else []
        candidates += ["libopenblas.so.0", "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
                       "/usr/lib/aarch64-linux-gnu/libopenblas.so.0", "/usr/lib64/libopenblas.so.0"]
    else:
        candidates = [choice]
    for lib in candidates:
        try:
            ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
            return lib
        except OSError:
            continue
    if choice != "auto":
        print(f"mlxfs: MLXFS_BLAS={choice} could not be loaded; using mlx's own BLAS",
              file=sys.stderr)
    return None


def _numba_stand_in():
    """mlx-whisper imports numba when it is imported, only to compile the dynamic time warping
    of word timestamps (`timing.py`: `@numba.jit` twice), which only serve's
    `timestamp_granularities[]=word` asks for; numba and llvmlite add about 210 MB to an
    environment. Without numba, a stand-in whose `jit` leaves a function as it is (plain
    Python: correct, only slower — about 0.3 s per 30-second window of 224 tokens) is put in
    this process's `sys.modules`. With numba installed, nothing changes."""
    try:
        import numba  # noqa: F401
        return
    except ImportError:
        pass
    import types

    def jit(*args, **kwargs):
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return args[0]
        return lambda f: f

    stand_in = types.ModuleType("numba")
    stand_in.jit = jit
    stand_in.__mlxfs_stand_in__ = True
    sys.modules["numba"] = stand_in


BACKEND_MODULES = {
    "mlx-lm": ("mlx", "mlx_lm"),
    # mlx_lm too: its import quiets transformers' advice, and mlx-vlm builds on it.
    "mlx-vlm": ("mlx", "mlx_lm", "mlx_vlm", "PIL"),
    "mlx-whisper": ("mlx", "mlx_whisper"),
}


def check_imports(backend="mlx-lm"):
    """None when mlx and the backend's modules import, else the `missing_dependency` error
    event (its message: "cannot import <module> (<why>), ...")."""
    if "mlx" not in sys.modules and BLAS["blas"] is None:
        try:
            BLAS["blas"] = _fast_blas()
        except Exception:  # never a reason not to run
            BLAS["blas"] = None
    if backend == "mlx-whisper":
        _numba_stand_in()
    missing = []
    for mod in BACKEND_MODULES.get(backend, BACKEND_MODULES["mlx-lm"]):
        try:
            __import__(mod)
        except ImportError as e:
            missing.append(f"{mod} ({e})")
    if missing:
        return {"event": "error", "type": "missing_dependency",
                "message": "cannot import " + ", ".join(missing)}
    return None


def env_info():
    """The interpreter and the caches the libraries resolved: the fields of the `env` event
    (call it after mlx_lm's import: that quiets transformers' advice "PyTorch was not found")."""
    caches = _caches()
    return {
        "executable": sys.executable,
        "prefix": sys.prefix,
        "python": sys.version.split()[0],
        "hf_home": caches.get("huggingface_hub.HF_HOME", os.environ.get("HF_HOME")),
        "hub_cache": caches.get("huggingface_hub.HF_HUB_CACHE"),
        "caches": caches,
        "offline": os.environ.get("HF_HUB_OFFLINE") == "1",
        "blas": BLAS["blas"] or "bundled",
    }


def load_model(path):
    """mlx-lm's load of the folder `path` with every guard against model-supplied code:
    `(model, tokenizer, None)`, or `(None, None, error_event)` (`remote_code_required`,
    `load_failed`)."""
    import inspect

    from mlx_lm import load

    # A tokenizer that needs custom code fails only after mlx-lm has read every weight: ask
    # transformers first, when a file names such a tokenizer (a fraction of a second).
    if any("AutoTokenizer" in r for r in _code_requests(path)):
        try:
            from transformers import AutoTokenizer
            AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        except Exception as e:
            if _needs_remote_code(e):
                return None, None, _remote_code_error(path, e)
            # Anything else: mlx-lm's own load below says it in its words.

    kwargs = {"tokenizer_config": {"trust_remote_code": False}}
    if "trust_remote_code" in inspect.signature(load).parameters:  # older mlx-lm lacks it
        kwargs["trust_remote_code"] = False
    try:
        model, tokenizer = load(path, **kwargs)
    except Exception as e:
        if _needs_remote_code(e):
            return None, None, _remote_code_error(path, e)
        return None, None, {"event": "error", "type": "load_failed",
                            "message": f"{type(e).__name__}: {e}"}
    return model, tokenizer, None


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


class Refused(Exception):
    """A job refused for what it asks (its `kind` is the error type, `message` says why), not
    failed: the same request fails the same way. `event` is its error event."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind, self.message = kind, message

    @property
    def event(self):
        return {"event": "error", "type": self.kind, "message": self.message}


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


def _run(req, send, should_stop):
    backend = req.get("backend") or "mlx-lm"
    if backend == "mlx-vlm":
        return _run_vlm(req, send, should_stop)
    if backend == "mlx-whisper":
        return _run_whisper(req, send, should_stop)

    def fail(event):
        send(event)
        return event["type"]

    missing = check_imports()
    if missing:
        return fail(missing)
    send({"event": "env", **env_info()})

    from mlx_lm import stream_generate

    path = req["model_path"]
    model, tokenizer, error = load_model(path)
    if error:
        return fail(error)
    draft_model = None
    if req.get("draft_model"):
        draft_model, error = _load_draft(req["draft_model"], tokenizer)
        if error:
            return fail(error)

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
        return fail(e.event)
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
    out = [a for a in _code_requests(model_path)]
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        auto_map = (_read_json(os.path.join(model_path, name)) or {}).get("auto_map")
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
        if _needs_remote_code(e):
            return None, None, _remote_code_error(path, e)
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
    def fail(event):
        send(event)
        return event["type"]

    missing = check_imports("mlx-vlm")
    if missing:
        return fail(missing)
    send({"event": "env", **env_info()})
    path = req["model_path"]
    model, processor, error = load_vlm(path)
    if error:
        return fail(error)
    images = []
    for p in req.get("images") or []:
        try:
            images.append(open_image(p))
        except Exception as e:
            return fail(_media_error("invalid_media", f"{p}: cannot read the image: {type(e).__name__}: {e}"))
    use_template = bool(req.get("chat_template", True))
    try:
        prompt = vlm_prompt(model, processor, req["prompt"], len(images), use_template)
        done = vlm_generate(model, processor, prompt, images, req,
                            lambda t: send({"event": "token", "text": t}), should_stop,
                            names=[str(p) for p in req.get("images") or []])
    except Refused as e:
        return fail(e.event)
    except Exception as e:
        return fail({"event": "error", "type": "generation_failed", "message": f"{type(e).__name__}: {e}"})
    send({"event": "done", **done, "chat_template": use_template, "draft_tokens": None})
    return None


SAMPLE_RATE = 16000
# The longest audio a run or a request may hold once decoded (seconds): a header can claim
# any length (a 64 KB WAV "at 1 Hz" is 9 hours of audio), and Whisper's work and memory grow
# with it.
MAX_AUDIO_SECONDS = 2 * 3600


def _wav_samples(data):
    """Mono float32 samples and the rate of a RIFF/WAVE file's bytes (PCM 8/16/24/32-bit,
    IEEE float 32/64, WAVE_FORMAT_EXTENSIBLE of these), or None when it is another coding."""
    import struct

    import numpy as np

    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos, fmt, samples = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = data[pos + 8:pos + 8 + size]
        if cid == b"fmt " and len(body) >= 16:
            code, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
            if code == 0xFFFE and len(body) >= 26:
                code = struct.unpack("<H", body[24:26])[0]
            fmt = (code, channels, rate, bits)
        elif cid == b"data":
            samples = body
        pos += 8 + size + (size & 1)
    if fmt is None or samples is None:
        return None
    code, channels, rate, bits = fmt
    # A header is the file's word only: check it before trusting any size it implies.
    if not 1 <= channels <= 32:
        raise MediaError("invalid_media", f"a WAV file with {channels} channels (1 to 32 are read)")
    if not 4000 <= rate <= 384000:
        raise MediaError("invalid_media", f"a WAV file at {rate} Hz (4 kHz to 384 kHz are read)")
    if bits not in (8, 16, 24, 32, 64) or bits // 8 * 8 != bits:
        raise MediaError("invalid_media", f"a WAV file with {bits}-bit samples")
    width = bits // 8
    frames = len(samples) // (width * channels)
    if frames == 0:
        raise MediaError("invalid_media", "a WAV file without audio samples")
    if frames / rate > MAX_AUDIO_SECONDS:
        raise MediaError("media_too_large", f"{frames / rate / 3600:.1f} hours of audio "
                         f"(at most {MAX_AUDIO_SECONDS // 3600} hours are transcribed)")
    n = len(samples) // (width * channels) * (width * channels)
    raw = samples[:n]
    if code == 1 and bits == 8:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif code == 1 and bits == 16:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif code == 1 and bits == 24:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        x = v.astype(np.float32) / float(1 << 23)
    elif code == 1 and bits == 32:
        x = np.frombuffer(raw, "<i4").astype(np.float32) / 2147483648.0
    elif code == 3 and bits in (32, 64):
        x = np.frombuffer(raw, "<f4" if bits == 32 else "<f8").astype(np.float32)
    else:
        return None
    x = x.reshape(-1, channels).mean(axis=1)
    return x, rate


def _resample(x, rate):
    import numpy as np

    if rate == SAMPLE_RATE:
        return x.astype(np.float32)
    try:
        from math import gcd

        from scipy.signal import resample_poly
        g = gcd(rate, SAMPLE_RATE)
        return resample_poly(x, SAMPLE_RATE // g, rate // g).astype(np.float32)
    except ImportError:
        n = int(round(len(x) * SAMPLE_RATE / rate))
        return np.interp(np.arange(n) * (rate / SAMPLE_RATE), np.arange(len(x)), x).astype(np.float32)


def load_audio(src):
    """16 kHz mono float32 samples of an audio file (a path, or `{"data": base64}`), and the
    decoder used: WAV with Python alone; other formats with PyAV (`av`, FFmpeg's libraries in
    a wheel) or else the `ffmpeg` program. Returns (samples, decoder) or raises
    `MediaError(kind, message)`."""
    import base64
    import shutil
    import subprocess

    import numpy as np

    if isinstance(src, dict):
        data, name = base64.b64decode(src["data"]), src.get("name") or "the upload"
    else:
        with open(src, "rb") as f:
            data = f.read()
        name = src
    try:
        wav = _wav_samples(data)
    except MediaError as e:
        raise MediaError(e.kind, f"{name}: {e.message}")
    if wav is not None:
        return _resample(*wav), "wav"
    try:
        import av
    except ImportError:
        av = None
    if av is not None:
        try:
            with av.open(io.BytesIO(data)) as container:
                stream = next(s for s in container.streams if s.type == "audio")
                resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
                chunks, total = [], 0
                for frame in container.decode(stream):
                    for out in resampler.resample(frame):
                        chunks.append(out.to_ndarray().reshape(-1))
                        total += len(chunks[-1])
                    if total > MAX_AUDIO_SECONDS * SAMPLE_RATE:
                        raise MediaError("media_too_large", f"{name}: more than "
                                         f"{MAX_AUDIO_SECONDS // 3600} hours of audio")
                for out in resampler.resample(None):
                    chunks.append(out.to_ndarray().reshape(-1))
            return (np.concatenate(chunks) if chunks else np.zeros(0, np.float32)).astype(np.float32), "pyav"
        except MediaError:
            raise
        except Exception as e:
            raise MediaError("invalid_media", f"{name}: PyAV cannot decode it: {type(e).__name__}: {e}")
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg:
        p = subprocess.run([ffmpeg, "-nostdin", "-loglevel", "error", "-i", "pipe:0", "-f", "f32le",
                            "-ac", "1", "-ar", str(SAMPLE_RATE), "pipe:1"],
                           input=data, capture_output=True)
        if p.returncode != 0:
            raise MediaError("invalid_media", f"{name}: ffmpeg cannot decode it: "
                             + p.stderr.decode(errors="replace").strip()[-500:])
        x = np.frombuffer(p.stdout, "<f4").astype(np.float32)
        if len(x) > MAX_AUDIO_SECONDS * SAMPLE_RATE:
            raise MediaError("media_too_large", f"{name}: more than "
                             f"{MAX_AUDIO_SECONDS // 3600} hours of audio")
        return x, "ffmpeg"
    raise MediaError("decoder_missing",
                     f"{name} is not PCM WAV, and there is no decoder for it: neither PyAV (the `av` "
                     "package) in this Python nor the `ffmpeg` program on PATH")


class MediaError(Refused):
    """An image or audio file that cannot be taken (`invalid_media`, `media_too_large`,
    `decoder_missing`)."""


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

    def fail(event):
        send(event)
        return event["type"]

    try:
        missing = check_imports("mlx-whisper")
        if missing:
            return fail(missing)
        send({"event": "env", **env_info()})
        try:
            samples, decoder = load_audio(req["audio"])
        except MediaError as e:
            return fail(_media_error(e.kind, e.message))
        except OSError as e:
            return fail(_media_error("invalid_media", f"{req['audio']}: {e}"))
        try:
            out = transcribe(req["model_path"], samples, req, should_stop)
        except Stopped:
            raise
        except Exception as e:
            return fail({"event": "error", "type": "generation_failed", "message": f"{type(e).__name__}: {e}"})
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


def line_writer(fd):
    """A function writing one event line (a JSON text, no newline) whole to the descriptor
    `fd`, a channel of its own, from any thread; `fd` stops being inherited by processes
    started from here, so that none holds the channel open after this one ends (mlxfs reads
    it to its end)."""
    import threading

    os.set_inheritable(fd, False)
    lock = threading.Lock()

    def write(line):
        data = (line + "\n").encode()  # ASCII: json.dumps escapes
        with lock:
            _SIGINT["writing"] += 1
            try:
                while data:
                    data = data[os.write(fd, data):]
            finally:
                _SIGINT["writing"] -= 1
        # A Ctrl-C that came while the line was written is raised now (`interrupt_once`).
        if _SIGINT["pending"] and not _SIGINT["writing"] \
                and threading.current_thread() is threading.main_thread():
            _SIGINT["pending"] = False
            raise KeyboardInterrupt
    return write


# `interrupt_once`'s state: lines being written, an interrupt held back until they are, and
# whether one came at all (`interrupted`: a KeyboardInterrupt a library swallowed — a bare
# `except:` in an import — still stops the work at its next check).
_SIGINT = {"writing": 0, "pending": False, "seen": False}


def interrupted():
    """Whether SIGINT came (the subprocess's `should_stop`)."""
    return _SIGINT["seen"]


def interrupt_once():
    """In a subprocess: SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt once, and again
    only after a second, so that a stop that reaches this process twice (Ctrl-C from the
    terminal to the process group, `kill -TERM -PGID`, a closed terminal's SIGHUP — and
    forwarded by mlxfs as SIGINT) interrupts once and the `interrupted` answer, with the text
    so far, is still written (SIGTERM's and SIGHUP's default action would end the process
    with no answer at all). One that comes while `line_writer` writes a line is raised once
    the line is whole (a half line would corrupt the event channel)."""
    import signal
    import time

    first = []

    def handler(signum, frame):
        _SIGINT["seen"] = True
        now = time.monotonic()
        if first and now - first[0] < 1.0:
            return
        first[:] = [now]
        if _SIGINT["writing"]:
            _SIGINT["pending"] = True
            return
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def exit_quietly(code):
    """End the process with `code` once stdout and stderr are flushed, the stop signals ignored
    first (the second of a doubled Ctrl-C must not kill it with status -2), and without the
    interpreter's and the C libraries' shutdown (`os._exit`): OpenBLAS's thread shutdown at
    exit joins threads that may never answer, and hung `mlxfs run` after its answer."""
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)


def request_arg(arg):
    """A subprocess's request: `arg`, or when it is `-` all of stdin (mlxfs sends it there:
    an argument is at most 128 KiB)."""
    if arg == "-":
        return sys.stdin.buffer.read().decode("utf-8")
    return arg


if __name__ == "__main__":
    interrupt_once()
    _emit = line_writer(int(sys.argv[2]))
    try:
        _failed = run(request_arg(sys.argv[1]), _emit, interrupted)
    except KeyboardInterrupt:
        exit_quietly(130)
    exit_quietly(1 if _failed else 0)
