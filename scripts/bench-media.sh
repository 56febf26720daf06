#!/usr/bin/env bash
# Benchmark `mlxfs run --audio` beside mlx-whisper's own CLI, and `mlxfs run --image` beside
# `python -m mlx_vlm generate`, on the same file: medians of N total wall times, on the tiny
# generated models and on larger generated ones (whisper-tiny's dimensions; a ~0.7 GB
# Pixtral). Greedy decoding (temperature 0, no temperature fallback), so each run does the
# same work.
#
#   scripts/bench-media.sh [--runs 5]
#
# mlx-whisper's CLI reads files with the `ffmpeg` program and imports numba: this installs
# ffmpeg (Debian) when it is missing and runs everything — mlxfs included — in a venv of the
# test pins plus numba. mlxfs loads the system's OpenBLAS for mlx's float32 products (see
# generate.py `_fast_blas`) and the backends' CLIs do not, so mlxfs is also measured with
# MLXFS_BLAS=bundled: the same BLAS as the CLIs.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh # bench_args
runs=5
bench_args "[--runs N]" --runs=runs -- "$@"

. scripts/prereqs.sh
command -v ffmpeg >/dev/null || apt-get install -y -q --no-install-recommends ffmpeg >/dev/null
cargo build --release --quiet
mlxfs=$PWD/target/release/mlxfs

work=$(mktemp -d /tmp/mlxfs-bench-media.XXXXXX)
trap 'rm -rf "$work"' EXIT
venv=$work/venv
/usr/bin/python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check --no-deps -r scripts/test-requirements.txt numba llvmlite
export MLXK_WORKSPACE_HOME=$work/ws HF_HOME=$work/hf HF_HUB_OFFLINE=1
mkdir -p "$MLXK_WORKSPACE_HOME" "$HF_HOME"
py=$venv/bin/python
$py scripts/make-tiny-whisper.py "$MLXK_WORKSPACE_HOME/whisper-tiny-test" 2>/dev/null
$py scripts/make-tiny-whisper.py "$MLXK_WORKSPACE_HOME/whisper-larger-test" --state 384 --layers 4 --text-ctx 448 2>/dev/null
$py scripts/make-tiny-vlm.py "$MLXK_WORKSPACE_HOME/vlm-tiny" 2>/dev/null
$py scripts/make-tiny-vlm.py "$MLXK_WORKSPACE_HOME/vlm-larger" --hidden 1024 --layers 12 \
  --vision-hidden 256 --vision-layers 4 --image-size 256 --patch 16 2>/dev/null

"$py" - "$mlxfs" "$venv" "$MLXK_WORKSPACE_HOME" "$work" "$runs" <<'PY'
import os, statistics, subprocess, sys, time
import numpy as np
from PIL import Image
mlxfs, venv, home, work, runs = sys.argv[1:6]
runs = int(runs)
py = os.path.join(venv, "bin", "python")
clip = os.path.join(work, "tone.wav")
import wave
rate, secs = 16000, 10.0
t = np.arange(int(rate * secs)) / rate
x = (0.4 * np.sin(2 * np.pi * (440 + 440 * t / secs) * t) * 32767).astype("<i2")
with wave.open(clip, "wb") as w:
    w.setnchannels(1); w.setsampwidth(2); w.setframerate(rate); w.writeframes(x.tobytes())
img = os.path.join(work, "image.png")
rng = np.random.default_rng(0)
Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(img)
out = os.path.join(work, "out")
bundled = dict(os.environ, MLXFS_BLAS="bundled")

def median(argv, env=None):
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        times.append(time.perf_counter() - t0)
        if p.returncode != 0:
            sys.exit(f"{argv[:4]} failed:\n{p.stderr.decode()[-2000:]}")
    return statistics.median(times)

def row(model, cases):
    base = None
    for name, argv, env in cases:
        m = median(argv, env)
        base = base or m
        print(f"| {model} | {name} | {m:.2f} s | {m / base:.2f}x |")

print(f"audio: a {secs:.0f}-second 16 kHz WAV; medians of {runs} runs")
print("| model | command | total | vs first row |")
print("| --- | --- | --- | --- |")
for model in ("whisper-tiny-test", "whisper-larger-test"):
    path = os.path.join(home, model)
    row(model, [
        ("mlx_whisper CLI (ffmpeg reads the file)", [os.path.join(venv, "bin", "mlx_whisper"), clip, "--model", path,
          "--output-format", "txt", "--output-dir", out, "--verbose", "False", "--temperature", "0"], None),
        ("mlxfs run --audio", [mlxfs, "run", path, "--audio", clip, "--python", venv], None),
        ("mlxfs run --audio, MLXFS_BLAS=bundled", [mlxfs, "run", path, "--audio", clip, "--python", venv], bundled),
    ])
print()
print(f"image: a 256x256 PNG, prompt 'Describe the image.', 32 tokens, greedy; medians of {runs} runs")
print("| model | command | total | vs first row |")
print("| --- | --- | --- | --- |")
for model in ("vlm-tiny", "vlm-larger"):
    path = os.path.join(home, model)
    common = ["--max-tokens", "32", "--temperature", "0"]
    row(model, [
        ("python -m mlx_vlm generate", [py, "-m", "mlx_vlm", "generate", "--model", path, "--image", img,
          "--prompt", "Describe the image.", *common], None),
        ("mlxfs run --image", [mlxfs, "run", path, "Describe the image.", "--image", img, *common,
          "--repetition-penalty", "1", "--python", venv], None),
        ("mlxfs run --image, MLXFS_BLAS=bundled", [mlxfs, "run", path, "Describe the image.", "--image", img,
          *common, "--repetition-penalty", "1", "--python", venv], bundled),
    ])
PY
