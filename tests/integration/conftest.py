"""Fixtures of several integration modules."""

from __future__ import annotations

import pytest
import redis

from services.intake.cases import Registrar
from services.intake.duplicates import DuplicatePolicy
from services.intake.store import CaseStore
from shared.catalog import load_catalog
from shared.grid import load_grid


@pytest.fixture()
def registrar(redis_client: redis.Redis) -> Registrar:
    """intake's registration on the real Redis: the shipped catalog and grid, a 50 m / 24 h
    duplicate radius."""
    return Registrar(
        CaseStore(redis_client, "450305"),
        load_catalog(),
        load_grid(),
        "Asia/Shanghai",
        DuplicatePolicy(radius_m=50, window_hours=24),
    )
