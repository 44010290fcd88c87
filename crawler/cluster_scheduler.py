"""The scheduler of a distributed crawl: scrapy-redis' shared queue and dupefilter, plus what a
crawl of several nodes needs on Scrapy 2.19 (see ``crawler/cluster.py`` for the design).

scrapy-redis' own ``RedisSpider`` feeds start URLs from ``start_requests``/``next_requests``, which
Scrapy 2.16+ no longer calls; its ``Scheduler`` and ``RFPDupeFilter`` fit Scrapy 2.19's scheduler
interface (``from_crawler``, ``open``, ``enqueue_request``, ``next_request``,
``has_pending_requests``, ``close``) and are what is used here, with the spider unchanged. Added:

- requests with ``LOCAL_META`` (search pages) stay in this node's memory, after the shared dupefilter;
- per-crawl keys, and membership (who is alive, who leads, how each node ended);
- the end of the crawl: a node stays open while the crawl may still have work for it (the engine
  would close it the moment its own queue is empty) and leaves as ``Membership`` describes;
- wake-ups: Scrapy's engine looks at an idle scheduler only every 5 s, so a node takes a request
  from the shared queue itself as soon as it has room, and hands it to ``engine.crawl``.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import redis
from scrapy import signals
from scrapy.exceptions import DontCloseSpider
from scrapy.utils.defer import deferred_from_coro
from scrapy.utils.misc import load_object
from scrapy_redis.scheduler import Scheduler
from twisted.internet import task

from crawler.cluster import CLEAN, LOCAL_META, TICK_SECONDS, Membership, crawl_name, node_name

if TYPE_CHECKING:
    from scrapy import Request, Spider
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)


class ClusterScheduler(Scheduler):  # type: ignore[misc]  # scrapy-redis has no type information
    def __init__(self, server: Any, **kwargs: Any):
        super().__init__(server, **kwargs)
        self.crawler: Crawler | None = None
        self.local: list[tuple[int, int, Request]] = []  # heap: (-priority, arrival, request)
        self._arrival = itertools.count()
        self.taken: deque[Request] = deque()  # taken from the shared queue by a wake-up
        self._waking: Request | None = None
        self.node_id = node_name()
        self.membership: Membership | None = None
        self.crawl = ""
        self.is_leader = False
        self._told_follower = False
        self._leaving = False
        self._quiet_since: float | None = None
        self._loop: task.LoopingCall | None = None

    @property
    def nodes(self) -> Membership:
        """The crawl's membership in Redis, set up when the scheduler opens."""
        assert self.membership is not None, "the cluster scheduler is not open"
        return self.membership

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ClusterScheduler:
        s = crawler.settings
        try:
            scheduler: ClusterScheduler = super().from_crawler(crawler)  # connects and pings REDIS_URL
        except redis.RedisError as exc:
            raise RuntimeError(f"SCHEDULER_BACKEND=redis: cannot use Redis at {s.get('REDIS_URL')}: {exc}") from exc
        scheduler.crawler = crawler
        scheduler.role = s.get("CLUSTER_ROLE") or "any"
        scheduler.crawl_setting = s.get("CLUSTER_CRAWL_ID") or ""
        scheduler.idle_close = s.getfloat("CLUSTER_IDLE_CLOSE")
        scheduler.node_timeout = s.getfloat("CLUSTER_NODE_TIMEOUT")
        crawler.signals.connect(scheduler._keep_open, signal=signals.spider_idle)
        return scheduler

    # --- Scrapy's scheduler interface ---------------------------------------------------------------
    def open(self, spider: Spider) -> None:
        self.spider = spider
        crawl = crawl_name(self.crawl_setting, getattr(spider, "query_key", None) or spider.name)
        prefix = f"{spider.name}:{crawl}"
        self.queue = load_object(self.queue_cls)(
            server=self.server, spider=spider, key=f"{prefix}:requests", serializer=self.serializer
        )
        self.df = load_object(self.dupefilter_cls)(
            self.server, key=f"{prefix}:dupefilter", debug=spider.settings.getbool("DUPEFILTER_DEBUG")
        )
        self.crawl = crawl
        self.membership = Membership(self.server, prefix, self.node_id, self.node_timeout)
        how = self.nodes.join()
        logger.info(
            "Cluster crawl %s (%s): node %s %s; %d requests already queued",
            crawl, self.server.connection_pool.connection_kwargs.get("host", "redis"), self.node_id,
            {"fresh": "starts it", "takeover": "joins; its leader is gone", "joined": "joins"}[how],
            len(self.queue),
        )
        self._loop = task.LoopingCall(self._tick)
        self._loop.start(TICK_SECONDS, now=False).addErrback(
            lambda failure: logger.error("Cluster heartbeat stopped: %s", failure.value)
        )

    def enqueue_request(self, request: Request) -> bool:
        if request is self._waking:  # taken from the shared queue by _wake: filtered when first queued
            self._waking = None
            self.taken.append(request)
            return True
        if not request.meta.get(LOCAL_META):
            # scrapy-redis' own enqueue_request, less its stats call that Scrapy 2.19 deprecates
            if not request.dont_filter and self.df.request_seen(request):
                self.df.log(request, self.spider)
                return False
            self.queue.push(request)
            self.stats.inc_value("scheduler/enqueued/redis")
            return True
        if self.role == "worker":
            if not self._told_follower:
                logger.info("Cluster worker node: the search is paged by the leader; taking shared requests only")
                self._told_follower = True
            return False
        if not request.dont_filter and self.df.request_seen(request):
            self.df.log(request, self.spider)
            if not self.is_leader and not self._told_follower:
                logger.info("Cluster crawl %s is led by %s; this node takes shared requests", self.crawl, self.nodes.leader())
                self._told_follower = True
            return False
        if not self.is_leader:
            self.is_leader = True
            self.nodes.set_leader()
            logger.info("Cluster crawl %s: this node leads (pages the search)", self.crawl)
        heapq.heappush(self.local, (-request.priority, next(self._arrival), request))
        self.stats.inc_value("scheduler/enqueued/local")
        return True

    def next_request(self) -> Request | None:
        if self.taken:
            return self.taken.popleft()
        # The shared queue first: the leader fetches the next search page once every detail of
        # the last one has been taken, so the queue stays one page deep, as in one process.
        request = self._pop_shared()
        if request is None and self.local:
            request = heapq.heappop(self.local)[2]
        return request

    def _pop_shared(self) -> Request | None:
        request: Request | None = self.queue.pop()  # atomic: one node gets each request
        if request is not None:
            self.stats.inc_value("scheduler/dequeued/redis")
        return request

    def has_pending_requests(self) -> bool:
        return bool(self.taken or self.local) or len(self.queue) > 0

    def __len__(self) -> int:
        return len(self.taken) + len(self.local) + len(self.queue)

    def close(self, reason: str) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self.membership is None:
            return
        outcome = self._outcome(reason)
        try:
            last = self.nodes.leave(outcome)
        except redis.RedisError as exc:
            logger.error("Cluster crawl %s: could not leave cleanly: %s", self.crawl, exc)
            return
        logger.info(
            "Cluster crawl %s: node %s leaves (%s)%s", self.crawl, self.node_id, outcome,
            "; it was the last, the crawl's keys are removed" if last else "",
        )

    # --- the crawl's end ---------------------------------------------------------------------------
    def _outcome(self, reason: str) -> str:
        errors = self.stats.get_value("log_count/ERROR", 0)
        artwork_errors = (getattr(self.spider, "state", None) or {}).get("artwork_errors", 0)
        if reason == "finished" and not errors and not artwork_errors:
            return CLEAN
        return f"{reason}, {errors} errors logged, {artwork_errors} artworks in error"

    def _keep_open(self, spider: Spider) -> None:
        """spider_idle: the cluster, not this node's empty queue, decides when the crawl ends."""
        if not self._leaving:
            raise DontCloseSpider

    def _tick(self) -> None:
        try:
            self._tick_once()
        except redis.RedisError as exc:
            logger.warning("Cluster crawl %s: Redis error, retrying: %s", self.crawl, exc)

    def _tick_once(self) -> None:
        engine = self.crawler.engine if self.crawler else None
        if self._leaving or engine is None or engine.spider is None:
            return
        idle = engine.spider_is_idle()
        self.nodes.heartbeat(busy=not idle)
        if not idle:
            self._quiet_since = None
            if not self.taken and not engine.needs_backout():
                self._wake(engine)
            return
        others_busy, others = self.nodes.others()
        if self.is_leader:
            if not others:
                self._finish_as_leader()
            return
        if others_busy:
            self._quiet_since = None
            return
        now = time.monotonic()
        self._quiet_since = self._quiet_since or now
        if now - self._quiet_since >= self.idle_close:
            leader = self.nodes.leader()
            note = f"worker node {self.node_id} of cluster crawl {self.crawl}" + (f", led by {leader}" if leader else "")
            if leader and self.nodes.outcomes().get(leader, "").startswith("lost"):
                note += "; the leader went silent before the end, so the search was not paged to the end"
            self._note(note)
            self._close(f"the shared queue has been empty and no node busy for {self.idle_close:g} s")

    def _wake(self, engine: Any) -> None:
        """Take one shared request now and hand it to the engine, which then pulls the rest."""
        request = self._pop_shared()
        if request is not None:
            self._waking = request
            engine.crawl(request)

    def _finish_as_leader(self) -> None:
        others = {n: o for n, o in self.nodes.outcomes().items() if n != self.node_id}
        unclean = {n: o for n, o in others.items() if o != CLEAN}
        note = f"leader of cluster crawl {self.crawl} ({len(others) + 1} nodes)"
        if unclean:
            self._note_state("cluster_incomplete", True)
            note += "; not every node finished cleanly (" + "; ".join(f"{n}: {o}" for n, o in sorted(unclean.items()))
            note += "), so search_coverage was not moved"
        self._note(note)
        self._close("no work is left and every other node has left")

    def _note(self, text: str) -> None:
        self._note_state("cluster", text)

    def _note_state(self, key: str, value: Any) -> None:
        """Tell the spider (its ``state``, which the catalogue stage reads at the end) how this node ended."""
        state = getattr(self.spider, "state", None)
        if isinstance(state, dict):
            state[key] = value

    def _close(self, why: str) -> None:
        self._leaving = True
        logger.info("Cluster crawl %s: closing this node: %s", self.crawl, why)
        assert self.crawler is not None and self.crawler.engine is not None
        deferred_from_coro(self.crawler.engine.close_spider_async(reason="finished"))
