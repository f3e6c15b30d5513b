"""mmsearch: multimodal vector search over your own videos, images and music."""

from .api import Index, SearchResult, default_index_dir, index_paths, open_index
from .errors import (
    DecodeError,
    EncoderError,
    EncoderMismatchError,
    IndexCorruptError,
    IndexNotFoundError,
    MMSearchError,
    UsageError,
)
from .ingest import IngestConfig, IngestReport

__version__ = "0.1.0"

__all__ = [
    "DecodeError",
    "EncoderError",
    "EncoderMismatchError",
    "Index",
    "IndexCorruptError",
    "IndexNotFoundError",
    "IngestConfig",
    "IngestReport",
    "MMSearchError",
    "SearchResult",
    "UsageError",
    "default_index_dir",
    "index_paths",
    "open_index",
]
