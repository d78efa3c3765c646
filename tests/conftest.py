"""Shared fixtures: the built-in small checkpoints, an in-process pipeline and one Triton server per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cosmos_triton.settings import ServeSettings
from export.make_small_checkpoints import make_small_checkpoints
from export.small_dit import SMALL_DIT_DIR, SMALL_V2W_DIT_DIR


@pytest.fixture(scope="session")
def small_settings() -> ServeSettings:
    root = make_small_checkpoints()  # checkpoints/small, rebuilt only when stale
    return ServeSettings(checkpoint_dir=str(root), dit_dir=SMALL_DIT_DIR, v2w_dit_dir=SMALL_V2W_DIT_DIR)


@pytest.fixture(scope="session")
def pipeline(small_settings):
    from cosmos_triton.pipeline import Text2WorldPipeline

    return Text2WorldPipeline.from_settings(small_settings)


@pytest.fixture(scope="session")
def v2w_pipeline(small_settings):
    from cosmos_triton.pipeline import Video2WorldPipeline

    return Video2WorldPipeline.from_settings(small_settings)


@pytest.fixture(scope="session")
def server(small_settings, tmp_path_factory) -> Iterator:
    from cosmos_triton.server import running_server

    log = Path(tmp_path_factory.mktemp("server")) / "tritonserver.log"
    with running_server(small_settings, log_file=log) as handle:
        yield handle
