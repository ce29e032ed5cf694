"""Shared fixtures: the generated sample catalogue and the real Flipkart sample when present."""

from __future__ import annotations

from pathlib import Path

import pytest

from placedemarche.pipeline import sample_data

REPO_ROOT = Path(__file__).resolve().parents[1]
FLIPKART_DIR = REPO_ROOT.parent / "shared" / "flipkart"


@pytest.fixture(scope="session")
def defect_sample(tmp_path_factory) -> Path:
    """A 7 x 6 clean-row catalogue with every defect row, generated once per test session."""
    out = tmp_path_factory.mktemp("defect_sample")
    sample_data.make_sample(out, per_class=6, seed=7, defects=True, show_progress=False)
    return out


@pytest.fixture
def flipkart_dir() -> Path:
    """The real 1050-product sample; tests using it skip when the shared folder is absent."""
    if not (FLIPKART_DIR / "flipkart_com-ecommerce_sample_1050.csv").is_file():
        pytest.skip(f"real Flipkart sample not found at {FLIPKART_DIR} (read-only shared data)")
    return FLIPKART_DIR


@pytest.fixture(scope="session")
def sample_examples(tmp_path_factory) -> Path:
    """TFRecords (Examples artifact folder) of a clean 7 x 20 generated catalogue, ingested once.

    Runs CatalogueExampleGen's executor directly (no orchestration) to keep the trainer tests fast.
    """
    from placedemarche.components.catalogue_example_gen import component

    root = tmp_path_factory.mktemp("sample_examples")
    sample_data.make_sample(root / "data", per_class=20, seed=11, show_progress=False)
    examples, _ = component.run_executor(str(root / "data"), str(root))
    return Path(examples)
