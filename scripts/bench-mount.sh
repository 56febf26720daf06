#!/usr/bin/env bash
# Benchmark `mlxfs mount` (issue #3) side by side in one run: direct reads of the backing
# folders (the limit), bindfs over the same folders (the peer: `bindfs -r SRC MNT`, default
# options), and mlxfs with FUSE passthrough (default) and with --no-passthrough ("daemon").
#
# Usage: sudo scripts/bench-mount.sh [--runs R] [--dir DIR] [--hub-models N] [--workspaces M]
#                                    [--pages P] [--madvise random|normal] [--threads T]
#                                    [--only MEASURES] [--bin PATH] [--idle SECONDS]
#
#   --runs R         timed runs per measure, the median is reported (default 5)
#   --dir DIR        build the data in DIR and keep it; a later run with the same --hub-models
#                    and --workspaces reuses it (default: a temp dir, removed at the end)
#   --hub-models N   hub models in the catalog (default 900)
#   --workspaces M   workspaces, ws-big (the 1 GiB file) included (default 100)
#   --pages P        random pages each of the 8 mmap threads touches (default 32768)
#   --madvise MODE   advice for the mmap test: random (default: MADV_RANDOM, every access is
#                    one 4 KiB read, no read-around) or normal (kernel read-around)
#   --threads T      pass --threads T to `mlxfs mount` (default: mlxfs's own default)
#   --only MEASURES  run only these measures, comma-separated (default: all of them):
#                      dd     1 GiB sequential read, cold and warm (+ the daemon's pread sizes)
#                      mmap   mmap random 4 KiB reads, cold and warm
#                      ls     `ls -lR`, cold and warm
#                      idle   `ls -lR` after SECONDS idle (direct, passthrough, daemon): a person
#                             who comes back to a folder; R rounds, each one sleep then the three
#                             sides in a rotating order
#                      cat    `cat */.mlxfs/health`, warm
#                      rss    the daemons' memory (VmRSS, VmHWM, threads), read after the warm
#                             ls -lR and cat that ran
#                      first  mount to first ls, warm and cold; and, cold, mount to the ls of
#                             one model folder (ws-big), which waits for the whole tree
#                    e.g. `--only ls,cat,rss` for the listing rows and the daemon memory without
#                    the 1 GiB dd/mmap runs. The catalog (ws-big included) and the mount checks
#                    (which read the 1 GiB file once through every side) are the same whatever
#                    is selected; skipped rows are left out of the table.
#   --idle SECONDS   how long the idle measure waits before each round (default 65: longer than
#                    a minute, the kernel entry timeout mlxfs used before issue 15)
#   --bin PATH       measure this prebuilt mlxfs binary instead of building the checkout (no
#                    cargo build); the report names it "prebuilt PATH" with its --version and
#                    sha256. For before/after comparisons: build each version once, then run
#                    this script with --bin on each and the same --dir (the data is generated
#                    once and reused; its sentinels were written by the first binary).
#
# Needs root (drop_caches, FUSE passthrough, bindfs as root). Installs bindfs, hyperfine, fuse3
# and gcc (for mmap) with apt-get when missing.
#
# What it does:
#   1. cargo build --release, unless --bin.
#   2. Generates with scripts/synth_catalog.py (deterministic, stdlib python3) ROOT/hf/hub with
#      N hub models laid out as huggingface_hub writes them (~20 files each: blobs/,
#      snapshots/<commit>/ relative links, refs/main) and ROOT/workspaces with M workspaces
#      (~20 files each, sentinels written by `mlxfs show WS --recalc-hash`);
#      ws-big/model.safetensors is a valid safetensors header followed by random bytes
#      (os.urandom), 1 GiB in all.
#   3. Mounts bindfs (`bindfs -r ROOT MNT`), mlxfs passthrough and mlxfs --no-passthrough side
#      by side (HF_HOME=ROOT/hf, MLXK_WORKSPACE_HOME=ROOT/workspaces) and checks them (file
#      count, the big file and a hub file byte-equal to the backing ones, read_mode, one health
#      file per model). Then, for direct (ROOT itself), bindfs, passthrough and daemon (each
#      measure unless --only leaves it out):
#      - 1 GiB sequential read, `dd if=F of=/dev/null bs=1M`: GB/s = 1e9 bytes/s;
#      - mmap random 4 KiB reads: a C program (compiled here) maps the 1 GiB file, 8 threads
#        each read one byte of P pseudo-random pages (the same pages every run; checksums are
#        compared with direct's); k pages/s from the program's own timing of the threads;
#      - `ls -lR`: direct = hub cache + workspace home, bindfs/mlxfs = the whole mount;
#      - mlxfs only: `cat MNT/*/.mlxfs/health MNT/*/*/.mlxfs/health`, warm;
#      - after the warm `ls -lR` and `cat`: the daemon's VmRSS (and VmHWM, threads) from
#        /proc/PID/status; the mounts' bdi read_ahead_kb; for --no-passthrough, the sizes of
#        the daemon's pread64 calls during a cold 256 MiB dd (strace, when installed; untimed).
#      Warm dd and mmap: the page cache dropped, the file read once through each side, then R
#      interleaved rounds, each measuring the four sides back to back in a rotating order (the
#      VM's speed drifts over minutes), dd timed with $EPOCHREALTIME. Warm ls -lR and cat:
#      hyperfine, 1 warm-up run, then R runs.
#      Cold: R interleaved rounds likewise (the VM disk's speed drifts with the host's cache);
#      `sync; echo 3 > /proc/sys/vm/drop_caches` before each run, and for `ls -lR` the FUSE
#      file system is also unmounted and mounted again (then 1 s pause) before the drop.
#   4. Mount to first ls (first): `mlxfs mount --daemon MNT && ls MNT` (and `bindfs -r ROOT MNT
#      && ls MNT` for reference), unmounted before each run, warm and with a cold page cache.
#      The mount's root answers from names alone while the daemon reads the model folders,
#      so the same, cold, with `ls MNT/ws-big` (a model folder: the whole tree built) too.
#   5. Prints markdown (machine, command, the result table, raw timings) on stdout; progress
#      on stderr. Every mount it made is unmounted on exit (lazily if busy; a daemon that does
#      not exit within 10 s is killed by its pid) and it checks that none is left.
set -euo pipefail
shopt -s lastpipe # `… | summarize` stores its results in this shell

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LIB="$REPO/scripts/bench-lib.sh"
# shellcheck source=scripts/bench-lib.sh
. "$LIB"
bench_start bench-mount "$@"

RUNS=5
DIR=""
HUB_MODELS=900
WORKSPACES=100
PAGES=32768
MADVISE=random
THREADS=""
ONLY=""
BIN_ARG=""
IDLE=65
bench_args help --runs=RUNS --dir=DIR --hub-models=HUB_MODELS --workspaces=WORKSPACES --pages=PAGES \
    --madvise=MADVISE --threads=THREADS --idle=IDLE --only=ONLY --bin=BIN_ARG -- "$@"
[[ "$IDLE" =~ ^[0-9]+$ ]] || die "--idle needs a number of seconds"
for v in "$RUNS" "$HUB_MODELS" "$WORKSPACES" "$PAGES" ${THREADS:+"$THREADS"}; do
    [[ "$v" =~ ^[0-9]+$ ]] || die "not a number: $v"
done
[[ "$RUNS" -ge 1 ]] || die "--runs must be at least 1"
[[ "$WORKSPACES" -ge 1 ]] || die "--workspaces must be at least 1 (ws-big)"
[[ "$PAGES" -ge 1 ]] || die "--pages must be at least 1"
[[ "$MADVISE" = random || "$MADVISE" = normal ]] || die "--madvise is random or normal"
# The measures to run (--only): DO[name]=1; MEASURES lists them in the table's order.
ALL_MEASURES=(dd mmap ls idle cat rss first)
declare -A DO
if [[ -z "$ONLY" ]]; then
    for m in "${ALL_MEASURES[@]}"; do DO[$m]=1; done
else
    IFS=, read -ra only_list <<<"$ONLY"
    for m in "${only_list[@]}"; do
        case "$m" in
            dd|mmap|ls|idle|cat|rss|first) DO[$m]=1 ;;
            *) die "--only: unknown measure '$m' (dd, mmap, ls, idle, cat, rss, first)" ;;
        esac
    done
    [[ ${#DO[@]} -gt 0 ]] || die "--only needs at least one measure"
fi
MEASURES="" SKIPPED=""
for m in "${ALL_MEASURES[@]}"; do
    if [[ -n "${DO[$m]:-}" ]]; then MEASURES+="${MEASURES:+,}$m"; else SKIPPED+="${SKIPPED:+,}$m"; fi
done
want() { [[ -n "${DO[$1]:-}" ]]; } # want MEASURE: was it selected?
[[ "$(id -u)" = 0 ]] || die "run as root (drop_caches, FUSE passthrough, bindfs)"
[[ -e /dev/fuse ]] || die "/dev/fuse is missing (modprobe fuse)"
[[ -w /proc/sys/vm/drop_caches ]] || die "/proc/sys/vm/drop_caches is not writable"

abspath() { if [[ -z "$1" || "$1" = /* ]]; then echo "$1"; else echo "$PWD/$1"; fi; }
DIR="$(abspath "$DIR")" BIN_ARG="$(abspath "$BIN_ARG")"
cd "$REPO"

# ---------------------------------------------------------------- tools
need_apt=()
command -v bindfs >/dev/null || need_apt+=(bindfs)
command -v hyperfine >/dev/null || need_apt+=(hyperfine)
command -v fusermount3 >/dev/null || need_apt+=(fuse3)
if want mmap; then command -v gcc >/dev/null || need_apt+=(gcc); fi
command -v findmnt >/dev/null || need_apt+=(util-linux)
if [[ ${#need_apt[@]} -gt 0 ]]; then
    log "installing ${need_apt[*]}"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >&2
fi
command -v python3 >/dev/null || die "python3 is required"

# ---------------------------------------------------------------- 1. build (or --bin)
# BIN: the binary measured; BIN_DESC: the commit built (+dirty) or "prebuilt PATH", --version.
mlxfs_binary "$REPO" "$BIN_ARG"

# ---------------------------------------------------------------- work dir, cleanup
MARKER=".bench-mount-data"
bench_work_dir "$MARKER"
[[ "$WORK" != *[[:space:]]* ]] || die "the work dir must not contain white space: $WORK"
DATA="$WORK/data"
MNT="$WORK/mnt"
TOOLS="$WORK/bin"
OUT="$WORK/out"
export XDG_STATE_HOME="$WORK/state" # the mlxfs daemon log: $WORK/state/mlxfs/mount.log
mkdir -p "$MNT"/{bindfs,pt,daemon} "$TOOLS" "$OUT" "$XDG_STATE_HOME"
# Stale mount points from an interrupted earlier run with the same --dir.
for d in "$MNT"/*; do
    if findmnt -rn --mountpoint "$d" >/dev/null 2>&1; then umount -l "$d" 2>/dev/null || true; fi
done

START_TIME=$SECONDS
cleanup() {
    local rc=$? d pid left=""
    trap - EXIT INT TERM
    for d in "$MNT"/bindfs "$MNT"/pt "$MNT"/daemon; do
        if findmnt -rn --mountpoint "$d" >/dev/null 2>&1; then
            umount "$d" 2>/dev/null || umount -l "$d" 2>/dev/null || fusermount3 -uz "$d" 2>/dev/null || true
        fi
    done
    # mlxfs daemons this script started (pids from status.json): give them 10 s to exit.
    if [[ -s "$WORK/pids" ]]; then
        for pid in $(sort -u "$WORK/pids"); do
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            if kill -0 "$pid" 2>/dev/null && grep -q mlxfs "/proc/$pid/comm" 2>/dev/null; then
                log "WARNING: mlxfs daemon $pid still running 10 s after its unmount; killing it"
                kill "$pid" 2>/dev/null || true
            fi
        done
    fi
    for d in "$MNT"/bindfs "$MNT"/pt "$MNT"/daemon; do
        findmnt -rn --mountpoint "$d" >/dev/null 2>&1 && left="$left $d"
    done
    [[ -z "$left" ]] || log "WARNING: still mounted:$left"
    if [[ -z "$DIR" ]]; then
        if [[ -z "$left" ]]; then rm -rf "$WORK"; else log "kept $WORK (mounts left)"; fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- 2. generate
GEN_KEY="hub=$HUB_MODELS ws=$WORKSPACES v1"
BIG="$DATA/workspaces/ws-big/model.safetensors"
BIG_BYTES=1073741824
if [[ -e "$WORK/$MARKER" && "$(cat "$WORK/$MARKER")" = "$GEN_KEY" && -s "$BIG" ]]; then
    log "reusing the data in $DATA"
else
    rm -rf "$DATA" "$WORK/$MARKER"
    touch "$WORK/$MARKER"
    log "generating $HUB_MODELS hub models + $WORKSPACES workspaces in $DATA"
    # ws-big (1 GiB) is the first of the M workspaces; see `scripts/synth_catalog.py --help`.
    python3 "$REPO/scripts/synth_catalog.py" "$DATA" --hub-models "$HUB_MODELS" \
        --workspaces "$WORKSPACES" --readme-for mount --big-bytes "$BIG_BYTES" --recalc-hash "$BIN" >&2
    [[ "$(stat -c %s "$BIG")" = "$BIG_BYTES" ]] || die "$BIG has the wrong size"
    echo "$GEN_KEY" >"$WORK/$MARKER"
fi
sync
MODELS=$((HUB_MODELS + WORKSPACES))
N_BACKING_FILES=$(( $(find "$DATA/workspaces" -type f | wc -l) + $(find "$DATA/hf/hub" -path '*/snapshots/*' \( -type l -o -type f \) | wc -l) ))
log "catalog: $MODELS models, $N_BACKING_FILES model files"

export HF_HOME="$DATA/hf" MLXK_WORKSPACE_HOME="$DATA/workspaces" HF_HUB_OFFLINE=1
unset HF_HUB_CACHE

# ---------------------------------------------------------------- helpers
# fsctl: mount/unmount/cold-prepare, one file so hyperfine's --prepare can call it too.
cat >"$TOOLS/fsctl" <<EOF
#!/usr/bin/env bash
# fsctl up|down|cold KIND, or fsctl drop. KIND: direct, bindfs, pt, daemon.
set -euo pipefail
BIN=$(printf '%q' "$BIN")
DATA=$(printf '%q' "$DATA")
MNT=$(printf '%q' "$MNT")
PIDS=$(printf '%q' "$WORK/pids")
THREADS=$(printf '%q' "$THREADS")
. $(printf '%q' "$LIB") # status_field
export HF_HOME=\$DATA/hf MLXK_WORKSPACE_HOME=\$DATA/workspaces HF_HUB_OFFLINE=1
export XDG_STATE_HOME=$(printf '%q' "$XDG_STATE_HOME")
unset HF_HUB_CACHE
mounted() { findmnt -rn --mountpoint "\$1" >/dev/null 2>&1; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
up() {
    local d="\$MNT/\$1"
    mounted "\$d" && return 0
    case "\$1" in
        direct) return 0 ;;
        bindfs) bindfs -r "\$DATA" "\$d" ;;
        pt) "\$BIN" mount --daemon \${THREADS:+--threads "\$THREADS"} "\$d" >/dev/null 2>&1 ;;
        daemon) "\$BIN" mount --daemon --no-passthrough \${THREADS:+--threads "\$THREADS"} "\$d" >/dev/null 2>&1 ;;
        *) echo "fsctl: unknown kind \$1" >&2; exit 2 ;;
    esac
    mounted "\$d" || { echo "fsctl: \$d did not mount" >&2; exit 1; }
    if [[ "\$1" != bindfs ]]; then
        status_field "\$d/.mlxfs/status.json" pid >>"\$PIDS"
    fi
}
down() {
    local d="\$MNT/\$1" pid=""
    [[ "\$1" = direct ]] && return 0
    mounted "\$d" || return 0
    if [[ "\$1" = bindfs ]]; then
        umount "\$d" 2>/dev/null || umount -l "\$d"
    else
        pid=\$(status_field "\$d/.mlxfs/status.json" pid 2>/dev/null || true)
        "\$BIN" umount "\$d" >/dev/null 2>&1 || umount -l "\$d"
    fi
    for _ in \$(seq 100); do mounted "\$d" || break; sleep 0.1; done
    if mounted "\$d"; then echo "fsctl: \$d still mounted after umount" >&2; exit 1; fi
    if [[ -n "\$pid" ]]; then
        for _ in \$(seq 100); do kill -0 "\$pid" 2>/dev/null || break; sleep 0.05; done
        if kill -0 "\$pid" 2>/dev/null; then echo "fsctl: mlxfs daemon \$pid still alive 5 s after umount of \$d" >&2; fi
    fi
    return 0
}
case "\$1" in
    up) up "\$2" ;;
    down) down "\$2" ;;
    cold) down "\$2"; up "\$2"; [[ "\$2" = direct ]] || sleep 1; drop ;;
    drop) drop ;;
    *) echo "fsctl: unknown command \$1" >&2; exit 2 ;;
esac
EOF
chmod +x "$TOOLS/fsctl"
FSCTL="$TOOLS/fsctl"

# The mmap random-read program.
cat >"$TOOLS/mmap-rand.c" <<'EOF'
/* mmap-rand FILE THREADS PAGES_PER_THREAD random|normal: each thread reads one byte of
   PAGES_PER_THREAD pseudo-random 4 KiB pages (xorshift64, fixed seeds) of FILE mapped shared,
   read-only; prints the pages read and the seconds the threads took. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const volatile unsigned char *base;
static size_t npages;
static long per_thread;

struct worker { pthread_t th; uint64_t seed, sum; };

static void *run(void *arg) {
    struct worker *w = arg;
    uint64_t x = w->seed, s = 0;
    for (long i = 0; i < per_thread; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        size_t page = (size_t)(x % npages);
        s += base[page * 4096 + ((x >> 40) & 4095)];
    }
    w->sum = s;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s FILE THREADS PAGES_PER_THREAD random|normal\n", argv[0]);
        return 2;
    }
    int nthreads = atoi(argv[2]);
    per_thread = atol(argv[3]);
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) { perror(argv[1]); return 1; }
    struct stat st;
    if (fstat(fd, &st) != 0) { perror("fstat"); return 1; }
    npages = (size_t)st.st_size / 4096;
    if (npages == 0 || nthreads < 1 || nthreads > 256 || per_thread < 1) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) { perror("mmap"); return 1; }
    if (strcmp(argv[4], "random") == 0 && madvise(p, (size_t)st.st_size, MADV_RANDOM) != 0) {
        perror("madvise");
        return 1;
    }
    base = p;
    struct worker w[256];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < nthreads; i++) {
        w[i].seed = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1);
        if (pthread_create(&w[i].th, NULL, run, &w[i]) != 0) { perror("pthread_create"); return 1; }
    }
    uint64_t sum = 0;
    for (int i = 0; i < nthreads; i++) { pthread_join(w[i].th, NULL); sum += w[i].sum; }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("%ld %.6f %llu\n", (long)nthreads * per_thread, secs, (unsigned long long)sum);
    return 0;
}
EOF
if want mmap; then gcc -O2 -Wall -pthread -o "$TOOLS/mmap-rand" "$TOOLS/mmap-rand.c"; fi

# Results: R[key] = median; RAW[key] = "median min max" (seconds) for the raw table.
declare -A R RAW NOTE
RAW_KEYS=()
summarize() { # KEY then seconds on stdin, one per line → R/RAW
    local key="$1" stats
    stats="$(sort -g | awk '{ t[NR] = $1 } END {
        m = (NR % 2) ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2
        printf "%.6f %.6f %.6f\n", m, t[1], t[NR] }')"
    RAW[$key]="$stats"
    R[$key]="${stats%% *}"
    RAW_KEYS+=("$key")
}
# summarize_dd_mmap WHEN KIND (WHEN: warm or cold): KIND's dd and mmap rows from its raw files;
# mmap's checksums must be those of the warm direct read, else the row gets a note.
summarize_dd_mmap() {
    local when="$1" kind="$2"
    if want dd; then summarize "dd_${when}_$kind" <"$OUT/dd_${when}_$kind.times"; fi
    if want mmap; then
        awk '{ print $2 }' "$OUT/mmap_${when}_$kind.txt" | summarize "mmap_${when}_$kind"
        [[ "$(awk '{ print $3 }' "$OUT/mmap_${when}_$kind.txt" "$OUT/mmap_warm_direct.txt" | sort -u | wc -l)" = 1 ]] \
            || NOTE[mmap_${when}_$kind]="checksums differ from direct's"
    fi
}
# hf KEY [hyperfine options…] COMMAND: median of RUNS hyperfine runs.
hf() {
    local key="$1"; shift
    local out="$OUT/$key.json"
    hyperfine --style none --runs "$RUNS" --export-json "$out" "$@" >&2 \
        || die "hyperfine failed for $key"
    python3 -c 'import json,sys; print("\n".join(str(t) for t in json.load(open(sys.argv[1]))["results"][0]["times"]))' "$out" \
        | summarize "$key"
}
PAGES_TOTAL=$((8 * PAGES))

root_of() { # KIND → the tree as the benchmarked side sees it
    case "$1" in
        direct) echo "$DATA" ;;
        *) echo "$MNT/$1" ;;
    esac
}
big_of() {
    case "$1" in
        direct) echo "$BIG" ;;
        bindfs) echo "$MNT/bindfs/workspaces/ws-big/model.safetensors" ;;
        *) echo "$MNT/$1/ws-big/model.safetensors" ;;
    esac
}
ls_targets() {
    case "$1" in
        direct) printf '%s\n' "$DATA/hf/hub" "$DATA/workspaces" ;;
        *) echo "$MNT/$1" ;;
    esac
}
bdi_of() { # read_ahead_kb of the mount's bdi
    local mm
    mm="$(findmnt -rn -o MAJ:MIN --mountpoint "$1" 2>/dev/null || true)"
    [[ -n "$mm" && -r "/sys/class/bdi/$mm/read_ahead_kb" ]] && cat "/sys/class/bdi/$mm/read_ahead_kb" || echo "?"
}
disk_ra() { # read_ahead_kb of the disk holding a path
    local src dev parent
    src="$(findmnt -no SOURCE -T "$1" 2>/dev/null || true)"
    dev="$(basename "${src:-?}")"
    parent="$(lsblk -no PKNAME "$src" 2>/dev/null | head -n 1 || true)"
    cat "/sys/class/block/${parent:-$dev}/queue/read_ahead_kb" 2>/dev/null || echo "?"
}
mlxfs_pid() { status_field "$MNT/$1/.mlxfs/status.json" pid; }
proc_field() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }

# ---------------------------------------------------------------- 3. per file system
KINDS=(direct bindfs pt daemon)
declare -A INFO
# All three FUSE file systems stay mounted side by side (idle when not measured).
for kind in "${KINDS[@]}"; do
    "$FSCTL" up "$kind"
    big="$(big_of "$kind")"
    if [[ "$kind" = pt || "$kind" = daemon ]]; then
        m="$MNT/$kind"
        mode="$(status_field "$m/.mlxfs/status.json" read_mode)"
        want=passthrough; [[ "$kind" = daemon ]] && want=daemon
        [[ "$mode" = "$want" ]] || NOTE[check_$kind]="read_mode is $mode, expected $want; "
        n="$(find "$m" -name .mlxfs -prune -o -type f -print | wc -l)"
        [[ "$n" = "$N_BACKING_FILES" ]] || NOTE[check_$kind]+="$n files in the mount, $N_BACKING_FILES in the backing folders; "
        nm="$(status_field "$m/.mlxfs/status.json" models)"
        [[ "$nm" = "$MODELS" ]] || NOTE[check_$kind]+="status.json counts $nm models, expected $MODELS; "
        hubf="$(find "$DATA/hf/hub" -path '*/snapshots/*/config.json' -print -quit)"
        repo="${hubf#"$DATA/hf/hub/models--"}"; repo="${repo%%/*}"
        cmp -s "$hubf" "$m/${repo/--//}/config.json" || NOTE[check_$kind]+="hub file ${repo/--//}/config.json differs; "
        nh="$(sh -c "ls $m/*/.mlxfs/health $m/*/*/.mlxfs/health" | wc -l)"
        [[ "$nh" = "$MODELS" ]] || NOTE[check_$kind]+="$nh health files, expected $MODELS; "
        INFO[unhealthy_$kind]="$(sh -c "cat $m/*/.mlxfs/health $m/*/*/.mlxfs/health" | grep -vc '^healthy$' || true)"
    fi
    log "$kind: comparing the 1 GiB file ($big) with the backing one"
    cmp -s "$BIG" "$big" || NOTE[check_$kind]+="the 1 GiB file differs from the backing one; "
    if [[ "$kind" = direct ]]; then INFO[ra_direct]="$(disk_ra "$DATA")"; else INFO[ra_$kind]="$(bdi_of "$MNT/$kind")"; fi
done

tsec() { # time a command (stdout discarded), in seconds
    local t0 t1
    t0=$EPOCHREALTIME
    "$@" >/dev/null
    t1=$EPOCHREALTIME
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f\n", b - a }'
}

# --- warm reads: the page cache dropped, the file read once through every side, then RUNS
# interleaved rounds (rotating order) of dd, then of mmap-rand, on the four sides. Interleaved
# because the VM's speed drifts over minutes; from one dropped cache because how a file was
# cached decides its page-cache folio sizes, which warm reads feel.
if want dd || want mmap; then
    for kind in "${KINDS[@]}"; do rm -f "$OUT/dd_warm_$kind.times" "$OUT/mmap_warm_$kind.txt"; done
    "$FSCTL" drop
    for kind in "${KINDS[@]}"; do dd if="$(big_of "$kind")" of=/dev/null bs=1M status=none; done
    for ((r = 0; r < RUNS; r++)); do
        order=("${KINDS[@]:r%4}" "${KINDS[@]:0:r%4}")
        log "warm round $((r + 1))/$RUNS (order: ${order[*]})"
        if want dd; then
            for kind in "${order[@]}"; do
                tsec dd if="$(big_of "$kind")" of=/dev/null bs=1M status=none >>"$OUT/dd_warm_$kind.times"
            done
        fi
        if want mmap; then
            for kind in "${order[@]}"; do
                "$TOOLS/mmap-rand" "$(big_of "$kind")" 8 "$PAGES" "$MADVISE" >>"$OUT/mmap_warm_$kind.txt" \
                    || die "mmap-rand failed on $(big_of "$kind")"
            done
        fi
    done
    for kind in "${KINDS[@]}"; do summarize_dd_mmap warm "$kind"; done
fi

# --- warm listings, one file system after the other (ls -lR, cat, then the memory reading)
for kind in "${KINDS[@]}"; do
    if want ls; then
        mapfile -t lst < <(ls_targets "$kind")
        log "$kind: ls -lR warm"
        hf "ls_warm_$kind" -N --warmup 1 "ls -lR ${lst[*]}"
        ls -lR "${lst[@]}" | grep -c '^[-l]' >"$OUT/ls_entries_$kind" || true
    fi
    pid=""
    if [[ "$kind" = pt || "$kind" = daemon ]]; then
        m="$MNT/$kind"
        if want cat; then
            log "$kind: cat health warm"
            hf "cat_$kind" --warmup 1 "cat $m/*/.mlxfs/health $m/*/*/.mlxfs/health > /dev/null"
        fi
        if want rss; then
            pid="$(mlxfs_pid "$kind")"
            INFO[gen_$kind]="$(status_field "$m/.mlxfs/status.json" generation)"
            INFO[age_$kind]="$(awk -v up="$(cut -d' ' -f1 /proc/uptime)" -v hz="$(getconf CLK_TCK)" \
                '{ printf "%d", up - $22 / hz }' "/proc/$pid/stat")"
        fi
    elif [[ "$kind" = bindfs ]] && want rss; then
        pid="$(pgrep -xf "bindfs -r $DATA $MNT/bindfs" | head -n 1 || true)"
    fi
    if [[ -n "$pid" ]]; then
        INFO[rss_$kind]="$(proc_field "$pid" VmRSS)"
        INFO[hwm_$kind]="$(proc_field "$pid" VmHWM)"
        INFO[threads_$kind]="$(proc_field "$pid" Threads)"
    fi
done

# --- ls -lR after an idle pause: the kernel's cached names and attributes of a FUSE file
# system expire after their TTL, the backing disk's do not (issue 15 §3)
if want idle; then
    IDLE_KINDS=(direct pt daemon)
    for kind in "${IDLE_KINDS[@]}"; do rm -f "$OUT/ls_idle_$kind.times"; done
    for ((r = 0; r < RUNS; r++)); do
        order=("${IDLE_KINDS[@]:r%3}" "${IDLE_KINDS[@]:0:r%3}")
        log "idle round $((r + 1))/$RUNS: ${IDLE} s idle, then ls -lR (order: ${order[*]})"
        sleep "$IDLE"
        for kind in "${order[@]}"; do
            mapfile -t lst < <(ls_targets "$kind")
            tsec ls -lR "${lst[@]}" >>"$OUT/ls_idle_$kind.times"
        done
    done
    for kind in "${IDLE_KINDS[@]}"; do summarize "ls_idle_$kind" <"$OUT/ls_idle_$kind.times"; done
fi

# --- the daemon's read sizes (diagnostic, not timed; part of dd)
if want dd && command -v strace >/dev/null; then
    log "daemon: pread64 sizes of the daemon during a cold 256 MiB dd (strace)"
    pid="$(mlxfs_pid daemon)"
    "$FSCTL" drop
    strace -f -qq -s 0 -e trace=pread64 -e signal=none -o "$OUT/strace-daemon.txt" -p "$pid" &
    spid=$!
    sleep 1
    dd if="$(big_of daemon)" of=/dev/null bs=1M count=256 status=none
    sleep 0.5
    kill -INT "$spid" 2>/dev/null || true
    wait "$spid" 2>/dev/null || true
    INFO[preads]="$(grep -o 'pread64([0-9]*, [^,]*, [0-9]*, [0-9]*)' "$OUT/strace-daemon.txt" \
        | awk -F', ' '{ n[$3]++ } END { for (s in n) print n[s], s }' | sort -k1,1nr | head -n 4 \
        | awk '{ printf "%s%d × %g KiB", (NR > 1 ? ", " : ""), $1, $2 / 1024 }')"
    INFO[preads_total]="$(grep -c 'pread64(' "$OUT/strace-daemon.txt" || true)"
fi

# --- cold measures: interleaved rounds (the VM's disk speed drifts with the host's cache, so
# every round measures the four sides back to back, in a rotating order)
if want dd || want mmap || want ls; then
    for kind in "${KINDS[@]}"; do rm -f "$OUT"/{dd,ls}_cold_"$kind".times "$OUT/mmap_cold_$kind.txt"; done
    for ((r = 0; r < RUNS; r++)); do
        order=("${KINDS[@]:r%4}" "${KINDS[@]:0:r%4}")
        log "cold round $((r + 1))/$RUNS (order: ${order[*]})"
        if want dd || want mmap; then
            # an untimed cold read first: after the listing phase, the first cold read of a
            # round was often 3-5x slower whichever side it was (the VM disk), so it is not
            # measured
            "$FSCTL" drop
            dd if="$BIG" of=/dev/null bs=1M status=none
        fi
        if want dd; then
            for kind in "${order[@]}"; do
                "$FSCTL" drop
                tsec dd if="$(big_of "$kind")" of=/dev/null bs=1M status=none >>"$OUT/dd_cold_$kind.times"
            done
        fi
        if want mmap; then
            for kind in "${order[@]}"; do
                "$FSCTL" drop
                "$TOOLS/mmap-rand" "$(big_of "$kind")" 8 "$PAGES" "$MADVISE" >>"$OUT/mmap_cold_$kind.txt" \
                    || die "mmap-rand failed on $(big_of "$kind")"
            done
        fi
        if want ls; then
            for kind in "${order[@]}"; do
                "$FSCTL" cold "$kind"
                mapfile -t lst < <(ls_targets "$kind")
                tsec ls -lR "${lst[@]}" >>"$OUT/ls_cold_$kind.times"
            done
        fi
    done
    for kind in "${KINDS[@]}"; do
        summarize_dd_mmap cold "$kind"
        if want ls; then summarize "ls_cold_$kind" <"$OUT/ls_cold_$kind.times"; fi
    done
fi
for kind in "${KINDS[@]}"; do "$FSCTL" down "$kind"; done
"$FSCTL" drop

# ---------------------------------------------------------------- 4. mount to first ls
if want first; then
    for kind in pt daemon bindfs; do
        d="$MNT/$kind"
        case "$kind" in
            pt) up="$(printf '%q' "$BIN") mount --daemon ${THREADS:+--threads $THREADS }$d" ;;
            daemon) up="$(printf '%q' "$BIN") mount --daemon --no-passthrough ${THREADS:+--threads $THREADS }$d" ;;
            bindfs) up="bindfs -r $DATA $d" ;;
        esac
        log "$kind: mount to first ls, warm"
        "$FSCTL" up "$kind"; "$FSCTL" down "$kind" # warm the backing folders' caches
        hf "first_warm_$kind" --prepare "$FSCTL down $kind" --cleanup "$FSCTL down $kind" \
            "$up >/dev/null 2>&1 && ls $d > /dev/null"
        log "$kind: mount to first ls, cold"
        hf "first_cold_$kind" --prepare "$FSCTL down $kind; $FSCTL drop" --cleanup "$FSCTL down $kind" \
            "$up >/dev/null 2>&1 && ls $d > /dev/null"
        # The mount's root answers before its model folders are read (issue 15 §4): also
        # time the listing of one model folder (ws-big's), which needs the whole tree.
        case "$kind" in
            bindfs) model="$d/workspaces/ws-big" ;;
            *) model="$d/ws-big" ;;
        esac
        log "$kind: mount to a model folder's ls, cold"
        hf "firstmodel_cold_$kind" --prepare "$FSCTL down $kind; $FSCTL drop" --cleanup "$FSCTL down $kind" \
            "$up >/dev/null 2>&1 && ls $model > /dev/null"
    done
fi
# mlxfs daemons started by the timed commands were stopped by `fsctl down`; make sure.
sleep 0.5
LEFT_PROCS="$(pgrep -f "^$BIN mount" || true)"

# ---------------------------------------------------------------- 5. report
ELAPSED=$((SECONDS - START_TIME))
cpu="$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)"
mem="$(awk '/^MemTotal/ {printf "%.0f GB RAM", $2 / 1048576}' /proc/meminfo)"
fs="$(findmnt -no FSTYPE -T "$DATA" 2>/dev/null || echo '?')"

gbs() { awk -v t="${R[$1]}" -v b="$BIG_BYTES" 'BEGIN { printf "%.2f", b / t / 1e9 }'; }
kps() { awk -v t="${R[$1]}" -v p="$PAGES_TOTAL" 'BEGIN { printf "%.0f", p / t / 1000 }'; }
sec() { awk -v t="${R[$1]}" 'BEGIN { printf (t < 10 ? "%.3f" : "%.1f"), t }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
mib() { [[ -n "${INFO[$1]:-}" ]] && awk -v k="${INFO[$1]}" 'BEGIN { printf "%.1f", k / 1024 }' || echo "?"; }
yn() { awk -v a="$1" -v op="$2" -v b="$3" 'BEGIN {
    ok = (op == ">=") ? (a >= b) : (op == "<=") ? (a <= b) : (a < b); printf ok ? "yes" : "no" }'; }
both() { # pt-verdict daemon-verdict
    if [[ "$1" = "$2" ]]; then echo "$1"; else echo "pt $1, daemon $2"; fi
}

ROWS=()
row() { ROWS+=("| $1 | $2 | $3 | $4 | $5 | $6 | $7 |"); }

# Rows for the measures run (--only): the table keeps its columns, skipped rows are left out.
for m in cold warm; do
    want dd || break
    d="$(gbs dd_${m}_direct)" b="$(gbs dd_${m}_bindfs)" p="$(gbs dd_${m}_pt)" q="$(gbs dd_${m}_daemon)"
    vp="$(yn "$p" ">=" "$(awk -v d="$d" 'BEGIN{print 0.9*d}')")"
    vq="$(yn "$q" ">=" "$b")"
    tq="daemon ≥ bindfs"
    if [[ $m = warm ]]; then
        vq2="$(yn "$q" ">=" "$(awk -v d="$d" 'BEGIN{print 0.9*d}')")"
        [[ "$vq" = yes && "$vq2" = yes ]] || vq=no
        tq="daemon ≥ bindfs and ≥ 0.9× direct"
    fi
    row "1 GiB sequential read, $m (GB/s)" "$d" "$b ($(ratio "$b" "$d")×)" "$p ($(ratio "$p" "$d")×)" \
        "$q ($(ratio "$q" "$d")×)" "pt ≥ 0.9× direct; $tq" "$(both "$vp" "$vq")"
done
for m in cold warm; do
    want mmap || break
    d="$(kps mmap_${m}_direct)" b="$(kps mmap_${m}_bindfs)" p="$(kps mmap_${m}_pt)" q="$(kps mmap_${m}_daemon)"
    vp="$(yn "$p" ">=" "$(awk -v d="$d" 'BEGIN{print 0.9*d}')")"
    vq="$(yn "$q" ">=" "$b")"
    row "mmap random 4 KiB, 8 threads, $m (k pages/s)" "$d" "$b ($(ratio "$b" "$d")×)" \
        "$p ($(ratio "$p" "$d")×)" "$q ($(ratio "$q" "$d")×)" "pt ≥ 0.9× direct; daemon ≥ bindfs" "$(both "$vp" "$vq")"
done
for m in cold warm; do
    want ls || break
    d="$(sec ls_${m}_direct)" b="$(sec ls_${m}_bindfs)" p="$(sec ls_${m}_pt)" q="$(sec ls_${m}_daemon)"
    if [[ $m = warm ]]; then
        lim="$(awk -v d="${R[ls_warm_direct]}" 'BEGIN{print 1.5*d}')"
        vp="$(yn "${R[ls_warm_pt]}" "<=" "$lim")" vq="$(yn "${R[ls_warm_daemon]}" "<=" "$lim")" t="≤ 1.5× direct"
    else
        vp="$(yn "${R[ls_cold_pt]}" "<=" "${R[ls_cold_bindfs]}")" vq="$(yn "${R[ls_cold_daemon]}" "<=" "${R[ls_cold_bindfs]}")" t="≤ bindfs"
    fi
    row "\`ls -lR\`, $MODELS models, $m (s)" "$d" "$b ($(ratio "$b" "$d")×)" "$p ($(ratio "$p" "$d")×)" \
        "$q ($(ratio "$q" "$d")×)" "$t" "$(both "$vp" "$vq")"
done
if want idle; then
    d="$(sec ls_idle_direct)" p="$(sec ls_idle_pt)" q="$(sec ls_idle_daemon)"
    row "\`ls -lR\`, $MODELS models, after ${IDLE} s idle (s)" "$d" "–" "$p ($(ratio "$p" "$d")×)" \
        "$q ($(ratio "$q" "$d")×)" "≤ 1.0× direct" \
        "$(both "$(yn "${R[ls_idle_pt]}" "<=" "${R[ls_idle_direct]}")" "$(yn "${R[ls_idle_daemon]}" "<=" "${R[ls_idle_direct]}")")"
fi
if want cat; then
    row "\`cat */.mlxfs/health\` ×$MODELS, warm (s)" "–" "–" "$(sec cat_pt)" "$(sec cat_daemon)" "< 1 s" \
        "$(both "$(yn "${R[cat_pt]}" "<" 1)" "$(yn "${R[cat_daemon]}" "<" 1)")"
fi
if want first; then
    row "mount to first \`ls\`, warm (s)" "–" "$(sec first_warm_bindfs)" "$(sec first_warm_pt)" "$(sec first_warm_daemon)" "< 0.5 s" \
        "$(both "$(yn "${R[first_warm_pt]}" "<" 0.5)" "$(yn "${R[first_warm_daemon]}" "<" 0.5)")"
    row "mount to first \`ls\`, cold page cache (s)" "–" "$(sec first_cold_bindfs)" "$(sec first_cold_pt)" "$(sec first_cold_daemon)" "≤ 0.5 s" \
        "$(both "$(yn "${R[first_cold_pt]}" "<=" 0.5)" "$(yn "${R[first_cold_daemon]}" "<=" 0.5)")"
    row "mount to a model folder's \`ls\` (the whole tree built), cold page cache (s)" "–" "$(sec firstmodel_cold_bindfs)" "$(sec firstmodel_cold_pt)" "$(sec firstmodel_cold_daemon)" "–" "–"
fi
if want rss; then
    # what the daemons had served when their memory was read (and the warm dd and mmap runs,
    # when they were selected)
    after="ls -lR + cat"
    if ! want ls; then after="cat"; fi
    if ! want cat; then after="ls -lR"; fi
    if ! want ls && ! want cat; then after="the mount checks"; fi
    row "daemon VmRSS after $after (MiB)" "–" "$(mib rss_bindfs)" "$(mib rss_pt)" "$(mib rss_daemon)" "< 64 MiB" \
        "$(both "$(yn "$(mib rss_pt)" "<" 64)" "$(yn "$(mib rss_daemon)" "<" 64)")"
    row "daemon peak memory (VmHWM) after $after (MiB)" "–" "$(mib hwm_bindfs)" "$(mib hwm_pt)" "$(mib hwm_daemon)" "< 48 MiB" \
        "$(both "$(yn "$(mib hwm_pt)" "<" 48)" "$(yn "$(mib hwm_daemon)" "<" 48)")"
fi

echo "### mlxfs mount benchmark"
echo
echo "- command: \`$CMDLINE\` (took $((ELAPSED / 60)) min $((ELAPSED % 60)) s)"
echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
echo "- machine: nproc $(nproc), kernel $(uname -r), ${cpu:+$cpu, }$mem; backing folders on $fs"
echo "- mlxfs: $BIN_DESC; mount threads: ${THREADS:-default}; $(bindfs --version 2>&1 | head -n 1); $(hyperfine --version)"
if want ls; then
    echo "- catalog: $HUB_MODELS hub models + $WORKSPACES workspaces = $MODELS models, $N_BACKING_FILES model files; file/link lines in \`ls -lR\` (no dot entries): direct $(cat "$OUT/ls_entries_direct"), bindfs $(cat "$OUT/ls_entries_bindfs"), mlxfs $(cat "$OUT/ls_entries_pt") / $(cat "$OUT/ls_entries_daemon")"
else
    echo "- catalog: $HUB_MODELS hub models + $WORKSPACES workspaces = $MODELS models, $N_BACKING_FILES model files"
fi
[[ -z "$SKIPPED" ]] || echo "- measures: $MEASURES only (--only); skipped: $SKIPPED"
echo "- median of $RUNS runs each$(want mmap && echo "; mmap: 8 threads × $PAGES pages, madvise $MADVISE, timed inside the program")"
for kind in bindfs pt daemon; do
    [[ -z "${NOTE[check_$kind]:-}" ]] || echo "- CHECK FAILED ($kind): ${NOTE[check_$kind]}"
done
for k in "${!NOTE[@]}"; do
    [[ "$k" = check_* ]] || echo "- NOTE $k: ${NOTE[$k]}"
done
[[ -z "$LEFT_PROCS" ]] || echo "- WARNING: mlxfs processes still running after all unmounts: $LEFT_PROCS"
echo
echo "| measure | direct | bindfs | mlxfs passthrough | mlxfs daemon | target | met? |"
echo "| --- | ---: | ---: | ---: | ---: | --- | --- |"
printf '%s\n' "${ROWS[@]}"
echo
if want rss; then
    echo "Observations: read_ahead_kb: backing device ${INFO[ra_direct]:-?}, bindfs ${INFO[ra_bindfs]:-?}, mlxfs ${INFO[ra_pt]:-?} / ${INFO[ra_daemon]:-?};" \
        "threads: bindfs ${INFO[threads_bindfs]:-?}, mlxfs ${INFO[threads_pt]:-?} / ${INFO[threads_daemon]:-?};" \
        "VmHWM: bindfs $(mib hwm_bindfs) MiB, mlxfs $(mib hwm_pt) / $(mib hwm_daemon) MiB;" \
        "mlxfs tree generation at the RSS reading: ${INFO[gen_pt]:-?} / ${INFO[gen_daemon]:-?} (daemons up ${INFO[age_pt]:-?} / ${INFO[age_daemon]:-?} s)."
else
    echo "Observations: read_ahead_kb: backing device ${INFO[ra_direct]:-?}, bindfs ${INFO[ra_bindfs]:-?}, mlxfs ${INFO[ra_pt]:-?} / ${INFO[ra_daemon]:-?}."
fi
if [[ -n "${INFO[preads]:-}" ]]; then
    echo "mlxfs --no-passthrough, cold 256 MiB dd: ${INFO[preads_total]} pread64 calls in the daemon, most common sizes: ${INFO[preads]}."
fi
if [[ ${#RAW_KEYS[@]} -gt 0 ]]; then # none with --only rss
    echo
    echo "<details><summary>raw timings (s): median, min, max</summary>"
    echo
    echo "| measure | median | min | max |"
    echo "| --- | ---: | ---: | ---: |"
    for k in "${RAW_KEYS[@]}"; do
        read -r a b c <<<"${RAW[$k]}"
        echo "| $k | $a | $b | $c |"
    done
    echo
    echo "</details>"
fi
