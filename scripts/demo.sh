#!/usr/bin/env bash
# The whole story on a fresh Linux machine, in one command:
#   build mlxfs, make a tiny MLX model in a workspace, mount every model as one tree,
#   list through the mount, and generate text from the mounted path.
#
#   scripts/demo.sh            # everything in a temp folder, cleaned up at the end
#   scripts/demo.sh --keep     # keep the demo folder (its path is printed)
set -euo pipefail
cd "$(dirname "$0")/.."
keep=0
[ "${1:-}" = "--keep" ] && keep=1

. scripts/prereqs.sh

echo "== building mlxfs (release)"
cargo build --release --quiet
mlxfs=$PWD/target/release/mlxfs

ensure_test_venv
venv=target/test-venv

demo=$(mktemp -d /tmp/mlxfs-demo.XXXXXX)
mnt=$demo/mnt
cleanup() {
  "$mlxfs" umount "$mnt" >/dev/null 2>&1 || true
  if [ "$keep" = 1 ]; then echo "demo folder kept: $demo"; else rm -rf "$demo"; fi
}
trap cleanup EXIT
export MLXK_WORKSPACE_HOME=$demo/workspaces HF_HOME=$demo/hf_home
mkdir -p "$MLXK_WORKSPACE_HOME" "$HF_HOME" "$mnt"

echo "== making a tiny MLX model in the workspace $MLXK_WORKSPACE_HOME/tiny-llama"
"$venv/bin/python" scripts/make-tiny-model.py "$MLXK_WORKSPACE_HOME/tiny-llama"
"$mlxfs" show tiny-llama | head -12

echo "== mounting every model at $mnt"
"$mlxfs" mount "$mnt" --daemon
echo "\$ ls -la $mnt/tiny-llama"
ls -la "$mnt/tiny-llama"
echo "\$ cat $mnt/.mlxfs/health"
cat "$mnt/.mlxfs/health"
echo "\$ mlxfs list $mnt/"
"$mlxfs" list "$mnt/"

echo "== generating from the mounted path (a random-weight model: expect noise)"
echo "\$ mlxfs run $mnt/tiny-llama \"Explain FUSE\" --max-tokens 24 --seed 1"
"$mlxfs" run "$mnt/tiny-llama" "Explain FUSE" --max-tokens 24 --seed 1 --python "$venv"
echo "== done"
