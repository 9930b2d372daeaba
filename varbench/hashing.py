"""Content hashes: the same payload always gives the same short id."""
from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(payload: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal data hashes equally."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def content_hash(payload: Any, length: int = 12) -> str:
    return hashlib.sha256(canonical_json(payload).encode("ascii")).hexdigest()[:length]
