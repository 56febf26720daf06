"""Weight conversion for `mlxfs convert` (--quantize, --dtype, --dequantize), shard by shard,
shared by the embedded interpreter and the subprocess fallback.

The conversion itself is mlx-lm's: the model is loaded lazily by `mlx_lm.utils.load` exactly as
`mlx_lm.convert.convert` loads it, the dtype is cast with its code, and `quantize_model` /
`dequantize_model` decide what is quantized and with which parameters (the model's own
`quant_predicate` and `cast_predicate` included) and write the `quantization` block of the
config. Nothing is evaluated at that point: every weight is a lazy MLX array whose data is read
from its safetensors file only when it is evaluated.

What differs is the save. `mlx_lm.utils.save_model` evaluates up to 5 GB of output at once
(the whole output of a model below that size, plus what was read to compute it). Here the
output tensors are grouped by the source shard they come from (by name: `x.weight`,
`x.scales`, `x.biases` come from the source's `x.weight`; a name the model's `sanitize`
changed is matched by its suffix; whatever still matches nothing — tensors `sanitize` builds
from several others — forms a last group), in the order its sources lie in their file. Each
group is evaluated one tensor at a time (so at most one source tensor is in memory beside the
group's output), written as one output
shard with `mx.save_safetensors` (`{"format": "mlx"}`, as mlx-lm), then released, and MLX's
buffer cache emptied. Peak memory is one output shard plus one source tensor, not the model.
The values are those of `mlx_lm.convert` (the same lazy graph, evaluated piecewise).
The rest of the output is mlx-lm's `save`: the index (mlx-lm's, indent 4), `save_config`, the
tokenizer's `save_pretrained`, `*.py` and `generation_config.json` copied from the source, and
`create_model_card`.

`run(request_json, emit, should_stop)`; the imports with the BLAS preload, the environment report
and the guards against model-supplied code are mlxfs_common's. `emit(event_json)` receives:
  {"event": "env", ...generate.py's env fields, "mlx", "mlx_lm"}      (versions)
  {"event": "plan", "tensors", "bytes", "shards": [{"file", "tensors", "bytes"}]}
  {"event": "progress", "tensors", "bytes"}                         (cumulative, evaluated)
  {"event": "shard", "file", "tensors", "bytes", "size"[, "resumed"]} (written, or kept from
      an interrupted run: "resumed")
  {"event": "done", "shards", "tensors", "bytes", "quantization", "quantized_layers",
   "unquantized": [{"layer", "input_width", "why": "group_size"|"model"}], "peak_memory_gb",
   "seconds", "phases": {"imports_s", "load_s", "plan_s", "eval_s", "write_s", "files_s"}}
      (`quantized_layers` null and `unquantized` empty unless quantizing)
  {"event": "error", "type", "message"}
      (`missing_dependency`, `remote_code_required`, `load_failed`, `conversion_failed`,
       `InvalidArgumentError`: a quantization that would quantize no layer, `interrupted`)
As a script: `python -c CONVERT_PY REQUEST_JSON EVENTS_FD SHARED` (SHARED: the source of
`mlxfs_common`, which says how), exit 1 after an error event (130 when interrupted).

Request: {"source", "target" (an empty folder), "mode": "quantize"|"dtype"|"dequantize",
"bits", "group_size" (null: mlx-lm's default for the mode), "q_mode", "dtype" (null: the
config's `torch_dtype`, as mlx-lm), "max_shard_bytes", "resume"}. With "resume", the shards an
interrupted run left in "target" are kept when `<target>/../plan.json` (written before the
first shard) equals this run's plan; each shard is written as `.partial-<name>` and renamed.
"""

import glob
import json
import os
import shutil
import sys
import time

if __name__ == "__main__":  # a subprocess: its last argument has the shared modules
    for _name, _source in json.loads(sys.argv.pop()):  # as `mlxfs_common.install`
        sys.modules[_name] = __import__("types").ModuleType(_name)
        exec(compile(_source, _name + ".py", "exec"), sys.modules[_name].__dict__)

import mlxfs_common as common  # noqa: E402


class _Interrupted(KeyboardInterrupt):
    """`should_stop()` turned true between two tensors: the run ends as on Ctrl-C."""


def run(request_json, emit, should_stop):
    def on_interrupt(send, final):
        send({"event": "error", "type": "interrupted", "message": "interrupted"})
        return "interrupted"

    return common.run_job(request_json, emit, lambda req, send: _run(req, send, should_stop),
                          on_interrupt)


def _header_offsets(path):
    """Each tensor's name and the offset of its data in a safetensors file, from its header
    (no data read)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    return {k: v.get("data_offsets", [0])[0] for k, v in header.items() if k != "__metadata__"}


def _source_of(key, by_name, suffixes):
    """Where an output tensor comes from: (source shard index, data offset), or None."""
    base = key
    for tail in (".scales", ".biases", ".global_scale"):
        if key.endswith(tail):
            base = key[: -len(tail)] + ".weight"
            break
    for k in (key, base):
        if k in by_name:
            return by_name[k]
    # A name the model's sanitize changed (a prefix added or dropped): the longest dotted
    # suffix (of three parts or more) it shares with a source name.
    for k in (key, base):
        parts = k.split(".")
        for i in range(len(parts) - 2):
            hit = suffixes.get(".".join(parts[i:]))
            if hit is not None:
                return hit
    return None


def _quantizable(model):
    """The layers mlx could quantize (those with `to_quantized`): path → input width."""
    import mlx.nn as nn
    from mlx.utils import tree_flatten
    leaves = tree_flatten(model.leaf_modules(), is_leaf=nn.Module.is_module)
    return {p: int(m.weight.shape[-1]) for p, m in leaves
            if hasattr(m, "to_quantized") and hasattr(m, "weight")}


def _version(mod):
    try:
        from importlib.metadata import version
        return version(mod)
    except Exception:
        return None


def _run(req, send, should_stop):
    def fail(kind, message):
        send({"event": "error", "type": kind, "message": message})
        return kind

    def check_stop():
        if should_stop():
            raise _Interrupted()

    started = time.monotonic()
    missing = common.check_imports()
    if missing:
        send(missing)
        return missing["type"]
    send({"event": "env", **common.env_info(), "mlx": _version("mlx"), "mlx_lm": _version("mlx-lm")})
    phases = {"imports_s": time.monotonic() - started}

    import inspect
    from pathlib import Path

    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_map, tree_map_with_path
    from mlx_lm import utils as lu
    from mlx_lm.convert import MODEL_CONVERSION_DTYPES

    src = Path(req["source"])
    dst = Path(req["target"])
    mode = req["mode"]
    check_stop()

    # 1. mlx_lm.convert.convert's load (lazy: nothing is read yet).
    kwargs = {}
    if "trust_remote_code" in inspect.signature(lu.load).parameters:
        kwargs["trust_remote_code"] = False
    try:
        model, tokenizer, config = lu.load(str(src), return_config=True,
                                           tokenizer_config={"trust_remote_code": False},
                                           lazy=True, **kwargs)
    except Exception as e:
        if common.needs_remote_code(e):
            send(common.remote_code_error(str(src), e))
            return "remote_code_required"
        return fail("load_failed", f"{type(e).__name__}: {e}")
    check_stop()
    phases["load_s"] = time.monotonic() - started - sum(phases.values())

    try:
        # 2. Its dtype, quantize and dequantize steps, with its code.
        dtype = req.get("dtype")
        if dtype is None:
            dtype = config.get("torch_dtype", None)
        if dtype is None and (text_config := config.get("text_config", None)):
            dtype = text_config.get("dtype", None)
        if dtype in MODEL_CONVERSION_DTYPES:
            target_dtype = getattr(mx, dtype)
            cast_predicate = getattr(model, "cast_predicate", lambda _: True)

            def set_dtype(k, v):
                if cast_predicate(k) and mx.issubdtype(v.dtype, mx.floating):
                    return v.astype(target_dtype)
                return v

            model.update(tree_map_with_path(set_dtype, model.parameters()))

        quantized_layers, unquantized = None, []
        if mode == "quantize":
            # mlx-lm quantizes a layer with `to_quantized` whose input width the group size
            # divides (and that the model's own predicate lets through); every other one stays
            # float without a word. Each is named here, and a conversion that quantizes none
            # is refused before anything is written.
            q_mode = req.get("q_mode") or "affine"
            group = req.get("group_size") or {"mxfp4": 32, "nvfp4": 16, "mxfp8": 32}.get(q_mode, 64)
            before = _quantizable(model)
            model, config = lu.quantize_model(model, config, req.get("group_size"), req["bits"],
                                              mode=q_mode, quant_predicate=None)
            left = _quantizable(model)
            quantized_layers = len(before) - len(left)
            unquantized = [{"layer": p, "input_width": before[p],
                            "why": "group_size" if before[p] % group else "model"}
                           for p in sorted(left)]
            if quantized_layers == 0:
                widths = sorted({w for w in before.values()})
                return fail("InvalidArgumentError",
                            f"--quantize {req['bits']} would quantize none of the model's "
                            f"{len(before)} layers: groups of {group} divide none of their input "
                            f"widths ({', '.join(map(str, widths))}), or the model keeps them "
                            f"float; the result would be a float model labelled "
                            f"{req['bits']}-bit")
        elif mode == "dequantize":
            config.pop("quantization", None)
            config.pop("quantization_config", None)
            model = lu.dequantize_model(model)

        # 3. The save, shard by shard.
        mark = time.monotonic()
        weights = dict(tree_flatten(model.parameters()))
        total_parameters = lu.get_total_parameters(model)
        keep_vision_config = "vision_tower" in getattr(model, "model", {})
        sources = sorted(glob.glob(str(src / "model*.safetensors")))
        by_name, suffixes = {}, {}
        for i, f in enumerate(sources):
            for k, offset in _header_offsets(f).items():
                by_name.setdefault(k, (i, offset))
                parts = k.split(".")
                for j in range(len(parts) - 2):
                    suffixes.setdefault(".".join(parts[j:]), (i, offset))
        groups = [[] for _ in range(len(sources) + 1)]
        for n, k in enumerate(weights):
            where = _source_of(k, by_name, suffixes)
            if where is None:
                groups[len(sources)].append((n, k))
            else:
                groups[where[0]].append((where[1], k))
        # Each group in the order its sources lie in their file: the reads go forward through
        # the file, as the kernel's readahead expects.
        groups = [[k for _, k in sorted(g)] for g in groups]
        # A group above the size limit is split, as mlx-lm's make_shards splits.
        limit = int(req.get("max_shard_bytes") or (lu.MAX_FILE_SIZE_GB << 30))
        shards = []
        for g in groups:
            cur, size = [], 0
            for k in g:
                n = weights[k].nbytes
                if cur and size + n > limit:
                    shards.append(cur)
                    cur, size = [], 0
                cur.append(k)
                size += n
            if cur:
                shards.append(cur)
        count = len(shards)
        fmt = "model-{:05d}-of-{:05d}.safetensors" if count > 1 else "model.safetensors"
        names = [fmt.format(i + 1, count) for i in range(count)]
        total_size = sum(v.nbytes for v in weights.values())
        # Resuming: the shards an interrupted run finished are kept when the plan is the
        # same (the same shards of the same tensors, the same request, the same mlx and
        # mlx-lm); otherwise whatever it left is removed.
        plan = {"request": {k: v for k, v in req.items() if k != "resume"},
                "mlx": _version("mlx"), "mlx_lm": _version("mlx-lm"),
                "shards": [[names[i], shards[i]] for i in range(count)]}
        plan_path = dst.parent / "plan.json"
        previous = None
        if req.get("resume") and plan_path.is_file():
            try:
                previous = json.loads(plan_path.read_text())
            except ValueError:
                previous = None
        resuming = previous == plan
        for partial in dst.glob(".partial-*"):
            partial.unlink()
        if not resuming:
            dst.mkdir(parents=True, exist_ok=True)
            for old in dst.glob("*.safetensors"):
                old.unlink()
            plan_path.write_text(json.dumps(plan))
        send({"event": "plan", "tensors": len(weights), "bytes": total_size,
              "shards": [{"file": names[i], "tensors": len(s),
                          "bytes": sum(weights[k].nbytes for k in s)} for i, s in enumerate(shards)]})

        # mlx-lm's donation: the model lets go of its arrays, so that a written shard's
        # tensors are freed with the shard.
        model.update(tree_map(lambda _: mx.array([]), model.parameters()))
        pending = [{k: weights[k] for k in s} for s in shards]
        weights.clear()
        del weights
        phases["plan_s"] = time.monotonic() - mark
        mark = time.monotonic()
        eval_s = 0.0
        weight_map = {}
        done_tensors, done_bytes = 0, 0
        resumed = 0
        for i in range(count):
            shard = pending[i]
            pending[i] = None
            path = dst / names[i]
            if resuming and path.is_file():
                for k in shard:
                    weight_map[k] = names[i]
                done_tensors += len(shard)
                done_bytes += sum(v.nbytes for v in shard.values())
                resumed += 1
                send({"event": "progress", "tensors": done_tensors, "bytes": done_bytes})
                send({"event": "shard", "file": names[i], "tensors": len(shard),
                      "bytes": sum(v.nbytes for v in shard.values()),
                      "size": path.stat().st_size, "resumed": True})
                del shard
                continue
            for v in shard.values():
                check_stop()
                t = time.monotonic()
                mx.eval(v)
                eval_s += time.monotonic() - t
                done_tensors += 1
                done_bytes += v.nbytes
                send({"event": "progress", "tensors": done_tensors, "bytes": done_bytes})
            check_stop()
            # Written under another name and renamed: a shard with its final name is whole.
            partial = dst / (".partial-" + names[i])
            mx.save_safetensors(str(partial), shard, metadata={"format": "mlx"})
            os.replace(partial, path)
            for k in shard:
                weight_map[k] = names[i]
            send({"event": "shard", "file": names[i], "tensors": len(shard),
                  "bytes": sum(v.nbytes for v in shard.values()), "size": path.stat().st_size})
            del shard
            mx.clear_cache()

        phases["eval_s"] = eval_s
        phases["write_s"] = time.monotonic() - mark - eval_s
        mark = time.monotonic()
        # 4. The rest of mlx_lm.utils.save, with its code.
        index = {"metadata": {"total_size": total_size, "total_parameters": total_parameters},
                 "weight_map": {k: weight_map[k] for k in sorted(weight_map)}}
        with open(dst / "model.safetensors.index.json", "w") as f:
            json.dump(index, f, indent=4)
        quantization = config.get("quantization")
        lu.save_config(config, config_path=dst / "config.json", keep_vision_config=keep_vision_config)
        tokenizer.save_pretrained(dst)
        # The tokenizer was loaded offline (HF_HUB_OFFLINE=1), which transformers records as
        # `local_files_only: true`; mlx_lm.convert, run online, writes false. Same bytes as its.
        tc = dst / "tokenizer_config.json"
        if tc.is_file():
            text = tc.read_text(encoding="utf-8")
            if '"local_files_only": true' in text:
                tc.write_text(text.replace('"local_files_only": true', '"local_files_only": false'),
                              encoding="utf-8")
        for p in ["*.py", "generation_config.json"]:
            for file in glob.glob(str(src / p)):
                shutil.copy(file, dst)
        lu.create_model_card(dst, None)
        phases["files_s"] = time.monotonic() - mark
    except (_Interrupted, KeyboardInterrupt):
        raise
    except Exception as e:
        return fail("conversion_failed", f"{type(e).__name__}: {e}")

    try:
        peak = mx.get_peak_memory() / 1e9
    except Exception:
        peak = None
    send({"event": "done", "shards": names, "tensors": done_tensors, "bytes": done_bytes,
          "quantization": quantization, "quantized_layers": quantized_layers,
          "unquantized": unquantized, "peak_memory_gb": peak,
          "seconds": time.monotonic() - started, "phases": phases, "resumed_shards": resumed})
    return None


if __name__ == "__main__":
    common.main(run)
