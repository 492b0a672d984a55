"""Routing tree reload: a valid file swaps in whole, an invalid one keeps the old tree."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from services.router import reload as reload_mod
from services.router.compiler import load_routing_tree
from services.router.reload import TreeReloader, request_reload
from shared.catalog import load_catalog
from shared.metrics import sample_value
from tests.conftest import REPO


def valid_gauge() -> float:
    return sample_value("gridbus_routes_config_valid")


def test_reload_swaps_valid_and_keeps_old_on_invalid(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    shutil.copy(REPO / "config" / "routes.yaml", routes)
    catalog = load_catalog()
    installed = []
    reloader = TreeReloader(routes, lambda p: load_routing_tree(p, catalog=catalog), installed.append)
    assert reloader.check() is None  # nothing changed

    routes.write_text(routes.read_text(encoding="utf-8") + "\n# touched\n", encoding="utf-8")
    os.utime(routes, (1, 1))
    assert reloader.check() == "loaded" and len(installed) == 1
    assert valid_gauge() == 1

    routes.write_text("route: [not, a, tree]\n", encoding="utf-8")
    assert reloader.check() == "invalid"
    assert len(installed) == 1  # the old tree stays
    assert valid_gauge() == 0

    request_reload()  # SIGHUP with the file unchanged: tried again, still invalid
    assert reloader.check() == "invalid"
    assert not reload_mod._requested.is_set()
