"""The committed model_repository is exactly what the one source of truth generates, and its wiring is closed."""

from cosmos_triton.repository import REPOSITORY_DIR, STAGES, TEXT2WORLD_OUTPUTS, TEXT2WORLD_STEPS, render_configs
from cosmos_triton.settings import ServeSettings


def test_committed_configs_are_generated():
    for name, text in render_configs(ServeSettings()).items():
        assert (REPOSITORY_DIR / name / "config.pbtxt").read_text() == text, (
            f"{name}/config.pbtxt is stale: run `make repository`")
        assert (REPOSITORY_DIR / name / "1").is_dir()
    committed = {p.parent.name for p in REPOSITORY_DIR.glob("*/config.pbtxt")}
    assert committed == set(render_configs(ServeSettings()))


def test_every_stage_has_code_and_the_ensemble_wiring_is_closed():
    stages = {s.name: s for s in STAGES}
    for name in stages:
        assert (REPOSITORY_DIR / name / "1" / "model.py").is_file()
    available = {io.name for io in stages["text2world_request"].inputs}
    for step in TEXT2WORLD_STEPS:
        stage = stages[step.model]
        assert set(step.input_map) == {io.name for io in stage.inputs}, step.model
        assert set(step.input_map.values()) <= available, (step.model, set(step.input_map.values()) - available)
        assert set(step.output_map) <= {io.name for io in stage.outputs}, step.model
        available |= set(step.output_map.values())
    assert {io.name for io in TEXT2WORLD_OUTPUTS} <= available
