"""What mlxfs's Python scripts share (generate.py, worker.py, convert.py import it as
`mlxfs_common`): the refusals (`Refused`, `MediaError`), the guards against model-supplied code
(`code_requests`, `needs_remote_code`, `remote_code_error`, `load_model`), the imports with the
BLAS preload (`check_imports`) and the environment report (`env_info`), the event writer
(`line_writer`), the stop signals (`interrupt_once`, `interrupted`, `exit_quietly`), and the
job wrapper of the two one-shot scripts (`run_job`, `main`). Only the standard library is
imported here at the top: mlx and its libraries are imported inside the functions that use
them, so this module (and the scripts importing it) loads in any Python.

How the scripts get it: mlxfs embeds every script (`include_str!`). In a subprocess, the
shared modules a script imports come as its last argument, a JSON list of `[name, source]`
pairs in the order they import each other, which the script's `__main__` block installs in
`sys.modules` (`install`, restated there: it runs before this module exists) before its
imports; in the embedded interpreter mlxfs creates the same modules, in the same order, before
the script (`runtime/embedded.rs`).
"""

import io
import json
import os
import sys


class Refused(Exception):
    """A job refused for what it asks (its `kind` is the error type, `message` says why), not
    failed: the same request fails the same way. `event` is its error event."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind, self.message = kind, message

    @property
    def event(self):
        return {"event": "error", "type": self.kind, "message": self.message}


class MediaError(Refused):
    """An image or audio file that cannot be taken (`invalid_media`, `media_too_large`,
    `decoder_missing`)."""


def read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def code_requests(model_path):
    """What the model's files ask to run, as "file: key = value" strings: config.json's
    `model_file` (mlx-lm's own custom architectures) and the `AutoTokenizer` entry of an
    `auto_map` in tokenizer_config.json or config.json (transformers' custom tokenizers).
    The `auto_map` entries for models are left out: mlx-lm builds models by itself."""
    out = []
    cfg = read_json(os.path.join(model_path, "config.json")) or {}
    if cfg.get("model_file") is not None:
        out.append(f"config.json: model_file = {cfg['model_file']}")
    for name, data in (("tokenizer_config.json", read_json(os.path.join(model_path, "tokenizer_config.json"))),
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


def needs_remote_code(exc):
    # transformers (resolve_trust_remote_code) and mlx-lm (load_model, `model_file`) both name
    # the switch in the error they raise when it is off.
    return "trust_remote_code" in str(exc)


def remote_code_error(model_path, exc):
    asks = code_requests(model_path)
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
    if any("AutoTokenizer" in r for r in code_requests(path)):
        try:
            from transformers import AutoTokenizer
            AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        except Exception as e:
            if needs_remote_code(e):
                return None, None, remote_code_error(path, e)
            # Anything else: mlx-lm's own load below says it in its words.

    kwargs = {"tokenizer_config": {"trust_remote_code": False}}
    if "trust_remote_code" in inspect.signature(load).parameters:  # older mlx-lm lacks it
        kwargs["trust_remote_code"] = False
    try:
        model, tokenizer = load(path, **kwargs)
    except Exception as e:
        if needs_remote_code(e):
            return None, None, remote_code_error(path, e)
        return None, None, {"event": "error", "type": "load_failed",
                            "message": f"{type(e).__name__}: {e}"}
    return model, tokenizer, None


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


def run_job(request_json, emit, work, on_interrupt):
    """A one-shot job (`run`'s generate.py, `convert`'s convert.py), as both modes run it:
    `work(request, send)` with the request parsed from `request_json` and `send(event)` writing
    one JSON line through `emit`; stdin is empty meanwhile (no library may ask a question: the
    subprocess's is /dev/null already), and whatever stayed in Python's own buffers is flushed
    at the end while mlxfs still captures it. A KeyboardInterrupt (Ctrl-C in a subprocess)
    becomes `on_interrupt(send, final)`, `final` the `done` or `error` events already sent.
    Returns `work`'s result: None after `done`, else the error type."""
    saved_stdin = sys.stdin
    sys.stdin = io.StringIO("")
    final = []

    def send(obj):
        # Noted first: a Ctrl-C held back while the line was written is raised by `emit`.
        if obj.get("event") in ("done", "error"):
            final.append(obj["event"])
        emit(json.dumps(obj))

    try:
        return work(json.loads(request_json), send)
    except KeyboardInterrupt:
        return on_interrupt(send, final)
    finally:
        sys.stdin = saved_stdin
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass


def main(run):
    """The `__main__` of a one-shot script, `python -c SCRIPT REQUEST EVENTS_FD SHARED`:
    `run(request_json, emit, should_stop)` with the request (`request_arg`), the events as
    JSON lines on the descriptor EVENTS_FD, and `interrupted` as the stop flag. Exits 0, or 1
    after an error event (130 for the error `interrupted`, or when interrupted before a
    result); it never returns."""
    interrupt_once()
    emit = line_writer(int(sys.argv[2]))
    try:
        failed = run(request_arg(sys.argv[1]), emit, interrupted)
    except KeyboardInterrupt:
        exit_quietly(130)
    exit_quietly((130 if failed == "interrupted" else 1) if failed else 0)


def install(sources):
    """Each `[name, source]` of `sources`, in order, as the module `name` in `sys.modules`
    (what a script's `__main__` block does with its last argument; kept here for the tests)."""
    import types

    for name, source in sources:
        sys.modules[name] = types.ModuleType(name)
        exec(compile(source, name + ".py", "exec"), sys.modules[name].__dict__)
