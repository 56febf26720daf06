#!/usr/bin/env bash
# Benchmark `mlxfs archive` and `mlxfs restore` beside tar in the same run, on a generated
# workspace of random (incompressible) data: two safetensors shards (--size-mib in all,
# default 1024) plus small files, and a `.hf_cache/` laid out as huggingface_hub writes it
# (blobs, snapshot links, refs) of --cache-mib (default 300). Medians of N runs, each tool
# alternating first; peak RSS of each process (ru_maxrss from wait4); `sync` before every
# timed run so no earlier writes are flushed on its clock. Two archives of the workspace are
# compared with cmp.
#
#   scripts/bench-archive.sh [--runs 3] [--size-mib 1024] [--cache-mib 300] [--bin PREBUILT]
#
# archive is compared with `tar -cf OUT -C HOME ws`; restore (which verifies every file's
# sha256 and the content hash) with `tar -xf` followed by `sha256sum -c` of the same files.
# mlxfs archive syncs its output before renaming it into place (tar does not).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
runs=3 size=1024 cache=300 prebuilt=
bench_args "[--runs N] [--size-mib M] [--cache-mib M] [--bin PREBUILT]" \
  --runs=runs --size-mib=size --cache-mib=cache --bin=prebuilt -- "$@"
die() { echo "bench-archive: $*" >&2; exit 1; }
log() { echo "bench-archive: $*" >&2; }
mlxfs_binary "$PWD" "$prebuilt"
command -v python3 >/dev/null || die "python3 is required"

work=$(mktemp -d /tmp/mlxfs-bench-archive.XXXXXX)
trap 'rm -rf "$work"' EXIT
export MLXK_WORKSPACE_HOME=$work/home HF_HOME=$work/hf HOME=$work/userhome
mkdir -p "$MLXK_WORKSPACE_HOME" "$HF_HOME" "$HOME"
ws=$MLXK_WORKSPACE_HOME/ws

log "making the workspace (${size} MiB of weights, ${cache} MiB in .hf_cache)"
python3 - "$ws" "$size" "$cache" <<'PY'
import hashlib, json, os, struct, sys
ws, size, cache = sys.argv[1], int(sys.argv[2]) << 20, int(sys.argv[3]) << 20
os.makedirs(ws)
def random_file(path, n, prefix=b""):
    with open(path, "wb") as f:
        f.write(prefix)
        left = n - len(prefix)
        while left:
            k = min(left, 8 << 20)
            f.write(os.urandom(k)); left -= k
for i in (1, 2):
    n = (size // 2 - 256) // 4 * 4
    h = json.dumps({"w": {"dtype": "F32", "shape": [n // 4], "data_offsets": [0, n]},
                    "__metadata__": {"format": "mlx"}}).encode()
    random_file(f"{ws}/model-0000{i}-of-00002.safetensors", 8 + len(h) + n, struct.pack("<Q", len(h)) + h)
json.dump({"metadata": {"total_size": 0}, "weight_map": {"w": "model-00001-of-00002.safetensors"}},
          open(f"{ws}/model.safetensors.index.json", "w"))
json.dump({"model_type": "llama", "hidden_size": 64, "quantization": {"group_size": 64, "bits": 4}},
          open(f"{ws}/config.json", "w"))
json.dump({"version": "1.0"}, open(f"{ws}/tokenizer.json", "w"))
json.dump({"chat_template": "{{ messages }}"}, open(f"{ws}/tokenizer_config.json", "w"))
# .hf_cache: what a run leaves there (a hub repo: blobs, a snapshot of links, refs/main).
repo = f"{ws}/.hf_cache/hub/models--org--draft"
commit = "c" * 40
os.makedirs(f"{repo}/blobs"); os.makedirs(f"{repo}/snapshots/{commit}"); os.makedirs(f"{repo}/refs")
open(f"{repo}/refs/main", "w").write(commit)
parts = [cache // 2, cache // 4, cache - cache // 2 - cache // 4]
for k, n in enumerate(parts):
    tmp = f"{repo}/blobs/tmp"
    random_file(tmp, n)
    h = hashlib.sha256(open(tmp, "rb").read()).hexdigest()
    os.rename(tmp, f"{repo}/blobs/{h}")
    os.symlink(f"../../blobs/{h}", f"{repo}/snapshots/{commit}/part-{k}.bin")
json.dump({"mlxk_version": "2.0.8", "created_at": "2026-01-01T00:00:00Z", "source_repo": "org/bench",
           "source_revision": None, "managed": True, "operation": "clone"},
          open(f"{ws}/.mlxk_workspace.json", "w"))
PY
"$BIN" show ws --recalc-hash >/dev/null
# The files sha256sum -c checks after tar -xf: every regular file of the workspace.
(cd "$ws" && find . -type f -print0 | sort -z | xargs -0 sha256sum) > "$work/sums"
total=$(du -sb --apparent-size "$ws" | cut -f1)

python3 -B - "$BIN" "$work" "$runs" "$total" <<'PY'
import os, statistics, subprocess, sys, time, shutil
sys.path.insert(0, "scripts")
from bench_timing import timed
mlxfs, work, runs, total = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
home = os.environ["MLXK_WORKSPACE_HOME"]

def run(argv, cwd=None):
    """(seconds, peak RSS MiB) of one process, after a sync."""
    subprocess.run(["sync"], check=True)
    return timed(argv, cwd)

def rm(p):
    if os.path.isdir(p) and not os.path.islink(p):
        shutil.rmtree(p)
    elif os.path.lexists(p):
        os.remove(p)

res = {k: [] for k in ("tar -cf", "mlxfs archive", "tar -xf + sha256sum -c", "mlxfs restore")}
rss = {k: 0.0 for k in res}
a1, a2, ref = f"{work}/a1.tar", f"{work}/a2.tar", f"{work}/ref.tar"
for i in range(runs):
    order = [0, 1] if i % 2 == 0 else [1, 0]
    for which in order:
        if which == 0:
            rm(ref)
            dt, m = run(["tar", "-cf", ref, "-C", home, "ws"]); key = "tar -cf"
        else:
            rm(a1)
            dt, m = run([mlxfs, "archive", "ws", a1, "--quiet"]); key = "mlxfs archive"
        res[key].append(dt); rss[key] = max(rss[key], m)
for i in range(runs):
    order = [0, 1] if i % 2 == 0 else [1, 0]
    for which in order:
        if which == 0:
            out = f"{work}/x"; rm(out); os.makedirs(out)
            t0 = time.perf_counter()
            dt1, m1 = run(["tar", "-xf", ref, "-C", out])
            dt2, m2 = run(["sha256sum", "-c", "--quiet", f"{work}/sums"], cwd=f"{out}/ws")
            key = "tar -xf + sha256sum -c"; dt, m = dt1 + dt2, max(m1, m2)
        else:
            rm(f"{work}/r")
            dt, m = run([mlxfs, "restore", a1, f"{work}/r", "--quiet"]); key = "mlxfs restore"
        res[key].append(dt); rss[key] = max(rss[key], m)
# Byte-identical: a second archive of the same workspace.
rm(a2); run([mlxfs, "archive", "ws", a2, "--quiet"])
identical = subprocess.run(["cmp", a1, a2]).returncode == 0
size = os.path.getsize(a1)

med = {k: statistics.median(v) for k, v in res.items()}
gib = total / (1 << 30)
print(f"\nworkspace: {total / (1 << 20):.0f} MiB ({total} bytes); archive {size} bytes; runs: {runs} (median)\n")
print("| command | time (s) | throughput (MiB/s) | peak RSS (MiB) | runs (s) |")
print("| --- | ---: | ---: | ---: | --- |")
for k in res:
    print(f"| {k} | {med[k]:.2f} | {total / med[k] / (1 << 20):.0f} | {rss[k]:.1f} | "
          + ", ".join(f"{x:.2f}" for x in res[k]) + " |")
print()
print(f"archive throughput ÷ tar -cf: {med['tar -cf'] / med['mlxfs archive']:.2f}× (target ≥ 0.8×)")
print(f"restore throughput ÷ tar -xf + sha256sum -c: {med['tar -xf + sha256sum -c'] / med['mlxfs restore']:.2f}× (target ≥ 0.8×)")
print(f"peak RSS: archive {rss['mlxfs archive']:.1f} MiB, restore {rss['mlxfs restore']:.1f} MiB (target < 64 MiB)")
print(f"two archives byte-identical (cmp): {'yes' if identical else 'NO'}")
PY
echo "binary: $BIN_DESC"
