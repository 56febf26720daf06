#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what it needs, then lints and tests.
#
#   scripts/test.sh            # everything
#   scripts/test.sh -E 'test(resolution)'   # extra arguments go to cargo nextest
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/prereqs.sh
rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy >/dev/null 2>&1 || true

# A Python venv for the tests that drive real Python: safetensors through the mount, and real
# MLX inference for `mlxfs run`.
ensure_test_venv
export MLXFS_TEST_PYTHON="$PWD/target/test-venv/bin/python"
# Suites that need FUSE, root or the venv skip where the machine lacks them (a plain
# `cargo test` on a laptop); here every one of them must run, so a skip is a failure.
export MLXFS_REQUIRE_ALL=1
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
