#!/usr/bin/env bash
# Benchmark `mlxfs run` side by side with `python -m mlx_lm generate`, medians of N runs:
# time to first token and total time for 32 tokens, on the tiny model and on a generated
# model of about 500 MB of weights — from an mlxfs mount, from the plain path, and with
# mlx-lm's own CLI on the plain path. Greedy decoding (temperature 0) so every run makes
# the same 32 tokens.
#
#   scripts/bench-run.sh [--runs 5] [--cold]     (--cold: also drop the page cache before runs; root)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh # bench_args, release_build, status_field
runs=5 cold=0
bench_args "[--runs N] [--cold]" --runs=runs --cold=cold=1 -- "$@"

release_build
ensure_test_venv
venv=$PWD/target/test-venv

work=$(mktemp -d /tmp/mlxfs-bench-run.XXXXXX)
mnt=$work/mnt
cleanup() { "$mlxfs" umount "$mnt" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
export MLXK_WORKSPACE_HOME=$work/ws HF_HOME=$work/hf
mkdir -p "$MLXK_WORKSPACE_HOME" "$HF_HOME" "$mnt"
"$venv/bin/python" scripts/make-tiny-model.py "$MLXK_WORKSPACE_HOME/tiny" 2>/dev/null
"$venv/bin/python" scripts/make-tiny-model.py "$MLXK_WORKSPACE_HOME/big" --hidden 1024 --layers 13 2>/dev/null
"$mlxfs" mount "$mnt" --daemon >/dev/null 2>&1
read_mode=$(status_field "$mnt/.mlxfs/status.json" read_mode)

"$venv/bin/python" - "$mlxfs" "$venv" "$mnt" "$MLXK_WORKSPACE_HOME" "$runs" "$cold" "$read_mode" <<'PY'
import os, statistics, subprocess, sys, time
mlxfs, venv, mnt, home, runs, cold, read_mode = sys.argv[1:8]
runs, cold = int(runs), cold == "1"
py = os.path.join(venv, "bin", "python")
prompt = "Explain FUSE"
common = ["--max-tokens", "32", "--temperature", "0"]

def cmds(model):
    plain = os.path.join(home, model)
    return [
        ("mlxfs run (mount)", [mlxfs, "run", os.path.join(mnt, model), prompt, *common, "--python", venv], None),
        ("mlxfs run (plain path)", [mlxfs, "run", plain, prompt, *common, "--python", venv], None),
        ("python -m mlx_lm generate", [py, "-m", "mlx_lm", "generate", "--model", plain, "--prompt", prompt,
                                       "--max-tokens", "32", "--temp", "0"], b"==========\n"),
    ]

def once(argv, marker):
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    first, buf = None, b""
    while True:
        b = p.stdout.read1(4096)
        if not b:
            break
        buf += b
        if first is None:
            body = buf.split(marker, 1)[1] if marker and marker in buf else (None if marker else buf)
            if body:
                first = time.perf_counter() - t0
    p.wait()
    total = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}")
    return first or total, total

def drop():
    subprocess.run(["sync"])
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")

rows = []
for model in ("tiny", "big"):
    size = sum(os.path.getsize(os.path.join(home, model, f)) for f in os.listdir(os.path.join(home, model))
               if os.path.isfile(os.path.join(home, model, f)))
    for temp in (["warm"] + (["cold"] if cold else [])):
        res = {}
        for name, argv, marker in cmds(model):
            if temp == "warm":
                once(argv, marker)
            ft, tt = [], []
            for _ in range(runs):
                if temp == "cold":
                    drop()
                f, t = once(argv, marker)
                ft.append(f); tt.append(t)
            res[name] = (statistics.median(ft), statistics.median(tt))
        rows.append((model, size, temp, res))

print(f"read mode of the mount: {read_mode}; runs: {runs}; greedy, 32 tokens, prompt {prompt!r}")
print()
print("| model | weights | cache | command | first token (s) | total (s) |")
print("| --- | ---: | --- | --- | ---: | ---: |")
for model, size, temp, res in rows:
    for name, (f, t) in res.items():
        print(f"| {model} | {size/1e6:.0f} MB | {temp} | {name} | {f:.3f} | {t:.3f} |")
print()
print("| model | cache | mount ÷ plain (total) | mlxfs plain ÷ mlx_lm (total) | mlxfs plain ÷ mlx_lm (first token) |")
print("| --- | --- | ---: | ---: | ---: |")
for model, size, temp, res in rows:
    m, p, g = res["mlxfs run (mount)"], res["mlxfs run (plain path)"], res["python -m mlx_lm generate"]
    print(f"| {model} | {temp} | {m[1]/p[1]:.2f} | {p[1]/g[1]:.2f} | {p[0]/g[0]:.2f} |")
PY
