"""A simulated external partner: it works a while, then calls the webhook back, signed.

    TOOLPLEX_WEBHOOK_SECRET=whsec_... python -m toolplex.demo.partner URL --delay 3
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
import urllib.request

from ..server.webhooks import sign


def main(argv: list[str] | None = None) -> int:
    """Sleep ``--delay`` seconds, then POST a signed result to the callback URL."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("callback_url")
    parser.add_argument("--delay", type=float, default=3.0)
    parser.add_argument("--table", default="accounts")
    options = parser.parse_args(argv)
    secret = os.environ.get("TOOLPLEX_WEBHOOK_SECRET")
    if not secret:
        parser.error("TOOLPLEX_WEBHOOK_SECRET is unset: the partner has nothing to sign with")
    time.sleep(options.delay)
    body = json.dumps({"table": options.table, "rows": 1284,
                       "file": f"s3://exports/{options.table}.parquet"}).encode()
    webhook_id, stamp = f"msg_{secrets.token_hex(8)}", int(time.time())
    request = urllib.request.Request(options.callback_url, data=body, method="POST", headers={
        "content-type": "application/json", "webhook-id": webhook_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(secret, webhook_id, stamp, body)})
    with urllib.request.urlopen(request, timeout=10) as response:
        print(f"partner: webhook answered {response.status}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
