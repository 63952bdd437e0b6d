"""The Ray Serve request router of the scaled-out service: prefix affinity, then least load.

:class:`AffinityRouter` plugs into Ray Serve's request-router API
(``RequestRouterConfig(request_router_class=AffinityRouter)``); Ray runs it in each HTTP
proxy and handle.  For each request it reads the :data:`~.affinity.AFFINITY_HEADER` and asks
:func:`~.affinity.route` for ranks of replicas: the key's home replica first, two others
next.  Ray takes the first rank with a replica that accepts (its queue below
``max_ongoing_requests``, answering its probe), so a full, slow or dead home never pins a
request: it goes to the less loaded of the other two.  Requests without a key get power of
two choices.  Replicas that fail their health check leave the candidate set, and rendezvous
hashing over the remaining ones moves only their agents.
"""

from __future__ import annotations

import logging
import pickle
from typing import Any

from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica

from .affinity import AFFINITY_HEADER, MAX_KEY_CHARS, route

__all__ = ["AffinityRouter", "request_affinity"]

logger = logging.getLogger(__name__)

DEFAULT_IMBALANCE = 8
_HEADER = AFFINITY_HEADER.encode("ascii")


class AffinityRouter(RequestRouter):
    """Home replica by rendezvous hash of the request's affinity key, unless it is overloaded.

    ``imbalance`` (a ``request_router_kwargs`` entry): how many more queued requests than the
    least loaded replica the home may have before a request ignores its key.
    """

    def initialize_state(self, imbalance: int = DEFAULT_IMBALANCE, **kwargs: Any) -> None:
        self._imbalance = int(imbalance)

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        if pending_request is not None:
            pending_request.routing_context.should_backoff = True  # all replicas are in these ranks
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        cache = self.replica_queue_len_cache
        queue_lens = {uid: cache.get(r.replica_id) for uid, r in by_id.items()}
        imbalance = getattr(self, "_imbalance", DEFAULT_IMBALANCE)  # initialize_state may not have run
        ranks = route(request_affinity(pending_request), list(by_id), queue_lens, imbalance)
        return [[by_id[uid] for uid in rank] for rank in ranks]


def request_affinity(pending_request: PendingRequest | None) -> str | None:
    """The request's affinity key: its ``X-Specprefill-Affinity`` header, else Ray's session id.

    An HTTP request reaches the router as the proxy's pickled ``StreamingHTTPRequest`` (its
    ASGI scope holds the headers); only the proxy's own HTTP requests are read so (never bytes
    a handle caller passed); a handle call may set ``session_id`` instead.
    """
    if pending_request is None:
        return None
    from_proxy = bool(getattr(pending_request.metadata, "is_http_request", False))
    for arg in pending_request.args if from_proxy else ():
        scope = _asgi_scope(arg)
        if scope is None:
            continue
        for name, value in scope.get("headers", ()):
            if name.lower() == _HEADER:
                key = value.decode("latin-1").strip()[:MAX_KEY_CHARS]
                return key or None
    return getattr(pending_request.metadata, "session_id", "") or None


def _asgi_scope(arg: Any) -> dict[str, Any] | None:
    if isinstance(arg, (bytes, bytearray)):
        try:
            arg = pickle.loads(arg)  # the proxy's own message to the replica
        except Exception:
            return None
    scope = getattr(arg, "asgi_scope", None)
    return scope if isinstance(scope, dict) else None
