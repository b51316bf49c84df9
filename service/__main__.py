"""``python -m service``: the API server (uvicorn) with settings from ``METARL_*``."""

from __future__ import annotations

import logging
import sys

import uvicorn

from service.app import create_app
from service.settings import Settings


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    if settings.workers > 1:  # separate processes, each building its app from the same METARL_* environment
        uvicorn.run("service.app:create_app", factory=True, workers=settings.workers, host=settings.host,
                    port=settings.port, log_level="info", access_log=False)
    else:
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
