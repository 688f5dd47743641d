#!/usr/bin/env python3
"""The image's HEALTHCHECK: exit 0 when GET /healthz on this container answers 200.

The port is HYBRIDREC_HEALTH_PORT (8000, the image's default `serve --port`).
"""

import os
import sys
import urllib.request

port = os.environ.get("HYBRIDREC_HEALTH_PORT") or "8000"
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as answer:
        sys.exit(0 if answer.status == 200 else 1)
except OSError as exc:
    print(f"healthz on port {port}: {exc}", file=sys.stderr)
    sys.exit(1)
