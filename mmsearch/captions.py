"""The caption stage: what a captioner says is seen, as segments of the ``caption`` space of words (issue #19).

A video's frames are read every ``stride`` seconds (the moment windows' stride: with the default
4 s windows and 2 s stride each frame read is the middle frame of one moment window) and
captioned by a CoCa (:class:`mmsearch.encoders.coca.Captioner`) or a BLIP captioner
(:class:`mmsearch.encoders.blip.BlipCaptioner`). A caption stands for the stride
around its frame, ``[t - stride/2, t + stride/2)`` within the media, and frames in a row that get
the same caption become one segment, so a query for the words finds the whole stretch. An image
gets one caption at ``[0, 0]``. Times are seconds from the start of the media as a player shows it
(the decoder's timestamps). The stage runs in the decoder process, as OCR does
(:mod:`mmsearch.decode_worker`): a captioner failing costs a file its captions only.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .errors import UsageError
from .spaces import TextSegment

__all__ = ["SOURCE", "caption_image", "caption_video", "captioner_spec", "check_captioner", "load_captioner"]

SOURCE = "caption"


_WHAT = ("--captions takes coca, synth-coca, an open_clip CoCa ({names}) or NAME:CHECKPOINT; "
         "or blip, synth-blip, a BLIP captioning model's hub id or directory")
_CAPTION_FAMILIES = ("coca", "blip-caption")


def _coca_names() -> str:
    import open_clip

    return ", ".join(n for n in open_clip.list_models() if "coca" in n.lower())


def _names_blip(name: str) -> bool:
    """Whether ``--captions NAME`` names a BLIP captioner: ``blip``, a hub id (``org/name``) or a directory.
    ``NAME:PRETRAINED`` and open_clip model names are CoCa."""
    from .encoders.blip import BLIP_CAPTIONER_ALIASES

    if name in BLIP_CAPTIONER_ALIASES or os.path.isdir(os.path.expanduser(name)):
        return True
    return ":" not in name and ("/" in name or os.sep in name or name.startswith(("~", ".")))


def captioner_spec(name: str) -> Any:
    """The :class:`~mmsearch.encoders.base.EncoderSpec` of what ``--captions`` names: a CoCa
    (``coca``, ``synth-coca``, an open_clip CoCa model name, or ``NAME:PRETRAINED`` with a pretrained
    tag or a checkpoint file) or a BLIP captioner (``blip``, ``synth-blip``, a hub id or a directory
    written by ``save_pretrained``). Raises :class:`UsageError` for a name that is no captioner."""
    from .encoders import PRESETS, resolve_spec
    from .errors import EncoderError

    name = str(name)
    model, sep, pretrained = name.partition(":")
    if not model.strip():
        raise UsageError(_WHAT.format(names=_coca_names()))
    if sep and not pretrained.strip():
        raise UsageError(f"--captions {name}: nothing after ':' (NAME:CHECKPOINT names an open_clip CoCa and its pretrained tag "
                         "or checkpoint file); " + _WHAT.format(names=_coca_names()))
    if name in PRESETS and PRESETS[name].family in _CAPTION_FAMILIES:
        return PRESETS[name]
    if _names_blip(name):
        return resolve_spec(name, family="blip-caption")
    try:
        return resolve_spec(model, pretrained or None, family="coca")
    except EncoderError:  # open_clip knows no such model
        raise UsageError(f"--captions {name}: no such captioner; " + _WHAT.format(names=_coca_names())) from None


def check_captioner(name: str, *, load: bool = False) -> str:
    """``name`` (a directory or checkpoint file in it made absolute, as the index records it) when it
    names a captioner whose weights could be loaded (a CoCa: an open_clip CoCa config, a checkpoint
    file that exists; a BLIP: a directory that exists or a hub id; with ``load``, weights that load,
    which downloads them once); raises :class:`UsageError` otherwise
    (:class:`~mmsearch.errors.EncoderError` for weights that cannot be loaded), in one line, before
    any file is read."""
    import open_clip

    from .encoders.base import PACKAGED_PREFIX, resolve_weights
    from .encoders.clip import register_packaged_configs
    from .errors import EncoderError

    spec = captioner_spec(name)
    if spec.family == "blip-caption":  # the path checks and the offline message are hub_source's
        if os.path.isdir(os.path.expanduser(name)):  # recorded in the index: found from any directory later runs start in
            name = os.path.abspath(os.path.expanduser(name))
        if load:
            load_captioner(name, device="cpu")
        else:
            from .encoders.blip import BlipCaptioner
            from .encoders.clap import hub_source

            hub_source(spec.pretrained or spec.model, flag=BlipCaptioner.flag, what=f"a {BlipCaptioner.what}",
                       message=BlipCaptioner.offline_message)
        return name
    register_packaged_configs()
    config = open_clip.get_model_config(spec.model) or {}
    if "multimodal_cfg" not in config:
        raise UsageError(f"--captions {name}: {spec.model} is not a CoCa model (it writes no captions); "
                         + _WHAT.format(names=_coca_names()))
    pretrained = resolve_weights(spec.pretrained) or ""
    if os.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors")):
        if not os.path.isfile(pretrained):
            raise UsageError(f"--captions {name}: no such checkpoint file {pretrained}")
        if ":" in name and not spec.pretrained.startswith(PACKAGED_PREFIX):  # a file the user named: recorded in the index
            name = f"{spec.model}:{os.path.abspath(pretrained)}"
    if load:
        try:
            load_captioner(name, device="cpu")
        except EncoderError as exc:
            reason = str(exc).split(". ")[0].replace("CLIP", "open_clip")[:240]
            if os.path.isfile(pretrained):  # the file is there: it is not a checkpoint of this model
                raise EncoderError(f"--captions {name}: not a checkpoint of {spec.model} ({reason}); give one, or a BLIP "
                                   "captioner's directory as --captions DIR, or use --captions synth-coca offline") from None
            raise EncoderError(
                f"--captions {name}: {reason}; connect to the internet "
                f"once so open_clip can download them, or give a checkpoint file with --captions {spec.model}:/path/to/file, "
                "or use --captions synth-coca offline"
            ) from None
    return name


def load_captioner(name: str, *, device: str = "cpu") -> Any:
    """The captioner that ``name`` names (see :func:`captioner_spec`): a
    :class:`~mmsearch.encoders.coca.Captioner` or a :class:`~mmsearch.encoders.blip.BlipCaptioner`;
    both have ``caption(frames) -> list[str]`` and ``input_size``."""
    from .encoders import create_encoder

    return create_encoder(captioner_spec(name), device=device)


def _segments(found: list[tuple[float, str]], *, stride: float, end: float) -> list[TextSegment]:
    """Frames' captions ``(t, caption)`` in time order -> segments: each the stride around its frame,
    runs of one caption merged, clipped to ``[0, end]`` (``end`` <= 0: not clipped at the end); the
    last frame's caption lasts to ``end`` when that is less than a stride past it."""
    out: list[TextSegment] = []
    half = stride / 2
    for t, text in found:
        start, stop = max(0.0, t - half), t + half
        if end > 0:
            stop = min(stop, end)
        if not text or stop <= start:
            continue
        if out and out[-1].text == text and start <= out[-1].end + 1e-6:
            out[-1] = TextSegment(out[-1].start, stop, text, SOURCE)
        else:
            out.append(TextSegment(start, stop, text, SOURCE))
    if out and found and found[-1][1] == out[-1].text and out[-1].end < end <= out[-1].end + stride:
        out[-1] = TextSegment(out[-1].start, end, out[-1].text, SOURCE)  # the last frame read stands until the end
    return out


def caption_video(
    path: str | os.PathLike,
    captioner: Any,
    *,
    stride: float,
    decoder: Any,
    duration: float | None = None,
    on_frame: Callable[[], Any] | None = None,
    batch_size: int = 8,
) -> list[TextSegment]:
    """The captions of a video's frames every ``stride`` seconds, as segments (see the module).

    ``decoder``: a backend of :func:`mmsearch.media.get_backend` (or :class:`mmsearch.media.Animation`
    for an animated image); frames are decoded with their short side at the captioner's input size.
    ``duration``: where the last caption ends (default the decoder's ``video_end``). Raises
    :class:`UsageError` for a non-positive ``stride``, and what the decoder raises
    (:class:`~mmsearch.errors.DecodeError`, :class:`~mmsearch.errors.NoVideoError`).
    """
    if not stride > 0:
        raise UsageError(f"the caption stride must be positive seconds, got {stride}")
    found: list[tuple[float, str]] = []
    for batch in decoder.iter_frames(os.fspath(path), fps=1.0 / stride, short_side=captioner.input_size, chunk_size=batch_size):
        texts = captioner.caption(list(batch.frames))
        found.extend((float(t), text) for t, text in zip(batch.timestamps, texts))
        if on_frame is not None:
            on_frame()
    end = duration if duration is not None else float(getattr(decoder, "video_end", 0.0) or 0.0)
    return _segments(sorted(found, key=lambda f: f[0]), stride=stride, end=end)


def caption_image(path: str | os.PathLike, captioner: Any) -> list[TextSegment]:
    """The caption of a still image as one segment at ``[0, 0]``; raises
    :class:`~mmsearch.errors.DecodeError` naming a file that cannot be read."""
    from .media import load_image

    text = captioner.caption([load_image(path)])[0]
    return [TextSegment(0.0, 0.0, text, SOURCE)] if text else []
