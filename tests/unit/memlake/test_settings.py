import pytest
import yaml

from memlake.core import config
from memlake.core.errors import MemlakeError
from memlake.core.settings import Settings


@pytest.mark.parametrize("preset", config.presets())
def test_every_preset_is_valid(preset):
    Settings.model_validate(config.load(preset))


def test_a_bad_value_fails_at_load_naming_its_key():
    with pytest.raises(MemlakeError, match=r"config key mitigation\.tinymem\.artifact: .*'noize'"):
        config.load("tiny", ["mitigation.tinymem.artifact=noize"])
    with pytest.raises(
        MemlakeError, match=r"config key corpus\.planted\.noise\.rate: .*less than or equal to 1"
    ):
        config.load("tiny", ["corpus.planted.noise.rate=2"])
    with pytest.raises(MemlakeError, match=r"config key ingest\.batch_size: .*greater than or equal to 1"):
        config.load("tiny", ["ingest.batch_size=0"])


def test_an_unknown_key_in_a_file_fails_naming_it(tmp_path):
    cfg = config.load("tiny")
    cfg["suite"]["modles"] = cfg["suite"]["models"]
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(
        MemlakeError, match=r"mine\.yaml: config key suite\.modles: Extra inputs are not permitted"
    ):
        config.load(path)


def test_load_keeps_the_yaml_values():
    """Validation does not coerce: the plain mapping the stages get (and its fingerprint) is the
    YAML's, so manifests and the suite cache keys stay the same."""
    path = config.PRESETS_DIR / "small.yaml"
    assert config.load("small") == yaml.safe_load(path.read_text())


def test_sections_are_frozen():
    s = Settings.model_validate(config.load("tiny"))
    with pytest.raises(ValueError, match="frozen"):
        s.ingest.batch_size = 3
