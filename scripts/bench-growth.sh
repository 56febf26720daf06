#!/usr/bin/env bash
# How mlxfs's costs grow with the catalog (issue 15 §5): for each size, `list --json` warm and
# cold, the mount's start (mount to first `ls`) warm and with a cold page cache, and the
# daemon's memory (VmRSS and peak VmHWM) after `ls -lR` of the whole mount and a `cat` of
# every model's `.mlxfs/health`. One table, one row per size, with the cost per model, so that
# a cost that grows faster than the catalog shows.
#
# Usage: sudo scripts/bench-growth.sh [--sizes N,N,…] [--runs R] [--dir DIR] [--bin PATH]
#
#   --sizes N,…   hub models per catalog; each catalog also has N/10 workspaces
#                 (default 250,500,1000,5000)
#   --runs R      timed runs per measure, the median is reported (default 5)
#   --dir DIR     generate the catalogs in DIR and keep them (a later run reuses them);
#                 default: a temp dir, removed at the end
#   --bin PATH    measure this prebuilt mlxfs binary instead of building the checkout
#
# Needs root (drop_caches, mounting). Installs hyperfine and fuse3 with apt-get when missing.
# Catalogs come from scripts/synth_catalog.py (`--readme-for list`, the same trees as
# bench-list.sh). Cold: `sync; echo 3 > /proc/sys/vm/drop_caches` before each run (hyperfine
# --prepare); for the mount's start the mount is also taken down before each run. The memory
# is read once per size from /proc/PID/status after the listing and the cat, then the mount
# is taken down. Markdown on stdout, progress on stderr; every mount made is unmounted on exit.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
LIB="$REPO/scripts/bench-lib.sh"
. "$LIB"
bench_start bench-growth "$@"

SIZES="250,500,1000,5000"
RUNS=5
DIR=""
BIN_ARG=""
bench_args help --sizes=SIZES --runs=RUNS --dir=DIR --bin=BIN_ARG -- "$@"
[[ "$SIZES" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--sizes needs N,N,…"
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "--runs needs a number"
[[ -z "$BIN_ARG" ]] || BIN_ARG="$(realpath "$BIN_ARG")"
[[ "$(id -u)" = 0 ]] || die "needs root (drop_caches, FUSE mounts)"

START_TIME=$SECONDS

need=()
command -v hyperfine >/dev/null || need+=(hyperfine)
command -v fusermount3 >/dev/null || need+=(fuse3)
if [[ ${#need[@]} -gt 0 ]]; then
    log "installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi

mlxfs_binary "$REPO" "$BIN_ARG"

if [[ -n "$DIR" ]]; then
    mkdir -p "$DIR"
    WORK="$(realpath "$DIR")"
else
    WORK="$(mktemp -d /tmp/bench-growth.XXXXXX)"
fi
MNT="$WORK/mnt"
OUT="$WORK/out"
mkdir -p "$MNT" "$OUT"
export XDG_STATE_HOME="$WORK/state"
mounted() { findmnt -rn --mountpoint "$1" >/dev/null 2>&1; }
down() {
    mounted "$MNT" || return 0
    "$BIN" umount "$MNT" >/dev/null 2>&1 || umount -l "$MNT"
    for _ in $(seq 100); do mounted "$MNT" || return 0; sleep 0.05; done
    die "$MNT still mounted"
}
cleanup() {
    down || true
    if [[ -z "$DIR" ]]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

# median of hyperfine's runs (seconds)
hf_median() {
    local out="$1"; shift
    hyperfine -N --style none --runs "$RUNS" --export-json "$out" "$@" >/dev/null 2>&1 \
        || hyperfine --style none --runs "$RUNS" --export-json "$out" "$@" >/dev/null
    python3 -c 'import json, statistics, sys; r = json.load(open(sys.argv[1]))["results"][0]["times"]; print("%.4f" % statistics.median(r))' "$out"
}

ROWS=()
IFS=, read -ra SIZE_LIST <<<"$SIZES"
for n in "${SIZE_LIST[@]}"; do
    m=$((n / 10))
    cat="$WORK/n-$n-$m"
    if [[ ! -f "$cat/.complete" ]]; then
        rm -rf "$cat"
        log "generating $n hub models + $m workspaces in $cat"
        python3 "$REPO/scripts/synth_catalog.py" "$cat" --hub-models "$n" --workspaces "$m" \
            --readme-for list --recalc-hash "$BIN" >&2
        touch "$cat/.complete"
    fi
    export HF_HOME="$cat/hf" MLXK_WORKSPACE_HOME="$cat/workspaces" HF_HUB_OFFLINE=1
    unset HF_HUB_CACHE
    listed="$("$BIN" list --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["data"]["count"])')"
    [[ "$listed" = $((n + m)) ]] || die "$cat: list counts $listed models, expected $((n + m))"
    files="$(find "$cat/hf/hub" -path '*/snapshots/*' \( -type l -o -type f \) | wc -l)"
    files=$((files + $(find "$cat/workspaces" -type f | wc -l)))

    log "$n: list --json warm and cold"
    lw="$(hf_median "$OUT/list-warm-$n.json" --warmup 2 "$BIN list --json")"
    lc="$(hf_median "$OUT/list-cold-$n.json" --prepare 'sync; echo 3 > /proc/sys/vm/drop_caches' "$BIN list --json")"

    log "$n: mount to first ls, warm and cold"
    down
    printf '#!/usr/bin/env bash\nset -e\n%q umount %q >/dev/null 2>&1 || true\nfor _ in $(seq 100); do findmnt -rn --mountpoint %q >/dev/null || exit 0; sleep 0.05; done\nexit 1\n' \
        "$BIN" "$MNT" "$MNT" >"$WORK/down.sh"
    chmod +x "$WORK/down.sh"
    sw="$(hf_median "$OUT/start-warm-$n.json" --warmup 1 --prepare "$WORK/down.sh" --cleanup "$WORK/down.sh" \
        "sh -c '$BIN mount --daemon $MNT >/dev/null && ls $MNT >/dev/null'")"
    sc="$(hf_median "$OUT/start-cold-$n.json" --prepare "$WORK/down.sh; sync; echo 3 > /proc/sys/vm/drop_caches" \
        --cleanup "$WORK/down.sh" "sh -c '$BIN mount --daemon $MNT >/dev/null && ls $MNT >/dev/null'")"

    log "$n: daemon memory after ls -lR and cat of every health file"
    down
    "$BIN" mount --daemon "$MNT" >/dev/null
    pid="$(status_field "$MNT/.mlxfs/status.json" pid)"
    ls -lR "$MNT" >/dev/null
    # `health` files one and two folders down (workspaces; org/repo of the hub)
    find "$MNT" -mindepth 3 -maxdepth 4 -path '*/.mlxfs/health' -print0 | xargs -0 cat >/dev/null
    sleep 1
    rss="$(awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status")"
    hwm="$(awk '/^VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status")"
    down

    models=$((n + m))
    per() { awk -v t="$1" -v n="$models" 'BEGIN { printf "%.3f", t * 1000 / n }'; }
    ROWS+=("| $n + $m | $files | $lw ($(per "$lw")) | $lc ($(per "$lc")) | $sw ($(per "$sw")) | $sc ($(per "$sc")) | $rss | $hwm |")
done

ELAPSED=$((SECONDS - START_TIME))
echo "### mlxfs growth benchmark"
echo
echo "- command: \`$CMDLINE\` (took $((ELAPSED / 60)) min $((ELAPSED % 60)) s)"
echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
echo "- machine: nproc $(nproc), kernel $(uname -r), $(awk '/^MemTotal/ {printf "%.0f GB RAM", $2 / 1048576}' /proc/meminfo)"
echo "- mlxfs: $BIN_DESC; $(hyperfine --version)"
echo "- medians of $RUNS runs; in parentheses: ms per listed model"
echo
echo "| hub models + workspaces | model files | list warm (s) | list cold (s) | mount to first ls, warm (s) | mount to first ls, cold (s) | daemon VmRSS (MiB) | daemon VmHWM (MiB) |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
printf '%s\n' "${ROWS[@]}"
