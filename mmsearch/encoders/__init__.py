"""Encoder registry: families keyed by name, plus named presets.

A *family* (``clip``, ``clap``) is a class that builds an encoder from an
:class:`EncoderSpec`. A *preset* is a name users type (``synth-clip``) that
stands for a full spec. Any other model name goes to the family of the space
being filled (``ViT-B-32`` -> clip).
"""

from __future__ import annotations

from typing import Any, Callable

from ..errors import EncoderError, UsageError
from .base import (
    CLAP_ALIASES,
    DEFAULT_CLAP_MODEL,
    PACKAGED_PREFIX,
    Encoder,
    EncoderSpec,
    VisualEncoder,
    l2_normalize,
    packaged_asset,
    resolve_device,
)
from .ast import DEFAULT_TAGGER, TAGGER_ALIASES
from .coca import CAPTIONER_ALIASES, DEFAULT_CAPTIONER
from .blip import BLIP_CAPTIONER_ALIASES, DEFAULT_BLIP_CAPTIONER, DEFAULT_MATCHER, MATCHER_ALIASES
from .text import DEFAULT_TEXT_MODEL

__all__ = [
    "Encoder",
    "EncoderSpec",
    "VisualEncoder",
    "FAMILIES",
    "PRESETS",
    "create_encoder",
    "l2_normalize",
    "register_family",
    "resolve_device",
    "resolve_spec",
    "packaged_asset",
]

FAMILIES: dict[str, Callable[..., Encoder]] = {}

def register_family(name: str) -> Callable[[Callable[..., Encoder]], Callable[..., Encoder]]:
    def decorator(factory: Callable[..., Encoder]) -> Callable[..., Encoder]:
        FAMILIES[name] = factory
        return factory

    return decorator


PRESETS: dict[str, EncoderSpec] = {
    # The tiny CLAP trained on the synthetic world's sounds, shipped as a save_pretrained directory.
    # Its world's sound events last 2-15 s: short windows localize them (CLAP's own default is 10 s / 5 s).
    "synth-clap": EncoderSpec("clap", "synth-clap", PACKAGED_PREFIX + "synth-clap", {"window_seconds": 2.0, "hop_seconds": 1.0}),
    # The synthetic world puts shapes anywhere in wide frames: squash, do not centre-crop.
    "synth-clip": EncoderSpec("clip", "synth-clip", PACKAGED_PREFIX + "synth-clip.pt", {"image_resize_mode": "squash"}),
    # The tiny AST trained on the world's six sound classes; trained to give a class the share of the
    # window it fills, so 0.5 tags a class that fills half a window or more.
    "synth-ast": EncoderSpec("ast", "synth-ast", PACKAGED_PREFIX + "synth-ast", {"threshold": 0.5}),
    # The tiny CoCa trained to caption the world's frames (mmsearch.train.synth_coca); squashed as synth-clip.
    "synth-coca": EncoderSpec("coca", "synth-coca", PACKAGED_PREFIX + "synth-coca.pt", {"image_resize_mode": "squash"}),
    # The tiny BLIP image-text matcher trained on the world's frames of one and two shapes (mmsearch.train.synth_itm).
    "synth-itm": EncoderSpec("blip-itm", "synth-itm", PACKAGED_PREFIX + "synth-itm"),
    # The tiny BLIP captioner trained to caption the world's frames (mmsearch.train.synth_blip).
    "synth-blip": EncoderSpec("blip-caption", "synth-blip", PACKAGED_PREFIX + "synth-blip"),
}

DEFAULT_MODELS = {
    "clip": ("ViT-B-32", "laion2b_s34b_b79k"),
    "clap": (DEFAULT_CLAP_MODEL, None),
    "sentence": (DEFAULT_TEXT_MODEL, None),  # what is said or written (issue #15)
    "ast": (DEFAULT_TAGGER, None),  # sound tags (issue #19)
    "coca": DEFAULT_CAPTIONER,  # moment captions (issue #19)
    "blip-itm": (DEFAULT_MATCHER, None),  # cross-attention re-ranking (issue #19)
    "blip-caption": (DEFAULT_BLIP_CAPTIONER, None),  # moment captions by BLIP (issue #19)
}
FLAGS = {"clip": "--model", "clap": "--audio-model", "sentence": "--text-model", "ast": "--sound-tags", "coca": "--captions", "blip-itm": "--rerank-model",
         "blip-caption": "--captions"}


KINDS = {  # what a model of each family is, in words
    "clip": "CLIP image-text model", "clap": "CLAP sound-text model", "sentence": "sentence model", "ast": "sound tagger",
    "coca": "CoCa captioner", "blip-itm": "BLIP image-text matcher", "blip-caption": "BLIP captioner",
}


def _article(noun: str) -> str:
    return f"{'an' if noun[0].lower() in 'aeiou' else 'a'} {noun}"


def resolve_spec(model: str | None, pretrained: str | None = None, *, family: str = "clip") -> EncoderSpec:
    """The spec for what a user typed: a preset name, or a model of ``family`` with its weights."""
    if model in PRESETS and pretrained is None:
        if PRESETS[model].family != family:
            given = PRESETS[model].family
            wanted = "captioner (CoCa or BLIP)" if FLAGS[family] == "--captions" else KINDS[family]
            raise UsageError(f"{model} is {_article(KINDS[given])}, not {_article(wanted)} ({FLAGS[family]}): "
                             f"pass it with {FLAGS[given]}")
        return PRESETS[model]
    default_model, default_tag = DEFAULT_MODELS[family]
    model = model or default_model
    if family == "clap":
        model = CLAP_ALIASES.get(model, model)  # "general", "music"
    if family == "ast":
        model = TAGGER_ALIASES.get(model, model)  # "audioset"
    if family == "blip-itm":
        model = MATCHER_ALIASES.get(model, model)  # "blip"
    if family == "blip-caption":
        model = BLIP_CAPTIONER_ALIASES.get(model, model)  # "blip"
    if family == "coca" and model in CAPTIONER_ALIASES:  # "coca"
        model, pretrained = CAPTIONER_ALIASES[model]
    if pretrained is None and family in ("clip", "coca"):
        pretrained = default_tag if model == default_model else _first_known_tag(family, model)
    return EncoderSpec(family, model, pretrained)


def _first_known_tag(family: str, model: str) -> str | None:
    if family not in ("clip", "coca"):
        return None
    import open_clip

    from .clip import check_known_model

    check_known_model(model)
    tags = open_clip.list_pretrained_tags_by_model(model)
    if not tags:
        raise EncoderError(
            f"open_clip has no pretrained weights for {model!r}; pass --pretrained FILE with a checkpoint"
        )
    if family == "coca":  # the weights fine-tuned to write captions, when open_clip has them
        tags = sorted(tags, key=lambda tag: not tag.startswith("mscoco_finetuned"))
    return tags[0]


def create_encoder(spec: EncoderSpec, *, device: Any = "auto", **options: Any) -> Encoder:
    try:
        factory = FAMILIES[spec.family]
    except KeyError:
        raise EncoderError(f"unknown encoder family {spec.family!r}; known: {sorted(FAMILIES)}") from None
    return factory(spec, device=device, **options)


@register_family("clap")
def _clap(spec: EncoderSpec, **options: Any) -> Encoder:
    from .clap import ClapEncoder

    return ClapEncoder(spec, **options)


@register_family("ast")
def _ast(spec: EncoderSpec, **options: Any) -> Any:
    from .ast import SoundTagger

    return SoundTagger(spec, **options)


@register_family("sentence")
def _sentence(spec: EncoderSpec, **options: Any) -> Encoder:
    from .text import SentenceEncoder

    return SentenceEncoder(spec, **options)


@register_family("coca")
def _coca(spec: EncoderSpec, **options: Any) -> Any:
    from .coca import Captioner

    return Captioner(spec, **options)


@register_family("blip-itm")
def _blip_itm(spec: EncoderSpec, **options: Any) -> Any:
    from .blip import ImageTextMatcher

    return ImageTextMatcher(spec, **options)


@register_family("blip-caption")
def _blip_caption(spec: EncoderSpec, **options: Any) -> Any:
    from .blip import BlipCaptioner

    return BlipCaptioner(spec, **options)


@register_family("clip")
def _clip(spec: EncoderSpec, **options: Any) -> Encoder:
    from .clip import ClipEncoder

    return ClipEncoder(spec, **options)
