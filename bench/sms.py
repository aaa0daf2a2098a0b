"""Benchmark: SMS webhook intake under wrk, signed Twilio (or generic gateway) posts, against a
bare aiohttp handler.

Not a test. It measures, in one run on this machine, two servers (three with ``--floor``) under the
same load:

* service: ``feedback-intake serve`` with one SMS gateway (``--gateway twilio``, the default, or
  ``generic``), on a temporary SQLite file (``--postgres``: a PostgreSQL database made and
  dropped). Each request is ``POST /webhooks/sms/<gateway>`` from a phone number never seen
  before (so each one is a new complaint), signed as the gateway signs (Twilio's
  X-Twilio-Signature with Twilio's own ``RequestValidator``; the generic gateway's
  X-Signature, HMAC-SHA256 of the body); the service verifies it, files the complaint,
  commits, queues the SMS acknowledgement and answers 200. Its dispatcher sends the
  acknowledgements meanwhile to a fake Twilio Messages API (or fake generic gateway) served
  by this benchmark's process.
* bare: ``python bench/common.py --bare-server PORT``, an aiohttp app that parses the same
  body (form or JSON) and answers 200.
* with ``--floor`` (Twilio only), a third: ``bench/floor.py``, the least work the guarantee
  asks for with the same libraries (signature, one group-committed transaction per batch of
  complaint + message + outbox rows, the acknowledgements sent through one keep-alive session)
  on a SQLite file of its own, with a fake Twilio of its own; its store is read back too.

The load generator is wrk (``-t1 -c32`` by default) replaying pre-generated requests, each
once (bench/wrk/replay.lua); see bench/README.md.

    python bench/sms.py                      # SQLite, Twilio, 2 s warm-up + 10 s measured each
    python bench/sms.py --gateway generic --postgres --check
    python bench/sms.py --floor --seconds 6 --rounds 2   # and the floor: what ratio is reachable at all
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import secrets
import sys
from pathlib import Path
from urllib.parse import urlencode

from common import (Channel, FakeHttp, Server, Tally, add_wrk_arguments, between, fake_twilio, free_port, mismatches,
                    raw_request, run_main, service_config, storm_text, store_query, toml_str)
from desk import seed_store

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
TOKEN = "bench-twilio-auth-token-" + "5" * 8
GENERIC_SECRET = "bench-generic-secret-" + "9" * 8
GATEWAY_NUMBER = "+84241234567"
FORM_TYPE = "application/x-www-form-urlencoded"
MOBILE_PREFIXES = ("8490", "8491", "8493", "8494", "8496", "8497", "8498")
TEXTS = (
    "Đèn đường ngõ 12 phố Trần Duy Hưng hỏng ba hôm nay, buổi tối rất tối và nguy hiểm.",
    "Rác thải ở đầu ngõ 45 Nguyễn Chí Thanh không được thu gom từ thứ Hai, bốc mùi rất khó chịu.",
    "Nắp cống trước số nhà 88 đường Láng bị vỡ, xe máy đi qua rất dễ sụp bánh.",
    "Nhà hàng xóm hát karaoke đến 1 giờ sáng nhiều đêm liền, ảnh hưởng giấc ngủ của cả khu tập thể.",
    "Water has been cut off in our building for two days without notice.",
)


def twilio_signer():
    """Twilio's own RequestValidator when the twilio package is installed, else ours."""
    try:
        from twilio.request_validator import RequestValidator
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from channels.sms.twilio import signature

        return lambda url, params: signature(TOKEN, url, list(params.items()))
    return RequestValidator(TOKEN).compute_signature


class Sms(Channel):
    prefix = "sms"
    guess = 400.0

    def __init__(self, gateway: str, seed: int, distinct_texts: bool = False) -> None:
        self.gateway = gateway
        self.distinct_texts = distinct_texts
        self.title = f"SMS webhook benchmark ({gateway} gateway)"
        self.rng = random.Random(seed)
        # Every request a phone number not used before in this run: a new complaint each.
        self.numbers = itertools.count(5 * 10 ** 6 + self.rng.randrange(10 ** 6))  # clear of --seed-complaints' numbers
        self.sign = twilio_signer() if gateway == "twilio" else None
        self.fake: FakeHttp | None = None
        self.floor_fake: FakeHttp | None = None
        self.floor_db: Path | None = None

    async def start(self, args, workdir, url, port) -> Path:
        from aiohttp import web

        async def generic(request: web.Request) -> web.Response:
            body = await request.json()
            return web.json_response({"id": "op-" + str(body.get("id"))})

        self.fake = await fake_twilio(("POST", "/send", generic))
        api = f"http://127.0.0.1:{self.fake.port}" + ("" if self.gateway == "twilio" else "/send")
        import os

        os.environ["FI_BENCH_SMS_SECRET"] = TOKEN if self.gateway == "twilio" else GENERIC_SECRET
        config = workdir / "config.toml"
        config.write_text(
            service_config(url, port, args.pool_size)
            + f'\n[[sms.gateways]]\nname = "{self.gateway}"\nkind = "{self.gateway}"\n'
            + f"number = {toml_str(GATEWAY_NUMBER)}\napi_url = {toml_str(api)}\nsecret_env = \"FI_BENCH_SMS_SECRET\"\n"
            + (f"account_sid = {toml_str(ACCOUNT_SID)}\n" if self.gateway == "twilio" else ""),
            encoding="utf-8")
        self.port = port
        return config

    def requests(self, n: int, port: int) -> list[bytes]:
        out = []
        path = f"/webhooks/sms/{self.gateway}"
        signed_url = f"http://127.0.0.1:{self.port}{path}"  # the service's public_url (bare ignores it)
        for _ in range(n):
            number = next(self.numbers)
            sid = "SM" + secrets.token_hex(16)
            phone = "+" + MOBILE_PREFIXES[number // 10 ** 7 % len(MOBILE_PREFIXES)] + f"{number % 10 ** 7:07d}"
            text = storm_text(self.rng, number) if self.distinct_texts else self.rng.choice(TEXTS)
            if self.gateway == "twilio":
                form = {"ToCountry": "VN", "SmsMessageSid": sid, "NumMedia": "0", "SmsSid": sid,
                        "SmsStatus": "received", "Body": text, "FromCountry": "VN", "To": GATEWAY_NUMBER,
                        "NumSegments": "2", "MessageSid": sid, "AccountSid": ACCOUNT_SID, "From": phone,
                        "ApiVersion": "2010-04-01"}
                body = urlencode(form).encode()
                headers = {"Content-Type": FORM_TYPE, "X-Twilio-Signature": self.sign(signed_url, form)}
            else:
                import hashlib
                import hmac

                body = json.dumps({"id": sid, "from": phone, "to": GATEWAY_NUMBER, "text": text},
                                  ensure_ascii=False).encode()
                headers = {"Content-Type": "application/json",
                           "X-Signature": hmac.new(GENERIC_SECRET.encode(), body, hashlib.sha256).hexdigest()}
            out.append(raw_request("POST", path, port, headers, body))
        return out

    async def start_floor(self, args, workdir, port) -> Server | None:
        """--floor: bench/floor.py on a SQLite file of its own, told the service's public URL (the
        requests are signed for it), sending through a fake Twilio of its own."""
        if not getattr(args, "floor", False):
            return None
        self.floor_fake = await fake_twilio()
        self.floor_db = workdir / "floor.db"
        floor_port = free_port()
        argv = [sys.executable, str(Path(__file__).resolve().with_name("floor.py")), "--port", str(floor_port),
                "--db", str(self.floor_db), "--twilio-api", f"http://127.0.0.1:{self.floor_fake.port}",
                "--token", TOKEN, "--account-sid", ACCOUNT_SID, "--public-url", f"http://127.0.0.1:{port}",
                "--number", GATEWAY_NUMBER]
        return Server("floor", argv, floor_port, workdir / "floor.log")

    async def floor_drained(self) -> tuple[int, int]:
        found = await store_query(f"sqlite:///{self.floor_db}", {
            "left": "SELECT count(*) FROM outbox WHERE status <> 'sent'", "total": "SELECT count(*) FROM outbox"})
        return (found["left"], found["total"]) if found is not None else (-1, -1)

    async def verify_floor(self, tally: Tally) -> list[str]:
        found = await store_query(f"sqlite:///{self.floor_db}", {
            "messages": "SELECT count(*) FROM messages",
            "distinct": "SELECT count(DISTINCT external_id) FROM messages",
            "complaints": "SELECT count(*) FROM complaints",
            "acks": "SELECT count(*) FROM outbox",
            "sent_acks": "SELECT count(*) FROM outbox WHERE status = 'sent'",
            "wrong": "SELECT count(*) FROM complaints c WHERE (SELECT count(*) FROM outbox o "
                     "WHERE o.complaint_id = c.id) <> 1"})
        if found is None:
            return ["floor: its store has no tables"]
        print(f"  floor store: {found['messages']} SMS ({found['distinct']} distinct ids), {found['complaints']} "
              f"complaints (answered 200: {tally.ok_total}, sent: {tally.sent_total}), {found['acks']} "
              f"acknowledgements queued, {found['sent_acks']} sent; {self.floor_fake.calls} calls reached its fake "
              "twilio")
        problems = between(found, "complaints", tally, "complaints") + mismatches(found, (
            ("messages", found["complaints"]), ("distinct", found["messages"]), ("acks", found["complaints"]),
            ("sent_acks", found["acks"]), ("wrong", 0)))
        if self.floor_fake.calls < found["sent_acks"]:
            problems.append(f"{found['sent_acks']} acknowledgements marked sent, {self.floor_fake.calls} reached the fake")
        return ["floor: " + problem for problem in problems]

    async def verify(self, url: str, floors: dict[str, int], tally: Tally) -> list[str]:
        sql = {
            "messages": "SELECT count(*) FROM messages WHERE channel = 'sms' AND direction = 'in' AND id > {floor}",
            "distinct": "SELECT count(DISTINCT external_id) FROM messages WHERE channel = 'sms' "
                        "AND direction = 'in' AND id > {floor}",
            "complaints": "SELECT count(*) FROM complaints WHERE channel = 'sms' AND id > {complaint_floor}",
            "acks": "SELECT count(*) FROM outbox WHERE key LIKE 'ack:%' AND complaint_id > {complaint_floor}",
            "sent_acks": "SELECT count(*) FROM outbox WHERE key LIKE 'ack:%' AND status = 'sent' "
                         "AND complaint_id > {complaint_floor}",
            "wrong": "SELECT count(*) FROM complaints c WHERE c.id > {complaint_floor} AND (SELECT count(*) "
                     "FROM outbox o WHERE o.complaint_id = c.id AND o.key LIKE 'ack:%') <> 1",
        }
        found = await store_query(url, {k: v.format(**floors) for k, v in sql.items()})
        if found is None:
            return ["the store has no tables"]
        print(f"  store: {found['messages']} SMS ({found['distinct']} distinct ids), {found['complaints']} "
              f"complaints (answered 200: {tally.ok_total}, sent: {tally.sent_total}), {found['acks']} "
              f"acknowledgements queued, {found['sent_acks']} sent; {self.fake.calls} calls reached the fake "
              f"{self.gateway}")
        return between(found, "complaints", tally, "complaints") + mismatches(found, (
            ("messages", found["complaints"]), ("distinct", found["messages"]),
                           ("acks", found["complaints"]), ("sent_acks", found["acks"]), ("wrong", 0)))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateway", choices=("twilio", "generic"), default="twilio")
    parser.add_argument("--floor", action="store_true",
                        help="a third target, bench/floor.py: the least work an intake must do (Twilio only); "
                             "the verdict is then service/floor, issue 16's revised target")
    parser.add_argument("--distinct-texts", action="store_true",
                        help="every text its own (common.storm_text), as in a real storm, not five texts again")
    add_wrk_arguments(parser)
    args = parser.parse_args(argv)
    if args.floor and args.gateway != "twilio":
        parser.error("--floor: bench/floor.py takes Twilio's webhook only")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    return run_main(Sms(args.gateway, args.seed, args.distinct_texts), args, seed_store)


if __name__ == "__main__":
    sys.exit(main())
