"""Distributed crawls: several crawler processes, on one machine or many, share one crawl via Redis.

Switch it on with ``-s SCHEDULER_BACKEND=redis`` (and ``REDIS_URL``). The :class:`SchedulerBackend`
add-on then replaces Scrapy's scheduler with ``ClusterScheduler`` (``crawler/cluster_scheduler.py``,
built on scrapy-redis). Nothing else changes: the same spider, pipelines and settings. This module
has no scrapy-redis import, so a crawl without the ``ops`` extras still loads the add-on.

How nodes share a crawl:

- **One crawl, one set of keys.** Nodes with the same ``REDIS_URL`` crawling the same search query
  (or given the same ``CLUSTER_CRAWL_ID``) share ``{spider}:{crawl}:*``: the request queue (a
  scrapy-redis priority queue) and the dupefilter (a Redis set of request fingerprints).
- **One leader pages the search.** The node whose first search request passes the shared
  dupefilter leads; every other node's identical request is a duplicate. Search requests carry
  ``LOCAL_META`` and stay in the leader's memory, so the paging state (early stop, throttling
  waits, ``search_coverage``) lives in one process exactly as in a single-process crawl, and only
  the leader's catalogue decides what is already known. Details and their follow-ups go to the
  shared queue, and whichever node is free takes them; a node downloads the images of the
  artworks it took, and writes them to its own catalogue (``scrapy catalog merge`` folds them).
- **Ending.** Every 0.5 s each node publishes whether it is busy (a key with a time-to-live). A
  node that is not the leader leaves once the shared queue has been empty and no other node busy
  for ``CLUSTER_IDLE_CLOSE`` seconds; the leader leaves last, when no other node is left. A node
  silent for ``CLUSTER_NODE_TIMEOUT`` seconds is taken as gone: the requests it had taken are lost to
  this crawl, so the leader does not move ``search_coverage`` (the next crawl fetches them).
- **Starting.** A node that joins when no node of the crawl is alive starts it afresh (stale keys
  of an earlier, killed crawl are removed). One that joins a crawl whose leader is gone takes the
  lead over and pages the search again from the top; requests already queued stay.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import socket
from typing import TYPE_CHECKING, Any

from core.errors import SettingError

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

logger = logging.getLogger(__name__)

# A request with this meta key set stays in the memory of the node that made it (search pages).
LOCAL_META = "node_local"

BACKENDS = ("memory", "redis")
ROLES = ("any", "worker")
TICK_SECONDS = 0.5  # how often a node publishes its state and looks for shared work
LOCK_SECONDS = 10  # a join or leave holds the crawl's lock at most this long
# Keys of one crawl, under {spider}:{crawl}: (node:{id} keys expire on their own).
CRAWL_KEYS = ("requests", "dupefilter", "leader", "nodes", "outcomes")
CLEAN = "clean"


class SchedulerBackend:
    """Add-on (``ADDONS``): ``SCHEDULER_BACKEND=redis`` puts the shared Redis scheduler in place."""

    def update_settings(self, settings: BaseSettings) -> None:
        backend = settings.get("SCHEDULER_BACKEND") or "memory"
        if backend not in BACKENDS:
            raise SettingError(f"SCHEDULER_BACKEND must be one of {', '.join(BACKENDS)}, not {backend!r}")
        if backend == "memory":
            return
        role = settings.get("CLUSTER_ROLE") or "any"
        if role not in ROLES:
            raise SettingError(f"CLUSTER_ROLE must be one of {', '.join(ROLES)}, not {role!r}")
        if settings.get("JOBDIR"):
            raise SettingError(
                "SCHEDULER_BACKEND=redis does not pause and resume with JOBDIR: the queue lives in Redis, "
                "and a crawl restarted with no node alive starts afresh (the catalogue skips what is known)"
            )
        try:
            import redis  # noqa: F401
            import scrapy_redis  # noqa: F401
        except ImportError as exc:
            raise SettingError(
                f"SCHEDULER_BACKEND=redis needs the ops extras ({exc.name} is missing): pip install -e '.[ops]'"
            ) from None
        settings.set("SCHEDULER", "crawler.cluster_scheduler.ClusterScheduler", priority="addon")
        settings.set("DUPEFILTER_CLASS", "scrapy_redis.dupefilter.RFPDupeFilter", priority="addon")
        # Never flush on close: the keys belong to the whole crawl; its last node removes them.
        settings.set("SCHEDULER_PERSIST", True, priority="addon")


def crawl_name(setting: str, query_key: str) -> str:
    """The crawl's name in Redis keys: CLUSTER_CRAWL_ID when it is a plain word, else a hash."""
    if setting and re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", setting):
        return setting
    return hashlib.sha1((setting or query_key).encode("utf-8")).hexdigest()[:16]


def node_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


def _text(value: Any) -> str | None:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _name(value: Any) -> str:
    """A Redis key or member as text (never None: it came back from the server)."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class Membership:
    """Which nodes take part in a crawl and how they ended, kept in Redis under ``prefix``.

    A live node has a ``node:{id}`` key holding ``busy`` or ``idle`` that expires after
    ``timeout`` seconds unless refreshed; ``nodes`` lists every node that joined and has not left.
    Joining and leaving hold a short Redis lock, so a node starting while the last one leaves
    either joins the old crawl or starts a new one, never half of each.
    """

    def __init__(self, server: Any, prefix: str, node_id: str, timeout: float):
        self.server = server
        self.prefix = prefix
        self.node_id = node_id
        self.timeout_ms = max(int(timeout * 1000), 1000)

    def key(self, name: str) -> str:
        return f"{self.prefix}:{name}"

    def node_key(self, node: str) -> str:
        return self.key(f"node:{node}")

    def _lock(self) -> Any:
        return self.server.lock(self.key("lock"), timeout=LOCK_SECONDS, blocking_timeout=3 * LOCK_SECONDS)

    def join(self) -> str:
        """Register this node: 'fresh' (a new crawl), 'takeover' (its leader was gone) or 'joined'."""
        with self._lock():
            alive = self.alive()
            if not alive:
                self.server.delete(*(self.key(k) for k in CRAWL_KEYS))
                how = "fresh"
            elif (leader := self.leader()) and leader not in alive:
                # The search is paged again from the top by whoever leads now.
                self.server.delete(self.key("dupefilter"), self.key("leader"))
                how = "takeover"
            else:
                how = "joined"
            self.heartbeat(busy=True)
        return how

    def heartbeat(self, busy: bool) -> None:
        pipe = self.server.pipeline()
        pipe.set(self.node_key(self.node_id), "busy" if busy else "idle", px=self.timeout_ms)
        pipe.sadd(self.key("nodes"), self.node_id)  # back in, should it have been taken for gone
        pipe.execute()

    def members(self) -> dict[str, str | None]:
        """Every registered node and its state; None for one whose heartbeat expired."""
        nodes = sorted(_name(n) for n in self.server.smembers(self.key("nodes")))
        if not nodes:
            return {}
        states = self.server.mget([self.node_key(n) for n in nodes])
        return {node: _text(state) for node, state in zip(nodes, states)}

    def alive(self) -> set[str]:
        return {node for node, state in self.members().items() if state is not None}

    def others(self) -> tuple[bool, list[str]]:
        """(whether another node is busy, the other live nodes). Nodes gone silent are recorded lost."""
        busy, alive = False, []
        for node, state in self.members().items():
            if node == self.node_id:
                continue
            if state is None:
                self.server.srem(self.key("nodes"), node)
                if self.server.hsetnx(self.key("outcomes"), node, f"lost: no heartbeat for {self.timeout_ms / 1000:g} s"):
                    logger.warning("Cluster node %s went silent; the requests it had taken are lost to this crawl", node)
                continue
            alive.append(node)
            busy = busy or state == "busy"
        return busy, alive

    def set_leader(self) -> None:
        self.server.set(self.key("leader"), self.node_id)

    def leader(self) -> str | None:
        return _text(self.server.get(self.key("leader")))

    def outcomes(self) -> dict[str, str]:
        return {_name(k): _name(v) for k, v in self.server.hgetall(self.key("outcomes")).items()}

    def leave(self, outcome: str) -> bool:
        """Deregister with how this node ended. True when it was the last: the crawl's keys go."""
        with self._lock():
            pipe = self.server.pipeline()
            pipe.srem(self.key("nodes"), self.node_id)
            pipe.delete(self.node_key(self.node_id))
            pipe.hset(self.key("outcomes"), self.node_id, outcome)
            pipe.execute()
            if self.alive():
                return False
            self.server.delete(*(self.key(k) for k in CRAWL_KEYS))
            return True
