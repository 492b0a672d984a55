"""A realistic month of cases in 七星区街道 (450305001), November 2026, for the joint-meeting
agenda: ~90 cases across its four patches, mostly closed on time, with planted signals —
a recurring hot spot (暴露垃圾 five times in 辰山社区第二片区, plus two duplicates that must
not count), 争议件, escalations to the district, overdue departments, rework and 门前三包
repeat offenders (merchant_id). Written straight into intake's store, as cases with their
timelines (deterministic: a seeded generator)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from services.intake.store import CaseStore
from shared.models import (
    Assignment,
    Case,
    CaseRegistered,
    CaseStatus,
    Location,
    OnSiteHandling,
    Resolution,
    TimelineEntry,
    summary_of,
)

CST = timezone(timedelta(hours=8))
MONTH_START = datetime(2026, 11, 1, tzinfo=CST)
MONTH_END = datetime(2026, 12, 1, tzinfo=CST)
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=CST)
STREET = "450305001"
HOT_PATCH, HOT_CATEGORY = "450305001001002", "06010"
PATCHES = ["450305001001001", "450305001001002", "450305001001003", "450305001002001"]
# (category, department, description)
ROUTINE = [
    ("01037", "lighting", "路灯不亮"),
    ("03005", "sanitation", "垃圾箱满溢"),
    ("06036", "cityman", "乱堆杂物"),
    ("09009", "police", "机动车乱停放"),
    ("06040", "cityman", "私设地锁"),
    ("06028", "ecology", "噪声扰民"),
    ("01001", "water", "供水设施破损"),
    ("09006", "cityman", "占道经营"),
]


@dataclass
class Planted:
    hot_spot: list[str]
    hot_spot_duplicates: list[str]
    disputed: list[str]
    escalated: list[str]
    rework: list[str]
    overdue_lighting: list[str]
    merchants: dict[str, list[str]]
    all_ids: list[str]


class _Month:
    def __init__(self, store: CaseStore) -> None:
        self.store = store
        self.n = 0
        self.ids: list[str] = []
        self.rng = random.Random(20261101)

    def case(
        self,
        category: str,
        grid: str,
        day: int,
        hour: int,
        dept: str | None,
        description: str,
        status: CaseStatus = CaseStatus.closed,
        late_hours: float = -2.0,
        attributes: dict[str, str] | None = None,
        duplicate_of: str | None = None,
        notes: list[str] = (),
        rejected_by: list[str] = (),  # type: ignore[assignment]
        disputed: bool = False,
        rework: int = 0,
        on_site: str | None = None,
        reporter: str = "",
    ) -> str:
        self.n += 1
        registered = datetime(2026, 11, day, hour, self.rng.randrange(60), tzinfo=CST).astimezone(timezone.utc)
        case_id = f"450305-202611{day:02d}-{self.n:06d}"
        reporter = reporter or f"w-{1000 + self.rng.randrange(12)}"
        lat, lon = 25.2765 + self.rng.random() * 0.007, 110.3105 + self.rng.random() * 0.011
        timeline = [
            TimelineEntry(
                at=registered,
                actor=f"reporter:{reporter}",
                action="report",
                to_status=CaseStatus.reported,
                note=description,
            ),
            TimelineEntry(
                at=registered,
                actor="intake",
                action="register",
                from_status=CaseStatus.reported,
                to_status=CaseStatus.registered,
            ),
        ]
        assignments: list[Assignment] = []
        resolution = None
        if dept and duplicate_of is None and on_site is None:
            due = registered + timedelta(hours=24)
            resolved = due + timedelta(hours=late_hours) if status in (CaseStatus.resolved, CaseStatus.closed) else None
            assignments.append(
                Assignment(
                    dept=dept,
                    street=grid[:9],
                    level=3,
                    order_id=f"{case_id}/1/{dept}",
                    dispatched_at=registered + timedelta(minutes=1),
                    ack_due=registered + timedelta(hours=2),
                    handle_due=due,
                    acknowledged_at=registered + timedelta(minutes=40),
                    resolved_at=resolved,
                )
            )
            timeline.append(
                TimelineEntry(
                    at=registered + timedelta(minutes=1),
                    actor="router",
                    action="dispatch",
                    from_status=CaseStatus.registered,
                    to_status=CaseStatus.dispatched,
                    note=f"round 1: dispatched to {dept}@L3",
                )
            )
            if resolved is not None:
                resolution = Resolution(
                    mode="management" if dept == "cityman" else "service",
                    result="已处置",
                    by=f"dept:{dept}",
                    at=resolved,
                )
        for note in notes:
            timeline.append(TimelineEntry(at=registered + timedelta(hours=5), actor="sla", action="note", note=note))
        if on_site is not None:
            resolution = Resolution(mode="service", result=on_site, by=f"reporter:{reporter}", at=registered)
        case = Case(
            case_id=case_id,
            report_id=f"fixture-{case_id}",
            correlation_id=f"fixture-{case_id}",
            status=CaseStatus.duplicate if duplicate_of else status,
            version=1,
            category=category,
            severity="normal",
            description=description,
            location=Location(lat=lat, lon=lon, address="七星区辰山路", grid=grid),
            grid=grid,
            street=grid[:9],
            attributes=attributes or {},
            reporter_id=reporter,
            reporter_role="grid_officer",
            observed_at=registered,
            registered_at=registered,
            updated_at=registered,
            assignments=assignments,
            timeline=timeline,
            resolution=resolution,
            rework_count=rework,
            rejected_by=list(rejected_by),
            disputed=disputed,
            duplicate_of=duplicate_of,
            handled_on_site=OnSiteHandling(note=on_site, mode="service") if on_site else None,
        )
        event = CaseRegistered(case_id=case_id, correlation_id=case.correlation_id, case=summary_of(case))
        self.store.register(case.report_id, case, event, index_location=False)
        self.store.outbox.done([event.message_id])  # no relay here: nothing to publish
        self.ids.append(case_id)
        return case_id


def build_month(store: CaseStore) -> Planted:
    m = _Month(store)
    # routine work: ~60 cases on time (two categories at most twice per patch: no hot spot)
    for i in range(60):
        category, dept, text = ROUTINE[i % len(ROUTINE)]
        grid = PATCHES[(i // len(ROUTINE)) % len(PATCHES)]
        m.case(category, grid, 1 + i % 28, 8 + i % 10, dept, text)
    # handled on site by the patch officers
    for i in range(8):
        m.case("06007", PATCHES[i % 4], 2 + 3 * i, 10, None, "沿街晾挂衣物", on_site="劝导住户收回晾挂物")
    # the planted hot spot: 暴露垃圾 five times in 辰山社区第二片区 (two of them still open), and two
    # near-duplicate reports of one of them (must not count)
    hot = [
        m.case(
            HOT_CATEGORY,
            HOT_PATCH,
            d,
            7,
            "sanitation",
            "小区后门暴露垃圾",
            status=CaseStatus.closed if d < 20 else CaseStatus.in_progress,
            late_hours=-1,
        )
        for d in (3, 9, 14, 21, 27)
    ]
    dups = [
        m.case(HOT_CATEGORY, HOT_PATCH, 27, 9, "sanitation", "后门垃圾又堆起来了", duplicate_of=hot[-1])
        for _ in range(2)
    ]
    # 争议件: rejected twice, now with the grid station
    disputed = [
        m.case(
            "06011",
            "450305001001003",
            6,
            15,
            "station",
            "工地门口积存渣土",
            status=CaseStatus.dispatched,
            rejected_by=["sanitation", "cityman"],
            disputed=True,
        ),
        m.case(
            "01060",
            "450305001002001",
            12,
            11,
            "station",
            "不明线缆垂落",
            status=CaseStatus.dispatched,
            rejected_by=["cmcc", "unicom"],
            disputed=True,
        ),
    ]
    # escalated past the street: one climbed to the district, one the district took over
    escalated = [
        m.case(
            "01037",
            "450305001001001",
            17,
            19,
            "lighting",
            "整条巷子路灯不亮",
            status=CaseStatus.closed,
            late_hours=30,
            notes=["escalated L3 → L2 (step 1): 未按期处置 handling deadline missed by lighting at L3; 督办: 黄海波"],
        ),
        m.case(
            "06001",
            "450305001002001",
            19,
            10,
            "cityman",
            "楼顶私搭乱建",
            status=CaseStatus.in_progress,
            late_hours=0,
            notes=["take-over at L2 (round 2) by ops:3f2a: to cityman (lead cityman) at L2; 区指挥中心接管"],
        ),
    ]
    # overdue: lighting resolved late three times (one above, two here), one still open past its deadline
    overdue = [escalated[0]] + [
        m.case("01037", PATCHES[i], 22 + i, 18, "lighting", "路灯闪烁", late_hours=6 + 4 * i) for i in range(2)
    ]
    m.case("01001", "450305001001003", 28, 9, "water", "消防栓漏水", status=CaseStatus.in_progress, late_hours=0)
    # rework: verification failed once
    rework = [
        m.case("03005", "450305001001001", 8, 13, "sanitation", "垃圾箱破损", rework=1),
        m.case("06012", "450305001001003", 15, 16, "sanitation", "道路不洁", rework=1),
    ]
    # 门前三包: merchants reported repeatedly (M-0731 three times, M-1102 twice, M-2001 once)
    merchants: dict[str, list[str]] = {"M-0731": [], "M-1102": []}
    for day, category, dept, text in (
        (4, "06027", "ecology", "餐馆油烟直排"),
        (11, "09005", "cityman", "店外经营"),
        (24, "06036", "cityman", "门前堆放杂物"),
    ):
        merchants["M-0731"].append(
            m.case(category, "450305001001001", day, 12, dept, text, attributes={"merchant_id": "M-0731"})
        )
    for day in (10, 26):
        merchants["M-1102"].append(
            m.case(
                "09005", "450305001002001", day, 17, "cityman", "水果店占道摆卖", attributes={"merchant_id": "M-1102"}
            )
        )
    m.case("09005", "450305001001003", 13, 17, "cityman", "店外经营", attributes={"merchant_id": "M-2001"})
    # another street's case (must not appear)
    m.case(HOT_CATEGORY, "450305003002001", 5, 9, "sanitation", "羊角山暴露垃圾")
    return Planted(hot, dups, disputed, escalated, rework, overdue, merchants, m.ids)


def remove_month(store: CaseStore, planted: Planted) -> None:
    """Take the fixture's cases out again (a shared stack's other tests must not see them)."""
    from shared import redis_keys as keys

    pipe = store.r.pipeline()
    for case_id in planted.all_ids:
        pipe.delete(keys.case(case_id), keys.report_index(f"fixture-{case_id}"))
        pipe.zrem(keys.cases_by_time(), case_id)
        pipe.zrem(keys.open_cases(), case_id)
    pipe.execute()
