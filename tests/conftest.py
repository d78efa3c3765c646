"""Shared fixtures: the built-in small checkpoints, an in-process pipeline and one Triton server per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cosmos_triton.deployment import ServeSettings
from export.make_small_checkpoints import make_small_checkpoints
from export.small_dit import SMALL_DIT_DIR, SMALL_V2W_DIT_DIR


@pytest.fixture(scope="session")
def small_settings() -> ServeSettings:
    root = make_small_checkpoints()  # checkpoints/small, rebuilt only when stale
    return ServeSettings(checkpoint_dir=str(root), dit_dir=SMALL_DIT_DIR, v2w_dit_dir=SMALL_V2W_DIT_DIR)


@pytest.fixture(scope="session")
def stages(small_settings):
    """The stage objects, loaded once and shared by both in-process pipelines (as the server shares its stages)."""
    from cosmos_triton.pipeline.inprocess import InProcessStages

    return InProcessStages(small_settings)


@pytest.fixture(scope="session")
def pipeline(stages):
    from cosmos_triton.pipeline.inprocess import Pipeline
    from cosmos_triton.pipeline.model_types import TEXT2WORLD

    return Pipeline(TEXT2WORLD, stages)


@pytest.fixture(scope="session")
def v2w_pipeline(stages):
    from cosmos_triton.pipeline.inprocess import Pipeline
    from cosmos_triton.pipeline.model_types import VIDEO2WORLD

    return Pipeline(VIDEO2WORLD, stages)


@pytest.fixture(scope="session")
def server(small_settings, tmp_path_factory) -> Iterator:
    from cosmos_triton.server import running_server

    log = Path(tmp_path_factory.mktemp("server")) / "tritonserver.log"
    with running_server(small_settings, log_file=log) as handle:
        yield handle
