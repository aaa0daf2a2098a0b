"""Benchmark: complaints per second through the web form under wrk, against a bare aiohttp handler.

Not a test. It measures, in one run on this machine, two servers under the same load:

* service: ``feedback-intake serve`` on a temporary SQLite file (``--postgres``: a PostgreSQL
  database made and dropped), with a Twilio SMS gateway pointed at a fake Twilio served by
  this process. Each request is a form POST / with the CSRF cookie and token (taken once
  from GET /), a fresh ``submission_id`` and (``--phone-share``, default all) a Vietnamese
  mobile number never used before in the run: the service files a new complaint, commits,
  queues the SMS acknowledgement and answers 303; its dispatcher sends the acknowledgements
  to the fake Twilio during the run. The form's flood limits are off (bench/limits.py
  measures those).
* bare: ``python bench/common.py --bare-server PORT``, an aiohttp app that parses the same
  form body (``await request.post()``) and answers 200.

wrk (``-t1 -c32``) replays pre-generated requests, each once; see bench/README.md.

    python bench/intake.py                 # SQLite, 2 s warm-up + 10 s measured each
    python bench/intake.py --postgres --check
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import re
import secrets
import sys
from pathlib import Path
from urllib.parse import urlencode

from common import (Channel, FakeHttp, TEXTS, Tally, add_wrk_arguments, between, fake_twilio, mismatches, raw_request,
                    run_main, service_config, storm_text, store_query, toml_str)
from desk import seed_store

FORM_FIELDS = re.compile(r'name="(csrf_token|submission_id)" value="([^"]*)"')
FORM_TYPE = "application/x-www-form-urlencoded"
CATEGORIES = ("moi-truong", "giao-thong", "dien-nuoc", "trat-tu", "thu-tuc", "khac", "")
MOBILE_PREFIXES = ("090", "091", "093", "094", "096", "097", "098")
AREAS = ("Cầu Giấy", "Đống Đa", "Hoàn Kiếm", "Ba Đình", "Hai Bà Trưng", "Thanh Xuân", "")
NAMES = ("Nguyễn Văn An", "Trần Thị Bình", "Lê Minh Châu", "Phạm Quốc Dũng", "")
TOKEN = "bench-twilio-auth-token-" + "5" * 8


class Intake(Channel):
    prefix = "intake"
    title = "web form intake benchmark"
    guess = 400.0

    def __init__(self, phone_share: float, seed: int, distinct_texts: bool = False) -> None:
        self.phone_share = phone_share
        self.distinct_texts = distinct_texts
        self.rng = random.Random(seed)
        self.numbers = itertools.count(5 * 10 ** 6 + self.rng.randrange(10 ** 6))  # clear of --seed-complaints' numbers
        self.cookie = ""
        self.token = ""
        self.fake: FakeHttp | None = None

    async def start(self, args, workdir, url, port) -> Path:
        self.fake = await fake_twilio()
        os.environ["FI_BENCH_SMS_SECRET"] = TOKEN
        config = workdir / "config.toml"
        config.write_text(
            service_config(url, port, args.pool_size)
            + "form_limit_per_client = 0\nform_limit_per_session = 0\n"
            + '\n[[sms.gateways]]\nname = "twilio"\nkind = "twilio"\nnumber = "+84241234567"\n'
            + f'api_url = {toml_str(f"http://127.0.0.1:{self.fake.port}")}\nsecret_env = "FI_BENCH_SMS_SECRET"\n'
            + f'account_sid = "AC{"0123456789abcdef" * 2}"\n',
            encoding="utf-8")
        return config

    async def ready(self, port: int) -> None:
        """One GET / for the CSRF cookie and the matching token; every request carries both."""
        import aiohttp

        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            async with session.get(f"http://127.0.0.1:{port}/") as response:
                page = await response.text()
                if response.status != 200:
                    raise RuntimeError(f"GET / answered {response.status}")
                cookies = [f"{name}={morsel.value}" for name, morsel in response.cookies.items()]
        token = dict(FORM_FIELDS.findall(page)).get("csrf_token")
        if not token or not cookies:
            raise RuntimeError("GET / gave no csrf_token field or no cookie")
        self.cookie, self.token = "; ".join(cookies), token

    def requests(self, n: int, port: int) -> list[bytes]:
        rng, out = self.rng, []
        for _ in range(n):
            phone, number = "", next(self.numbers)
            if rng.random() < self.phone_share:
                phone = MOBILE_PREFIXES[number // 10 ** 7 % len(MOBILE_PREFIXES)] + f"{number % 10 ** 7:07d}"
            body = urlencode({
                "csrf_token": self.token, "submission_id": secrets.token_hex(16), "lang": "vi",
                "text": storm_text(rng, number) if self.distinct_texts else rng.choice(TEXTS),
                "name": rng.choice(NAMES), "phone": phone, "email": "",
                "area": rng.choice(AREAS), "category": rng.choice(CATEGORIES),
            }).encode()
            out.append(raw_request("POST", "/", port, {"Content-Type": FORM_TYPE, "Cookie": self.cookie}, body))
        return out

    async def verify(self, url: str, floors: dict[str, int], tally: Tally) -> list[str]:
        sql = {
            "complaints": "SELECT count(*) FROM complaints WHERE id > {complaint_floor}",
            "web_messages": "SELECT count(*) FROM messages WHERE complaint_id > {complaint_floor} AND channel = 'web'",
            "with_contact": "SELECT count(*) FROM complaints WHERE id > {complaint_floor} AND contact_id IS NOT NULL",
            "acks": "SELECT count(*) FROM outbox WHERE complaint_id > {complaint_floor} AND key LIKE 'ack:%'",
            "sent_acks": "SELECT count(*) FROM outbox WHERE complaint_id > {complaint_floor} AND key LIKE 'ack:%' "
                         "AND status = 'sent'",
            "wrong": "SELECT count(*) FROM complaints c WHERE c.id > {complaint_floor} AND "
                     "(SELECT count(*) FROM outbox o WHERE o.complaint_id = c.id) "
                     "<> CASE WHEN c.contact_id IS NULL THEN 0 ELSE 1 END",
        }
        found = await store_query(url, {k: v.format(**floors) for k, v in sql.items()})
        if found is None:
            return ["the store has no complaints table"]
        print(f"  store: {found['complaints']} complaints (answered 303: {tally.ok_total}, sent: "
              f"{tally.sent_total}), {found['acks']} acknowledgements queued ({found['with_contact']} with a phone), "
              f"{found['sent_acks']} sent; {self.fake.calls} reached the fake Twilio; {found['wrong']} complaints "
              "with a wrong outbox count")
        return between(found, "complaints", tally, "complaints") + mismatches(found, (
            ("web_messages", found["complaints"]), ("acks", found["with_contact"]),
                           ("sent_acks", found["acks"]), ("wrong", 0)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phone-share", type=float, default=1.0,
                        help="share of forms with a phone number, acknowledged by SMS (default 1)")
    parser.add_argument("--distinct-texts", action="store_true",
                        help="every text its own (common.storm_text), as in a real storm, not five texts again")
    add_wrk_arguments(parser)
    args = parser.parse_args(argv)
    return run_main(Intake(args.phone_share, args.seed, args.distinct_texts), args, seed_store)


if __name__ == "__main__":
    sys.exit(main())
