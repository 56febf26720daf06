# Sourced by test.sh and demo.sh: install, with Debian's apt, what building and testing mlxfs
# needs on a fresh machine (gcc, FUSE's fusermount3, the system Python with headers and venv —
# mlxfs embeds its libpython, and the Python venvs are made from it).
need_apt=()
command -v cc >/dev/null || need_apt+=(gcc)
command -v fusermount3 >/dev/null || need_apt+=(fuse3)
# rsync: a copy out of the mount is checked with `rsync -a` too (tests/it/mount.rs).
command -v rsync >/dev/null || need_apt+=(rsync)
[ -x /usr/bin/python3 ] || need_apt+=(python3)
/usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
[ -n "$(/usr/bin/python3-config --includes 2>/dev/null)" ] || need_apt+=(python3-dev)
# An optimised BLAS: mlx-cpu's wheel bundles the reference one; run and serve load this instead
# (MLXFS_BLAS, docs/ENVIRONMENT.md), and the tests check that they do.
ls /usr/lib/*-linux-gnu/libopenblas.so.0 /usr/lib64/libopenblas.so.0 >/dev/null 2>&1 || need_apt+=(libopenblas0-pthread)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  else
    echo "$0: missing ${need_apt[*]}; install them (sudo apt-get install ${need_apt[*]})" >&2
    exit 1
  fi
fi
command -v cargo >/dev/null || { echo "$0: cargo not found (install Rust: https://rustup.rs)" >&2; exit 1; }

# The test venv (target/test-venv): mlx's CPU build, mlx-lm, safetensors, all pinned.
ensure_test_venv() {
  local venv=target/test-venv
  if ! "$venv/bin/python" -c 'import mlx_lm, mlx_vlm, safetensors.numpy, importlib.util as u; assert u.find_spec("mlx_whisper")' >/dev/null 2>&1 \
     || ! cmp -s scripts/test-requirements.txt "$venv/requirements.txt"; then
    echo "== creating $venv (mlx, mlx-lm, mlx-vlm, mlx-whisper, safetensors; pinned in scripts/test-requirements.txt)"
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv"
    # --no-deps: the file pins every package; mlx-whisper declares torch and mlx-vlm a
    # server, a UI and opencv, none of which the tests import (see the file's header).
    "$venv/bin/pip" install -q --disable-pip-version-check --no-deps -r scripts/test-requirements.txt
    cp scripts/test-requirements.txt "$venv/requirements.txt"
  fi
}
