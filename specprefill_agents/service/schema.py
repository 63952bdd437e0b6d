"""The wire format, version ``v1``: pydantic models, unknown fields rejected.

``POST /v1/compress`` takes a :class:`CompressRequest` and answers a :class:`CompressResponse`,
whose ``result`` is :func:`~specprefill_agents.serialization.result_to_dict` of the
:class:`~specprefill_agents.CompressionResult` (segments, kept spans, stats).  JSON is written
ASCII-escaped, so texts holding lone surrogates (undecodable input bytes) travel exactly.
Errors answer :class:`ErrorResponse` with a 4xx/5xx status.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..types import Segment

__all__ = ["SCHEMA_VERSION", "SegmentIn", "Overrides", "CompressRequest", "CompressResponse", "ErrorResponse"]

SCHEMA_VERSION = "v1"

_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True)


class SegmentIn(BaseModel):
    """One segment, the fields of :class:`~specprefill_agents.Segment`."""

    model_config = _STRICT

    text: str
    role: str = "context"
    compressible: bool = True
    protected: bool = False
    id: str | None = None
    kind: Literal["auto", "prose", "code"] = "auto"

    def to_segment(self) -> Segment:
        return Segment(self.text, self.role, self.compressible, self.protected, self.id, self.kind)


class Overrides(BaseModel):
    """Per-request changes to the service's default :class:`~specprefill_agents.CompressionConfig`.

    ``keep_ratio`` / ``max_tokens`` act as in ``compress_segments``: each replaces the same
    setting, and with both set the smaller budget wins; ``gap_refs`` makes the gap markers
    carry their references (the result lists the gaps either way).
    """

    model_config = _STRICT

    keep_ratio: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    min_tokens: int | None = Field(default=None, ge=0)
    unit: Literal["auto", "word", "line", "sentence"] | None = None
    chunk_tokens: int | None = Field(default=None, ge=1)
    code_chunk_tokens: int | None = Field(default=None, ge=1)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    lexical_boost: float | None = Field(default=None, ge=0.0)
    lexical_feedback: int | None = Field(default=None, ge=0)
    semantic_boost: float | None = Field(default=None, ge=0.0)
    sampling: Literal["auto", "score", "proportional"] | None = None
    lookahead: int | None = Field(default=None, ge=0, le=256)
    gap_refs: bool | None = None


class CompressRequest(BaseModel):
    """Compress ``segments`` for ``query`` (``None``: the latest user segment, else the prompt's tail)."""

    model_config = _STRICT

    version: Literal["v1"] = "v1"
    segments: list[SegmentIn]
    query: str | None = None
    config: Overrides = Field(default_factory=lambda: Overrides())
    deadline_s: float | None = Field(default=None, gt=0.0, description="seconds; default: the service's --deadline")


class CompressResponse(BaseModel):
    """The result, and how the service served it."""

    model_config = ConfigDict(extra="forbid")

    version: Literal["v1"] = "v1"
    result: dict[str, Any]
    batch_size: int = Field(description="requests in the worker round that served this one")
    queue_seconds: float
    seconds: float


class ErrorResponse(BaseModel):
    """``error``: a machine-readable kind; ``detail``: what went wrong and what to do."""

    model_config = ConfigDict(extra="forbid")

    error: str
    detail: Any
