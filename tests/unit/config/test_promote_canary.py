"""Adding a canary variant to an experiment of a serve YAML (`tunelab retrain --promote`)."""

import pytest
import yaml

from tunelab.config.serve import load_serve_settings
from tunelab.config.serve_edit import add_canary
from tunelab.errors import ConfigError, UsageError

SERVE = """\
# production routing
models: [runs/base, runs/other]
port: 8123
experiments:
  - name: routing
    variants:
      - {name: control, model: base, weight: 3}
      - {name: treatment, model: other, weight: 1}
    unit: user
  - name: tone
    variants:
      - {name: a, model: base, weight: 1}
      - {name: b, model: other, weight: 1}
"""


@pytest.fixture
def serve_yaml(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text(SERVE)
    return path


def test_the_canary_gets_its_share_and_the_others_keep_their_ratio(serve_yaml):
    edit = add_canary(serve_yaml, "routing", "base-retrain", "/abs/runs/base-retrain", 0.1)
    assert edit.weights == {"control": 0.675, "treatment": 0.225, "base-retrain": 0.1}
    assert edit.model_added and edit.backup == serve_yaml.with_name("serve.yaml.bak")
    assert edit.backup.read_text() == SERVE  # comments are only in the backup
    data = yaml.safe_load(serve_yaml.read_text())
    assert data["models"] == ["runs/base", "runs/other", "/abs/runs/base-retrain"]
    assert data["port"] == 8123 and data["experiments"][0]["unit"] == "user"
    assert data["experiments"][1]["variants"] == [  # another experiment is left alone
        {"name": "a", "model": "base", "weight": 1}, {"name": "b", "model": "other", "weight": 1}]
    s = load_serve_settings(serve_yaml)
    variant = s.experiments[0].variants[-1]
    assert (variant.name, variant.model, variant.weight) == ("base-retrain", "base-retrain", 0.1)
    assert s.experiments[0].control_variant == "control"


def test_a_model_served_already_is_not_added_again(serve_yaml):
    edit = add_canary(serve_yaml, "tone", "other", "/x/other", 0.5)
    assert not edit.model_added
    assert yaml.safe_load(serve_yaml.read_text())["models"] == ["runs/base", "runs/other"]


def test_a_dry_run_writes_nothing(serve_yaml):
    add_canary(serve_yaml, "routing", "new", "/x/new", 0.2, dry_run=True)
    assert serve_yaml.read_text() == SERVE and not serve_yaml.with_name("serve.yaml.bak").exists()


def test_refusals_name_what_is_there(serve_yaml, tmp_path):
    with pytest.raises(UsageError, match=r"no experiment 'nope' \(experiments there: routing, tone\)"):
        add_canary(serve_yaml, "nope", "new", "/x/new", 0.1)
    with pytest.raises(UsageError, match="has a variant 'control' already"):
        add_canary(serve_yaml, "routing", "control", "/x/new", 0.1)
    for weight in (0, 1, 1.5, -0.1):
        with pytest.raises(UsageError, match="above 0 and below 1"):
            add_canary(serve_yaml, "routing", "new", "/x/new", weight)
    with pytest.raises(ConfigError, match="does not exist"):
        add_canary(tmp_path / "missing.yaml", "routing", "new", "/x/new", 0.1)
    (tmp_path / "none.yaml").write_text("models: [a]\n")
    with pytest.raises(UsageError, match="experiments there: none"):
        add_canary(tmp_path / "none.yaml", "routing", "new", "/x/new", 0.1)
    assert serve_yaml.read_text() == SERVE
