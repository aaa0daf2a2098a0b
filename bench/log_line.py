"""The CPU of one log line as the service writes it, against a plain line in the same run.

The service logs about five lines a complaint (a webhook's "sms received", intake's
"message received", the dispatcher's "outbox send", the sender's "sms sent"), each through
``bot.logs``: masked for phone numbers, e-mail addresses and secrets, fields rendered, line
breaks escaped. The baseline is the standard library's own formatter
(``%(asctime)s %(levelname)s %(name)s %(message)s``) on a handler to the same null
stream, measured alternately in the same run: this machine is shared and noisy, so the
ratio is the figure to compare, not the microseconds.

    python bench/log_line.py [--lines 5000] [--rounds 7]

Prints the best round of each (microseconds of CPU a line) and the ratio service / plain,
for three lines: one with fields only (the common case), one whose message names a phone
number (masked), and one whose field holds a line break (escaped).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.logs import configure_logging  # noqa: E402

LINES = {
    "fields only": ("sms received", {"gateway": "twilio", "from": "+84 91* *** 678", "outcome": "created",
                                     "code": "HN-2612-ABCD7"}),
    "a phone number to mask": ("reply from 0912 345 678 taken", {"channel": "sms", "code": "HN-2612-ABCD7"}),
    "a line break to escape": ("message received", {"channel": "email", "subject": "Mất nước\nphố Huế"}),
}


def per_line(logger: logging.Logger, message: str, fields: dict, lines: int) -> float:
    """Microseconds of CPU a line, over ``lines`` lines."""
    started = time.process_time()
    for _ in range(lines):
        logger.info(message, extra={"fields": fields})
    return (time.process_time() - started) / lines * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    null = open(os.devnull, "w")  # noqa: SIM115 - for the whole run
    service = logging.getLogger("bench.service")
    plain = logging.getLogger("bench.plain")
    plain.propagate = False
    handler = logging.StreamHandler(null)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    plain.addHandler(handler)
    configure_logging("INFO", secrets=["bench-secret-token-1234"], stream=null)
    for name, (message, fields) in LINES.items():
        ours, theirs = [], []
        for _ in range(args.rounds):
            ours.append(per_line(service, message, fields, args.lines))
            theirs.append(per_line(plain, message, fields, args.lines))
        print(f"{name:24} service {min(ours):6.1f} us a line   plain {min(theirs):6.1f} us   "
              f"ratio {min(ours) / min(theirs):.2f}")


if __name__ == "__main__":
    main()
