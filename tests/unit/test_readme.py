"""README's configuration table is the settings object's (a new setting must be documented)."""

from services.ops_commands import settings_table
from tests.conftest import REPO


def test_readme_configuration_table_matches_settings() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert settings_table() in readme, "regenerate the table: gridbus config"


def test_readme_channel_table_matches_channel_settings() -> None:
    from services.ops_commands import channel_settings_table

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert channel_settings_table() in readme, "regenerate the table: gridbus config"


def test_try_it_report_is_the_documented_example() -> None:
    """README's copy-paste report body is the OpenAPI example (which the models accept
    and whose coordinates resolve: tests/unit/test_openapi.py)."""
    import json
    import re

    from services.intake.openapi_examples import REPORT

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    body = re.search(r"cat > report.json <<'JSON'\n(.*?)\nJSON\n", readme, re.S)
    assert body, "README's Try it has no report.json"
    assert json.loads(body.group(1)) == REPORT
