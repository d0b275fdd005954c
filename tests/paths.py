"""Where the tests find the repository's files, wherever in tests/ a test module sits."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"  # ../shared/data beside the checkout, when present
SAMPLE = REPO / "data" / "sample" / "llmrouter_sample.parquet"
