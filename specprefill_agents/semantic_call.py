"""The semantic prior inside a compressor: its encoder loaded once, its similarities computed
while the draft scores, its failures handled by the compressor's policy.

The encoder reads only text (the question and the chunks), never the draft's scores, and the
chunks are known before the draft runs: :func:`~specprefill_agents.selection.plan_segment` cuts
a segment by its draft-token counts, not by their scores.  So :meth:`SemanticPrior.start` encodes
them on a worker thread while the draft scores.  A CPU draft leaves one core free by default
(:mod:`specprefill_agents.threads`), which the worker takes: there the prior costs next to no
time per call (``benchmarks/bench_semantic.py``); with no free core it costs what encoding
costs.  Failures are handled on the calling thread, where the policy may raise.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

import numpy as np

from .protocols import OnFailure, handle_part_failure
from .semantic import SemanticModel

__all__ = ["PendingSimilarities", "SemanticPrior"]

logger = logging.getLogger(__name__)


class SemanticPrior:
    """The encoders of one compressor, by name: loaded on first use (``load``), or ``given`` for
    every name.  An encoder that could not be loaded is not tried again: no fetch at every call,
    and one warning (``on_part_failure``)."""

    def __init__(self, load: Callable[[str], SemanticModel], on_part_failure: OnFailure, where: str,
                 given: SemanticModel | None = None) -> None:
        self._load, self.on_part_failure, self.where, self.given = load, on_part_failure, where, given
        self._loaded: dict[str, SemanticModel] = {}
        self._failed: dict[str, str] = {}  # name -> the degraded line of its load failure
        self._lock = threading.Lock()

    def encoder(self, name: str) -> SemanticModel:
        """The encoder for ``name``, loaded once (raises what loading raises)."""
        if self.given is not None:
            return self.given
        if name not in self._loaded:
            with self._lock:
                if name not in self._loaded:
                    self._loaded[name] = self._load(name)
        return self._loaded[name]

    def start(self, name: str, query: str, texts: Sequence[str]) -> PendingSimilarities:
        """Begin computing the similarities of ``texts`` to ``query`` on a worker thread."""
        return PendingSimilarities(self, name, query, list(texts))

    def _part(self, name: str) -> str:
        return f"semantic prior (encoder {name!r})"

    def _load_failed(self, name: str, exc: BaseException) -> str:
        if name not in self._failed:  # two calls that failed together warn once
            self._failed[name] = handle_part_failure(self.on_part_failure, exc, self.where, self._part(name))
        return self._failed[name]


class PendingSimilarities:
    """Similarities being computed for one call; :meth:`result` waits for them."""

    def __init__(self, prior: SemanticPrior, name: str, query: str, texts: list[str]) -> None:
        self.prior, self.name, self.query, self.texts = prior, name, query, texts
        self._sims: np.ndarray | None = None
        self._load_error: BaseException | None = None
        self._encode_error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if name not in prior._failed:
            self._thread = threading.Thread(target=self._run, name="specprefill-semantic", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            encoder = self.prior.encoder(self.name)
        except Exception as exc:  # handled on the calling thread, by policy
            self._load_error = exc
            return
        try:
            self._sims = encoder.similarities(self.query, self.texts)
        except Exception as exc:
            self._encode_error = exc

    def result(self, query: str, texts: Sequence[str], degraded: list[str]) -> np.ndarray | None:
        """The similarities of ``texts`` to ``query``, or None where the encoder cannot be had or
        fails (the line saying why goes to ``degraded``; under ``"raise"`` the error is raised).
        Texts other than the ones started with are encoded here, on the calling thread."""
        if self._thread is not None:
            self._thread.join()
        prior, name = self.prior, self.name
        if name in prior._failed and self._sims is None:
            degraded.append(prior._failed[name])
            return None
        if self._load_error is not None:
            degraded.append(prior._load_failed(name, self._load_error))
            return None
        try:
            if query != self.query or list(texts) != self.texts:
                logger.debug("semantic prior: the chunks differ from the ones encoded ahead; encoding again")
                return prior.encoder(name).similarities(query, texts)
            if self._encode_error is not None:
                raise self._encode_error
            return self._sims
        except Exception as exc:
            degraded.append(handle_part_failure(prior.on_part_failure, exc, prior.where, prior._part(name)))
            return None
