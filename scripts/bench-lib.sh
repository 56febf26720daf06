# Helpers shared by the benchmark scripts (scripts/bench-*.sh and the fsctl script
# bench-mount.sh writes). Source it; it defines functions only. mlxfs_binary uses the caller's
# die/log: bench_start defines them, or the caller does.

# bench_start NAME "$@": the start of a script with a --help (bench-list, bench-mount,
# bench-growth): defines die (the message on stderr after "NAME: ", exit 2) and log (the same,
# no exit), and sets CMDLINE to the command line as given, quoted for a shell (for the report).
bench_start() {
    BENCH_NAME="$1"
    shift
    die() { echo "$BENCH_NAME: $*" >&2; exit 2; }
    log() { echo "$BENCH_NAME: $*" >&2; }
    CMDLINE="$(printf '%q ' "$0" "$@")"
    CMDLINE="${CMDLINE% }"
}

# bench_args USAGE SPEC... -- "$@": parse a benchmark script's command line. A SPEC is
# --option=VAR (the option takes a value: VAR=VALUE) or --flag=VAR=WORD (VAR=WORD). USAGE:
#   - `help` (after bench_start): -h/--help prints the script's header comment (lines 2 up to
#     `set -euo ...`, without the "# ") and exits 0; a missing value or another argument dies.
#   - anything else, the usage after the script's name: a missing value or another argument
#     (-h too) prints "usage: SCRIPT USAGE" and exits 2.
bench_args() {
    local usage="$1" spec
    local -A takes=() sets=()
    shift
    while [[ "$1" != -- ]]; do
        spec="${1#*=}"
        if [[ "$spec" = *=* ]]; then sets[${1%%=*}]="$spec"; else takes[${1%%=*}]="$spec"; fi
        shift
    done
    shift
    while [[ $# -gt 0 ]]; do
        if [[ -n "$1" && -n "${takes[$1]:-}" ]]; then
            if [[ $# -lt 2 ]]; then
                [[ "$usage" = help ]] && die "$1 needs a value"
                echo "usage: $0 $usage" >&2
                exit 2
            fi
            printf -v "${takes[$1]}" '%s' "$2"
            shift 2
        elif [[ -n "$1" && -n "${sets[$1]:-}" ]]; then
            printf -v "${sets[$1]%%=*}" '%s' "${sets[$1]#*=}"
            shift
        elif [[ "$usage" != help ]]; then
            echo "usage: $0 $usage" >&2
            exit 2
        elif [[ "$1" = -h || "$1" = --help ]]; then
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
        else
            die "unknown argument: $1 (see --help)"
        fi
    done
}

# release_build [ARGS...]: for the scripts that measure the checkout they stand in (the current
# directory): scripts/prereqs.sh sourced (what building needs, and ensure_test_venv), then
# `cargo build --release --quiet ARGS`; sets mlxfs to the binary built.
release_build() {
    . scripts/prereqs.sh
    cargo build --release --quiet "$@"
    mlxfs=$PWD/target/release/mlxfs
}

# bench_work_dir MARKER (after bench_start): sets WORK, the folder to work in: DIR when given
# (made when missing, DIR set to its physical path; refused when it holds anything but has no
# file MARKER, that is was not made by this script), else a new temporary folder
# ${TMPDIR:-/tmp}/NAME.XXXXXX (its physical path).
bench_work_dir() {
    if [[ -n "$DIR" ]]; then
        mkdir -p "$DIR"
        DIR="$(cd "$DIR" && pwd -P)"
        if [[ -n "$(ls -A "$DIR")" && ! -e "$DIR/$1" ]]; then
            die "$DIR is not empty and was not made by this script"
        fi
        WORK="$DIR"
    else
        WORK="$(mktemp -d "${TMPDIR:-/tmp}/$BENCH_NAME.XXXXXX")"
        WORK="$(cd "$WORK" && pwd -P)"
    fi
}

# status_field FILE KEY: print KEY of a mount's .mlxfs/status.json (FILE), e.g.
# `status_field MNT/.mlxfs/status.json pid`; fails when FILE is unreadable or has no KEY.
status_field() {
    python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}

# mlxfs_binary ROOT [PREBUILT]: choose the mlxfs binary to measure. Sets BIN (an absolute path)
# and BIN_DESC (what it is, for the report).
#   - no PREBUILT: `cargo build --release` in ROOT (output on stderr; the binary in
#     $CARGO_TARGET_DIR or ROOT/target); BIN_DESC starts with the commit built, +dirty when
#     src/ or Cargo.* differ from it as the build starts or ends.
#   - PREBUILT (an absolute path, from --bin): that binary, no build; BIN_DESC starts with
#     "prebuilt PREBUILT" (the checkout's HEAD says nothing about it).
# Either way BIN_DESC ends with the binary's `--version` and the start of its sha256, which
# tells two builds of the same version apart.
mlxfs_binary() {
    local root="$1" prebuilt="${2:-}" dirty_at_start rev version sum
    if [[ -n "$prebuilt" ]]; then
        [[ -f "$prebuilt" && -x "$prebuilt" ]] || die "--bin: not an executable: $prebuilt"
        BIN="$prebuilt"
        log "using the prebuilt $BIN (no cargo build)"
        BIN_DESC="prebuilt $BIN"
    else
        command -v cargo >/dev/null || die "cargo is required (or give a prebuilt binary with --bin)"
        dirty_at_start="$(git -C "$root" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null || true)"
        log "cargo build --release"
        (cd "$root" && cargo build --release >&2)
        BIN="${CARGO_TARGET_DIR:-$root/target}/release/mlxfs"
        [[ "$BIN" = /* ]] || BIN="$root/$BIN"
        [[ -x "$BIN" ]] || die "no binary at $BIN"
        rev="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
        [[ -z "${dirty_at_start}$(git -C "$root" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]] \
            || rev="$rev+dirty"
        BIN_DESC="$rev (release build, $BIN)"
    fi
    version="$("$BIN" --version 2>/dev/null | head -n 1 || true)"
    [[ -n "$version" ]] || die "$BIN --version failed: is it mlxfs?"
    sum="$(sha256sum "$BIN" | cut -c 1-12)"
    BIN_DESC="$BIN_DESC, \`$version\`, sha256 $sum…"
}
