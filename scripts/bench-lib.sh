# Helpers shared by the benchmark scripts (bench-list.sh, bench-mount.sh, bench-run.sh and the
# fsctl script bench-mount.sh writes). Source it; it defines functions only. The callers define
# their own die/log (used by mlxfs_binary).

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
