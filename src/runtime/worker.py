"""The model worker of `mlxfs serve`: one long-lived process per loaded model.

    python -c WORKER_PY EVENTS_FD CONFIG_JSON SHARED

CONFIG_JSON is {"model_path": PATH, "backend"?: "mlx-lm"|"mlx-vlm"|"mlx-whisper",
"prompt_cache_size"?: N, "prompt_cache_bytes"?: N} (mlxfs sets neither cache size yet: the
defaults below hold). A vision (mlx-vlm) or speech (mlx-whisper) model is run by `MediaWorker`
(one job at a time; its docstring has its jobs); what follows describes the text worker. SHARED
holds the sources of the modules imported here (mlxfs_common.py says how): `mlxfs_common` (imports,
the environment report, loading with every guard against model-supplied code, the event writer),
`mlxfs_audio` and `mlxfs_generate`, generate.py (the chat template, sampling, vision,
transcription).

Events, one JSON line each on the descriptor EVENTS_FD (a pipe of its own; stdout and stderr
carry whatever libraries print):
  {"event": "ready", "pid", "executable", "prefix", "python", "hf_home", "hub_cache", "caches",
   "offline", "chat_template": bool, "tool_calling": bool,
   "scheduling": "continuous-batching", "vocab_size": N | null, "max_token_chars": N | null}
      once the model is loaded ("vocab_size": how many logits the model gives a position, so
      token ids 0..N-1 exist; null when one step of the model could not tell;
      "max_token_chars": the most characters one token stands for, `max_token_chars`);
  {"event": "error", "type", "message"}   the model did not load (then exit 1);
  {"event": "accepted", "id"}   a job's command was read (sent before anything else of it: a
      job the process ended without accepting never reached it, and may go to another);
  {"event": "token", "id", "text", "logprobs"?: [entry, ...]}
      text that may be shown now, and with logprobs the entries of the tokens it completes
      (`_Job` says which; an event may then carry entries and no text);
  {"event": "done", "id", "finish_reason": "stop"|"length"|"cancelled", "prompt_tokens",
   "completion_tokens", "cached_tokens", "text", "tool_calls": [OpenAI tool calls] | null}
      ("cached_tokens": how many of the prompt's tokens came from the prompt cache);
  {"event": "error", "id", "type", "message"}   a job that failed (the worker lives on):
      "invalid_request" (what only the model can refuse: messages its chat template cannot
      render, an empty prompt), "context_length_exceeded", or "generation_failed".

Commands, one JSON line each on stdin:
  {"op": "generate", "id": N, "messages"?: [...], "prompt"?: "...", "tools"?: [...],
   "max_tokens", "max_tokens_explicit": bool, "temperature", "top_p", "top_k"?, "min_p"?,
   "repetition_penalty"?, "seed"?, "stop": ["..."], "logprobs"?: K, "presence_penalty"?,
   "frequency_penalty"?, "logit_bias"?: {id: bias}, "context_length"?: N}
      (mlxfs checks every value first; a `developer` message is taken as `system` unless the
      chat template renders it, see `takes_developer`; `max_tokens` is held to the context,
      generate.py `fit_completion`)
  {"op": "cancel", "id": N}      a queued job ends at once, a running one within one token;
  {"op": "exit"}                 cancel everything, then exit 0.
A reader thread takes the commands, so a cancel is seen while a job generates. The end of
stdin (mlxfs stopped, or died) ends the process at once; the library's own stdin is /dev/null.

Preparation: `PREPARING_THREADS` threads take the jobs read, in arrival order, and prepare
each (chat template, encoding, the context and vocabulary checks: `Worker._prepare`) off the
scheduling thread, so a long prompt being encoded holds neither the running batch nor a short
job read after it (transformers' fast tokenizers encode without the GIL).

Scheduling: continuous batching with mlx-lm's BatchGenerator: a job joins the running batch
at the next step after it is prepared and leaves it when it ends. A job with a seed and a
temperature above 0 runs alone, through `stream_generate` exactly as `mlxfs run` does (its
sampling draws from MLX's one global random state, seeded for it: in a batch the others would
draw from it too); it waits at the head of the queue for the batch to empty, and the jobs
behind it wait for it. Greedy jobs give the text of `run` in a batch too (the same logits, row
by row; a model whose batched matrix products round differently from single ones could
break a near tie otherwise).

Prompt cache: as mlx-lm's server keeps one, with its own `LRUPromptCache`: the KV cache each
job leaves (its prompt and generated tokens) is kept, at most `prompt_cache_size` entries
(default 10) and `prompt_cache_bytes` bytes (default 2 GiB, counting the caches of the running
jobs too); a new job starts from a copy of the cache of the longest prefix of its prompt
(a longer entry trimmed to the common prefix when its cache can be trimmed), so only the rest
of the prompt is computed. At least the prompt's last token is always computed. Each job gets
its own copy: no cache object is shared by two sequences. A job that runs alone with a
repetition penalty starts cold (stream_generate's penalty would otherwise see only the
uncached part of the prompt).

Stop sequences end generation at the first one; the text excludes it, and text that could be
the start of one is held back until it cannot.
"""

import collections
import io
import json
import math
import os
import sys
import threading
import uuid

if __name__ == "__main__":  # a subprocess: its last argument has the shared modules
    for _name, _source in json.loads(sys.argv.pop()):  # as `mlxfs_common.install`
        sys.modules[_name] = __import__("types").ModuleType(_name)
        exec(compile(_source, _name + ".py", "exec"), sys.modules[_name].__dict__)

import mlxfs_audio as audio  # noqa: E402
import mlxfs_common as common  # noqa: E402
import mlxfs_generate as gen  # noqa: E402


# OpenAI's stand-in for a log-probability of minus infinity (and here of one that is not a
# number): JSON has neither, and a line Python writes with them is not JSON.
LOGPROB_FLOOR = -9999.0


def _logprob(x):
    x = float(x)
    return x if math.isfinite(x) else LOGPROB_FLOOR


def _gpt2_byte_decoder():
    """GPT-2's byte-level alphabet, character -> byte (openai/gpt-2 encoder.py
    `bytes_to_unicode`, inverted): printable bytes stand for themselves, the others for
    U+0100 onwards in order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) \
        + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    out = {chr(b): b for b in keep}
    n = 0
    for b in range(256):
        if b not in out.values():
            out[chr(256 + n)] = b
            n += 1
    return out


class TokenBytes:
    """The bytes a token stands for in the text (OpenAI's logprob `bytes`): a byte-level BPE
    token's string through GPT-2's byte decoder, a SentencePiece token with U+2581 as a space
    and `<0xNN>` as the byte NN, an added token as its UTF-8 text; with any other detokenizer,
    the UTF-8 of the token decoded alone. A token that is part of a character is its bytes
    only, not a replacement character."""

    def __init__(self, tokenizer):
        from mlx_lm import tokenizer_utils as tu

        self.tok = tokenizer
        det = getattr(tokenizer, "_detokenizer", None)
        self.map = getattr(det, "tokenmap", None)
        if isinstance(det, tu.BPEStreamingDetokenizer):
            self.kind = "bpe"
        elif isinstance(det, tu.SPMStreamingDetokenizer):
            self.kind = "spm"
        else:
            self.kind = "text"
        self.decoder = _gpt2_byte_decoder()
        try:
            added = getattr(tokenizer, "_tokenizer", tokenizer).added_tokens_decoder
            self.added = {int(i): getattr(t, "content", str(t)) for i, t in added.items()}
        except Exception:
            self.added = {}

    def __call__(self, t):
        if t in self.added:
            return self.added[t].encode("utf-8")
        if self.map is not None and 0 <= t < len(self.map):
            piece = self.map[t]
            if self.kind == "bpe":
                out = bytearray()
                for c in piece:
                    b = self.decoder.get(c)
                    if b is None:
                        out += c.encode("utf-8")
                    else:
                        out.append(b)
                return bytes(out)
            if self.kind == "spm":
                return piece.replace("\u2581".encode("utf-8"), b" ")
        return self.tok.decode([t]).encode("utf-8")

    def entry(self, t, logprob):
        """(text, bytes, log-probability) of token `t`: its text is its bytes decoded, with
        U+FFFD for what is not a whole character (OpenAI's `token`)."""
        b = self(t)
        return b.decode("utf-8", "replace"), list(b), _logprob(logprob)


def logits_size(model):
    """How many logits the model gives for a position (token ids from 0 to this minus 1 can
    be biased or chosen): one step over token 0 with a fresh cache. None when that fails."""
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    try:
        out = model(mx.array([[0]]), cache=make_prompt_cache(model))
        mx.eval(out)
        return int(out.shape[-1])
    except Exception:
        return None


# Text no chat template writes by itself: `takes_developer`'s probe.
_DEVELOPER_PROBE = "mlxfs-developer-probe-5b1c9e"


def takes_developer(render, template):
    """Whether a chat template takes OpenAI's `developer` role (what current SDKs send for
    instructions) as a role of its own, decided once at load by rendering: `render(messages)`
    (the template's text) of a developer message and a user message holds the developer
    message's text, and the template (`template`, its source) names the role — as gpt-oss's
    does, which gives developer instructions a section of their own. A template that raises
    on the role (Qwen's "Unexpected message role", "(no tool or developer)"), or skips roles
    it does not know (whatever it mentions), does not take it; nor does one that writes any
    role name as it is (`<|im_start|>{{ role }}`: its model never saw a `developer` turn).
    Then `developer` is sent as `system` (`as_system`)."""
    if "developer" not in str(template or ""):
        return False
    try:
        text = render([{"role": "developer", "content": _DEVELOPER_PROBE},
                       {"role": "user", "content": "hi"}])
    except Exception:
        return False
    return isinstance(text, str) and _DEVELOPER_PROBE in text


def as_system(messages, keep_developer):
    """`messages` with `developer` messages as `system` ones, unless the chat template takes
    the role (`keep_developer`: `takes_developer`)."""
    if keep_developer:
        return messages
    return [dict(m, role="system") if m.get("role") == "developer" else m for m in messages]


def _normalizer_shrink(spec):
    """How many characters of text a tokenizer's normalizer (its tokenizer.json entry) may
    turn into one: 1 when it never shortens text, 4 for Unicode composition (NFC, NFKC: at
    most four code points compose into one), None when it may drop text (stripping, removing
    accents or control characters, a regular expression, SentencePiece's character map)."""
    if spec is None:
        return 1
    kind = spec.get("type")
    if kind in ("NFD", "NFKD", "Lowercase", "Prepend"):
        return 1
    if kind in ("NFC", "NFKC"):
        return 4
    if kind == "Replace":
        pattern, content = spec.get("pattern") or {}, spec.get("content") or ""
        if "String" in pattern and content:
            return max(1, -(-len(pattern["String"]) // len(content)))
        return None
    if kind == "Sequence":
        out = 1
        for part in spec.get("normalizers") or []:
            f = _normalizer_shrink(part)
            if f is None:
                return None
            out *= f
        return out
    return None


def _pretokenizer_keeps_text(spec):
    """Whether a pre-tokenizer (its tokenizer.json entry) keeps every character of the text
    (splitting on whitespace drops it; a split may remove what it splits on)."""
    if spec is None:
        return True
    kind = spec.get("type")
    if kind == "Sequence":
        return all(_pretokenizer_keeps_text(p) for p in spec.get("pretokenizers") or [])
    if kind in ("Split", "Punctuation"):
        return spec.get("behavior") != "Removed"
    return kind in ("ByteLevel", "Metaspace", "Digits", "UnicodeScripts")


def max_token_chars(tokenizer):
    """An upper bound of the characters of text one token of `tokenizer` (mlx-lm's wrapper,
    or a transformers tokenizer) stands for: its longest vocabulary entry (a byte-level
    entry's characters are bytes, at least the characters they spell), times what its
    normalizer may fold into one character. A prompt of more characters than the context
    length times this is over the context whatever it encodes to (serve refuses it before it
    reaches the worker). None where no such bound holds: a tokenizer without a fast
    (tokenizers) backend, a normalizer or pre-tokenizer that drops text, a model that fuses
    runs of unknown characters into one token (BPE with `fuse_unk` and no byte fallback;
    Unigram; WordPiece, which makes one unknown token of a long word), or an added token that
    swallows the whitespace beside it (`lstrip`/`rstrip`)."""
    tok = getattr(tokenizer, "_tokenizer", tokenizer)
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        return None
    try:
        normalizer = json.loads(backend.normalizer.__getstate__()) if backend.normalizer else None
        pre = json.loads(backend.pre_tokenizer.__getstate__()) if backend.pre_tokenizer else None
        shrink = _normalizer_shrink(normalizer)
        if shrink is None or not _pretokenizer_keeps_text(pre):
            return None
        model = backend.model
        if type(model).__name__ != "BPE":
            return None
        if model.unk_token and model.fuse_unk and not model.byte_fallback:
            return None
        added = getattr(tok, "added_tokens_decoder", {}) or {}
        if any(getattr(t, "lstrip", False) or getattr(t, "rstrip", False) for t in added.values()):
            return None
        longest = max((len(piece) for piece in backend.get_vocab(with_added_tokens=True)), default=0)
    except Exception:
        return None
    return longest * shrink if longest > 0 else None


def held_back(text, markers):
    """How many characters at the end of `text` could be the start of one of `markers` (the
    longest end of `text` that begins a marker). Only the places where a marker's first
    character stands are tried, so a long marker costs little (serve bounds their length)."""
    held = 0
    for m in markers:
        if not m:
            continue
        i = text.find(m[0], max(len(text) - len(m) + 1, 0))
        while i >= 0 and len(text) - i > held:
            if m.startswith(text[i:]):
                held = len(text) - i
                break
            i = text.find(m[0], i + 1)
    return held


class StopFilter:
    """Generated text with stop sequences (`stops`): it ends before the first one, and what
    could be the start of one is held back until it cannot. `feed` takes each piece and
    returns what may be let out now; `text` is everything fed, `released` how many of its
    characters were let out, `stopped` whether a stop sequence came (later pieces are
    dropped)."""

    def __init__(self, stops):
        self.stops = [s for s in stops or [] if s]
        self.text = ""
        self.released = 0
        self.stopped = False

    def feed(self, piece, final=False):
        """`piece` added; the text that may be let out now (with `final`, the generation
        ended: all that is not cut by a stop sequence)."""
        if self.stopped:
            return ""
        self.text += piece
        # A stop sequence can only begin in what is not yet let out.
        hits = [i for i in (self.text.find(s, self.released) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            end = min(hits)
        elif final:
            end = len(self.text)
        else:
            end = len(self.text) - held_back(self.text[self.released:], self.stops)
        out = self.text[self.released:end]
        self.released = end
        return out


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
            keep = 0 if final else held_back(self.buf, [marker])
            out, self.buf = self.buf[:len(self.buf) - keep], self.buf[len(self.buf) - keep:]
            if self.inside:
                self.current += out
            else:
                shown += out
            if final and self.inside and self.current:
                self.calls.append(self.current)  # cut by max_tokens: parsed as it is
                self.current = ""
            return shown


def read_commands(commands, cond, ops):
    """The command reader of both workers, on a thread of its own from the start: each JSON
    line of `commands` (another line is skipped) runs `ops[its "op"](command)` (an unknown op
    nothing) with `cond` held, then wakes the threads waiting on `cond`, so a cancel is seen
    while a job generates. The end of `commands` ends the process at once (`os._exit(0)`):
    whoever started it is gone or done with it (also while the model loads)."""
    for line in commands:
        try:
            cmd = json.loads(line)
        except ValueError:
            continue
        op = ops.get(cmd.get("op"))
        with cond:
            if op is not None:
                op(cmd)
            cond.notify_all()
    os._exit(0)


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


class _Job:
    """One job's text on its way out: stop sequences (held back while they might begin),
    tool calls (cut out), logprobs, then the events.

    Logprobs describe the generated tokens (OpenAI's): one entry per token but the end of
    text, `{"token", "bytes", "logprob", "offset", "top_logprobs"}` (`offset`: where in the
    text the token's text begins, in characters; `top_logprobs`: `{"token", "bytes",
    "logprob"}` of the k likeliest tokens, likeliest first). An
    entry goes out with the event that lets out the end of its token's text (a token that is
    only part of a character, with the one that completes it); with a stop sequence, the
    tokens whose text begins before the cut keep their entries and the stop sequence's own
    are dropped with its text."""

    def __init__(self, worker, job, prompt_tokens, cached_tokens=0):
        self.id = job["id"]
        self.send = worker.send
        self.tok = worker.tokenizer
        self.stop = StopFilter(job.get("stop"))
        self.k = job.get("logprobs")
        self.tools = job.get("tools")
        self.tool_filter = (_ToolFilter(self.tok.tool_call_start, self.tok.tool_call_end)
                            if self.tools and worker.tool_calling else None)
        self.detokenizer = self.tok.detokenizer
        self.prompt_tokens = prompt_tokens
        self.cached_tokens = cached_tokens
        self.token_bytes = worker.token_bytes
        self.tokens = 0
        self.shown = []      # what was let out, past the tool-call filter
        self.pending = []    # (start, end, entry): logprob entries whose text is not all out

    def step(self, token, logprobs, finish_reason, text=None):
        """One generated token (with `text`, its detokenized piece, when the caller has it;
        else this job's detokenizer makes it). `finish_reason`: None, "length", or "stop" for
        the end-of-text token, which is no text. True when the job ended (its `done` sent)."""
        self.tokens += 1
        eos = finish_reason == "stop" and token in self.tok.eos_token_ids
        if text is None:
            if not eos:
                self.detokenizer.add_token(token)
            if finish_reason:
                self.detokenizer.finalize()
            text = self.detokenizer.last_segment
        start = len(self.stop.text)
        if self.k is not None and not eos:
            self.pending.append((start, start + len(text), self._entry(token, logprobs, start)))
        piece = self.stop.feed(text, final=finish_reason is not None)
        hits = self.stop.stopped
        finish = "stop" if hits else finish_reason
        end = self.stop.released
        if self.tool_filter:
            piece = self.tool_filter.feed(piece, final=finish is not None)
        self.shown.append(piece)
        event = {"event": "token", "id": self.id, "text": piece}
        if self.k is not None:
            if finish:
                out = [e for s, _, e in self.pending if not hits or s < end]
                self.pending = []
            else:
                n = 0
                while n < len(self.pending) and end >= self.pending[n][1] and end > self.pending[n][0]:
                    n += 1
                out = [e for _, _, e in self.pending[:n]]
                del self.pending[:n]
            event["logprobs"] = out
            if piece or out:
                self.send(event)
        elif piece:
            self.send(event)
        if finish:
            self.finish(finish)
        return finish is not None

    def _entry(self, token, logprobs, start):
        import mlx.core as mx

        def entry(t, value):
            text, raw, lp = self.token_bytes.entry(t, value)
            return {"token": text, "bytes": raw, "logprob": lp}

        out = entry(token, logprobs[token].item())
        out["offset"] = start
        top = []
        if self.k > 0:
            ids = mx.argpartition(-logprobs, kth=min(self.k, logprobs.size) - 1)[:self.k].tolist()
            values = logprobs[mx.array(ids)].tolist()
            top = sorted((entry(t, v) for t, v in zip(ids, values)), key=lambda e: -e["logprob"])
        out["top_logprobs"] = top
        return out

    def finish(self, reason):
        if self.tool_filter and reason == "cancelled":
            self.shown.append(self.tool_filter.feed("", final=True))
        self.send({
            "event": "done",
            "id": self.id,
            "finish_reason": reason,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.tokens,
            "cached_tokens": self.cached_tokens,
            "text": "".join(self.shown),
            "tool_calls": (_tool_calls(self.tok, self.tool_filter.calls, self.tools)
                           if self.tool_filter else None),
        })


def _alone(job):
    """A job that must run by itself: seeded sampling draws from MLX's one global random
    state, seeded for this job as `run` seeds it (in a batch, others would draw from it too)."""
    return job.get("seed") is not None and float(job.get("temperature", 0.0)) > 0


# Jobs prepared at once (`Worker._prepare_jobs`): a short job waits for a long prompt's
# encoding only when this many long ones are ahead of it.
PREPARING_THREADS = 4

DEFAULT_PROMPT_CACHE_SIZE = 10
DEFAULT_PROMPT_CACHE_BYTES = 2 << 30


class Worker:
    def __init__(self, send, cache_size=DEFAULT_PROMPT_CACHE_SIZE,
                 cache_bytes=DEFAULT_PROMPT_CACHE_BYTES):
        self.model = self.tokenizer = None
        self.send = send
        self.cond = threading.Condition()
        self.incoming = collections.deque()  # jobs read, waiting to be prepared
        self.preparing = set()               # ids of the jobs being prepared
        self.queue = collections.deque()     # prepared (job, prompt ids), waiting for the batch
        self.running = set()
        self.cancelled = set()
        self.exiting = False
        self.tool_calling = False
        self.keep_developer = False
        self.cache_size, self.cache_bytes = cache_size, cache_bytes
        self.prompt_cache = None
        self.token_bytes = None
        self.vocab_size = None
        self.max_token_chars = None

    def loaded(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self.tool_calling = bool(getattr(tokenizer, "has_tool_calling", False))
        self.token_bytes = TokenBytes(tokenizer)
        self.vocab_size = logits_size(model)
        self.max_token_chars = max_token_chars(tokenizer)
        self.keep_developer = takes_developer(lambda m: gen.chat_prompt(tokenizer, m),
                                              getattr(tokenizer, "chat_template", None))
        if self.cache_size > 0 and self.cache_bytes > 0:
            from mlx_lm.models.cache import LRUPromptCache

            self.prompt_cache = LRUPromptCache(max_size=self.cache_size, max_bytes=self.cache_bytes)

    def _cached(self, ids):
        """(a copy of the cache of the longest cached prefix of `ids` or None, how many
        tokens it holds). At least the last token is left to compute."""
        if self.prompt_cache is None:
            return None, 0
        cache, rest = self.prompt_cache.fetch_nearest_cache("model", ids)
        if cache is None:
            return None, 0
        if not rest:  # an exact hit: the last token must still give the first logits
            from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

            if not can_trim_prompt_cache(cache):
                return None, 0
            trim_prompt_cache(cache, 1)
            return cache, len(ids) - 1
        return cache, len(ids) - len(rest)

    def _keep(self, tokens, cache, active_bytes=0):
        """Keep a finished sequence's cache (its own: extracted or used by one job only)
        under the tokens it holds."""
        if self.prompt_cache is None or cache is None or not tokens:
            return
        try:
            self.prompt_cache.insert_cache("model", list(tokens), cache)
            self.prompt_cache.trim_to(n_bytes=self.cache_bytes - active_bytes)
        except Exception:
            pass  # a cache that cannot be kept is only a miss later

    def _cancelled_done(self, job_id):
        self.send({"event": "done", "id": job_id, "finish_reason": "cancelled", "prompt_tokens": 0,
                   "completion_tokens": 0, "cached_tokens": 0, "text": "", "tool_calls": None})

    def read_commands(self, commands):
        read_commands(commands, self.cond, {"generate": self._accept, "cancel": self._cancel,
                                            "exit": self._exit})

    def _accept(self, cmd):
        self.send({"event": "accepted", "id": cmd.get("id")})
        self.incoming.append(cmd)

    def _cancel(self, cmd):
        jid = cmd.get("id")
        for j in [j for j in self.incoming if j.get("id") == jid]:
            self.incoming.remove(j)
            self._cancelled_done(jid)
        for item in [q for q in self.queue if q[0].get("id") == jid]:
            self.queue.remove(item)
            self._cancelled_done(jid)
        if jid in self.running or jid in self.preparing:
            self.cancelled.add(jid)

    def _exit(self, cmd):
        self.exiting = True
        for j in list(self.incoming) + [job for job, _ in self.queue]:
            self._cancelled_done(j["id"])
        self.incoming.clear()
        self.queue.clear()

    def _prompt(self, job):
        """The prompt's token ids, encoded as mlx-lm's stream_generate encodes a text."""
        tok = self.tokenizer
        if job.get("messages") is not None:
            messages = _text_content(job["messages"])
            prompt = gen.chat_prompt(tok, messages, job.get("tools"))
            if prompt is None:  # no chat template: the contents as they are
                prompt = "\n".join(str(m.get("content") or "") for m in messages)
        elif job.get("prompt") is not None:
            prompt = job["prompt"]
        else:
            raise ValueError("a job needs messages or a prompt")
        return gen.encode(tok, prompt)

    def _prepare(self, job):
        """A job made ready for the batch, on a preparing thread (never the scheduling one: a
        long prompt's template and encoding hold no running job): `developer` messages as
        `system` unless the template takes them (`as_system`), the prompt's token ids, its
        `max_tokens` held to the context (generate.py `fit_completion`), and `BadRequest`
        for what the model cannot take — messages its chat template refuses (a Jinja
        `raise_exception`, a type the template cannot iterate), an empty prompt, a
        `logit_bias` token id past its vocabulary. Returns the ids; sets `job["max_tokens"]`,
        and turns a `top_k` of the whole vocabulary or more off (serve's `jobs::fit_to_model`,
        whose words these are: a job it fitted never meets these refusals)."""
        if job.get("messages") is not None:
            job["messages"] = as_system(job["messages"], self.keep_developer)
        try:
            ids = self._prompt(job)
        except common.Refused:
            raise
        except Exception as e:
            what = ("the model's chat template cannot render these messages"
                    if job.get("messages") is not None else "the prompt cannot be encoded")
            raise gen.BadRequest(f"{what}: {type(e).__name__}: {e}") from e
        if not ids:
            raise gen.BadRequest("the prompt is empty: it gives no token to start from")
        job["max_tokens"] = gen.fit_completion(len(ids), int(job.get("max_tokens", 256)),
                                                  job.get("context_length"),
                                                  bool(job.get("max_tokens_explicit")))
        # Unchecked, these would crash the process (an index past the logits) or fail the
        # whole batch (mlx-lm's top_k check runs in the batch's step).
        n = self.vocab_size
        unknown = ("`{}` is not available for this model: its vocabulary size is unknown "
                   "(its worker could not measure it)")
        bias = job.get("logit_bias") or {}
        if bias:
            if n is None:
                raise gen.BadRequest(unknown.format("logit_bias"))
            for t in bias:
                if not 0 <= int(t) < n:
                    raise gen.BadRequest(f"`logit_bias`: token id {int(t)} is not in this model's "
                                            f"vocabulary of {n} tokens (ids 0 to {n - 1})")
        k = int(job.get("top_k") or 0)
        if k:
            if n is None:
                raise gen.BadRequest(unknown.format("top_k"))
            if k >= n:
                job["top_k"] = 0  # the whole vocabulary: no restriction
        return ids

    def _prepare_jobs(self):
        """A preparing thread: takes read jobs in arrival order, prepares each (`_prepare`),
        and queues it for the batch, or answers it (refused, failed, or cancelled meanwhile).
        Several run at once, so a long prompt being encoded (transformers' fast tokenizers
        release the GIL while they encode) holds neither the batch nor a short job behind it."""
        while True:
            with self.cond:
                while not self.incoming and not self.exiting:
                    self.cond.wait()
                if self.exiting:
                    return
                job = self.incoming.popleft()
                self.preparing.add(job["id"])
            try:
                ids, failure = self._prepare(job), None
            except Exception as e:
                ids, failure = None, e
            with self.cond:
                if job["id"] not in self.preparing:
                    continue  # answered when the worker was told to exit
                self.preparing.discard(job["id"])
                if self.exiting or job["id"] in self.cancelled:
                    self.cancelled.discard(job["id"])
                    self._cancelled_done(job["id"])
                elif failure is not None:
                    self._failed(job["id"], failure)
                else:
                    self.queue.append((job, ids))
                self.cond.notify_all()

    def _failed(self, job_id, e):
        if isinstance(e, common.Refused):
            self.send({**e.event, "id": job_id})
            return
        self.send({"event": "error", "id": job_id, "type": "generation_failed",
                   "message": f"{type(e).__name__}: {e}"})

    def _ended(self, job_id):
        with self.cond:
            self.running.discard(job_id)
            self.cancelled.discard(job_id)

    def serve(self):
        """Admit queued jobs into the batch in arrival order; a job that must run alone waits
        at the head of the queue for the batch to empty."""
        from mlx_lm.generate import BatchGenerator

        def new_batch():
            return BatchGenerator(self.model, stop_tokens=[[t] for t in self.tokenizer.eos_token_ids])

        for i in range(PREPARING_THREADS):
            threading.Thread(target=self._prepare_jobs, name=f"prepare-{i}", daemon=True).start()
        batch = new_batch()
        active = {}  # batch uid -> _Job
        while True:
            with self.cond:
                while not self.queue and not active and not self.exiting:
                    self.cond.wait()
                admit = []
                while self.queue and not _alone(self.queue[0][0]):
                    admit.append(self.queue.popleft())
                solo = (self.queue.popleft()
                        if self.queue and not active and not admit and not self.exiting else None)
                self.running.update(j["id"] for j, _ in admit + ([solo] if solo else []))
                exiting = self.exiting
                if exiting:
                    for job_id in self.preparing:
                        self._cancelled_done(job_id)
                    self.preparing.clear()
            if exiting:
                for job in active.values():
                    job.finish("cancelled")
                batch.close()
                return
            if solo:
                self._run_alone(*solo)
                continue
            for job, ids in admit:
                try:
                    sampler, processors = gen.sampling(job)
                    cache, n = self._cached(ids)
                    (uid,) = batch.insert([ids[n:]], max_tokens=[int(job.get("max_tokens", 256))],
                                          caches=[cache] if cache is not None else None,
                                          all_tokens=[ids[:n]],
                                          samplers=[sampler], logits_processors=[processors])
                    del cache
                    active[uid] = _Job(self, job, len(ids), n)
                except Exception as e:
                    self._failed(job["id"], e)
                    self._ended(job["id"])
            for uid, job in list(active.items()):
                if job.id in self.cancelled:
                    batch.remove([uid])
                    job.finish("cancelled")
                    del active[uid]
                    self._ended(job.id)
            if not active:
                continue
            try:
                _, responses = batch.next()
            except Exception as e:
                for job in active.values():
                    self._failed(job.id, e)
                    self._ended(job.id)
                active.clear()
                batch.close()
                batch = new_batch()
                continue
            for r in responses:
                job = active.get(r.uid)
                if not job:
                    continue
                try:
                    ended = job.step(r.token, r.logprobs, r.finish_reason)
                except Exception as e:
                    self._failed(job.id, e)
                    ended = True
                if ended:
                    if r.finish_reason is None:  # a stop sequence, or a failure
                        kept = batch.remove([r.uid], return_prompt_caches=self.prompt_cache is not None)
                        if r.uid in kept:
                            cache, tokens = kept[r.uid]
                            self._keep(tokens, cache, batch.prompt_cache_nbytes)
                    else:
                        self._keep(r.all_tokens, r.prompt_cache, batch.prompt_cache_nbytes)
                    del active[r.uid]
                    self._ended(job.id)

    def _run_alone(self, job, ids):
        """A prepared job through mlx-lm's stream_generate, as `mlxfs run` generates."""
        from mlx_lm import stream_generate

        try:
            from mlx_lm.models.cache import make_prompt_cache

            sampler, processors = gen.sampling(job)  # seeds the global random state
            cache, n = self._cached(ids) if not processors else (None, 0)
            if cache is None:
                cache, n = make_prompt_cache(self.model), 0
            out = _Job(self, job, len(ids), n)
            tokens = list(ids)
            for resp in stream_generate(self.model, self.tokenizer, ids[n:],
                                        max_tokens=int(job.get("max_tokens", 256)),
                                        sampler=sampler, logits_processors=processors,
                                        prompt_cache=cache):
                tokens.append(resp.token)
                if out.step(resp.token, resp.logprobs, resp.finish_reason, text=resp.text):
                    break
                if self.exiting or out.id in self.cancelled:
                    out.finish("cancelled")
                    break
            # The tokens the cache holds (the last one yielded may not have been computed).
            held = getattr(cache[0], "offset", None) if cache else None
            if isinstance(held, int) and 0 < held <= len(tokens):
                self._keep(tokens[:held], cache)
        except Exception as e:
            self._failed(job["id"], e)
        self._ended(job["id"])


class MediaWorker:
    """The worker of a vision model (mlx-vlm) or a Whisper (mlx-whisper): one job at a time,
    in arrival order (mlx-vlm's generation and mlx-whisper's transcription are not batched).
    A cancel ends a queued job at once, a running vision job within one token and a running
    transcription within one 30-second window.

    Jobs: {"op": "generate", "id", "messages" (content: a string or parts {"type": "text",
    "text"} / {"type": "image", "data": BASE64}) | "prompt", "max_tokens", "temperature",
    "top_p", "repetition_penalty"?, "seed"?} for mlx-vlm; {"op": "transcribe", "id", "audio":
    {"data": BASE64, "name"}, "language"?, "task": "transcribe"|"translate", "prompt"?,
    "temperature"} for mlx-whisper. `done` carries, beside the text, "media": for a
    transcription {"segments", "language", "audio_seconds", "decoder"}, for a vision job
    {"images": N}."""

    def __init__(self, send, backend):
        self.send = send
        self.backend = backend
        self.model = self.processor = None
        self.cond = threading.Condition()
        self.queue = collections.deque()
        self.cancelled = set()
        self.running = None
        self.exiting = False
        self.keep_developer = False  # `takes_developer`, once the model is loaded

    def read_commands(self, commands):
        read_commands(commands, self.cond, {"generate": self._accept, "transcribe": self._accept,
                                            "cancel": self._cancel, "exit": self._exit})

    def _accept(self, cmd):
        self.send({"event": "accepted", "id": cmd.get("id")})
        self.queue.append(cmd)

    def _cancel(self, cmd):
        queued = [j for j in self.queue if j.get("id") == cmd.get("id")]
        for j in queued:
            self.queue.remove(j)
            self._done(j["id"], "cancelled", "", 0, 0)
        if cmd.get("id") == self.running:
            self.cancelled.add(cmd["id"])

    def _exit(self, cmd):
        self.exiting = True
        for j in self.queue:
            self._done(j["id"], "cancelled", "", 0, 0)
        self.queue.clear()

    def _done(self, job_id, reason, text, prompt_tokens, completion_tokens, media=None):
        self.send({"event": "done", "id": job_id, "finish_reason": reason, "prompt_tokens": prompt_tokens,
                   "completion_tokens": completion_tokens, "cached_tokens": 0, "text": text,
                   "tool_calls": None, "media": media})

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
                if job.get("op") == "transcribe":
                    self._transcribe(job)
                else:
                    self._generate(job)
            except common.Refused as e:  # a media error, a bad request, a prompt too long
                self.send({**e.event, "id": job["id"]})
            except Exception as e:
                self.send({"event": "error", "id": job["id"], "type": "generation_failed",
                           "message": f"{type(e).__name__}: {e}"})
            with self.cond:
                self.running = None
                self.cancelled.discard(job["id"])

    def _generate(self, job):
        if self.backend != "mlx-vlm":
            raise ValueError("this worker runs a speech-to-text model: it only transcribes")
        images, messages = [], []
        for m in job.get("messages") or []:
            content = m.get("content")
            if isinstance(content, list):
                parts = []
                for p in content:
                    if p.get("type") == "image":
                        try:
                            images.append(gen.open_image({"data": p["data"]}))
                        except Exception as e:
                            raise common.MediaError(
                                "invalid_media", f"image {len(images) + 1}: cannot read it: {type(e).__name__}: {e}")
                        parts.append({"type": "image"})
                    elif p.get("type") == "text":
                        parts.append({"type": "text", "text": p.get("text", ""), "content": p.get("text", "")})
                content = parts
            messages.append({"role": m.get("role", "user"), "content": content})
        if job.get("messages") is None:
            prompt = job.get("prompt") or ""
            text = prompt
            if not text:
                raise gen.BadRequest("the prompt is empty: it gives no token to start from")
        else:
            try:
                text = gen.vlm_prompt(self.model, self.processor,
                                         as_system(messages, self.keep_developer), len(images))
            except Exception as e:
                raise gen.BadRequest("the model's chat template cannot render these messages: "
                                        f"{type(e).__name__}: {e}") from e
        # A prompt over the context is refused by vlm_generate before the model sees any.
        job_id = job["id"]
        stop = StopFilter(job.get("stop"))

        def on_text(piece, final=False):
            piece = stop.feed(piece, final)
            if piece:
                self.send({"event": "token", "id": job_id, "text": piece})

        def should_stop():
            return self.exiting or job_id in self.cancelled or stop.stopped

        out = gen.vlm_generate(self.model, self.processor, text, images, job, on_text, should_stop)
        if stop.stopped:
            reason = "stop"
        else:
            on_text("", final=True)
            reason = out["finish_reason"]
            if reason == "interrupted":
                reason = "cancelled"
            elif reason not in ("stop", "length"):
                reason = "stop"
        self._done(job_id, reason, stop.text[:stop.released], out["prompt_tokens"],
                   out["generation_tokens"], {"images": len(images)})

    def _transcribe(self, job):
        if self.backend != "mlx-whisper":
            raise ValueError("this worker does not run a speech-to-text model")
        samples, decoder = audio.load_audio(job["audio"])

        def should_stop():
            return self.exiting or job["id"] in self.cancelled

        try:
            out = gen.transcribe(self.model_path, samples, job, should_stop)
        except gen.Stopped:
            self._done(job["id"], "cancelled", "", 0, 0)
            return
        self._done(job["id"], "stop", out["text"], 0, out["generation_tokens"],
                   {"segments": out["segments"], "words": out["words"], "language": out["language"],
                    "audio_seconds": out["audio_seconds"], "decoder": decoder})


def _main_media(config, send, commands):
    backend = config["backend"]
    worker = MediaWorker(send, backend)
    worker.model_path = config["model_path"]
    threading.Thread(target=worker.read_commands, args=(commands,), name="commands", daemon=True).start()
    error = common.check_imports(backend)
    info = {}
    if not error:
        info = common.env_info()
        if backend == "mlx-vlm":
            worker.model, worker.processor, error = gen.load_vlm(config["model_path"])
            if not error:
                processor = worker.processor
                worker.keep_developer = takes_developer(
                    lambda m: gen.vlm_prompt(worker.model, processor, m, 0),
                    getattr(processor, "chat_template", None)
                    or getattr(getattr(processor, "tokenizer", None), "chat_template", None))
                info["max_token_chars"] = max_token_chars(
                    getattr(worker.processor, "tokenizer", worker.processor))
        else:
            # mlx-whisper loads per transcription (its own cache keeps the model): load once
            # here so that a broken model fails the start, not the first request.
            try:
                from mlx_whisper.transcribe import ModelHolder
                ModelHolder.get_model(config["model_path"], __import__("mlx.core").core.float16)
            except Exception as e:
                error = {"event": "error", "type": "load_failed", "message": f"{type(e).__name__}: {e}"}
    if error:
        send(error)
        common.exit_quietly(1)  # os._exit: no library's clean-up at exit can hold it
    send({"event": "ready", "pid": os.getpid(), **info, "backend": backend,
          "chat_template": backend == "mlx-vlm", "tool_calling": False, "scheduling": "sequential"})
    worker.serve()
    sys.stdout.flush()
    os._exit(0)


def main():
    send_line = None
    try:
        send_line = common.line_writer(int(sys.argv[1]))
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
    if config.get("backend") in ("mlx-vlm", "mlx-whisper"):
        _main_media(config, send, commands)
        return
    worker = Worker(send,
                    cache_size=int(config.get("prompt_cache_size", DEFAULT_PROMPT_CACHE_SIZE)),
                    cache_bytes=int(config.get("prompt_cache_bytes", DEFAULT_PROMPT_CACHE_BYTES)))
    # From the start: the end of stdin ends the process even while the model loads.
    threading.Thread(target=worker.read_commands, args=(commands,), name="commands", daemon=True).start()
    error = common.check_imports()
    if not error:
        info = common.env_info()
        model, tokenizer, error = common.load_model(config["model_path"])
    if error:
        send(error)
        common.exit_quietly(1)  # os._exit: no library's clean-up at exit can hold it
    worker.loaded(model, tokenizer)
    send({"event": "ready", "pid": os.getpid(), **info,
          "chat_template": bool(getattr(tokenizer, "chat_template", None)),
          "tool_calling": worker.tool_calling, "scheduling": "continuous-batching",
          "vocab_size": worker.vocab_size, "max_token_chars": worker.max_token_chars})
    worker.serve()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
