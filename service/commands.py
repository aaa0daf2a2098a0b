"""What each ``feedback-intake`` subcommand does (the parser is in ``service/cli.py``):
load the configuration, open a core as ``serve`` would, do the work, print the outcome.
"""

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
from bot.incidents import candidates, grouping, match
from bot.logs import configure_logging
from channels.zalo.api import CREDENTIAL as ZALO_CREDENTIAL
from channels.zalo.api import token_pair
from channels.zalo.sender import QUOTA_KEY as ZNS_QUOTA
from service import app, workers
from service.assembly import open_core
from service.config import Config, ConfigError, load_config, secret_values
from storage import db

CONFIG_ENV = "FEEDBACK_INTAKE_CONFIG"


def load(path: str | None) -> Config:
    try:
        return load_config(path or os.environ.get(CONFIG_ENV) or None)
    except ConfigError as error:
        print("configuration problems:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        raise SystemExit(2) from None


def serve_command(args: argparse.Namespace) -> int:
    config = load(args.config)
    configure_logging(config.service.log_level, secrets=secret_values(config))
    if args.workers > 1 and args.worker is None:
        return workers.Supervisor(args.workers, args.config, config.web.shutdown_timeout_seconds).run()
    app.serve(config, slot=args.worker or workers.Slot(), ready_fd=args.ready_fd)
    return 0


def worker_count(value: str) -> int:
    """``--workers``: a whole number from 1."""
    count = int(value)
    if count < 1:
        raise argparse.ArgumentTypeError("--workers must be at least 1")
    return count


def worker_slot(value: str) -> workers.Slot:
    """``--worker I/N`` (given by the parent of ``--workers N``)."""
    try:
        return workers.parse_slot(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def check_config_command(args: argparse.Namespace) -> int:
    try:
        load_config(args.file)
    except ConfigError as error:
        for problem in error.problems:
            print(problem)
        return 1
    print("ok")
    return 0


def db_upgrade_command(args: argparse.Namespace) -> int:
    config = load(args.config)
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


def with_core(args: argparse.Namespace, work) -> int:
    """Run work(core) on a started core (migrated and synced as `serve` would)."""
    config = load(args.config)
    configure_logging("WARNING", secrets=secret_values(config))

    async def run() -> int:
        core: Core = await open_core(config)
        try:
            return await work(core)
        finally:
            await core.close()

    return asyncio.run(run())


def route_test_command(args: argparse.Namespace) -> int:
    async def work(core) -> int:
        async with core.sessions() as session:
            rules = await routing.load_rules(session)
        decision = routing.route(rules, core.config.routing.default_unit, text=args.text, area=args.area,
                                 category=args.category, channel=args.channel, subject=args.subject)
        unit = core.config.unit(decision.unit)
        print(f"unit:    {decision.unit} ({unit.name if unit else '?'})")
        print(f"reason:  {decision.reason}")
        print(f"urgency: {decision.urgency}" + (f" ({decision.urgency_reason})" if decision.urgency_reason else ""))
        return 0

    return with_core(args, work)


def incident_test_command(args: argparse.Namespace) -> int:
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

    return with_core(args, work)


def incident_command(args: argparse.Namespace) -> int:
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
    return with_core(args, work)


def rules_command(args: argparse.Namespace) -> int:
    def split(values: list[str] | None) -> list[str]:
        return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]

    async def work(core) -> int:
        async with core.sessions() as session, session.begin():
            try:
                if args.rules_command == "add":
                    rule_id = await routing.add_rule(
                        session, unit=args.unit, keywords=split(args.keyword), areas=split(args.area),
                        categories=split(args.category), channels=split(args.channel), priority=args.priority,
                        urgency=args.urgency)
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
                    target = " ".join(filter(None, [rule.unit, f"urgency {rule.urgency}" if rule.urgency else None]))
                    print(f"{rule.priority:>6}  {rule.name:<14} -> {target}  {criteria}")
        return 0

    return with_core(args, work)


def staff_link_code_command(args: argparse.Namespace) -> int:
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

    return with_core(args, work)


def digest_command(args: argparse.Namespace) -> int:
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

    return with_core(args, work)


def report_command(args: argparse.Namespace) -> int:
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

    return with_core(args, work)


def outbox_command(args: argparse.Namespace) -> int:
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

    return with_core(args, work)


def zalo_set_token_command(args: argparse.Namespace) -> int:
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

    return with_core(args, work)


def zalo_status_command(args: argparse.Namespace) -> int:
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

    args.loaded = load(args.config)
    return with_core(args, work)


def iso_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date like 2026-11-01: {value!r}") from None
