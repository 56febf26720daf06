"""Audio decoding for Whisper (mlx-whisper), shared by generate.py (`run --audio`) and
worker.py (`serve`'s transcriptions) as `mlxfs_audio`: 16 kHz mono float32 samples from PCM
and float WAV with Python alone (`wav_format` reads and checks the header without numpy),
other formats with PyAV or the `ffmpeg` program (`load_audio`)."""

import io

from mlxfs_common import MediaError

SAMPLE_RATE = 16000
# The longest audio a run or a request may hold once decoded (seconds): a header can claim
# any length (a 64 KB WAV "at 1 Hz" is 9 hours of audio), and Whisper's work and memory grow
# with it.
MAX_AUDIO_SECONDS = 2 * 3600


def wav_format(data):
    """The coding of a RIFF/WAVE file's bytes, its header checked: `(code, channels, rate,
    bits, raw)` (`code` 1 for PCM, 3 for IEEE float, WAVE_FORMAT_EXTENSIBLE's sub-format for
    0xFFFE; `raw` the sample bytes, whole frames only), or None when it is no WAV file. Raises
    `MediaError` for a header that claims what is not read (channels, rate, sample width) or
    more than `MAX_AUDIO_SECONDS`."""
    import struct

    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos, fmt, samples = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = data[pos + 8:pos + 8 + size]
        if cid == b"fmt " and len(body) >= 16:
            code, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
            if code == 0xFFFE and len(body) >= 26:
                code = struct.unpack("<H", body[24:26])[0]
            fmt = (code, channels, rate, bits)
        elif cid == b"data":
            samples = body
        pos += 8 + size + (size & 1)
    if fmt is None or samples is None:
        return None
    code, channels, rate, bits = fmt
    # A header is the file's word only: check it before trusting any size it implies.
    if not 1 <= channels <= 32:
        raise MediaError("invalid_media", f"a WAV file with {channels} channels (1 to 32 are read)")
    if not 4000 <= rate <= 384000:
        raise MediaError("invalid_media", f"a WAV file at {rate} Hz (4 kHz to 384 kHz are read)")
    if bits not in (8, 16, 24, 32, 64) or bits // 8 * 8 != bits:
        raise MediaError("invalid_media", f"a WAV file with {bits}-bit samples")
    width = bits // 8
    frames = len(samples) // (width * channels)
    if frames == 0:
        raise MediaError("invalid_media", "a WAV file without audio samples")
    if frames / rate > MAX_AUDIO_SECONDS:
        raise MediaError("media_too_large", f"{frames / rate / 3600:.1f} hours of audio "
                         f"(at most {MAX_AUDIO_SECONDS // 3600} hours are transcribed)")
    n = len(samples) // (width * channels) * (width * channels)
    return code, channels, rate, bits, samples[:n]


def wav_samples(data):
    """Mono float32 samples and the rate of a RIFF/WAVE file's bytes (PCM 8/16/24/32-bit,
    IEEE float 32/64, WAVE_FORMAT_EXTENSIBLE of these), or None when it is another coding."""
    import numpy as np

    fmt = wav_format(data)
    if fmt is None:
        return None
    code, channels, rate, bits, raw = fmt
    if code == 1 and bits == 8:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif code == 1 and bits == 16:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif code == 1 and bits == 24:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        x = v.astype(np.float32) / float(1 << 23)
    elif code == 1 and bits == 32:
        x = np.frombuffer(raw, "<i4").astype(np.float32) / 2147483648.0
    elif code == 3 and bits in (32, 64):
        x = np.frombuffer(raw, "<f4" if bits == 32 else "<f8").astype(np.float32)
    else:
        return None
    x = x.reshape(-1, channels).mean(axis=1)
    return x, rate


def resample(x, rate):
    import numpy as np

    if rate == SAMPLE_RATE:
        return x.astype(np.float32)
    try:
        from math import gcd

        from scipy.signal import resample_poly
        g = gcd(rate, SAMPLE_RATE)
        return resample_poly(x, SAMPLE_RATE // g, rate // g).astype(np.float32)
    except ImportError:
        n = int(round(len(x) * SAMPLE_RATE / rate))
        return np.interp(np.arange(n) * (rate / SAMPLE_RATE), np.arange(len(x)), x).astype(np.float32)


def load_audio(src):
    """16 kHz mono float32 samples of an audio file (a path, or `{"data": base64}`), and the
    decoder used: WAV with Python alone; other formats with PyAV (`av`, FFmpeg's libraries in
    a wheel) or else the `ffmpeg` program. Returns (samples, decoder) or raises
    `MediaError(kind, message)`."""
    import base64
    import shutil
    import subprocess

    import numpy as np

    if isinstance(src, dict):
        data, name = base64.b64decode(src["data"]), src.get("name") or "the upload"
    else:
        with open(src, "rb") as f:
            data = f.read()
        name = src
    try:
        wav = wav_samples(data)
    except MediaError as e:
        raise MediaError(e.kind, f"{name}: {e.message}")
    if wav is not None:
        return resample(*wav), "wav"
    try:
        import av
    except ImportError:
        av = None
    if av is not None:
        try:
            with av.open(io.BytesIO(data)) as container:
                stream = next(s for s in container.streams if s.type == "audio")
                resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
                chunks, total = [], 0
                for frame in container.decode(stream):
                    for out in resampler.resample(frame):
                        chunks.append(out.to_ndarray().reshape(-1))
                        total += len(chunks[-1])
                    if total > MAX_AUDIO_SECONDS * SAMPLE_RATE:
                        raise MediaError("media_too_large", f"{name}: more than "
                                         f"{MAX_AUDIO_SECONDS // 3600} hours of audio")
                for out in resampler.resample(None):
                    chunks.append(out.to_ndarray().reshape(-1))
            return (np.concatenate(chunks) if chunks else np.zeros(0, np.float32)).astype(np.float32), "pyav"
        except MediaError:
            raise
        except Exception as e:
            raise MediaError("invalid_media", f"{name}: PyAV cannot decode it: {type(e).__name__}: {e}")
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg:
        p = subprocess.run([ffmpeg, "-nostdin", "-loglevel", "error", "-i", "pipe:0", "-f", "f32le",
                            "-ac", "1", "-ar", str(SAMPLE_RATE), "pipe:1"],
                           input=data, capture_output=True)
        if p.returncode != 0:
            raise MediaError("invalid_media", f"{name}: ffmpeg cannot decode it: "
                             + p.stderr.decode(errors="replace").strip()[-500:])
        x = np.frombuffer(p.stdout, "<f4").astype(np.float32)
        if len(x) > MAX_AUDIO_SECONDS * SAMPLE_RATE:
            raise MediaError("media_too_large", f"{name}: more than "
                             f"{MAX_AUDIO_SECONDS // 3600} hours of audio")
        return x, "ffmpeg"
    raise MediaError("decoder_missing",
                     f"{name} is not PCM WAV, and there is no decoder for it: neither PyAV (the `av` "
                     "package) in this Python nor the `ffmpeg` program on PATH")
