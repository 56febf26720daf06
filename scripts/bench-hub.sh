#!/usr/bin/env bash
# Benchmark downloads from the local hub (the test suite's server, examples/fakehub.rs, on
# loopback): `mlxfs pull` and `mlxfs clone` beside huggingface_hub's `snapshot_download`
# in the same run, on a generated repo of about 1 GiB (two 512 MiB safetensors shards plus
# small files). Every run starts from an empty cache / target; medians of N runs, peak RSS
# of each process (ru_maxrss from wait4).
#
#   scripts/bench-hub.sh [--runs 3] [--size-mib 1024]
#
# The Python time is measured around the snapshot_download call only (interpreter start and
# imports excluded); mlxfs is timed as a whole process — the comparison favours Python.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh # bench_args, release_build
runs=3 size=1024
bench_args "[--runs N] [--size-mib M]" --runs=runs --size-mib=size -- "$@"

release_build --bin mlxfs --example fakehub
fakehub=$PWD/target/release/examples/fakehub
ensure_test_venv
py=$PWD/target/test-venv/bin/python

work=$(mktemp -d /tmp/mlxfs-bench-hub.XXXXXX)
hub_pid=
cleanup() { [ -n "$hub_pid" ] && kill "$hub_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

repo=$work/repos/bench/model-1g
mkdir -p "$repo"
"$py" - "$repo" "$size" <<'PY'
import json, os, struct, sys
repo, size = sys.argv[1], int(sys.argv[2]) << 20
half = size // 2
for i in (1, 2):
    n = (half - 256) // 4 * 4
    h = json.dumps({"w": {"dtype": "F32", "shape": [n // 4], "data_offsets": [0, n]},
                    "__metadata__": {"format": "mlx"}}).encode()
    with open(f"{repo}/model-0000{i}-of-00002.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        left = n
        block = os.urandom(1 << 20)
        while left:
            k = min(left, len(block))
            f.write(block[:k]); left -= k
wm = {"metadata": {"total_size": 0}, "weight_map": {"w": "model-00001-of-00002.safetensors"}}
json.dump(wm, open(f"{repo}/model.safetensors.index.json", "w"))
json.dump({"model_type": "llama", "hidden_size": 64}, open(f"{repo}/config.json", "w"))
json.dump({}, open(f"{repo}/tokenizer.json", "w"))
json.dump({}, open(f"{repo}/tokenizer_config.json", "w"))
PY

"$fakehub" "$work/repos" > "$work/url" &
hub_pid=$!
for _ in $(seq 100); do [ -s "$work/url" ] && break; sleep 0.05; done
url=$(cat "$work/url")
# Warm the server's per-file hashes (it computes them once per file).
curl -sf "$url/api/models/bench/model-1g/tree/main?recursive=true" >/dev/null

"$py" - "$mlxfs" "$url" "$work" "$runs" "$size" <<'PY'
import json, os, resource, shutil, statistics, subprocess, sys, time
mlxfs, url, work, runs, size_mib = sys.argv[1:6]
runs = int(runs)
gib = int(size_mib) << 20

def child(argv, env):
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    out = p.stdout.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{argv} failed: {out} {p.stderr.read().decode()}")
    return dt, ru.ru_maxrss / 1024.0, out

PY_DL = """
import os, time, json, resource
from huggingface_hub import snapshot_download
t0 = time.perf_counter()
snapshot_download("bench/model-1g", cache_dir=os.environ["CACHE"])
print(json.dumps({"seconds": time.perf_counter() - t0}))
"""

base = dict(os.environ, HF_ENDPOINT=url, HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1")
res = {"snapshot_download": [], "mlxfs pull": [], "mlxfs clone": []}
rss = {k: [] for k in res}
for r in range(runs):
    for name in res:
        d = os.path.join(work, f"out-{name.replace(' ', '_')}")
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        subprocess.run(["sync"])
        if name == "snapshot_download":
            env = dict(base, CACHE=d)
            _, peak, out = child([sys.executable, "-c", PY_DL], env)
            dt = json.loads(out)["seconds"]
        elif name == "mlxfs pull":
            env = dict(base, HF_HOME=d)
            dt, peak, _ = child([mlxfs, "pull", "bench/model-1g", "--quiet"], env)
        else:
            env = dict(base, MLXK_WORKSPACE_HOME=d, HF_HOME=os.path.join(work, "unused"))
            dt, peak, _ = child([mlxfs, "clone", "bench/model-1g", "--quiet"], env)
        res[name].append(dt)
        rss[name].append(peak)
        shutil.rmtree(d, ignore_errors=True)

py_med = statistics.median(res["snapshot_download"])
print(f"| download of {gib / (1 << 30):.2f} GiB, loopback, {runs} runs | median s | MiB/s | × snapshot_download | peak RSS MiB |")
print("| --- | ---: | ---: | ---: | ---: |")
for name in res:
    m = statistics.median(res[name])
    print(f"| {name} | {m:.2f} | {gib / m / (1 << 20):.0f} | {py_med / m:.2f} | {max(rss[name]):.1f} |")
PY
