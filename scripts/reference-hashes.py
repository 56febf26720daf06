"""Generate reference content-hash v2 values for tests/it/fixtures/hash_cases.json.

The expected values come from mlx-knife itself (mlxk2.operations.workspace.
compute_workspace_hash_v2), so the Rust implementation can be checked against
the original.

How to run (from the repository root):

    python3 -m venv /tmp/mlxk-venv
    /tmp/mlxk-venv/bin/pip install mlx-knife==2.0.8 mlx-cpu==0.32.0
    /tmp/mlxk-venv/bin/python scripts/reference-hashes.py

(mlx-knife pins mlx==0.32.0; a newer mlx-cpu breaks `import mlx.core`.)

For every case the script builds the tree in a fresh temp dir, computes the
hash with mlx-knife's own function, and writes back into each case:
  - "expected":       "sha256:<hex>" or null (mlx-knife returned None)
  - "expected_index": per-file index [{path, size, sha}] (mtime_ns dropped),
                      or null when the hash is null.

Entry kinds: text (UTF-8), hex (bytes.fromhex), safetensors {header, data_len}
(u64-LE header length + header + data_len zero bytes), sparse_size (truncate),
symlink (relative target, as given), dir (path ends with '/'). Paths are used
byte-for-byte as given (NFD names stay NFD on disk).

Exclude patterns: a case's "exclude_patterns" are passed straight to
compute_workspace_hash_v2(path, patterns). That is exactly what
update_workspace_hash() does with a sentinel's stored `exclude_patterns`
(list(stored_excludes)); calling it directly avoids hashing a sentinel we
would have had to write (custom lists need not exclude .mlxk_workspace.json).
Without "exclude_patterns" the function's default (DEFAULT_EXCLUDE_PATTERNS)
applies.
"""

import json
import os
import sys
import tempfile
from pathlib import Path

from mlxk2 import __version__ as MLXK_VERSION
from mlxk2.operations import workspace as ws

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "it" / "fixtures" / "hash_cases.json"


def build_tree(root: str, entries) -> None:
    for entry in entries:
        rel = entry["path"]
        full = os.path.join(root, rel)
        if entry.get("dir"):
            os.makedirs(full, exist_ok=True)
            continue
        parent = os.path.dirname(full)
        if parent:
            os.makedirs(parent, exist_ok=True)
        if "text" in entry:
            with open(full, "wb") as f:
                f.write(entry["text"].encode("utf-8"))
        elif "hex" in entry:
            with open(full, "wb") as f:
                f.write(bytes.fromhex(entry["hex"]))
        elif "safetensors" in entry:
            st = entry["safetensors"]
            header = st["header"].encode("utf-8")
            with open(full, "wb") as f:
                f.write(len(header).to_bytes(8, "little"))
                f.write(header)
                f.write(b"\x00" * int(st.get("data_len", 0)))
        elif "sparse_size" in entry:
            with open(full, "wb") as f:
                f.truncate(int(entry["sparse_size"]))
        elif "symlink" in entry:
            os.symlink(entry["symlink"], full)
        else:
            raise ValueError(f"unknown entry kind: {entry!r}")


def compute(case):
    with tempfile.TemporaryDirectory(prefix="mlxk-hash-") as tmp:
        # Workspace is a subdirectory so '..'-escaping symlinks really leave it.
        root = os.path.join(tmp, "ws")
        os.mkdir(root)
        build_tree(root, case["entries"])
        patterns = case.get("exclude_patterns")
        result = ws.compute_workspace_hash_v2(Path(root), patterns)
    if result is None:
        return None, None
    content_hash, file_index = result
    index = [{"path": e["path"], "size": e["size"], "sha": e["sha"]} for e in file_index]
    return content_hash, index


def main() -> int:
    print(f"mlx-knife {MLXK_VERSION}", file=sys.stderr)
    data = json.loads(FIXTURE.read_text(encoding="utf-8"))
    problems = 0
    for case in data["cases"]:
        expected, index = compute(case)
        case["expected"] = expected
        case["expected_index"] = index
        flag = ""
        if case.get("expected_none") and expected is not None:
            flag = "  <-- expected_none but mlx-knife returned a hash!"
            problems += 1
        print(f"{case['name']:32} {expected}{flag}", file=sys.stderr)
    FIXTURE.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
