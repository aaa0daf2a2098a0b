"""The ``feedback-intake`` command: serve, check-config, db upgrade."""

from __future__ import annotations

import argparse
import os
import sys

from bot.config import Config, ConfigError, load_config, secret_values
from bot.logs import configure_logging

CONFIG_ENV = "FEEDBACK_INTAKE_CONFIG"


def _load(path: str | None) -> Config:
    try:
        return load_config(path or os.environ.get(CONFIG_ENV) or None)
    except ConfigError as error:
        print("configuration problems:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        raise SystemExit(2) from None


def _serve(args: argparse.Namespace) -> int:
    config = _load(args.config)
    configure_logging(config.service.log_level, secrets=secret_values(config))
    from bot.app import serve

    serve(config)
    return 0


def _check_config(args: argparse.Namespace) -> int:
    try:
        load_config(args.file)
    except ConfigError as error:
        for problem in error.problems:
            print(problem)
        return 1
    print("ok")
    return 0


def _db_upgrade(args: argparse.Namespace) -> int:
    config = _load(args.config)
    configure_logging(config.service.log_level, secrets=secret_values(config))
    from storage import db

    async def upgrade() -> str | None:
        engine = db.create_engine(config.storage.url, busy_timeout_ms=config.storage.busy_timeout_ms)
        try:
            await db.upgrade(engine)
            return await db.current_revision(engine)
        finally:
            await engine.dispose()

    revision = db.run(upgrade())
    print(f"database at revision {revision}")
    return 0


def parser() -> argparse.ArgumentParser:
    """The command line, with --help for every subcommand."""
    top = argparse.ArgumentParser(
        prog="feedback-intake",
        description="Takes citizens' complaints from every channel and makes sure each is answered on time.",
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config_help = f"configuration file (TOML); default: ${CONFIG_ENV}, else built-in defaults"

    serve = commands.add_parser("serve", help="run the service (web, channels, scheduler) until stopped",
                                description="Run the service in one process until SIGTERM or Ctrl-C.")
    serve.add_argument("--config", metavar="FILE", help=config_help)
    serve.set_defaults(run=_serve)

    check = commands.add_parser("check-config", help="check a configuration file; prints the problems or 'ok'",
                                description="Check a configuration file, including that its secrets are set.")
    check.add_argument("file", metavar="FILE")
    check.set_defaults(run=_check_config)

    database = commands.add_parser("db", help="database maintenance", description="Database maintenance.")
    db_commands = database.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    upgrade = db_commands.add_parser("upgrade", help="migrate the database schema to the newest version",
                                     description="Migrate the database schema to the newest version.")
    upgrade.add_argument("--config", metavar="FILE", help=config_help)
    upgrade.set_defaults(run=_db_upgrade)
    return top


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
