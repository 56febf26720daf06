#!/usr/bin/env bash
# Benchmark `mlxfs list --json` on a synthetic catalog (issue #2), side by side in the same
# run with the reference tool mlx-knife (`mlxk list --json`).
#
# Usage: scripts/bench-list.sh [--models N] [--workspaces M] [--runs R] [--dir DIR]
#                              [--mlxk PATH | --install-mlxk DIR] [--bin PATH] [--mount]
#
#   --models N      hub models in the full catalog (default 1000)
#   --workspaces M  managed workspaces in the full catalog (default 100)
#   --runs R        timed runs per measurement (default 5)
#   --dir DIR       build the catalogs in DIR and keep them (default: a temp dir, removed)
#   --mlxk PATH     the mlxk executable to compare with (default: $MLXK, else `mlxk` on PATH,
#                   else the comparison is skipped with a note)
#   --install-mlxk DIR  use DIR/bin/mlxk; when missing, first create the venv DIR with
#                   `python3 -m venv DIR && DIR/bin/pip install mlx-knife==2.0.8 mlx-cpu==0.32.0`
#   --bin PATH      measure this prebuilt mlxfs binary instead of building the checkout (no
#                   cargo build); the report names it "prebuilt PATH" with its --version and
#                   sha256. For before/after comparisons: build each version once, then run
#                   this script with --bin on each (the catalogs are regenerated every run,
#                   their sentinels written by the binary measured).
#   --mount         also mount the full catalog with the same binary (`mlxfs mount --daemon`,
#                   root or fusermount3) and time `list --json` answered from the live mount
#                   (its `.mlxfs/catalog.json`, issue 15 §2): warm (nothing changed since the
#                   last answer) and after a change (a file of one workspace touched before
#                   each run: the barrier rebuilds, the catalog renders again). The answer is
#                   checked to come from the mount and to equal the disk's byte for byte.
#
# What it does:
#   1. cargo build --release (the repo's target dir, or $CARGO_TARGET_DIR), unless --bin.
#   2. Generates with scripts/synth_catalog.py (stdlib-only python3, deterministic) a hub cache
#      laid out as huggingface_hub writes it (blobs/, snapshots/<commit>/ with relative
#      symlinks, refs/main), ~20 files per model, plus managed workspaces whose sentinel is
#      written by `mlxfs show WS --recalc-hash` (so `list` sees them clean).
#   3. Times `mlxfs list --json > /dev/null` warm (1 warm-up + R runs) and cold (page cache
#      dropped before each run; needs a writable /proc/sys/vm/drop_caches, else skipped).
#   4. Times warm listing at N/4, N/2 and N hub models (+ M/4, M/2, M workspaces).
#   5. With mlxk: lists the full catalog with it against a `cp -a` copy of the workspaces
#      (mlx-knife may rewrite sentinels when it lists), checks that both tools list the same
#      models and, for 5 sample models (and then for all), the same health, framework,
#      model_type, capabilities, runtime_compatible, size_bytes, hash, content_hash and clean;
#      then times `mlxk list --json` warm and cold like step 3. If its first run takes over
#      20 s it gets min(R, 3) runs, over 60 s 1 run.
#   5b. With --mount: the rows above, after the disk rows (measured before the mount exists).
#   6. Prints markdown tables (machine, command line) on stdout; progress goes to stderr.
# Both tools run with HF_HOME, MLXK_WORKSPACE_HOME, HF_HUB_OFFLINE=1 and HF_HUB_CACHE unset.
# Uses hyperfine when installed, else bash timing with `date +%s.%N`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/bench-lib.sh
. "$ROOT/scripts/bench-lib.sh"
bench_start bench-list "$@"

MODELS=1000
WORKSPACES=100
RUNS=5
DIR=""
MLXK_ARG=""
INSTALL_MLXK=""
BIN_ARG=""
MOUNT=0
bench_args help --models=MODELS --workspaces=WORKSPACES --runs=RUNS --dir=DIR --mlxk=MLXK_ARG \
    --install-mlxk=INSTALL_MLXK --bin=BIN_ARG --mount=MOUNT=1 -- "$@"
for v in "$MODELS" "$WORKSPACES" "$RUNS"; do
    [[ "$v" =~ ^[0-9]+$ ]] || die "not a number: $v"
done
[[ "$MODELS" -ge 4 ]] || die "--models must be at least 4"
[[ "$RUNS" -ge 1 ]] || die "--runs must be at least 1"
[[ -z "$MLXK_ARG" || -z "$INSTALL_MLXK" ]] || die "give --mlxk or --install-mlxk, not both"

# Paths given relative to where the script was started from, before the cd below.
abspath() { if [[ -z "$1" || "$1" = /* ]]; then echo "$1"; else echo "$PWD/$1"; fi; }
DIR="$(abspath "$DIR")" INSTALL_MLXK="$(abspath "$INSTALL_MLXK")" BIN_ARG="$(abspath "$BIN_ARG")"
[[ "$MLXK_ARG" != */* ]] || MLXK_ARG="$(abspath "$MLXK_ARG")"
[[ "${MLXK:-}" != */* ]] || MLXK="$(abspath "$MLXK")"

cd "$ROOT"
command -v python3 >/dev/null || die "python3 is required"

# ---------------------------------------------------------------- mlxk
MLXK_BIN="" MLXK_NOTE=""
if [[ -n "$MLXK_ARG" ]]; then
    MLXK_BIN="$MLXK_ARG"
elif [[ -n "$INSTALL_MLXK" ]]; then
    MLXK_BIN="$INSTALL_MLXK/bin/mlxk"
    if [[ ! -x "$MLXK_BIN" ]]; then
        log "creating the venv $INSTALL_MLXK with mlx-knife 2.0.8"
        python3 -m venv "$INSTALL_MLXK" >&2
        "$INSTALL_MLXK/bin/pip" install mlx-knife==2.0.8 mlx-cpu==0.32.0 >&2
    fi
elif [[ -n "${MLXK:-}" ]]; then
    MLXK_BIN="$MLXK"
else
    MLXK_BIN="$(command -v mlxk || true)"
fi
if [[ -z "$MLXK_BIN" ]]; then
    MLXK_NOTE="skipped: no mlxk (give --mlxk PATH, set \$MLXK, or put mlxk on PATH)"
    log "note: mlx-knife comparison $MLXK_NOTE"
else
    [[ "$MLXK_BIN" = */* ]] || MLXK_BIN="$(command -v "$MLXK_BIN" || true)"
    [[ -n "$MLXK_BIN" && -x "$MLXK_BIN" ]] || die "mlxk is not an executable: ${MLXK_ARG:-${MLXK:-mlxk}}"
    MLXK_VERSION="$("$MLXK_BIN" --version 2>/dev/null | head -n 1 || true)"
    [[ -n "$MLXK_VERSION" ]] || die "$MLXK_BIN --version failed"
    [[ "$MLXK_VERSION" = *2.0.8* ]] || log "note: $MLXK_VERSION, the reference is mlx-knife 2.0.8"
fi

# ---------------------------------------------------------------- 1. build (or --bin)
# BIN: the binary measured; BIN_DESC: the commit built (+dirty) or "prebuilt PATH", --version.
mlxfs_binary "$ROOT" "$BIN_ARG"

# ---------------------------------------------------------------- work dir
MARKER=".bench-list-catalog"
bench_work_dir "$MARKER"
if [[ -n "$DIR" ]]; then
    rm -rf "${DIR:?}"/n-*
    touch "$DIR/$MARKER"
else
    trap 'unmount_all; rm -rf "$WORK"' EXIT
fi
MOUNTED=""
# unmount_all: the mount --mount made, if any (never anything else).
unmount_all() {
    if [[ -n "$MOUNTED" ]] && grep -q " $MOUNTED " /proc/self/mountinfo; then
        "$BIN" umount "$MOUNTED" >/dev/null 2>&1 || umount -l "$MOUNTED" 2>/dev/null || true
    fi
    MOUNTED=""
}
[[ -z "$DIR" ]] || trap 'unmount_all' EXIT

# ---------------------------------------------------------------- 2. generate
# gen_catalog ROOT N M: ROOT/hf/hub (N hub models) and ROOT/workspaces (M workspaces), the
# sentinels written by `$BIN show WS --recalc-hash`. See `scripts/synth_catalog.py --help`.
gen_catalog() {
    python3 "$ROOT/scripts/synth_catalog.py" "$1" --hub-models "$2" --workspaces "$3" \
        --readme-for list --recalc-hash "$BIN" >&2
}

# check_catalog ROOT N M: the listing must count N+M models, all healthy and runnable, and
# every workspace clean; a mismatch is reported (the timings would not mean much).
check_catalog() {
    HF_HOME="$1/hf" MLXK_WORKSPACE_HOME="$1/workspaces" HF_HUB_OFFLINE=1 \
        env -u HF_HUB_CACHE "$BIN" list --json | python3 -c '
import json, sys
n, m = int(sys.argv[1]), int(sys.argv[2])
d = json.load(sys.stdin)
ms = d.get("data", {}).get("models", [])
bad = [x["name"] for x in ms if x.get("health") != "healthy" or x.get("runtime_compatible") is not True]
unclean = [x["name"] for x in ms if x.get("source") == "workspace" and x.get("clean") is not True]
hub = sum(1 for x in ms if x.get("source") == "cache")
ws = sum(1 for x in ms if x.get("source") == "workspace")
msgs = []
if (hub, ws) != (n, m):
    msgs.append("listed %d hub + %d workspaces, expected %d + %d" % (hub, ws, n, m))
if bad:
    msgs.append("%d not healthy+runnable, e.g. %s" % (len(bad), bad[0]))
if unclean:
    msgs.append("%d workspaces not clean, e.g. %s" % (len(unclean), unclean[0]))
print("; ".join(msgs) if msgs else "ok")
' "$2" "$3"
}

# ---------------------------------------------------------------- 3./4. timing
HAVE_HYPERFINE=0
command -v hyperfine >/dev/null && HAVE_HYPERFINE=1
DROP=/proc/sys/vm/drop_caches
CAN_DROP=0
if [[ -w "$DROP" ]] && (sync && echo 3 >"$DROP") 2>/dev/null; then CAN_DROP=1; fi

# bench HF_HOME WORKSPACE_HOME MODE(warm|cold) RUNS EXE [PREPARE] → prints "median min max" in
# seconds for `EXE list --json > /dev/null`; PREPARE (warm only) runs before each run, untimed.
bench() {
    local hf="$1" wsh="$2" mode="$3" runs="$4" prepare="${6:-}" cmd
    cmd="$(printf '%q' "$5") list --json > /dev/null"
    export HF_HOME="$hf" MLXK_WORKSPACE_HOME="$wsh" HF_HUB_OFFLINE=1
    unset HF_HUB_CACHE
    if [[ $HAVE_HYPERFINE -eq 1 ]]; then
        local out
        out="$(mktemp "$WORK/hyperfine.XXXXXX")"
        local args=(--style none --runs "$runs" --export-json "$out")
        if [[ "$mode" = warm ]]; then
            args+=(--warmup 1)
            [[ -z "$prepare" ]] || args+=(--prepare "$prepare")
        else
            args+=(--prepare "sync; echo 3 > $DROP")
        fi
        hyperfine "${args[@]}" "$cmd" >&2
        python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))["results"][0]
print("%.4f %.4f %.4f" % (r["median"], r["min"], r["max"]))' "$out"
        rm -f "$out"
    else
        local times=() t0 t1 k
        if [[ "$mode" = warm ]]; then eval "$cmd"; fi
        for ((k = 0; k < runs; k++)); do
            if [[ "$mode" = cold ]]; then sync; echo 3 >"$DROP"; fi
            if [[ -n "$prepare" ]]; then eval "$prepare"; fi
            t0=$(date +%s.%N)
            eval "$cmd"
            t1=$(date +%s.%N)
            times+=("$(echo "$t0 $t1" | awk '{printf "%.6f", $2 - $1}')")
        done
        printf '%s\n' "${times[@]}" | sort -g | awk '
            { t[NR] = $1 }
            END { m = (NR % 2) ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2
                  printf "%.4f %.4f %.4f\n", m, t[1], t[NR] }'
    fi
    unset HF_HOME MLXK_WORKSPACE_HOME HF_HUB_OFFLINE
}

# compare_lists MLXFS_JSON MLXK_JSON → one line per check on stdout. Models are matched by
# name (hub) or folder name (workspace: mlx-knife names them by their absolute path).
compare_lists() {
    python3 - "$1" "$2" <<'PY'
import json, sys
FIELDS = ["health", "framework", "model_type", "capabilities", "runtime_compatible",
          "size_bytes", "hash", "content_hash", "clean"]
def load(path):
    ms = json.load(open(path))["data"]["models"]
    return {(("ws", m.get("display_name") or m["name"].rstrip("/").rsplit("/", 1)[-1])
             if m.get("cached") is False else ("hub", m["name"])): m for m in ms}, len(ms)
a, na = load(sys.argv[1])
b, nb = load(sys.argv[2])
only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
line = "count: mlxfs %d, mlxk %d" % (na, nb)
if only_a or only_b:
    line += "; only in mlxfs: %d %s; only in mlxk: %d %s" % (
        len(only_a), [k[1] for k in only_a[:3]], len(only_b), [k[1] for k in only_b[:3]])
print(line + ("" if na == nb and not only_a and not only_b else "  <-- MISMATCH"))
common = sorted(set(a) & set(b))
hubs = [k for k in common if k[0] == "hub"]
wss = [k for k in common if k[0] == "ws"]
sample = []
if wss:
    sample += [wss[0], wss[-1]]
sample += [hubs[i * (len(hubs) - 1) // 2] for i in range(3)] if hubs else []
sample = list(dict.fromkeys(sample))
for k in common:  # top up to 5 when a kind is short
    if len(sample) >= 5:
        break
    if k not in sample:
        sample.append(k)
def diffs(keys):
    out = []
    for k in keys:
        for f in FIELDS:
            if a[k].get(f) != b[k].get(f):
                out.append((k[1], f, a[k].get(f), b[k].get(f)))
    return out
d = diffs(sample)
print("sample of %d (%s): %s" % (len(sample), ", ".join(k[1] for k in sample),
      "all fields equal" if not d else "%d differences" % len(d)))
for name, f, x, y in d:
    print("  %s %s: mlxfs %s, mlxk %s" % (name, f, json.dumps(x), json.dumps(y)))
d = diffs(common)
by = {}
for name, f, _, _ in d:
    by.setdefault(f, []).append(name)
print("all %d common models: %s" % (len(common), "all fields equal" if not d else "; ".join(
    "%s differs in %d (e.g. %s)" % (f, len(v), v[0]) for f, v in by.items())))
PY
}

SIZES=("$((MODELS / 4)):$((WORKSPACES / 4))" "$((MODELS / 2)):$((WORKSPACES / 2))" "$MODELS:$WORKSPACES")
declare -A CHECK WARM
for s in "${SIZES[@]}"; do
    n="${s%%:*}" m="${s##*:}"
    dir="$WORK/n-$n-$m"
    log "generating $n hub models + $m workspaces in $dir"
    gen_catalog "$dir" "$n" "$m"
    CHECK[$s]="$(check_catalog "$dir" "$n" "$m")"
    [[ "${CHECK[$s]}" = ok ]] || log "WARNING: catalog $n+$m: ${CHECK[$s]}"
done

FULL="$WORK/n-$MODELS-$WORKSPACES"
log "timing warm listing of the full catalog"
res="$(bench "$FULL/hf" "$FULL/workspaces" warm "$RUNS" "$BIN")"
read -r W_MED W_MIN W_MAX <<<"$res"
WARM["$MODELS:$WORKSPACES"]="$W_MED"
if [[ $CAN_DROP -eq 1 ]]; then
    log "timing cold listing of the full catalog"
    res="$(bench "$FULL/hf" "$FULL/workspaces" cold "$RUNS" "$BIN")"
    read -r C_MED C_MIN C_MAX <<<"$res"
fi
for s in "${SIZES[@]:0:2}"; do
    n="${s%%:*}" m="${s##*:}"
    log "timing warm listing of $n + $m"
    res="$(bench "$WORK/n-$n-$m/hf" "$WORK/n-$n-$m/workspaces" warm "$RUNS" "$BIN")"
    read -r med _ _ <<<"$res"
    WARM[$s]="$med"
done

# ---------------------------------------------------------------- 5b. answered by a live mount
M_NOTE=""
if [[ $MOUNT -eq 1 ]]; then
    MNT="$WORK/mnt"
    mkdir -p "$MNT" "$WORK/state"
    log "mounting the full catalog at $MNT"
    if HF_HOME="$FULL/hf" MLXK_WORKSPACE_HOME="$FULL/workspaces" XDG_STATE_HOME="$WORK/state" \
        env -u HF_HUB_CACHE "$BIN" mount --daemon "$MNT" >&2; then
        MOUNTED="$MNT"
        # The first answer renders the catalog; it must come from the mount and be the disk's.
        HF_HOME="$FULL/hf" MLXK_WORKSPACE_HOME="$FULL/workspaces" HF_HUB_OFFLINE=1 \
            MLXFS_MOUNT_ANSWERS=debug env -u HF_HUB_CACHE "$BIN" list --json \
            >"$WORK/live.json" 2>"$WORK/live.err"
        HF_HOME="$FULL/hf" MLXK_WORKSPACE_HOME="$FULL/workspaces" HF_HUB_OFFLINE=1 \
            env -u HF_HUB_CACHE "$BIN" list --json --from-disk >"$WORK/disk.json"
        if ! grep -q "answered by the live mount" "$WORK/live.err"; then
            M_NOTE="not answered by the mount: $(tr '\n' ' ' <"$WORK/live.err")"
        elif ! cmp -s "$WORK/live.json" "$WORK/disk.json"; then
            M_NOTE="answer differs from the disk's"
        else
            M_NOTE="answered by the mount, byte-identical to the disk's"
        fi
        log "mount check: $M_NOTE"
        log "timing warm listing answered by the live mount"
        res="$(bench "$FULL/hf" "$FULL/workspaces" warm "$RUNS" "$BIN")"
        read -r MM_MED MM_MIN MM_MAX <<<"$res"
        log "timing listing answered by the live mount after a change"
        touched="$(ls -d "$FULL"/workspaces/*/ | head -n 1)README.md"
        cp -p "$touched" "$WORK/touched.orig"
        touch_cmd="touch $(printf '%q' "$touched")"
        res="$(bench "$FULL/hf" "$FULL/workspaces" warm "$RUNS" "$BIN" "$touch_cmd")"
        read -r MC2_MED MC2_MIN MC2_MAX <<<"$res"
        # Its generated time back: mlx-knife (step 5) would otherwise see a file newer than
        # its sentinel records and rewrite the sentinel of its copy (self-heal).
        touch -r "$WORK/touched.orig" "$touched"
        unmount_all
    else
        M_NOTE="skipped: mount failed (root or fusermount3 and /dev/fuse needed)"
        log "$M_NOTE"
    fi
fi

# ---------------------------------------------------------------- 5. mlx-knife
COMPARE="" SENTINELS="" HUB_TOUCHED=""
if [[ -n "$MLXK_BIN" ]]; then
    # mlx-knife may rewrite sentinels (self-heal) when it lists: it gets its own copy of the
    # workspaces; the hub cache is shared, and checked for writes afterwards.
    MWS="$WORK/mlxk-workspaces"
    rm -rf "$MWS"
    cp -a "$FULL/workspaces" "$MWS"
    STAMP="$WORK/mlxk-stamp"
    touch "$STAMP"
    sleep 1
    HF_HOME="$FULL/hf" MLXK_WORKSPACE_HOME="$FULL/workspaces" HF_HUB_OFFLINE=1 \
        env -u HF_HUB_CACHE "$BIN" list --json >"$WORK/mlxfs-list.json"
    log "first run of $MLXK_BIN list --json on the full catalog (compared with mlxfs)"
    t0=$(date +%s.%N)
    HF_HOME="$FULL/hf" MLXK_WORKSPACE_HOME="$MWS" HF_HUB_OFFLINE=1 \
        env -u HF_HUB_CACHE "$MLXK_BIN" list --json >"$WORK/mlxk-list.json"
    t1=$(date +%s.%N)
    FIRST="$(echo "$t0 $t1" | awk '{printf "%.2f", $2 - $1}')"
    COMPARE="$(compare_lists "$WORK/mlxfs-list.json" "$WORK/mlxk-list.json")"
    printf '%s\n' "$COMPARE" | sed 's/^/bench-list: compare: /' >&2
    MLXK_RUNS="$RUNS"
    MLXK_RUNS_NOTE=""
    if awk -v t="$FIRST" 'BEGIN { exit !(t > 60) }'; then
        MLXK_RUNS=1 MLXK_RUNS_NOTE=" (first run ${FIRST} s > 60 s: 1 run)"
    elif awk -v t="$FIRST" 'BEGIN { exit !(t > 20) }'; then
        MLXK_RUNS=$((RUNS < 3 ? RUNS : 3)) MLXK_RUNS_NOTE=" (first run ${FIRST} s > 20 s: fewer runs)"
    fi
    log "timing warm mlxk listing of the full catalog (first run ${FIRST} s, $MLXK_RUNS runs)"
    res="$(bench "$FULL/hf" "$MWS" warm "$MLXK_RUNS" "$MLXK_BIN")"
    read -r MW_MED MW_MIN MW_MAX <<<"$res"
    if [[ $CAN_DROP -eq 1 ]]; then
        log "timing cold mlxk listing of the full catalog"
        res="$(bench "$FULL/hf" "$MWS" cold "$MLXK_RUNS" "$MLXK_BIN")"
        read -r MC_MED MC_MIN MC_MAX <<<"$res"
    fi
    changed=0 total=0
    for f in "$FULL"/workspaces/*/.mlxk_workspace.json; do
        [[ -e "$f" ]] || continue
        total=$((total + 1))
        rel="${f#"$FULL/workspaces/"}"
        cmp -s "$f" "$MWS/$rel" || changed=$((changed + 1))
    done
    SENTINELS="$changed of $total sentinels rewritten by mlxk in its copy"
    HUB_TOUCHED="$(find "$FULL/hf" -newer "$STAMP" | wc -l) paths in the hub cache changed during the mlxk runs"
fi

# ---------------------------------------------------------------- 6. report
tool="bash date +%s.%N"
if [[ $HAVE_HYPERFINE -eq 1 ]]; then tool="$(hyperfine --version 2>/dev/null || echo hyperfine)"; fi
cpu="$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)"
CAT="$MODELS hub + $WORKSPACES ws"

echo "### mlxfs list --json benchmark"
echo
echo "- command: \`$CMDLINE\`"
echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "- machine: nproc $(nproc), kernel $(uname -r)${cpu:+, $cpu}"
echo "- mlxfs: $BIN_DESC; timing: $tool"
if [[ -n "$MLXK_BIN" ]]; then
    echo "- mlxk: $MLXK_VERSION ($MLXK_BIN), on a \`cp -a\` copy of the workspaces; $SENTINELS; $HUB_TOUCHED"
else
    echo "- mlxk: $MLXK_NOTE"
fi
echo "- catalog checks: $(for s in "${SIZES[@]}"; do printf '%s=%s ' "${s/:/+}" "${CHECK[$s]}"; done)"
echo
echo "| tool | measure | catalog | runs | median (s) | min (s) | max (s) |"
echo "| --- | --- | --- | ---: | ---: | ---: | ---: |"
echo "| mlxfs | warm | $CAT | $RUNS (+1 warm-up) | $W_MED | $W_MIN | $W_MAX |"
if [[ $CAN_DROP -eq 1 ]]; then
    echo "| mlxfs | cold (drop_caches before each run) | $CAT | $RUNS | $C_MED | $C_MIN | $C_MAX |"
else
    echo "| mlxfs | cold | $CAT | - | skipped: $DROP not writable | | |"
fi
if [[ $MOUNT -eq 1 && -n "${MM_MED:-}" ]]; then
    echo "| mlxfs | answered by a live mount, warm ($M_NOTE) | $CAT | $RUNS (+1 warm-up) | $MM_MED | $MM_MIN | $MM_MAX |"
    echo "| mlxfs | answered by a live mount, a file touched before each run | $CAT | $RUNS (+1 warm-up) | $MC2_MED | $MC2_MIN | $MC2_MAX |"
elif [[ $MOUNT -eq 1 ]]; then
    echo "| mlxfs | answered by a live mount | $CAT | - | $M_NOTE | | |"
fi
if [[ -n "$MLXK_BIN" ]]; then
    echo "| mlxk | warm | $CAT | $MLXK_RUNS (+1 warm-up)$MLXK_RUNS_NOTE | $MW_MED | $MW_MIN | $MW_MAX |"
    if [[ $CAN_DROP -eq 1 ]]; then
        echo "| mlxk | cold (drop_caches before each run) | $CAT | $MLXK_RUNS | $MC_MED | $MC_MIN | $MC_MAX |"
    fi
    echo
    echo "| \`list --json\`, $CAT | mlxfs median (s) | mlxk median (s) | mlxk ÷ mlxfs |"
    echo "| --- | ---: | ---: | ---: |"
    awk -v a="$W_MED" -v b="$MW_MED" 'BEGIN { printf "| warm | %.4f | %.4f | %.1f× |\n", a, b, b / a }'
    if [[ $CAN_DROP -eq 1 ]]; then
        awk -v a="$C_MED" -v b="$MC_MED" 'BEGIN { printf "| cold | %.4f | %.4f | %.1f× |\n", a, b, b / a }'
    fi
    echo
    echo "Same listing? (fields: health, framework, model_type, capabilities, runtime_compatible,"
    echo "size_bytes, hash, content_hash, clean; \`last_modified\` not compared)"
    echo
    printf '%s\n' "$COMPARE" | sed 's/^/    /'
fi
echo
echo "| hub models | workspaces | mlxfs warm median (s) | ms per hub model | ms per listed model |"
echo "| ---: | ---: | ---: | ---: | ---: |"
for s in "${SIZES[@]}"; do
    n="${s%%:*}" m="${s##*:}"
    awk -v n="$n" -v m="$m" -v t="${WARM[$s]}" 'BEGIN {
        printf "| %d | %d | %.4f | %.3f | %.3f |\n", n, m, t, (n ? t * 1000 / n : 0), t * 1000 / (n + m) }'
done
