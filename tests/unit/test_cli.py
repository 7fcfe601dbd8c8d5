"""The command line: bad settings stop start-up with one clear line; import reports problems."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli import main
from bot.config import ConfigError, load_settings


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("LINLI_TIMEZONE", "Mars/Olympus", "LINLI_TIMEZONE: unknown time zone"),
        ("LINLI_ADMINS", "12,abc", "LINLI_ADMINS: must be comma-separated"),
        ("LINLI_DATABASE_URL", "mysql://x", "LINLI_DATABASE_URL: use sqlite"),
        ("LINLI_WEBHOOK_URL", "https://bot.example.org/tg", "needs LINLI_WEBHOOK_SECRET"),
    ],
)
def test_a_wrong_setting_stops_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    value: str,
    says: str,
) -> None:
    monkeypatch.chdir(Path(__file__).parent)  # no .env here
    monkeypatch.setenv(name, value)
    assert main(["db", "upgrade"]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_run_without_a_token_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(Path(__file__).parent)
    monkeypatch.delenv("LINLI_BOT_TOKEN", raising=False)
    assert main(["run"]) == 2
    assert "LINLI_BOT_TOKEN is not set" in capsys.readouterr().err


def test_admins_accept_spaces_and_commas() -> None:
    settings = load_settings(admins="1, 2 3", _env_file=None)
    assert settings.admins == frozenset({1, 2, 3})
    with pytest.raises(ConfigError):
        load_settings(bot_api_url="ftp://x", _env_file=None)


def test_import_with_bad_rows_writes_nothing_and_names_the_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LINLI_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/cli.db")
    register = tmp_path / "register.csv"
    register.write_text(
        "community,building,flat,area\n幸福里,3号楼,3-1-101,89.5\n幸福里,3号楼,3-1-102,12.345\n",
        encoding="utf-8",
    )
    assert main(["import", str(register)]) == 1
    assert "line 3" in capsys.readouterr().err
    register.write_text(
        "community,building,flat,area\n幸福里,3号楼,3-1-101,89.5\n", encoding="utf-8"
    )
    assert main(["import", str(register)]) == 0
    assert "households +1" in capsys.readouterr().out
    assert main(["import", str(register)]) == 0
    assert "households +0" in capsys.readouterr().out
