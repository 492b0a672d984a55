"""The grade formula pinned by a table (shared/indicators.py documents it): the
default weights, the satisfaction term from evaluations, a term without data dropping
out, the escalation penalty, clamping, grades, and GRADE_WEIGHTS parsing."""

from __future__ import annotations

import pytest

from shared.indicators import GradeWeights, Indicators

DEFAULT = GradeWeights()
B_COUNTS = {"registered": 10, "resolved": 10, "resolved_on_time": 8, "closed": 6, "rework": 1, "escalations": 1}


@pytest.mark.parametrize(
    "counts,weights,score,grade",
    [
        # everything on time, closed, no rework, no evaluations
        ({"registered": 10, "resolved": 10, "resolved_on_time": 10, "closed": 10}, DEFAULT, 100.0, "A"),
        # no evaluations: satisfaction drops out, 0.4/0.24/0.16 scale to 50/30/20:
        # 100 × (0.5×0.8 + 0.3×0.6 + 0.2×0.9) − 10 × 0.1 = 75.0
        (B_COUNTS, DEFAULT, 75.0, "B"),
        # the same with evaluations 6 satisfied, 2 basically (×0.6), 2 dissatisfied → 0.72:
        # 100 × (0.4×0.8 + 0.24×0.6 + 0.16×0.9 + 0.2×0.72) − 1 = 74.2
        ({**B_COUNTS, "eval_satisfied": 6, "eval_basically_satisfied": 2, "eval_dissatisfied": 2}, DEFAULT, 74.2, "C"),
        # every evaluation dissatisfied costs the whole satisfaction weight: 100 × 0.8 = 80.0
        (
            {"registered": 4, "resolved": 4, "resolved_on_time": 4, "closed": 4, "eval_dissatisfied": 4},
            DEFAULT,
            80.0,
            "B",
        ),
        # nothing resolved and deadlines breached: on-time 0, closed 0, no rework 1 → 100 × 0.16/0.8 = 20.0
        ({"registered": 2, "breaches": 2}, DEFAULT, 20.0, "E"),
        # nothing resolved, nothing breached: on-time counts 1 → 100 × (0.4 + 0.16)/0.8 = 70.0
        ({"registered": 2}, DEFAULT, 70.0, "C"),
        # the escalation penalty clamps at 0: 20 − 10 × 1 = 10.0; with penalty 30 → 0
        ({"registered": 2, "breaches": 2, "escalations": 2}, DEFAULT, 10.0, "E"),
        ({"registered": 2, "breaches": 2, "escalations": 2}, GradeWeights(escalation_penalty=30), 0.0, "E"),
        # other weights from GRADE_WEIGHTS: on-time only → 100 × 0.8 − 1 = 79.0
        (B_COUNTS, GradeWeights.parse("on_time=1"), 79.0, "B"),
        # basically satisfied worth 1: satisfaction 0.8 → 100 × (0.608 + 0.16) − 1 = 75.8
        (
            {**B_COUNTS, "eval_satisfied": 6, "eval_basically_satisfied": 2, "eval_dissatisfied": 2},
            GradeWeights(basic_credit=1.0),
            75.8,
            "B",
        ),
        # nothing happened: no score
        ({}, DEFAULT, None, "-"),
    ],
)
def test_score_table(counts: dict[str, int], weights: GradeWeights, score: float | None, grade: str) -> None:
    row = Indicators("dept", "lighting", counts, weights)
    assert (row.score, row.grade) == (score, grade)


def test_satisfaction_rate_and_share_only_scopes() -> None:
    row = Indicators("street", "450305001", {"eval_satisfied": 1, "eval_basically_satisfied": 1}, DEFAULT)
    assert row.satisfaction_rate == pytest.approx(0.8) and row.evaluations == 2
    assert Indicators("street", "450305001", {}, DEFAULT).satisfaction_rate is None
    patch = Indicators("patch", "450305001001001", {"resolved": 3, "mode_service": 3}, DEFAULT)
    assert patch.score is None and patch.shares()["service"] == 1.0


def test_defaults_come_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.config import reset_settings

    for name in ("GRADE_WEIGHTS", "GRADE_ESCALATION_PENALTY", "SATISFACTION_BASIC_CREDIT"):
        monkeypatch.delenv(name, raising=False)
    reset_settings()
    assert GradeWeights.from_settings() == DEFAULT  # the documented defaults are the settings' defaults
    monkeypatch.setenv("GRADE_WEIGHTS", "on_time=1")
    monkeypatch.setenv("GRADE_ESCALATION_PENALTY", "0")
    reset_settings()
    try:
        assert Indicators("dept", "gas", B_COUNTS).score == 80.0
    finally:
        monkeypatch.undo()
        reset_settings()


@pytest.mark.parametrize(
    "text,message",
    [
        ("speed=1", "unknown term 'speed'"),
        ("on_time=-1", "must not be negative"),
        ("on_time=0,closed=0", "at least one"),
    ],
)
def test_bad_weights(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GradeWeights.parse(text)
