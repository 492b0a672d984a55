"""The one settings object: every variable read once, secrets also from `<VARIABLE>_FILE`,
the channels' settings taken from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.notifier.channels.base import ChannelName, ChannelSettings
from shared.config import Settings


def test_secrets_come_from_the_variable_or_the_file_it_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "sms_key"
    key.write_text("from-a-file\n", encoding="utf-8")  # secret files end with a newline
    monkeypatch.setenv("GRIDBUS_SMS_API_KEY_FILE", str(key))
    monkeypatch.setenv("WEBHOOK_SECRET_FILE", str(key))
    s = Settings()
    assert s.sms_api_key.get_secret_value() == "from-a-file" and "from-a-file" not in repr(s)
    assert s.webhook_secret == "from-a-file"
    monkeypatch.setenv("GRIDBUS_SMS_API_KEY", "from-the-variable")  # the variable wins over the file
    assert Settings().sms_api_key.get_secret_value() == "from-the-variable"


def test_per_recipient_webhook_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_SECRET", "default")
    monkeypatch.setenv("GRIDBUS_SECRET_GAS", "gas-secret")
    ops = tmp_path / "ops"
    ops.write_text("ops-secret\n", encoding="utf-8")
    monkeypatch.setenv("GRIDBUS_SECRET_OPS_FILE", str(ops))
    s = Settings()
    assert (s.webhook_secret_of("gas"), s.webhook_secret_of("ops"), s.webhook_secret_of("water")) == (
        "gas-secret",
        "ops-secret",
        "default",
    )


def test_department_passwords_and_the_demo_key_are_read_like_the_other_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.broker_users import password_for

    gas = tmp_path / "gas"
    gas.write_text("gas-pass\n", encoding="utf-8")
    monkeypatch.setenv("GRIDBUS_DEPT_PASSWORD_GAS_FILE", str(gas))
    monkeypatch.setenv("GRIDBUS_DEPT_PASSWORD_POWER", "power-pass")
    monkeypatch.delenv("GRIDBUS_DEPT_PASSWORD_WATER", raising=False)
    monkeypatch.delenv("GRIDBUS_DEPT_PASSWORD_WATER_FILE", raising=False)
    assert (password_for("gas"), password_for("power"), password_for("water")) == ("gas-pass", "power-pass", None)
    monkeypatch.setenv("GRIDBUS_API_KEY_FILE", str(gas))
    s = Settings()
    assert s.gridbus_api_key.get_secret_value() == "gas-pass" and "gas-pass" not in repr(s)


def test_channel_settings_are_the_settings_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDBUS_SMTP_HOST", "mail.example.cn")
    monkeypatch.setenv("GRIDBUS_SMTP_PORT", "2525")
    monkeypatch.setenv("NOTIFIER_TIMEOUT_SECONDS", "7.5")
    monkeypatch.setenv("WEBHOOK_SECRET", "shared-secret")
    c = ChannelSettings.from_settings(Settings(), sms_sign="测试")
    assert (c.smtp_host, c.smtp_port, c.timeout, c.sms_sign) == ("mail.example.cn", 2525, 7.5, "测试")
    assert c.webhook_secret.get_secret_value() == "shared-secret"
    assert c.disabled() == {ChannelName.sms: "GRIDBUS_SMS_URL"}  # the variable that would enable it
