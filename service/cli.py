"""The ``feedback-intake`` command: serve, check-config, db upgrade, digest, report, ..."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import date, datetime
from pathlib import Path

from tqdm import tqdm

from bot import credentials, digests, lifecycle, outbox, reports, routing, staff, windows
from bot.core import Core
from bot.logs import configure_logging
from channels.zalo.api import CREDENTIAL as ZALO_CREDENTIAL
from channels.zalo.api import token_pair
from channels.zalo.sender import QUOTA_KEY as ZNS_QUOTA
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


def _outbox(args: argparse.Namespace) -> int:
    async def work(core) -> int:
        if args.outbox_command == "list":
            listed = await outbox.listing(core, failed=args.failed, channel=args.channel, limit=args.limit)
            for item in listed:
                state = item.status + (f"/{item.delivery}" if item.delivery else "")
                print(f"{item.id:>8}  {item.created_at:%Y-%m-%d %H:%M}  {item.channel:<9} {state:<18} "
                      f"{item.attempts:>2}  {item.key}  {(item.last_error or '')[:100]}")
            if not listed:
                print("no messages" + (" that failed" if args.failed else ""))
            return 0
        if args.outbox_command == "retry":
            count = await outbox.requeue(core, ids=args.ids)
            print(f"queued again: {count} (of {len(args.ids)} named; only failed messages are queued again)")
            return 0 if count == len(args.ids) else 1
        count = await outbox.requeue(core, channel=args.channel)
        print(f"queued again: {count} failed {args.channel} message(s); the running service sends them")
        return 0

    return _with_core(args, work)


def _zalo_set_token(args: argparse.Namespace) -> int:
    async def work(core) -> int:
        if not args.access_token.strip() or not args.refresh_token.strip():
            print("error: both tokens are needed", file=sys.stderr)
            return 2
        pair = token_pair(args.access_token.strip(), args.refresh_token.strip(), args.expires_in, core.clock.now())
        await credentials.store(core, ZALO_CREDENTIAL, pair)
        # The tokens themselves are never printed: they are secrets.
        expiry = f"expires {pair['expires_at']}" if pair["expires_at"] else "expiry unknown until the first refresh"
        print(f"zalo token pair stored ({expiry}); the service renews it from now on")
        return 0

    return _with_core(args, work)


def _zalo_status(args: argparse.Namespace) -> int:
    async def work(core) -> int:
        config: Config = args.loaded
        pair = await credentials.read(core, ZALO_CREDENTIAL)
        if not pair or not pair.get("access_token"):
            print("access token: none stored; run `feedback-intake zalo set-token`")
        else:
            expires = pair.get("expires_at")
            left = ""
            if expires:
                minutes = int((datetime.fromisoformat(expires) - core.clock.now()).total_seconds() // 60)
                left = f" (in {minutes // 60} h {minutes % 60} min)" if minutes > 0 else " (expired: renewed at next send)"
            print(f"access token: expires {expires or 'unknown'}{left}; "
                  f"last stored {pair.get('refreshed_at') or 'unknown'}")
        zalo = config.zalo
        use = await windows.window_use(core, "zalo", zalo.window_hours)
        limit = f"{zalo.free_replies} free replies each" if zalo.free_replies else "free replies not limited"
        print(f"reply window ({zalo.window_hours:g} h, {limit}): {use.citizens} citizen(s) inside it, "
              f"{use.replies} reply(ies) sent to them since they wrote, at most {use.most} to one")
        templates = ", ".join(sorted(zalo.zns_templates)) or "none"
        quota = await credentials.read(core, ZNS_QUOTA)
        known = (f"{quota.get('remaining')} of {quota.get('daily')} left today (as Zalo said at {quota.get('at')})"
                 if quota else "not known yet (Zalo reports it with each ZNS message)")
        print(f"ZNS: templates for {templates}; daily quota: {known}")
        return 0 if pair else 1

    args.loaded = _load(args.config)
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

    box = commands.add_parser("outbox", help="list failed messages, send them again",
                              description="The outbox: what was sent, what failed, and sending again after a fix.")
    box_commands = box.add_subparsers(dest="outbox_command", required=True, metavar="COMMAND")
    box_list = box_commands.add_parser("list", help="the newest messages (no texts: they may be personal)")
    box_list.add_argument("--failed", action="store_true", help="only those that failed or were not delivered")
    box_list.add_argument("--channel", help="only this channel (sms, email, telegram, ...)")
    box_list.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    box_retry = box_commands.add_parser("retry", help="queue failed messages again by id")
    box_retry.add_argument("ids", type=int, nargs="+", metavar="ID")
    box_requeue = box_commands.add_parser(
        "requeue", help="queue again every failed message of a channel (after fixing a gateway's credentials)")
    box_requeue.add_argument("--channel", required=True)
    for sub in (box_list, box_retry, box_requeue):
        sub.add_argument("--config", metavar="FILE", help=config_help)
        sub.set_defaults(run=_outbox)

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
    zalo = commands.add_parser("zalo", help="the Zalo Official Account: tokens and usage",
                               description="The Zalo Official Account's tokens and usage.")
    zalo_commands = zalo.add_subparsers(dest="zalo_command", required=True, metavar="COMMAND")
    set_token = zalo_commands.add_parser(
        "set-token", help="store the first access and refresh token pair the OA's admin obtained",
        description="Store the OA's token pair (from the OAuth v4 flow or the API Explorer); the service "
                    "refreshes it from then on. Each refresh token works once, so a pair is set once.")
    set_token.add_argument("--access-token", required=True)
    set_token.add_argument("--refresh-token", required=True)
    set_token.add_argument("--expires-in", type=int, metavar="SECONDS",
                           help="the access token's expires_in as Zalo gave it (90000: 25 hours)")
    zalo_status = zalo_commands.add_parser(
        "status", help="token expiry, reply-window use and ZNS quota",
        description="Show when the access token expires, how many citizens are inside their reply window "
                    "and what they were sent, and the ZNS quota Zalo last reported.")
    for sub, run in ((set_token, _zalo_set_token), (zalo_status, _zalo_status)):
        sub.add_argument("--config", metavar="FILE", help=config_help)
        sub.set_defaults(run=run)
    return top


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
