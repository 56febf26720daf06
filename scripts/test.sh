#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what it needs, then lints and tests.
#
#   scripts/test.sh            # everything
#   scripts/test.sh -E 'test(resolution)'   # extra arguments go to cargo nextest
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cc >/dev/null || need_apt+=(gcc)
# Real FUSE mounts: fusermount3 (lazy unmount, non-root mounts) and /dev/fuse.
command -v fusermount3 >/dev/null || need_apt+=(fuse3)
# The system Python: mlxfs embeds its libpython (python3-dev) and the test venv is made from it.
[ -x /usr/bin/python3 ] || need_apt+=(python3)
/usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
[ -n "$(/usr/bin/python3-config --includes 2>/dev/null)" ] || need_apt+=(python3-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  else
    echo "scripts/test.sh: missing ${need_apt[*]}; install them (apt-get install ${need_apt[*]})" >&2
    exit 1
  fi
fi
command -v cargo >/dev/null || { echo "scripts/test.sh: cargo not found (install Rust: https://rustup.rs)" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy >/dev/null 2>&1 || true

# A Python venv for the tests that drive real Python: safetensors through the mount, and real
# MLX inference for `mlxfs run` (mlx's CPU build and mlx-lm, pinned).
venv=target/test-venv
if ! "$venv/bin/python" -c 'import safetensors.numpy' >/dev/null 2>&1 \
   || ! cmp -s scripts/test-requirements.txt "$venv/requirements.txt"; then
  echo "== creating $venv"
  rm -rf "$venv"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r scripts/test-requirements.txt
  cp scripts/test-requirements.txt "$venv/requirements.txt"
fi
export MLXFS_TEST_PYTHON="$PWD/$venv/bin/python"
[ -e /dev/fuse ] || echo "scripts/test.sh: warning: /dev/fuse is missing; the mount tests will fail" >&2

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast "$@"
else
  cargo test --locked --no-fail-fast "$@"
fi
