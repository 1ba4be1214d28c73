"""What every benchmark shares: where results go and how they are stamped."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
# The chaos harness (writer, kill, freeze) lives in tests/support: make the repository importable.
REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def save_result(name: str, result: dict[str, Any]) -> Path:
    """Write bench/results/<name>.json, stamped with the time of measurement."""
    stamped = {**result, "measured_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(stamped, indent=2) + "\n")
    return path
