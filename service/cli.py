"""The ``feedback-intake`` command line: every subcommand with its --help; what each one
does is in ``service/commands.py``."""

from __future__ import annotations

import argparse

from service import commands as do
from service.commands import CONFIG_ENV


def parser() -> argparse.ArgumentParser:
    """The command line, with --help for every subcommand."""
    top = argparse.ArgumentParser(
        prog="feedback-intake",
        description="Takes citizens' complaints from every channel and makes sure each is answered on time.",
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config_help = f"configuration file (TOML); default: ${CONFIG_ENV}, else built-in defaults"

    serve = commands.add_parser("serve", help="run the service (web, channels, scheduler) until stopped",
                                description="Run the service until SIGTERM or Ctrl-C, in one process or --workers N.")
    serve.add_argument("--config", metavar="FILE", help=config_help)
    serve.add_argument("--workers", type=do.worker_count, default=1, metavar="N",
                       help="serving processes sharing the port, one per core (default 1); worker 0 also runs "
                            "the scheduler, the SMTP server and Telegram polling")
    serve.add_argument("--worker", type=do.worker_slot, help=argparse.SUPPRESS)  # I/N: one of --workers N
    serve.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)  # written once listening
    serve.set_defaults(run=do.serve_command)

    check = commands.add_parser("check-config", help="check a configuration file; prints the problems or 'ok'",
                                description="Check a configuration file, including that its secrets are set.")
    check.add_argument("file", metavar="FILE")
    check.set_defaults(run=do.check_config_command)

    database = commands.add_parser("db", help="database maintenance", description="Database maintenance.")
    db_commands = database.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    upgrade = db_commands.add_parser("upgrade", help="migrate the database schema to the newest version",
                                     description="Migrate the database schema to the newest version.")
    upgrade.add_argument("--config", metavar="FILE", help=config_help)
    upgrade.set_defaults(run=do.db_upgrade_command)

    route_test = commands.add_parser("route-test", help="show which unit a text would go to, and why",
                                     description="Show which unit a complaint would be routed to, and why.")
    route_test.add_argument("text", help="the complaint's text")
    route_test.add_argument("--subject", help="a subject line (email)")
    route_test.add_argument("--area", help="ward/district as the citizen wrote it")
    route_test.add_argument("--category", help="category slug")
    route_test.add_argument("--channel", default="web", help="channel it arrived on (default: web)")
    route_test.add_argument("--config", metavar="FILE", help=config_help)
    route_test.set_defaults(run=do.route_test_command)

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
    incident_test.set_defaults(run=do.incident_test_command)

    incident = commands.add_parser(
        "incident", help="merge complaints into one incident, split one out, or show one",
        description="merge CODE CODE...: the first complaint's incident survives, the others join it; "
                    "split CODE: take a complaint out of its incident; show CODE: the incident it is in.")
    incident.add_argument("action", choices=["merge", "split", "show"])
    incident.add_argument("codes", nargs="+", metavar="CODE")
    incident.add_argument("--config", metavar="FILE", help=config_help)
    incident.set_defaults(run=do.incident_command)

    rules = commands.add_parser("rules", help="list, add or remove admins' routing rules",
                                description="Routing rules kept in the database (config rules live in the file).")
    rules_commands = rules.add_subparsers(dest="rules_command", required=True, metavar="COMMAND")
    rules_list = rules_commands.add_parser("list", help="list every rule in priority order")
    rules_add = rules_commands.add_parser("add", help="add a rule; repeat or comma-separate values")
    rules_add.add_argument("--unit", help="unit slug the rule routes to (leave out for a rule that only sets urgency)")
    rules_add.add_argument("--urgency", choices=["urgent", "normal", "complex"],
                           help="the urgency complaints it matches get")
    rules_add.add_argument("--keyword", action="append", help="keyword or phrase (diacritics optional)")
    rules_add.add_argument("--area", action="append", help="ward or district name")
    rules_add.add_argument("--category", action="append", help="category slug")
    rules_add.add_argument("--channel", action="append", help="channel name (web, sms, email, telegram, open311)")
    rules_add.add_argument("--priority", type=int, default=1000, help="lower runs first (config rules: 10, 20, ...)")
    rules_remove = rules_commands.add_parser("remove", help="remove an admin rule by id")
    rules_remove.add_argument("id", type=int)
    for sub in (rules_list, rules_add, rules_remove):
        sub.add_argument("--config", metavar="FILE", help=config_help)
        sub.set_defaults(run=do.rules_command)

    staff = commands.add_parser("staff", help="staff accounts", description="Staff accounts.")
    staff_commands = staff.add_subparsers(dest="staff_command", required=True, metavar="COMMAND")
    link_code = staff_commands.add_parser(
        "link-code", help="make a one-time code that links a staff member's Telegram chat",
        description="Print a one-time code (valid 24 hours) the staff member sends to the bot as /link CODE.")
    link_code.add_argument("slug", help="the staff member's slug, as in [[staff]]")
    link_code.add_argument("--config", metavar="FILE", help=config_help)
    link_code.set_defaults(run=do.staff_link_code_command)
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
    digest.set_defaults(run=do.digest_command)

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
        sub.set_defaults(run=do.outbox_command)

    report = commands.add_parser(
        "report", help="every complaint received between two dates, with timings and rating, as CSV or JSON",
        description="Write every complaint received from --since to --until (inclusive, service time zone) "
                    "with its unit, status, timings and rating. Citizens' contacts and texts only with "
                    "--with-contacts.")
    report.add_argument("--since", required=True, type=do.iso_date, metavar="DATE", help="first day (2026-11-01)")
    report.add_argument("--until", required=True, type=do.iso_date, metavar="DATE", help="last day, included")
    report.add_argument("--unit", help="only this unit (slug)")
    report.add_argument("--format", choices=["csv", "json"], default="csv", help="csv (default) or json")
    report.add_argument("--with-contacts", action="store_true",
                        help="add the citizen's contact (channel, address, name) and the complaint's text")
    report.add_argument("--output", metavar="FILE", help="write to this file (default: standard output)")
    report.add_argument("--config", metavar="FILE", help=config_help)
    report.set_defaults(run=do.report_command)
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
    for sub, run in ((set_token, do.zalo_set_token_command), (zalo_status, do.zalo_status_command)):
        sub.add_argument("--config", metavar="FILE", help=config_help)
        sub.set_defaults(run=run)
    return top


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
