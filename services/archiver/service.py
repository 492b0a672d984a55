"""archiver: the nameko shell around stream.py (the record, from the `gridbus.audit` stream
into PostgreSQL) and retention.py."""

from __future__ import annotations

from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from nameko.extensions import DependencyProvider
from nameko.timer import timer

from services.archiver import db, keyuse, offsets
from services.archiver.archive import Archive
from services.archiver.retention import evict
from services.archiver.stream import StreamReader, lag, refuser
from shared import metrics, topology
from shared.amqpclient import QueueDepths
from shared.bus import Bus
from shared.config import get_settings
from shared.health import HEALTH
from shared.nameko_ext import EntrypointMetrics, QueueDepthsProvider, RedisProvider, TopologyDeclarer
from shared.redisdb import connect as connect_redis

log = structlog.get_logger("gridbus.archiver")

LAG_EVERY_S = 5.0
RETENTION_EVERY_S = 600.0


class ArchiveProvider(DependencyProvider):
    """The database is created and migrated before anything is consumed."""

    def setup(self) -> None:
        settings = get_settings()
        applied = db.prepare(settings.database_url)
        if applied:
            log.info("archive_migrated", versions=[m.version for m in applied])
        self.archive = Archive(settings.database_url, settings.timezone)

    def stop(self) -> None:
        try:  # the keys' last uses since the last copy (Redis outlives a stopping archiver)
            with self.archive.connection() as conn:
                keyuse.sync(conn, connect_redis())
        except Exception as exc:  # noqa: BLE001 (stopping: the next start copies them)
            log.warning("key_use_not_copied", error=str(exc))
        self.archive.close()

    def get_dependency(self, worker_ctx: Any) -> Archive:
        return self.archive


class RecordReader(DependencyProvider):
    """Runs the stream reader (services/archiver/stream.py) in a managed thread from the
    container's start to its stop, and registers its /healthz checks: `consumers` (the
    reader runs and is attached to the stream, a standby, or waiting only for PostgreSQL;
    the watchdog ends the process when it is not for CONSUMER_REATTACH_SECONDS) and
    `archive` (the record is being written: fails while PostgreSQL is down; not for
    liveness, which must not restart every replica for it)."""

    def setup(self) -> None:
        settings = get_settings()
        amqp_uri = self.container.config["AMQP_URI"]
        self.bus = Bus(amqp_uri, service=self.container.service_name)
        self.reader = StreamReader(
            amqp_uri,
            settings.database_url,
            ZoneInfo(settings.timezone),
            topology.Q_AUDIT,
            refuser(self.bus),
            batch_messages=settings.archiver_batch_messages,
            batch_s=settings.archiver_batch_ms / 1000,
            retry_cap=settings.consumer_retry_max_seconds,
        )
        attached = partial(self.reader.attached, settings.consumer_stuck_seconds)
        HEALTH.register("consumers", attached, fatal_after=settings.consumer_reattach_seconds)
        HEALTH.register("archive", self.reader.writing, cheap=False)

    def start(self) -> None:
        self.thread = self.container.spawn_managed_thread(self.reader.run, identifier="archiver.stream")

    def stop(self) -> None:
        self.reader.stop()
        try:
            self.thread.wait()
        except Exception:  # noqa: BLE001 (killed meanwhile: the reader's connections close with the process)
            pass

    def get_dependency(self, worker_ctx: Any) -> StreamReader:
        return self.reader


class ArchiverService:
    name = "archiver"

    declare_topology = TopologyDeclarer()
    entrypoint_metrics = EntrypointMetrics()
    archive: Archive = ArchiveProvider()
    redis = RedisProvider()
    depths: QueueDepths = QueueDepthsProvider()

    record: StreamReader = RecordReader()

    @timer(interval=LAG_EVERY_S)
    def measure_lag(self) -> None:
        """Backlog: the stream's last offset minus the one the archive stored (every
        replica, the standby too); lag: how old the newest message written is."""
        end = self.record.stream_end()
        if end is None:  # not this replica's reader (a standby, or stalled): ask the stream
            end = self.depths.stream_end(topology.Q_AUDIT)
        with self.archive.connection() as conn:
            done, newest = offsets.standing(conn, topology.Q_AUDIT)
            conn.rollback()
        backlog = 0 if end is None else end - (done if done is not None else -1)
        metrics.ARCHIVE_BACKLOG.set(max(0, backlog))
        metrics.ARCHIVE_LAG.set(lag(backlog, newest, self.archive.started))

    @timer(interval=keyuse.KEY_USE_EVERY_S)
    def copy_key_use(self) -> None:
        """API keys' last_used_at into the archive (restored by `gridbus rebuild`)."""
        with self.archive.connection() as conn:
            keyuse.sync(conn, self.redis)

    @timer(interval=RETENTION_EVERY_S)
    def retention(self) -> None:
        """Finished cases past CASE_HOT_DAYS leave Redis (the API reads them from the archive)."""
        with self.archive.connection() as conn:
            done = evict(conn, self.redis, get_settings().case_hot_days)
        if done.evicted:
            metrics.ARCHIVE_EVICTED.inc(done.evicted)
            log.info("cases_evicted", evicted=done.evicted, absent=done.absent, changed=done.changed)
