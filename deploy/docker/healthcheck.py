#!/usr/bin/env python3
"""Container health checks (no curl in the image).

    metarl-healthcheck http URL [TOKEN_FILE]   exit 0 when URL answers 200 (Bearer token if given)
    metarl-healthcheck raylet                  exit 0 when a raylet process runs in this container
"""

import sys
import urllib.request
from pathlib import Path


def http(url: str, token_file: str | None = None) -> int:
    req = urllib.request.Request(url)
    if token_file:
        req.add_header("Authorization", f"Bearer {Path(token_file).read_text().strip()}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310 - fixed internal URLs
            return 0 if r.status == 200 else 1
    except Exception as exc:  # noqa: BLE001
        sys.stderr.write(f"{url}: {exc}\n")
        return 1


def raylet() -> int:
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "raylet":
                return 0
        except OSError:
            continue
    sys.stderr.write("no raylet process\n")
    return 1


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "http":
        sys.exit(http(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None))
    if len(sys.argv) == 2 and sys.argv[1] == "raylet":
        sys.exit(raylet())
    sys.stderr.write(__doc__)
    sys.exit(2)
