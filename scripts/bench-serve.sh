#!/usr/bin/env bash
# Benchmark `mlxfs serve` side by side with mlx-lm's own server (`python -m mlx_lm server`),
# same run, same venv, same models: the tiny model and a generated ~500 MB one
# (scripts/make-tiny-model.py). Greedy decoding (temperature 0), streaming, 64 tokens a request.
#
#   scripts/bench-serve.sh [--requests 8] [--clients "1 4 16"] [--mlxk PATH] [--blas-variants]
#
# Measures, per server and model:
#   - time to first token with 1 client (p50, p95 over --requests requests, after one warm-up);
#   - aggregate generated tokens/s with each number of concurrent streaming clients (each
#     client sends --requests requests back to back; tokens from the usage chunk, else the
#     number of content chunks);
#   - time to switch models: the first request to the other model right after one to this one
#     (mlxfs with --max-loaded 1: stop one worker, start the other; mlx_lm.server loads the
#     model the request names);
#   - the idle RSS of the `mlxfs serve` process (the Rust front, workers not counted) over a
#     synthetic catalog of 1,000 hub models + 100 workspaces after one GET /v1/models.
# --mlxk PATH: also mlx-knife's `mlxk serve` (its own venv and pinned mlx; it resolves the
# models by name in MLXK_WORKSPACE_HOME). Markdown tables on stdout, progress on stderr.
# --blas-variants: also each server with the other BLAS (mlx-cpu bundles the reference BLAS;
# mlxfs loads the system's OpenBLAS, MLXFS_BLAS): mlxfs with MLXFS_BLAS=bundled, and
# mlx_lm.server (and mlxk serve) with OpenBLAS preloaded (LD_PRELOAD), so that what batching
# does and what the BLAS does can be told apart.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh # bench_args, release_build
requests=8 clients="1 4 16" mlxk="" variants=0
bench_args "[--requests N] [--clients \"1 4 16\"] [--mlxk PATH] [--blas-variants]" \
  --requests=requests --clients=clients --mlxk=mlxk --blas-variants=variants=1 -- "$@"

release_build
ensure_test_venv
venv=$PWD/target/test-venv

work=$(mktemp -d /tmp/mlxfs-bench-serve.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
export MLXK_WORKSPACE_HOME=$work/ws HF_HOME=$work/hf HOME=$work/home
mkdir -p "$MLXK_WORKSPACE_HOME" "$HF_HOME" "$HOME"
echo "making the models" >&2
"$venv/bin/python" scripts/make-tiny-model.py "$MLXK_WORKSPACE_HOME/tiny" >/dev/null 2>&1
"$venv/bin/python" scripts/make-tiny-model.py "$MLXK_WORKSPACE_HOME/big" --hidden 1024 --layers 13 >/dev/null 2>&1

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # URL
  for _ in $(seq 1 600); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "no answer from $1" >&2; return 1
}

openblas=$(ls /usr/lib/*-linux-gnu/libopenblas.so.0 /usr/lib64/libopenblas.so.0 2>/dev/null | head -1 || true)
servers="[]"
add() { # NAME PORT STYLE(name|path) LOG -- COMMAND...
  local name=$1 port=$2 style=$3 log=$4; shift 5
  "$@" >/dev/null 2>"$work/$log" &
  pids+=($!)
  servers=$(python3 -c 'import json,sys; l=json.loads(sys.argv[1]); l.append(sys.argv[2:5]); print(json.dumps(l))' "$servers" "$name" "$port" "$style")
}
p=$(free_port); add "mlxfs serve" "$p" name mlxfs.log -- "$mlxfs" serve --port "$p" --max-loaded 1 --python "$venv"
p=$(free_port); add "mlx_lm.server" "$p" path mlx_lm.log -- "$venv/bin/python" -m mlx_lm server --port "$p" --model "$MLXK_WORKSPACE_HOME/tiny"
if [ -n "$mlxk" ]; then
  # mlx-knife resolves names in MLXK_WORKSPACE_HOME itself (its own venv and pinned mlx).
  p=$(free_port); add "mlxk serve" "$p" name mlxk.log -- "$mlxk" serve --port "$p"
fi
if [ "$variants" = 1 ]; then
  [ -n "$openblas" ] || { echo "--blas-variants: no libopenblas.so.0 on this machine" >&2; exit 1; }
  p=$(free_port); add "mlxfs serve, bundled BLAS" "$p" name mlxfs-bundled.log -- env MLXFS_BLAS=bundled "$mlxfs" serve --port "$p" --max-loaded 1 --python "$venv"
  p=$(free_port); add "mlx_lm.server + OpenBLAS" "$p" path mlx_lm-openblas.log -- env LD_PRELOAD="$openblas" "$venv/bin/python" -m mlx_lm server --port "$p" --model "$MLXK_WORKSPACE_HOME/tiny"
  if [ -n "$mlxk" ]; then
    p=$(free_port); add "mlxk serve + OpenBLAS" "$p" name mlxk-openblas.log -- env LD_PRELOAD="$openblas" "$mlxk" serve --port "$p"
  fi
fi
for port in $(python3 -c 'import json,sys; print(" ".join(s[1] for s in json.loads(sys.argv[1])))' "$servers"); do
  wait_http "http://127.0.0.1:$port/v1/models"
done

"$venv/bin/python" - "$servers" "$MLXK_WORKSPACE_HOME" "$requests" "$clients" <<'PY'
import http.client, json, statistics, sys, threading, time
spec, home, requests, clients = sys.argv[1:5]
requests, clients = int(requests), [int(c) for c in clients.split()]
servers = [(name, int(port), (lambda m: m) if style == "name" else (lambda m: f"{home}/{m}"))
           for name, port, style in json.loads(spec)]

def stream(port, model, max_tokens=64):
    """One streaming chat request: (time to first token, tokens, total)."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Explain FUSE in detail"}],
                       "max_tokens": max_tokens, "temperature": 0, "stream": True,
                       "stream_options": {"include_usage": True}})
    t0 = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    c.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        raise SystemExit(f"{port}: HTTP {r.status}: {r.read()[:300]!r}")
    first, chunks, usage = None, 0, None
    for line in r:
        line = line.strip()
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        v = json.loads(line[6:])
        if v.get("usage"):
            usage = v["usage"].get("completion_tokens")
        for ch in v.get("choices") or []:
            if (ch.get("delta") or {}).get("content"):
                chunks += 1
                if first is None:
                    first = time.perf_counter() - t0
    total = time.perf_counter() - t0
    c.close()
    return first or total, usage or chunks, total

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

rows_ttft, rows_tps, rows_switch = [], [], []
for model in ("tiny", "big"):
    for name, port, mid in servers:
        stream(port, mid(model), 8)  # warm-up (loads the model)
        ttft = [stream(port, mid(model))[0] for _ in range(requests)]
        rows_ttft.append((model, name, pct(ttft, 50), pct(ttft, 95)))
        for n in clients:
            got = []
            def client():
                for _ in range(requests):
                    got.append(stream(port, mid(model))[1])
            t0 = time.perf_counter()
            ts = [threading.Thread(target=client) for _ in range(n)]
            [t.start() for t in ts]
            [t.join() for t in ts]
            rows_tps.append((model, name, n, sum(got) / (time.perf_counter() - t0)))
        print(f"{model} / {name} done", file=sys.stderr)
for name, port, mid in servers:
    stream(port, mid("tiny"), 4)
    t = [stream(port, mid("big"), 1)[2]]
    stream(port, mid("tiny"), 1)
    t.append(stream(port, mid("big"), 1)[2])
    rows_switch.append((name, statistics.median(t)))

print(f"Streaming chat, greedy, 64 tokens a request, {requests} requests per client.")
print()
print("| model | server | TTFT p50 (s) | TTFT p95 (s) |")
print("| --- | --- | ---: | ---: |")
for r in rows_ttft:
    print(f"| {r[0]} | {r[1]} | {r[2]:.3f} | {r[3]:.3f} |")
print()
print("| model | server | clients | tokens/s (aggregate) |")
print("| --- | --- | ---: | ---: |")
for r in rows_tps:
    print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.1f} |")
print()
others = [name for name, _, _ in servers[1:]]
print("| model | clients | " + " | ".join(f"mlxfs ÷ {o} (tokens/s) | mlxfs ÷ {o} (TTFT p50)" for o in others) + " |")
print("| --- | ---: |" + " ---: | ---: |" * len(others))
tps = {(m, s, n): v for m, s, n, v in rows_tps}
tt = {(m, s): p50 for m, s, p50, _ in rows_ttft}
for model in ("tiny", "big"):
    for n in clients:
        cells = [f"{tps[(model, 'mlxfs serve', n)] / tps[(model, o, n)]:.2f} | {tt[(model, 'mlxfs serve')] / tt[(model, o)]:.2f}"
                 for o in others]
        print(f"| {model} | {n} | " + " | ".join(cells) + " |")
print()
print("| server | switch tiny → big, first token of a 1-token request (s) |")
print("| --- | ---: |")
for name, t in rows_switch:
    print(f"| {name} | {t:.3f} |")
PY

# The front's idle memory over a catalog of 1,000 hub models + 100 workspaces.
echo "front memory over 1,000 models" >&2
cat_dir=$work/catalog
python3 scripts/synth_catalog.py "$cat_dir" --hub-models 1000 --workspaces 100 >/dev/null
p_big=$(free_port)
HF_HOME=$cat_dir/hf MLXK_WORKSPACE_HOME=$cat_dir/workspaces "$mlxfs" serve --port "$p_big" --python "$venv" >/dev/null 2>"$work/mlxfs-big.log" &
front=$!
pids+=($front)
wait_http "http://127.0.0.1:$p_big/health"
n=$(curl -s "http://127.0.0.1:$p_big/v1/models" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"]))')
sleep 1
if ! [ -r "/proc/$front/status" ]; then
  echo "the server over the big catalog is gone:" >&2; cat "$work/mlxfs-big.log" >&2; exit 1
fi
rss=$(awk '/VmRSS/ {print $2}' "/proc/$front/status")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$front/status")
echo
echo "| catalog | models listed by /v1/models | front VmRSS idle | front VmHWM |"
echo "| --- | ---: | ---: | ---: |"
echo "| 1,000 hub models + 100 workspaces | $n | $((rss / 1024)) MiB | $((hwm / 1024)) MiB |"
