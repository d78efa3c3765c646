"""The committed model_repository is exactly what the one source of truth generates, and its wiring is closed."""

import pytest

from cosmos_triton.server.repository import (
    ENSEMBLES,
    REPOSITORY_DIR,
    STAGES,
    TEXT2WORLD_OUTPUTS,
    TEXT2WORLD_STEPS,
    VIDEO2WORLD_STEPS,
    render_configs,
)
from cosmos_triton.settings import ServeSettings


def test_committed_configs_are_generated():
    configs = render_configs(ServeSettings(), tuple(ENSEMBLES))
    for name, text in configs.items():
        assert (REPOSITORY_DIR / name / "config.pbtxt").read_text() == text, (
            f"{name}/config.pbtxt is stale: run `make repository`")
        assert (REPOSITORY_DIR / name / "1").is_dir()
    assert {p.parent.name for p in REPOSITORY_DIR.glob("*/config.pbtxt")} == set(configs)


@pytest.mark.parametrize("steps", [TEXT2WORLD_STEPS, VIDEO2WORLD_STEPS], ids=["text2world", "video2world"])
def test_every_stage_has_code_and_the_ensemble_wiring_is_closed(steps):
    stages = {s.name: s for s in STAGES}
    first = stages[steps[0].model]
    available = {io.name for io in first.inputs}
    produced, consumed = set(), set()
    for step in steps:
        consumed |= set(step.input_map.values())
        produced |= set(step.output_map.values())
        stage = stages[step.model]
        assert (REPOSITORY_DIR / step.model / "1" / "model.py").is_file()
        required = {io.name for io in stage.inputs if not io.optional}
        assert required <= set(step.input_map) <= {io.name for io in stage.inputs}, step.model
        assert set(step.input_map.values()) <= available, (step.model, set(step.input_map.values()) - available)
        assert set(step.output_map) <= {io.name for io in stage.outputs}, step.model
        available |= set(step.output_map.values())
    assert {io.name for io in TEXT2WORLD_OUTPUTS} <= available
    # Triton refuses an ensemble with a tensor nobody reads
    assert produced - consumed <= {io.name for io in TEXT2WORLD_OUTPUTS}, produced - consumed


def test_an_entry_point_without_its_checkpoint_is_not_rendered(tmp_path):
    settings = ServeSettings(checkpoint_dir=str(tmp_path))
    (tmp_path / settings.dit_dir).mkdir()
    from cosmos_triton.server.repository import served_ensembles

    assert served_ensembles(settings) == ("text2world",)
    assert "video2world" not in render_configs(settings, served_ensembles(settings))
    assert "dit_step_v2w" not in render_configs(settings, served_ensembles(settings))
