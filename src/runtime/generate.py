"""Text generation for `mlxfs run`, shared by the embedded interpreter and the subprocess
fallback so both give the same output.

`run(request_json, emit, should_stop)`: `emit(event_json)` receives one JSON object per event:
  {"event": "env", "executable", "prefix", "hf_home", "hub_cache", "offline", "python"}
  {"event": "token", "text": "..."}             (streamed pieces of text)
  {"event": "done", "text", "prompt_tokens", "generation_tokens", "prompt_tps",
   "generation_tps", "peak_memory_gb", "finish_reason", "chat_template"}
  {"event": "error", "type", "message"}
As a script: `python generate.py REQUEST_JSON` prints the events as JSON lines on stdout.
"""

import json
import os
import sys


def run(request_json, emit, should_stop):
    req = json.loads(request_json)

    def send(obj):
        emit(json.dumps(obj))

    try:
        import huggingface_hub.constants as hc
        hf_home, hub_cache = hc.HF_HOME, hc.HF_HUB_CACHE
    except Exception:  # huggingface_hub missing: mlx_lm's import below reports it
        hf_home, hub_cache = os.environ.get("HF_HOME"), None
    send({
        "event": "env",
        "executable": sys.executable,
        "prefix": sys.prefix,
        "python": sys.version.split()[0],
        "hf_home": hf_home,
        "hub_cache": hub_cache,
        "offline": os.environ.get("HF_HUB_OFFLINE") == "1",
    })

    missing = []
    for mod in ("mlx", "mlx_lm"):
        try:
            __import__(mod)
        except ImportError as e:
            missing.append(f"{mod} ({e})")
    if missing:
        send({"event": "error", "type": "missing_dependency",
              "message": "cannot import " + ", ".join(missing)})
        return

    import mlx.core as mx
    from mlx_lm import load, stream_generate
    from mlx_lm.sample_utils import make_logits_processors, make_sampler

    try:
        model, tokenizer = load(req["model_path"])
    except Exception as e:
        send({"event": "error", "type": "load_failed", "message": f"{type(e).__name__}: {e}"})
        return

    prompt = req["prompt"]
    use_template = req.get("chat_template", True) and getattr(tokenizer, "chat_template", None)
    if use_template:
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)

    if req.get("seed") is not None:
        mx.random.seed(int(req["seed"]))
    sampler = make_sampler(temp=float(req.get("temperature", 0.7)), top_p=float(req.get("top_p", 0.9)))
    processors = make_logits_processors(repetition_penalty=req.get("repetition_penalty"))

    pieces = []
    last = None
    finish = None
    try:
        for resp in stream_generate(model, tokenizer, prompt, max_tokens=int(req.get("max_tokens", 256)),
                                    sampler=sampler, logits_processors=processors):
            last = resp
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
    })


if __name__ == "__main__":
    def _emit(line):
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    try:
        run(sys.argv[1], _emit, lambda: False)
    except KeyboardInterrupt:
        pass
