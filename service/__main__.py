"""``python -m service``: the API server (uvicorn) with settings from ``METARL_*``."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import uvicorn

from service.app import create_app
from service.settings import Settings


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options: h11 (not httptools, which reads a header of any size) with the request
    line and headers bounded by ``METARL_MAX_HEADER_BYTES`` (over it: 400, connection closed)."""
    return {"host": settings.host, "port": settings.port, "log_level": "info", "access_log": False,
            "http": "h11", "h11_max_incomplete_event_size": settings.max_header_bytes}


def main() -> int:
    # what the service writes (job store, MLflow store and artifacts, logs, locks) is its owner's alone
    os.umask(0o077)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    if settings.workers > 1:  # separate processes, each building its app from the same METARL_* environment
        uvicorn.run("service.app:create_app", factory=True, workers=settings.workers, **server_options(settings))
    else:
        uvicorn.run(create_app(settings), **server_options(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
