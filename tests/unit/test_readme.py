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
