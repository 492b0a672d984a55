"""archiver: the nameko shell around writer.py (the record → PostgreSQL) and retention.py."""

from __future__ import annotations

from typing import Any

import structlog
from nameko.extensions import DependencyProvider
from nameko.timer import timer

from services.archiver import db, keyuse
from services.archiver.archive import Archive
from services.archiver.retention import evict
from services.archiver.writer import Unarchivable
from shared import metrics, topology
from shared.amqpclient import QueueDepths
from shared.config import get_settings
from shared.nameko_ext import (
    EntrypointMetrics,
    QueueDepthsProvider,
    RedisProvider,
    Rejected,
    TopologyDeclarer,
    consume_reliably,
)
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


class ArchiverService:
    name = "archiver"

    declare_topology = TopologyDeclarer()
    entrypoint_metrics = EntrypointMetrics()
    archive: Archive = ArchiveProvider()
    redis = RedisProvider()
    depths: QueueDepths = QueueDepthsProvider()

    @consume_reliably(topology.Q_ARCHIVER)
    def on_record(self, body: Any) -> None:
        """Acked only once committed (nameko acks after the handler returns); a database
        error requeues it, the quorum queue's delivery limit ends a poison loop."""
        try:
            self.archive.write(body)
        except Unarchivable as exc:
            raise Rejected(f"cannot be archived: {exc}", "unarchivable") from None

    @timer(interval=LAG_EVERY_S)
    def measure_lag(self) -> None:
        backlog = self.depths.read([topology.Q_ARCHIVER])[topology.Q_ARCHIVER]
        if backlog is None:  # deleted under us; the service declares it again at start
            return
        metrics.ARCHIVE_BACKLOG.set(backlog)
        metrics.ARCHIVE_LAG.set(self.archive.lag(backlog))

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
