"""Benchmark: Open311 GeoReport v2 ``POST /open311/v2/requests.json`` under wrk, against a bare
aiohttp handler.

Not a test. It measures, in one run on this machine, two servers under the same load:

* service: ``feedback-intake serve`` with ``[open311]`` on and a partner's API key, a Twilio
  SMS gateway pointed at a fake Twilio served by this process, on a temporary SQLite file
  (``--postgres``: a PostgreSQL database made and dropped). Each request is a form-encoded
  service request as FixMyStreet posts it (tests/fixtures/open311/fixmystreet_post.txt:
  api_key, service_code, description, lat/long, address, name) with a Vietnamese mobile
  number never used before in the run and no Idempotency-Key, so each is a new complaint;
  the service files it, commits, queues the SMS acknowledgement and answers 200 with the
  tracking code; the dispatcher sends the acknowledgements to the fake Twilio. The
  per-client flood limit is off (one address sends everything here).
* bare: ``python bench/common.py --bare-server PORT``, an aiohttp app that parses the same
  form (``await request.post()``) and answers 200.

wrk (``-t1 -c32``) replays pre-generated requests, each once; see bench/README.md.

    python bench/open311.py                 # SQLite, 2 s warm-up + 10 s measured each
    python bench/open311.py --postgres --check
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import sys
from pathlib import Path
from urllib.parse import urlencode

from common import (Channel, FakeHttp, TEXTS, Tally, add_wrk_arguments, between, fake_twilio, mismatches, raw_request,
                    run_main, service_config, store_query, toml_str)
from desk import seed_store

API_KEY = "bench-fms-key-" + "4f1c9a" * 3
TOKEN = "bench-twilio-auth-token-" + "5" * 8
MOBILE_PREFIXES = ("090", "091", "093", "094", "096", "097", "098")
CODES = ("giao-thong", "moi-truong")
PLACES = (("20.993820", "105.811249", "214 Nguyễn Trãi, Thanh Xuân, Hà Nội"),
          ("21.028511", "105.804817", "88 Láng, Đống Đa, Hà Nội"),
          ("21.036237", "105.790583", "12 Trần Duy Hưng, Cầu Giấy, Hà Nội"))


class Open311(Channel):
    prefix = "open311"
    title = "Open311 POST requests.json benchmark"
    guess = 300.0

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.numbers = itertools.count(5 * 10 ** 6 + self.rng.randrange(10 ** 6))  # clear of --seed-complaints' numbers
        self.fake: FakeHttp | None = None

    async def start(self, args, workdir, url, port) -> Path:
        self.fake = await fake_twilio()
        os.environ["FI_BENCH_SMS_SECRET"] = TOKEN
        os.environ["FI_BENCH_OPEN311_KEYS"] = API_KEY
        config = workdir / "config.toml"
        config.write_text(
            service_config(url, port, args.pool_size)
            + '\n[open311]\nenabled = true\napi_keys_env = "FI_BENCH_OPEN311_KEYS"\nlimit_per_client = 0\n'
            + '\n[[sms.gateways]]\nname = "twilio"\nkind = "twilio"\nnumber = "+84241234567"\n'
            + f'api_url = {toml_str(f"http://127.0.0.1:{self.fake.port}")}\nsecret_env = "FI_BENCH_SMS_SECRET"\n'
            + f'account_sid = "AC{"0123456789abcdef" * 2}"\n',
            encoding="utf-8")
        return config

    def requests(self, n: int, port: int) -> list[bytes]:
        rng, out = self.rng, []
        for _ in range(n):
            number = next(self.numbers)
            phone = MOBILE_PREFIXES[number // 10 ** 7 % len(MOBILE_PREFIXES)] + f"{number % 10 ** 7:07d}"
            lat, long, address = rng.choice(PLACES)
            body = urlencode({
                "api_key": API_KEY, "jurisdiction_id": "feedback.example.gov.vn", "service_code": rng.choice(CODES),
                "description": rng.choice(TEXTS), "lat": lat, "long": long, "address_string": address,
                "first_name": "Thị Hoa", "last_name": "Trần", "phone": phone,
                "attribute[fixmystreet_id]": str(number),
            }).encode()
            out.append(raw_request("POST", "/open311/v2/requests.json", port,
                                   {"Content-Type": "application/x-www-form-urlencoded"}, body))
        return out

    async def verify(self, url: str, floors: dict[str, int], tally: Tally) -> list[str]:
        sql = {
            "complaints": "SELECT count(*) FROM complaints WHERE channel = 'open311' AND id > {complaint_floor}",
            "messages": "SELECT count(*) FROM messages WHERE complaint_id > {complaint_floor} "
                        "AND channel = 'open311' AND direction = 'in'",
            "acks": "SELECT count(*) FROM outbox WHERE complaint_id > {complaint_floor} AND key LIKE 'ack:%'",
            "sent_acks": "SELECT count(*) FROM outbox WHERE complaint_id > {complaint_floor} AND key LIKE 'ack:%' "
                         "AND status = 'sent'",
            "wrong": "SELECT count(*) FROM complaints c WHERE c.id > {complaint_floor} AND "
                     "(SELECT count(*) FROM outbox o WHERE o.complaint_id = c.id AND o.key LIKE 'ack:%') <> 1",
        }
        found = await store_query(url, {k: v.format(**floors) for k, v in sql.items()})
        if found is None:
            return ["the store has no complaints table"]
        print(f"  store: {found['complaints']} Open311 complaints (answered 200: {tally.ok_total}, sent: "
              f"{tally.sent_total}), {found['acks']} acknowledgements queued, {found['sent_acks']} sent; "
              f"{self.fake.calls} reached the fake Twilio")
        return between(found, "complaints", tally, "complaints") + mismatches(found, (
            ("messages", found["complaints"]), ("acks", found["complaints"]),
                           ("sent_acks", found["acks"]), ("wrong", 0)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_wrk_arguments(parser)
    args = parser.parse_args(argv)
    return run_main(Open311(args.seed), args, seed_store)


if __name__ == "__main__":
    sys.exit(main())
