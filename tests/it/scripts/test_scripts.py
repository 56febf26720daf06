"""Unit tests of mlxfs's Python scripts (src/runtime/*.py) that need the standard library only:
no MLX, no numpy. `cargo test` runs them with `python3` (tests/it/scripts.rs), which passes:
  MLXFS_RUNTIME_DIR   src/runtime
  MLXFS_SHARED_FILE   a file holding runtime::SHARED as mlxfs passes it to a subprocess (a JSON
                      list of [name, source] pairs)
The modules are installed as mlxfs installs them (`mlxfs_common.install`); worker.py and
convert.py as `mlxfs_worker` and `mlxfs_convert`.
"""

import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

RUNTIME = os.environ["MLXFS_RUNTIME_DIR"]
with open(os.environ["MLXFS_SHARED_FILE"], encoding="utf-8") as _f:
    SHARED = json.load(_f)


def _source(file):
    with open(os.path.join(RUNTIME, file), encoding="utf-8") as f:
        return f.read()


# mlxfs_common first, by hand (its `install` installs the rest).
_common = type(sys)("mlxfs_common")
sys.modules["mlxfs_common"] = _common
exec(compile(dict(SHARED)["mlxfs_common"], "mlxfs_common.py", "exec"), _common.__dict__)
_common.install(SHARED[1:] + [["mlxfs_worker", _source("worker.py")],
                              ["mlxfs_convert", _source("convert.py")]])

import mlxfs_audio as audio  # noqa: E402
import mlxfs_common as common  # noqa: E402
import mlxfs_convert as convert  # noqa: E402
import mlxfs_worker as worker  # noqa: E402


class SharedModules(unittest.TestCase):
    def test_shared_is_the_files_in_import_order(self):
        files = {"mlxfs_common": "mlxfs_common.py", "mlxfs_audio": "mlxfs_audio.py",
                 "mlxfs_generate": "generate.py"}
        self.assertEqual([n for n, _ in SHARED], list(files))
        for name, source in SHARED:
            self.assertEqual(source, _source(files[name]), name)

    def test_every_global_a_function_reads_exists(self):
        # A function moved between modules without its import fails only when it runs.
        import builtins
        import dis
        import types

        for name in ("mlxfs_common", "mlxfs_audio", "mlxfs_generate", "mlxfs_worker", "mlxfs_convert"):
            module = sys.modules[name]
            source = dict(SHARED).get(name) or _source(name[len("mlxfs_"):] + ".py")
            todo = [compile(source, name, "exec")]
            while todo:
                code = todo.pop()
                todo += [c for c in code.co_consts if isinstance(c, types.CodeType)]
                for ins in dis.get_instructions(code):
                    if ins.opname == "LOAD_GLOBAL":
                        self.assertTrue(ins.argval in module.__dict__ or hasattr(builtins, ins.argval),
                                        f"{name}: {code.co_name} reads {ins.argval}, which is not defined")


class HeldBack(unittest.TestCase):
    def test_the_longest_end_that_begins_a_marker(self):
        self.assertEqual(worker.held_back("hello wor", ["world"]), 3)
        self.assertEqual(worker.held_back("hello", ["xyz"]), 0)
        self.assertEqual(worker.held_back("abab", ["abc", "bab!"]), 3)
        self.assertEqual(worker.held_back("ab", ["", "bc"]), 1)
        self.assertEqual(worker.held_back("", ["a"]), 0)
        self.assertEqual(worker.held_back("aaa", ["aaaa"]), 3)


class StopFilterTest(unittest.TestCase):
    def feed_all(self, stops, pieces, final=True):
        f = worker.StopFilter(stops)
        out = [f.feed(p) for p in pieces]
        if final and not f.stopped:
            out.append(f.feed("", final=True))
        return f, out

    def test_text_before_the_first_stop_sequence(self):
        f, out = self.feed_all(["END", "STOP"], ["Hello ", "wor", "ldEN", "D and more", "ignored"])
        self.assertEqual(out, ["Hello ", "wor", "ld", "", ""])
        self.assertTrue(f.stopped)
        self.assertEqual(f.text[:f.released], "Hello world")

    def test_what_could_begin_one_is_held_until_it_cannot(self):
        f, out = self.feed_all(["\n\n"], ["a\n", "b\n", "\n", "c"])
        self.assertEqual(out, ["a", "\nb", "", ""])
        self.assertEqual(f.text[:f.released], "a\nb")

    def test_the_end_lets_out_what_was_held(self):
        f, out = self.feed_all(["STOP"], ["one ST"])
        self.assertEqual(out, ["one ", "ST"])
        self.assertFalse(f.stopped)
        self.assertEqual(f.text[:f.released], "one ST")

    def test_the_earliest_of_several(self):
        f, out = self.feed_all(["b", "abc"], ["xabc"])
        self.assertEqual(out, ["x"])

    def test_no_stop_sequences_hold_nothing(self):
        f, out = self.feed_all([""], ["a", "b"], final=False)
        self.assertEqual(out, ["a", "b"])
        f, out = self.feed_all(None, ["a"], final=False)
        self.assertEqual(out, ["a"])


class ToolFilterTest(unittest.TestCase):
    def test_calls_between_markers_are_cut_out(self):
        f = worker._ToolFilter("<tool_call>", "</tool_call>")
        shown = "".join(f.feed(p) for p in ["Let me ", "<tool", "_call>{\"name\": 1}</to", "ol_call> done"])
        shown += f.feed("", final=True)
        self.assertEqual(shown, "Let me  done")
        self.assertEqual(f.calls, ['{"name": 1}'])

    def test_a_call_cut_by_the_end_is_kept(self):
        f = worker._ToolFilter("<t>", "</t>")
        self.assertEqual(f.feed("a<t>{\"x\""), "a")
        self.assertEqual(f.feed("", final=True), "")
        self.assertEqual(f.calls, ['{"x"'])

    def test_text_that_only_looks_like_a_marker_is_shown(self):
        f = worker._ToolFilter("<tool>", "</tool>")
        self.assertEqual(f.feed("a <to"), "a ")
        self.assertEqual(f.feed("y> b", final=True), "<toy> b")
        self.assertEqual(f.calls, [])


def until_the_end(read, commands):
    """`read(commands)`, a command reader, whose end (`os._exit`) becomes SystemExit; its code."""
    def exit(code):
        raise SystemExit(code)

    real, os._exit = os._exit, exit
    try:
        read(iter(commands))
    except SystemExit as e:
        return e.code
    finally:
        os._exit = real
    raise AssertionError("the command reader returned")


class Commands(unittest.TestCase):
    def test_each_line_runs_its_op_and_bad_lines_are_skipped(self):
        seen = []
        ops = {"generate": seen.append, "cancel": lambda c: seen.append(("cancel", c["id"]))}
        code = until_the_end(lambda c: worker.read_commands(c, threading.Condition(), ops),
                             ['{"op": "generate", "id": 1}\n', "not json\n", '{"op": "nothing"}\n',
                              '{"op": "cancel", "id": 1}\n'])
        self.assertEqual(code, 0, "the end of the commands ends the process with 0")
        self.assertEqual(seen, [{"op": "generate", "id": 1}, ("cancel", 1)])

    def test_the_text_worker_answers_queued_jobs_on_cancel_and_exit(self):
        sent = []
        w = worker.Worker(sent.append)
        until_the_end(w.read_commands, ['{"op": "generate", "id": 1}', '{"op": "generate", "id": 2}',
                                        '{"op": "cancel", "id": 1}', '{"op": "exit"}'])
        done = {"event": "done", "finish_reason": "cancelled", "prompt_tokens": 0,
                "completion_tokens": 0, "cached_tokens": 0, "text": "", "tool_calls": None}
        self.assertEqual(sent, [{"event": "accepted", "id": 1}, {"event": "accepted", "id": 2},
                                {**done, "id": 1}, {**done, "id": 2}])
        self.assertTrue(w.exiting)
        self.assertFalse(w.incoming)

    def test_the_media_worker_too(self):
        sent = []
        w = worker.MediaWorker(sent.append, "mlx-whisper")
        w.running = 7
        until_the_end(w.read_commands, ['{"op": "transcribe", "id": 1}', '{"op": "generate", "id": 2}',
                                        '{"op": "cancel", "id": 7}', '{"op": "cancel", "id": 2}'])
        self.assertEqual([(e["event"], e["id"]) for e in sent],
                         [("accepted", 1), ("accepted", 2), ("done", 2)])
        self.assertEqual(sent[-1]["finish_reason"], "cancelled")
        self.assertEqual(w.cancelled, {7})
        self.assertEqual([j["id"] for j in w.queue], [1])


def wav(channels=1, rate=16000, bits=16, code=1, frames=4, extensible=False, extra=b""):
    width = bits // 8 if bits % 8 == 0 else 2
    fmt = struct.pack("<HHIIHH", 0xFFFE if extensible else code, channels, rate,
                      rate * channels * width, channels * width, bits)
    if extensible:
        fmt += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", code) + b"\0" * 14
    data = b"\x01\x02" * (frames * channels * width // 2)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + extra
    chunks += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


class Wav(unittest.TestCase):
    def test_a_pcm_header(self):
        code, channels, rate, bits, raw = audio.wav_format(wav(channels=2, rate=44100, frames=3))
        self.assertEqual((code, channels, rate, bits, len(raw)), (1, 2, 44100, 16, 12))

    def test_extensible_and_odd_chunks(self):
        odd = b"LIST" + struct.pack("<I", 3) + b"abc\0"  # padded to an even size
        self.assertEqual(audio.wav_format(wav(code=3, bits=32, extensible=True, extra=odd))[:4],
                         (3, 1, 16000, 32))

    def test_no_wav(self):
        self.assertIsNone(audio.wav_format(b"ID3\x03 an mp3"))
        self.assertIsNone(audio.wav_format(b"RIFF\0\0\0\0WAVE"))

    def test_a_header_is_checked_before_it_is_trusted(self):
        for bad, kind, words in [(wav(channels=0), "invalid_media", "0 channels"),
                                 (wav(channels=33), "invalid_media", "33 channels"),
                                 (wav(rate=1), "invalid_media", "at 1 Hz"),
                                 (wav(bits=12), "invalid_media", "12-bit"),
                                 (wav(frames=0), "invalid_media", "without audio samples"),
                                 (wav(rate=4000, frames=4000 * 7201), "media_too_large", "2.0 hours")]:
            with self.assertRaises(common.MediaError) as e:
                audio.wav_format(bad)
            self.assertEqual(e.exception.kind, kind)
            self.assertIn(words, e.exception.message)
            self.assertEqual(e.exception.event["type"], kind)


class ConvertHelpers(unittest.TestCase):
    def test_header_offsets(self):
        header = {"__metadata__": {"format": "pt"}, "a.weight": {"data_offsets": [0, 8]},
                  "b.weight": {"data_offsets": [8, 24]}}
        raw = json.dumps(header).encode()
        with tempfile.NamedTemporaryFile(suffix=".safetensors") as f:
            f.write(len(raw).to_bytes(8, "little") + raw + b"\0" * 24)
            f.flush()
            self.assertEqual(convert._header_offsets(f.name), {"a.weight": 0, "b.weight": 8})

    def test_source_of(self):
        by_name = {"model.layers.0.mlp.weight": (0, 10), "lm_head.weight": (1, 0)}
        suffixes = {"layers.0.mlp.weight": (0, 10), "0.mlp.weight": (0, 10)}
        self.assertEqual(convert._source_of("lm_head.weight", by_name, suffixes), (1, 0))
        self.assertEqual(convert._source_of("model.layers.0.mlp.scales", by_name, suffixes), (0, 10))
        self.assertEqual(convert._source_of("language_model.model.layers.0.mlp.biases", by_name, suffixes),
                         (0, 10))
        self.assertIsNone(convert._source_of("vision.proj", by_name, suffixes))


class Events(unittest.TestCase):
    def test_lines_are_written_whole_and_not_inherited(self):
        r, w = os.pipe()
        try:
            write = common.line_writer(w)
            self.assertFalse(os.get_inheritable(w))
            write(json.dumps({"event": "token", "text": "é\n"}))
            write("{}")
            os.close(w)
            w = None
            with os.fdopen(r, "rb") as f:
                r = None
                self.assertEqual(f.read(), b'{"event": "token", "text": "\\u00e9\\n"}\n{}\n')
        finally:
            for fd in (r, w):
                if fd is not None:
                    os.close(fd)

    def test_run_job(self):
        lines = []
        stdin = sys.stdin
        got = common.run_job('{"a": 1}', lines.append,
                             lambda req, send: (send({"event": "done", "a": req["a"]}), sys.stdin.read())[1],
                             None)
        self.assertEqual(got, "")  # stdin is empty meanwhile
        self.assertIs(sys.stdin, stdin)
        self.assertEqual(lines, ['{"event": "done", "a": 1}'])

        def interrupted(req, send):
            send({"event": "error", "type": "x", "message": ""})
            raise KeyboardInterrupt

        finals = []
        self.assertEqual(common.run_job("{}", lines.append, interrupted,
                                        lambda send, final: finals.append(list(final)) or "stopped"),
                         "stopped")
        self.assertEqual(finals, [["error"]])

    def test_interrupt_once(self):
        saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            common.interrupt_once()
            self.assertFalse(common.interrupted())
            with self.assertRaises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            os.kill(os.getpid(), signal.SIGHUP)  # within a second of the first: the same stop
            time.sleep(0.01)
            self.assertTrue(common.interrupted())
        finally:
            for s, h in saved.items():
                signal.signal(s, h)


class Scripts(unittest.TestCase):
    """Each script started as mlxfs starts it, in a Python without mlx (no site-packages):
    the event protocol, argument handling and exit status."""

    def start(self, script, args, stdin=None):
        """The exit status, stderr and events of `script` with `args` (EVENTS_FD: the events'
        descriptor); `stdin` written and closed, or (None) left open while it runs (a worker
        ends at the end of its stdin)."""
        r, w = os.pipe()
        args = [a.replace("EVENTS_FD", str(w)) for a in args]
        # -I -S: neither site-packages nor the working folder (an `mlx` folder there) on the path.
        p = subprocess.Popen([sys.executable, "-I", "-S", "-c", _source(script)] + args, pass_fds=(w,),
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(w)
        if stdin is not None:
            p.stdin.write(stdin)
            p.stdin.close()
        with os.fdopen(r, "rb") as f:
            events = [json.loads(line) for line in f.read().splitlines()]
        err = p.stderr.read().decode()
        code = p.wait(timeout=60)
        if stdin is None:
            p.stdin.close()
        p.stderr.close()
        return code, err, events

    def assert_missing_mlx(self, code, err, events):
        self.assertEqual(code, 1, err)
        self.assertEqual(len(events), 1, events)
        self.assertEqual(events[0]["event"], "error")
        self.assertEqual(events[0]["type"], "missing_dependency")
        self.assertTrue(events[0]["message"].startswith("cannot import mlx ("), events[0])

    def test_generate(self):
        code, err, events = self.start("generate.py", ["-", "EVENTS_FD", json.dumps(SHARED[:2])],
                               stdin=json.dumps({"model_path": "/nowhere", "prompt": "hi"}).encode())
        self.assert_missing_mlx(code, err, events)

    def test_generate_request_in_argv(self):
        code, err, events = self.start("generate.py", [json.dumps({"model_path": "/m", "prompt": "hi",
                                                           "backend": "mlx-whisper"}),
                                               "EVENTS_FD", json.dumps(SHARED[:2])], stdin=b"")
        self.assert_missing_mlx(code, err, events)
        self.assertIn("mlx_whisper", events[0]["message"])

    def test_convert(self):
        code, err, events = self.start("convert.py", ["-", "EVENTS_FD", json.dumps(SHARED[:1])],
                               stdin=json.dumps({"source": "/s", "target": "/t", "mode": "dtype"}).encode())
        self.assert_missing_mlx(code, err, events)

    def test_worker(self):
        code, err, events = self.start("worker.py", ["EVENTS_FD", json.dumps({"model_path": "/m"}),
                                             json.dumps(SHARED)])
        self.assert_missing_mlx(code, err, events)

    def test_worker_without_its_descriptor(self):
        code, err, events = self.start("worker.py", ["not-a-number", "{}", json.dumps(SHARED)])
        self.assertEqual((code, events), (2, []), err)


if __name__ == "__main__":
    unittest.main()
