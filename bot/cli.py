"""`linli`: run the bot, the offline sandbox, migrations and register imports."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from urllib.parse import urlsplit

from bot.config import ConfigError, Settings, load_settings
from bot.db import Database

log = logging.getLogger("linli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="linli", description="Linli (邻里) neighbourhood bot")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="serve Telegram (polling, or webhook when configured)")
    run.add_argument(
        "--sandbox-without-token",
        action="store_true",
        help="without LINLI_BOT_TOKEN, start the offline sandbox instead of failing",
    )
    sandbox = sub.add_parser("sandbox", help="the offline sandbox: be several people at once")
    sandbox.add_argument("--fresh", action="store_true", help="start from an empty database")
    db = sub.add_parser("db", help="database maintenance")
    db.add_argument("action", choices=["upgrade"], help="upgrade: migrate to the newest schema")
    imp = sub.add_parser("import", help="create or update units and households from YAML or CSV")
    imp.add_argument("file", type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # httpx logs every request at INFO, token included in the URL: keep it quiet.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        settings = load_settings()
        if args.command == "run":
            if settings.bot_token is None and args.sandbox_without_token:
                return _sandbox(settings, fresh=False)
            settings.token()  # fail early, in one line, when the token is missing
            return _serve(settings)
        if args.command == "sandbox":
            return _sandbox(settings, fresh=args.fresh)
        if args.command == "db":
            asyncio.run(_upgrade(settings))
            print("database is at the newest schema")
            return 0
        if args.command == "import":
            if not args.file.is_file():
                print(f"linli: no such file: {args.file}", file=sys.stderr)
                return 2
            return asyncio.run(_import(settings, args.file))
    except ConfigError as exc:
        print(f"linli: {exc}", file=sys.stderr)
        return 2
    return 1


async def _upgrade(settings: Settings) -> None:
    from bot.migrate import upgrade

    db = Database(settings.database_url)
    try:
        await upgrade(db)
    finally:
        await db.dispose()


def _serve(settings: Settings) -> int:
    from bot.app import build_application

    asyncio.run(_upgrade(settings))
    app = build_application(settings)
    if settings.webhook_url:
        assert settings.webhook_secret is not None
        # The public URL's path is where the local server listens (behind a TLS proxy).
        app.run_webhook(
            listen=settings.webhook_listen,
            port=settings.webhook_port,
            url_path=urlsplit(settings.webhook_url).path.lstrip("/"),
            webhook_url=settings.webhook_url,
            secret_token=settings.webhook_secret.get_secret_value(),
            allowed_updates=["message", "callback_query", "my_chat_member"],
        )
    else:
        app.run_polling(allowed_updates=["message", "callback_query", "my_chat_member"])
    return 0


def _sandbox(settings: Settings, *, fresh: bool) -> int:
    from bot import sandbox

    return asyncio.run(sandbox.run(settings, fresh=fresh))


async def _import(settings: Settings, file: Path) -> int:
    from bot.migrate import upgrade
    from models.base import utcnow
    from models.importer import ImportProblems, import_file

    db = Database(settings.database_url)
    try:
        await upgrade(db)
        async with db.transaction() as session:
            report = await import_file(session, path=file, now=utcnow())
    except ImportProblems as problems:
        print(
            f"{file}: nothing imported; fix these {len(problems.problems)} problem(s):",
            file=sys.stderr,
        )
        for problem in problems.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    finally:
        await db.dispose()
    print(
        f"{file}: communities +{report.communities_created} (~{report.communities_updated}), "
        f"units +{report.units_created}, households +{report.households_created} "
        f"(~{report.households_updated} updated, {report.unchanged} unchanged)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
