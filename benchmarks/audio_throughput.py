#!/usr/bin/env python
"""Audio ingest throughput: decode-only, encode-only and end-to-end, side by side on the same files.

    python benchmarks/audio_throughput.py --models synth-clap,larger-clap --windows 2:1,10:5 \
        --json benchmarks/results/audio_throughput.json

Audio-seconds embedded per wall second, for every audio model x window:hop (seconds), on one set
of files in one run:

* decode-only: :func:`mmsearch.audio.iter_audio_windows` at the model's sample rate (PyAV decode,
  resampling, windowing, silence flags);
* encode-only: ``ClapEncoder.encode_audio`` on the very windows decoded (silent ones left out, as
  ingest does);
* end-to-end: :func:`mmsearch.ingest.index_paths` with the audio space alone into a fresh temporary
  index (decoder process, pipe, encode, commit: what ``mmsearch index --modality audio`` pays).

Files: the real recordings in ``/work/shared/media/librosa`` (music, speech, a bird, a whale:
the kind of sound users keep), or ``--files``.
Models: ``synth-clap`` (the tiny CLAP shipped in the package) and ``larger-clap``, the architecture
of ``laion/larger_clap_music`` / ``_general`` (HTSAT-base audio tower, RoBERTa-base-sized text
tower, 512-d projection) with random weights saved to a local directory and loaded through the same
path as a downloaded one: no model host is reachable here, and random weights cost the arithmetic
real ones do. CLAP pads every clip to its 10 s input, so a 2 s window costs as much to encode as a
10 s one: a short window buys finer moments with encode time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import describe, machine_info, write_json  # noqa: E402

REAL_AUDIO = Path("/work/shared/media/librosa")
MODELS = ("synth-clap", "larger-clap")


def larger_clap_dir(directory: Path) -> Path:
    """The ``laion/larger_clap_*`` architecture with random weights, saved as a local model directory.

    Audio: HTSAT-base (patch embedding 128, stages of depth 2, 2, 12, 2, 1024-d out), 64 mels at
    48 kHz, no fusion; text: RoBERTa-base sized (12 layers of 768) over the project's word-level
    tokenizer (RoBERTa's BPE files cannot be downloaded here; the text tower is not timed)."""
    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor

    from mmsearch.train.synth_clap import build_tokenizer, save_clap_directory

    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    config = ClapConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                         intermediate_size=3072, max_position_embeddings=514),
        audio_config=dict(num_mel_bins=64, spec_size=256, patch_size=4, patch_stride=(4, 4), patch_embeds_hidden_size=128,
                          depths=[2, 2, 12, 2], num_attention_heads=[4, 8, 16, 32], window_size=8, hidden_size=1024,
                          enable_fusion=False),
        projection_dim=512,
    )
    model = ClapModel(config)
    extractor = ClapFeatureExtractor(truncation="rand_trunc", frequency_min=50, frequency_max=14000)
    return save_clap_directory(model, ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer),
                               directory / "larger-clap-random")


def load_model(key: str, tmp: Path) -> tuple[Any, float, int]:
    """(encoder, load seconds, parameters) of model ``key`` on the CPU."""
    from mmsearch.encoders.base import EncoderSpec
    from mmsearch.encoders.clap import ClapEncoder

    spec = (EncoderSpec("clap", "synth-clap", "mmsearch:synth-clap") if key == "synth-clap"
            else EncoderSpec("clap", str(larger_clap_dir(tmp))))
    t0 = time.perf_counter()
    enc = ClapEncoder(spec, device="cpu")
    return enc, time.perf_counter() - t0, sum(p.numel() for p in enc.model.parameters())


def prepare_files(args: argparse.Namespace) -> list[Path]:
    if args.files:
        return [Path(f) for f in args.files.split(",")]
    if REAL_AUDIO.is_dir():
        return sorted(REAL_AUDIO.glob("*.ogg"))
    raise SystemExit(f"{REAL_AUDIO} is absent: pass audio files with --files A,B,...")


def decode(files: list[Path], rate: int, window: float, hop: float) -> tuple[list[Any], float, float]:
    """(non-silent windows, audio seconds, decode seconds)."""
    from mmsearch.audio import iter_audio_windows, probe_audio

    t0 = time.perf_counter()
    windows = [w for f in files for w in iter_audio_windows(f, sample_rate=rate, window=window, hop=hop)
               if not w.silent]
    seconds = time.perf_counter() - t0
    return windows, sum(probe_audio(f).duration or 0.0 for f in files), seconds


def encode(enc: Any, windows: list[Any]) -> float:
    t0 = time.perf_counter()
    enc.encode_audio([w.samples for w in windows])
    return time.perf_counter() - t0


def end_to_end(enc: Any, files: list[Path], window: float, hop: float, tmp: Path) -> tuple[float, int]:
    """(seconds, windows embedded) of ``index_paths`` with the audio space alone, into a fresh index."""
    from mmsearch.ingest import IngestConfig, index_paths

    index_dir = Path(tempfile.mkdtemp(dir=tmp, prefix="index-"))
    cfg = IngestConfig(audio_window=window, audio_hop=hop, workers=1)
    t0 = time.perf_counter()
    report = index_paths(files, index_dir / "index", encoders={"audio": lambda: enc}, config=cfg)
    took = time.perf_counter() - t0
    if report.failed:
        raise SystemExit(f"end-to-end run failed on {report.failed}")
    return took, report.audio_windows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {MODELS}")
    p.add_argument("--windows", default="2:1,10:5", help="comma-separated window:hop pairs in seconds")
    p.add_argument("--files", default=None, help="comma-separated audio files (default: the real recordings)")
    p.add_argument("--max-files", type=int, default=None, help="only the first N files")
    p.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    info = machine_info()
    print(f"machine: {describe(info)}", flush=True)
    pairs = [tuple(float(x) for x in w.split(":")) for w in args.windows.split(",")]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mmsearch-audio-bench-") as tmp_name:
        tmp = Path(tmp_name)
        files = prepare_files(args)[: args.max_files]
        for key in args.models.split(","):
            if key not in MODELS:
                raise SystemExit(f"unknown model {key!r}; choose from {MODELS}")
            enc, load_s, params = load_model(key, tmp)
            enc.encode_audio([w.samples for w in decode(files[:1], enc.sample_rate, 10.0, 5.0)[0][:2]])  # warm-up
            for window, hop in pairs:
                windows, audio_s, decode_s = decode(files, enc.sample_rate, window, hop)
                encode_s = encode(enc, windows)
                e2e_s, embedded = end_to_end(enc, files, window, hop, tmp)
                if embedded != len(windows):  # both paths must embed the same windows for the rows to compare
                    raise SystemExit(f"end-to-end embedded {embedded} windows, decode-only found {len(windows)}")
                row = {
                    "model": key, "parameters_m": round(params / 1e6, 1), "load_s": round(load_s, 2),
                    "window_s": window, "hop_s": hop, "files": len(files), "audio_seconds": round(audio_s, 1),
                    "windows": len(windows),
                    "decode_audio_s_per_s": round(audio_s / decode_s, 1),
                    "encode_audio_s_per_s": round(audio_s / encode_s, 2),
                    "encode_windows_per_s": round(len(windows) / encode_s, 2),
                    "serial_bound_audio_s_per_s": round(audio_s / (decode_s + encode_s), 2),
                    "end_to_end_audio_s_per_s": round(audio_s / e2e_s, 2),
                }
                rows.append(row)
                print(row, flush=True)
    print(f"\n{len(files)} files, {rows[0]['audio_seconds'] if rows else 0} s of audio; audio-seconds per wall second:")
    print("| model | params (M) | window / hop (s) | windows | decode-only | encode-only | serial bound | end-to-end |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['parameters_m']} | {r['window_s']:g} / {r['hop_s']:g} | {r['windows']} "
              f"| {r['decode_audio_s_per_s']} | {r['encode_audio_s_per_s']} | {r['serial_bound_audio_s_per_s']} "
              f"| {r['end_to_end_audio_s_per_s']} |")
    if args.json:
        write_json(Path(args.json), {"machine": info, "files": [str(f) for f in files], "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
