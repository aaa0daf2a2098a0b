"""The ``feedback-intake`` command: serve, check-config, db upgrade, digest, report, ..."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import date
from pathlib import Path

from tqdm import tqdm

from bot import digests, lifecycle, reports, routing, staff
from bot.incidents import candidates, grouping, match
from bot.core import Core
from bot.logs import configure_logging
from service.app import serve
from service.assembly import open_core
from service.config import Config, ConfigError, load_config, secret_values
from storage import db

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


def _with_core(args: argparse.Namespace, work) -> int:
    """Run work(core) on a started core (migrated and synced as `serve` would)."""
    config = _load(args.config)
    configure_logging("WARNING", secrets=secret_values(config))

    async def run() -> int:
        core: Core = await open_core(config)
        try:
            return await work(core)
        finally:
            await core.close()

    return asyncio.run(run())


def _route_test(args: argparse.Namespace) -> int:
    async def work(core) -> int:
        async with core.sessions() as session:
            rules = await routing.load_rules(session)
        decision = routing.route(rules, core.config.routing.default_unit, text=args.text, area=args.area,
                                 category=args.category, channel=args.channel, subject=args.subject)
        unit = core.config.unit(decision.unit)
        print(f"unit:   {decision.unit} ({unit.name if unit else '?'})")
        print(f"reason: {decision.reason}")
        return 0

    return _with_core(args, work)


def _incident_test(args: argparse.Namespace) -> int:
    async def work(core) -> int:
        found = match.features(args.text, args.area, None, args.lat, args.lon)
        rule = core.config.incidents.rule(found.topic, args.category)
        print(f"event:  {', '.join(found.topics) or 'none recognised'}")
        print(f"place:  {found.place.describe()} (key {found.place.key or '-'})")
        print(f"rule:   join above {rule.join_above:g}, suggest above {rule.suggest_above:g}, window "
              f"{rule.window_minutes:g} min, distance {rule.distance_m:g} m ({rule.reach})"
              + ("" if rule.group else ", never grouped"))
        async with core.sessions() as session:
            decision = await candidates.find(session, core.config.incidents, found, args.category, core.clock.now(),
                                             latitude=args.lat, longitude=args.lon)
        print(f"open complaints compared: {decision.considered}")
        for candidate in [decision.best, *decision.others] if decision.best else []:
            where = f"incident #{candidate.incident_id}" if candidate.incident_id else "no incident"
            print(f"  {candidate.score.value:.2f}  {candidate.tracking_code} ({where}): "
                  + "; ".join(candidate.score.reasons))
        verdict = {"join": "would join", "suggest": "would be suggested to the officer"}.get(decision.action)
        target = decision.best and (f"incident #{decision.best.incident_id}" if decision.best.incident_id
                                    else decision.best.tracking_code)
        print(f"result: {verdict} {target}" if verdict else "result: a complaint of its own")
        return 0

    return _with_core(args, work)


def _incident(args: argparse.Namespace) -> int:
    async def work(core) -> int:
        try:
            if args.action == "merge":
                found = await grouping.merge(core, args.codes, "cli")
            elif args.action == "split":
                found = await grouping.split(core, args.codes[0], "cli")
            else:
                found = await grouping.describe(core, args.codes[0])
        except lifecycle.LifecycleError as error:
            print(f"cannot: {error}", file=sys.stderr)
            return 1
        if found is None:
            print("no incident")
            return 0
        print(f"incident #{found.id} ({found.state}): {len(found.codes)} reports, lead {found.lead_code}, "
              f"answer due {found.first_response_due.isoformat() if found.first_response_due else '-'}")
        print("  " + " ".join(found.codes))
        return 0

    if args.action != "merge" and len(args.codes) != 1 or args.action == "merge" and len(args.codes) < 2:
        print("merge takes two codes or more (the first stays); split and show take one", file=sys.stderr)
        return 2
    return _with_core(args, work)


def _rules(args: argparse.Namespace) -> int:
    def split(values: list[str] | None) -> list[str]:
        return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]

    async def work(core) -> int:
        async with core.sessions() as session, session.begin():
            try:
                if args.rules_command == "add":
                    rule_id = await routing.add_rule(
                        session, unit=args.unit, keywords=split(args.keyword), areas=split(args.area),
                        categories=split(args.category), channels=split(args.channel), priority=args.priority)
                    print(f"added rule {rule_id}")
                elif args.rules_command == "remove":
                    await routing.remove_rule(session, args.id)
                    print(f"removed rule {args.id}")
            except routing.RuleError as error:
                print(f"error: {error}", file=sys.stderr)
                return 1
            for rule in await routing.load_rules(session):
                if args.rules_command == "list":
                    criteria = {k: list(getattr(rule, k)) for k in ("keywords", "areas", "categories", "channels")
                                if getattr(rule, k)}
                    print(f"{rule.priority:>6}  {rule.name:<14} -> {rule.unit}  {criteria}")
        return 0

    return _with_core(args, work)


def _staff_link_code(args: argparse.Namespace) -> int:
    async def work(core) -> int:
        try:
            code = await staff.link_code(core, args.slug)
        except lifecycle.LifecycleError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(code)
        print(f"{args.slug} sends /link {code} to the Telegram bot within 24 hours; the code works once.",
              file=sys.stderr)
        return 0

    return _with_core(args, work)


def _digest(args: argparse.Namespace) -> int:
    async def work(core) -> int:
        try:
            period = digests.parse_period(args.period, core.clock.now(), core.config.tz)
            if args.dry_run:
                digest, png = await digests.preview(core, args.unit, period, args.language)
            else:
                outcome = await digests.send(core, args.unit, period)
        except digests.DigestError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        if args.dry_run:
            chart = Path(args.chart or f"digest-{args.unit}-{period.name}.png")
            chart.write_bytes(png)
            print(digest.text)
            print(f"chart written to {chart} ({len(png) // 1024} KB PNG); nothing was sent", file=sys.stderr)
            return 0
        said = {"queued": f"queued {outcome.messages} message(s); the running service sends them",
                "already sent": "already sent for this period; nothing queued",
                "no recipients": "nobody to send it to: the unit has no head (and there is no admin) with "
                                 "a Telegram chat or an email address for the [digests] channels"}
        print(f"{period.kind} digest {period.name} for {args.unit}: {said[outcome.result]}")
        return 1 if outcome.result == "no recipients" else 0

    return _with_core(args, work)


def _report(args: argparse.Namespace) -> int:
    async def work(core) -> int:
        selection = reports.Selection(args.since, args.until, args.unit, args.with_contacts)
        try:
            reports.unit_ids(core, selection)
        except reports.ReportError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        out = open(args.output, "w", encoding="utf-8", newline="") if args.output else sys.stdout
        bar = None
        try:
            # A progress bar only for a person watching: on a terminal, and not over the rows.
            if sys.stderr.isatty() and (args.output or not sys.stdout.isatty()):
                bar = tqdm(total=await reports.count(core, selection), unit=" complaints", file=sys.stderr)
            written = await reports.export(core, selection, out, args.format, bar.update if bar else None)
        finally:
            if bar is not None:
                bar.close()
            if args.output:
                out.close()
        if args.output:
            print(f"wrote {written} complaints to {args.output}", file=sys.stderr)
        return 0

    return _with_core(args, work)


def _iso_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date like 2026-11-01: {value!r}") from None


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

    route_test = commands.add_parser("route-test", help="show which unit a text would go to, and why",
                                     description="Show which unit a complaint would be routed to, and why.")
    route_test.add_argument("text", help="the complaint's text")
    route_test.add_argument("--subject", help="a subject line (email)")
    route_test.add_argument("--area", help="ward/district as the citizen wrote it")
    route_test.add_argument("--category", help="category slug")
    route_test.add_argument("--channel", default="web", help="channel it arrived on (default: web)")
    route_test.add_argument("--config", metavar="FILE", help=config_help)
    route_test.set_defaults(run=_route_test)

    incident_test = commands.add_parser(
        "incident-test", help="show which open complaints or incident a text would join, and why",
        description="Score a text against the open complaints of the store as intake would: the event and place "
                    "it names, the rule that applies, the best candidates with their reasons, and the result.")
    incident_test.add_argument("text", help="the complaint's text")
    incident_test.add_argument("--area", help="ward/district as the citizen wrote it")
    incident_test.add_argument("--category", help="category slug")
    incident_test.add_argument("--lat", type=float, help="latitude (WGS 84)")
    incident_test.add_argument("--lon", type=float, help="longitude (WGS 84)")
    incident_test.add_argument("--config", metavar="FILE", help=config_help)
    incident_test.set_defaults(run=_incident_test)

    incident = commands.add_parser(
        "incident", help="merge complaints into one incident, split one out, or show one",
        description="merge CODE CODE...: the first complaint's incident survives, the others join it; "
                    "split CODE: take a complaint out of its incident; show CODE: the incident it is in.")
    incident.add_argument("action", choices=["merge", "split", "show"])
    incident.add_argument("codes", nargs="+", metavar="CODE")
    incident.add_argument("--config", metavar="FILE", help=config_help)
    incident.set_defaults(run=_incident)

    rules = commands.add_parser("rules", help="list, add or remove admins' routing rules",
                                description="Routing rules kept in the database (config rules live in the file).")
    rules_commands = rules.add_subparsers(dest="rules_command", required=True, metavar="COMMAND")
    rules_list = rules_commands.add_parser("list", help="list every rule in priority order")
    rules_add = rules_commands.add_parser("add", help="add a rule; repeat or comma-separate values")
    rules_add.add_argument("--unit", required=True, help="unit slug the rule routes to")
    rules_add.add_argument("--keyword", action="append", help="keyword or phrase (diacritics optional)")
    rules_add.add_argument("--area", action="append", help="ward or district name")
    rules_add.add_argument("--category", action="append", help="category slug")
    rules_add.add_argument("--channel", action="append", help="channel name (web, sms, email, telegram, open311)")
    rules_add.add_argument("--priority", type=int, default=1000, help="lower runs first (config rules: 10, 20, ...)")
    rules_remove = rules_commands.add_parser("remove", help="remove an admin rule by id")
    rules_remove.add_argument("id", type=int)
    for sub in (rules_list, rules_add, rules_remove):
        sub.add_argument("--config", metavar="FILE", help=config_help)
        sub.set_defaults(run=_rules)

    staff = commands.add_parser("staff", help="staff accounts", description="Staff accounts.")
    staff_commands = staff.add_subparsers(dest="staff_command", required=True, metavar="COMMAND")
    link_code = staff_commands.add_parser(
        "link-code", help="make a one-time code that links a staff member's Telegram chat",
        description="Print a one-time code (valid 24 hours) the staff member sends to the bot as /link CODE.")
    link_code.add_argument("slug", help="the staff member's slug, as in [[staff]]")
    link_code.add_argument("--config", metavar="FILE", help=config_help)
    link_code.set_defaults(run=_staff_link_code)
    digest = commands.add_parser(
        "digest", help="send a unit's digest now, or print it (--dry-run)",
        description="Queue a unit's digest for its heads now (once per period, as the schedule would), or "
                    "with --dry-run print it and write its chart to a file, sending nothing.")
    digest.add_argument("--unit", required=True, help="unit slug")
    digest.add_argument("--period", default="daily",
                        help="daily (yesterday), weekly (last ISO week), a day (2026-11-01) or an ISO week "
                             "(2026-W44); default: daily")
    digest.add_argument("--dry-run", action="store_true", help="print the digest and write the chart; send nothing")
    digest.add_argument("--chart", metavar="FILE", help="where --dry-run writes the PNG chart "
                                                         "(default: digest-UNIT-PERIOD.png)")
    digest.add_argument("--language", choices=["vi", "en"], help="language of the --dry-run text and chart")
    digest.add_argument("--config", metavar="FILE", help=config_help)
    digest.set_defaults(run=_digest)

    report = commands.add_parser(
        "report", help="every complaint received between two dates, with timings and rating, as CSV or JSON",
        description="Write every complaint received from --since to --until (inclusive, service time zone) "
                    "with its unit, status, timings and rating. Citizens' contacts and texts only with "
                    "--with-contacts.")
    report.add_argument("--since", required=True, type=_iso_date, metavar="DATE", help="first day (2026-11-01)")
    report.add_argument("--until", required=True, type=_iso_date, metavar="DATE", help="last day, included")
    report.add_argument("--unit", help="only this unit (slug)")
    report.add_argument("--format", choices=["csv", "json"], default="csv", help="csv (default) or json")
    report.add_argument("--with-contacts", action="store_true",
                        help="add the citizen's contact (channel, address, name) and the complaint's text")
    report.add_argument("--output", metavar="FILE", help="write to this file (default: standard output)")
    report.add_argument("--config", metavar="FILE", help=config_help)
    report.set_defaults(run=_report)
    return top


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
