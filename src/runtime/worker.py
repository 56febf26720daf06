"""The model worker of `mlxfs serve`: one long-lived process per loaded model.

    python -c WORKER_PY EVENTS_FD CONFIG_JSON GENERATE_PY_SOURCE

CONFIG_JSON is {"model_path": PATH}. GENERATE_PY_SOURCE is generate.py, run here as a module
for the code both share (imports, the environment report, loading with every guard against
model-supplied code, the chat template, sampling, the event writer).

Events, one JSON line each on the descriptor EVENTS_FD (a pipe of its own; stdout and stderr
carry whatever libraries print):
  {"event": "ready", "pid", "executable", "prefix", "python", "hf_home", "hub_cache", "caches",
   "offline", "chat_template": bool, "tool_calling": bool, "scheduling": "fifo"}
      once the model is loaded;
  {"event": "error", "type", "message"}   the model did not load (then exit 1);
  {"event": "token", "id", "text", "logprob"?, "top_logprobs"?: [[text, logprob], ...]}
      text that may be shown now. Without logprobs, only non-empty pieces; with logprobs, one
      event per generated token (its text may be "" while held back);
  {"event": "done", "id", "finish_reason": "stop"|"length"|"cancelled", "prompt_tokens",
   "completion_tokens", "text", "tool_calls": [OpenAI tool calls] | null}
  {"event": "error", "id", "type", "message"}   a job that failed (the worker lives on).

Commands, one JSON line each on stdin:
  {"op": "generate", "id": N, "messages"?: [...], "prompt"?: "...", "tools"?: [...],
   "max_tokens", "temperature", "top_p", "top_k"?, "min_p"?, "repetition_penalty"?, "seed"?,
   "stop": ["..."], "logprobs"?: K}
  {"op": "cancel", "id": N}      a queued job ends at once, a running one within one token;
  {"op": "exit"}                 cancel everything, then exit 0.
A reader thread takes the commands, so a cancel is seen while a job generates. The end of
stdin (mlxfs stopped, or died) ends the process at once; the library's own stdin is /dev/null.

Scheduling: jobs run one at a time in arrival order (FIFO), each through mlx-lm's
`stream_generate` exactly as `mlxfs run` does, so a job gives the same text as `run` for the
same prompt, seed and settings. (mlx-lm's BatchGenerator would batch them, but its samplers
share one random state: seeded jobs would no longer match `run`.)

Stop sequences end generation at the first one; the text excludes it, and text that could be
the start of one is held back until it cannot.
"""

import collections
import io
import json
import os
import sys
import threading
import types
import uuid


def _load_shared(source):
    mod = types.ModuleType("mlxfs_generate")
    exec(compile(source, "generate.py", "exec"), mod.__dict__)
    return mod


def _held(text, markers):
    """How many characters at the end of `text` could be the start of one of `markers`."""
    held = 0
    for m in markers:
        for n in range(min(len(m) - 1, len(text)), held, -1):
            if text.endswith(m[:n]):
                held = n
                break
    return held


class _ToolFilter:
    """Splits released text into what is shown and the tool calls between the tokenizer's
    start and end markers (which are never shown)."""

    def __init__(self, start, end):
        self.start, self.end = start, end
        self.buf = ""
        self.inside = False
        self.current = ""
        self.calls = []

    def feed(self, text, final=False):
        self.buf += text
        shown = ""
        while True:
            marker = self.end if self.inside else self.start
            i = self.buf.find(marker)
            if i >= 0:
                if self.inside:
                    self.calls.append(self.current + self.buf[:i])
                    self.current = ""
                else:
                    shown += self.buf[:i]
                self.buf = self.buf[i + len(marker):]
                self.inside = not self.inside
                continue
            keep = 0 if final else _held(self.buf, [marker])
            out, self.buf = self.buf[:len(self.buf) - keep], self.buf[len(self.buf) - keep:]
            if self.inside:
                self.current += out
            else:
                shown += out
            if final and self.inside and self.current:
                self.calls.append(self.current)  # cut by max_tokens: parsed as it is
                self.current = ""
            return shown


def _tool_calls(tokenizer, texts, tools):
    """OpenAI `tool_calls` from the texts between the markers (unparseable ones left out)."""
    out = []
    for text in texts:
        try:
            parsed = tokenizer.tool_parser(text, tools)
        except Exception:
            continue
        for call in parsed if isinstance(parsed, list) else [parsed]:
            if not isinstance(call, dict) or "name" not in call:
                continue
            args = call.get("arguments", {})
            out.append({
                "id": call.get("id") or f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {"name": call["name"],
                             "arguments": args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)},
            })
    return out or None


def _text_content(messages):
    """Messages whose `content` is a list of parts get it as one string (the text parts)."""
    out = []
    for m in messages:
        m = dict(m)
        if isinstance(m.get("content"), list):
            m["content"] = "".join(p.get("text", "") for p in m["content"]
                                   if isinstance(p, dict) and p.get("type") == "text")
        out.append(m)
    return out


class Worker:
    def __init__(self, shared, send):
        self.g = shared
        self.model = self.tokenizer = None
        self.send = send
        self.cond = threading.Condition()
        self.queue = collections.deque()
        self.running = None
        self.cancelled = set()
        self.exiting = False
        self.tool_calling = False

    def loaded(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self.tool_calling = bool(getattr(tokenizer, "has_tool_calling", False))

    def _cancelled_done(self, job_id):
        self.send({"event": "done", "id": job_id, "finish_reason": "cancelled", "prompt_tokens": 0,
                   "completion_tokens": 0, "text": "", "tool_calls": None})

    def read_commands(self, commands):
        for line in commands:
            try:
                cmd = json.loads(line)
            except ValueError:
                continue
            op = cmd.get("op")
            with self.cond:
                if op == "generate":
                    self.queue.append(cmd)
                elif op == "cancel":
                    queued = [j for j in self.queue if j.get("id") == cmd.get("id")]
                    for j in queued:
                        self.queue.remove(j)
                        self._cancelled_done(j["id"])
                    if self.running == cmd.get("id"):
                        self.cancelled.add(self.running)
                elif op == "exit":
                    self.exiting = True
                    for j in self.queue:
                        self._cancelled_done(j["id"])
                    self.queue.clear()
                self.cond.notify()
        # stdin ended: whoever started this process is gone or done with it.
        os._exit(0)

    def serve(self):
        while True:
            with self.cond:
                while not self.queue and not self.exiting:
                    self.cond.wait()
                if self.exiting:
                    return
                job = self.queue.popleft()
                self.running = job["id"]
            try:
                self.generate(job)
            except Exception as e:
                self.send({"event": "error", "id": job["id"], "type": "generation_failed",
                           "message": f"{type(e).__name__}: {e}"})
            with self.cond:
                self.running = None
                self.cancelled.discard(job["id"])

    def _stopped(self, job_id):
        return self.exiting or job_id in self.cancelled

    def generate(self, job):
        import mlx.core as mx
        from mlx_lm import stream_generate

        tok = self.tokenizer
        job_id = job["id"]
        if job.get("messages") is not None:
            messages = _text_content(job["messages"])
            prompt = self.g.chat_prompt(tok, messages, job.get("tools"))
            if prompt is None:  # no chat template: the contents as they are
                prompt = "\n".join(str(m.get("content") or "") for m in messages)
        elif job.get("prompt") is not None:
            prompt = job["prompt"]
        else:
            raise ValueError("a job needs messages or a prompt")
        sampler, processors = self.g.sampling(job)
        stops = [s for s in job.get("stop") or [] if s]
        k = job.get("logprobs")
        tools = job.get("tools")
        tool_filter = (_ToolFilter(tok.tool_call_start, tok.tool_call_end)
                       if tools and self.tool_calling else None)

        text = ""       # everything generated
        released = 0    # characters of `text` let out
        shown = []      # what was let out, past the tool-call filter
        finish = None
        last = None
        for resp in stream_generate(self.model, tok, prompt, max_tokens=int(job.get("max_tokens", 256)),
                                    sampler=sampler, logits_processors=processors):
            last = resp
            text += resp.text
            end = len(text)
            # A stop sequence can only begin in what is not yet let out.
            hits = [i for i in (text.find(s, released) for s in stops) if i >= 0]
            if hits:
                end = min(hits)
                finish = "stop"
            elif resp.finish_reason is None:
                end -= _held(text[released:], stops)
            piece = text[released:end]
            released = end
            if tool_filter:
                piece = tool_filter.feed(piece, final=finish is not None or resp.finish_reason is not None)
            shown.append(piece)
            event = {"event": "token", "id": job_id, "text": piece}
            # The last response of an end-of-text stop carries the end token: no token of the text.
            is_token = not (resp.finish_reason == "stop" and resp.token in tok.eos_token_ids)
            if k is not None and is_token:
                lp = resp.logprobs
                event["logprob"] = lp[resp.token].item()
                if k > 0:
                    top = mx.argpartition(-lp, kth=min(k, lp.size) - 1)[:k].tolist()
                    top.sort(key=lambda t: -lp[t].item())
                    event["top_logprobs"] = [[tok.decode([t]), lp[t].item()] for t in top]
                self.send(event)
            elif piece:
                self.send(event)
            if finish:
                break
            if self._stopped(job_id):
                finish = "cancelled"
                break
        if tool_filter and finish == "cancelled":
            shown.append(tool_filter.feed("", final=True))
        self.send({
            "event": "done",
            "id": job_id,
            "finish_reason": finish or (last.finish_reason if last else None) or "stop",
            "prompt_tokens": last.prompt_tokens if last else 0,
            "completion_tokens": last.generation_tokens if last else 0,
            "text": "".join(shown),
            "tool_calls": _tool_calls(tok, tool_filter.calls, tools) if tool_filter else None,
        })


def main():
    send_line = None
    try:
        send_line = _shared.line_writer(int(sys.argv[1]))
    except (IndexError, ValueError, OSError):
        sys.exit(2)

    def send(obj):
        send_line(json.dumps(obj))

    # Commands come on a descriptor of their own; fd 0 and sys.stdin give libraries nothing
    # to read (no question can wait for an answer).
    commands = os.fdopen(os.dup(0), "r", encoding="utf-8")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdin = io.StringIO("")

    config = json.loads(sys.argv[2])
    worker = Worker(_shared, send)
    # From the start: the end of stdin ends the process even while the model loads.
    threading.Thread(target=worker.read_commands, args=(commands,), name="commands", daemon=True).start()
    error = _shared.check_imports()
    if not error:
        info = _shared.env_info()
        model, tokenizer, error = _shared.load_model(config["model_path"])
    if error:
        send(error)
        sys.stdout.flush()
        sys.exit(1)
    worker.loaded(model, tokenizer)
    send({"event": "ready", "pid": os.getpid(), **info,
          "chat_template": bool(getattr(tokenizer, "chat_template", None)),
          "tool_calling": worker.tool_calling, "scheduling": "fifo"})
    worker.serve()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    _shared = _load_shared(sys.argv[3])
    main()
