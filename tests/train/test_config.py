from __future__ import annotations

from pathlib import Path

import pytest

from imr_outcome.errors import InvalidInputError
from imr_outcome.model.settings import OFFLINE_MINILM, TransformerConfig
from imr_outcome.train.config import flatten, load_config, save_config

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_config_validates(path: Path) -> None:
    config = load_config(path)

    assert config.name == path.stem


def test_only_configs_that_run_an_encoder_state_a_precision() -> None:
    running = {
        path.stem for path in EXPERIMENTS.glob("*.yaml") if load_config(path).runs_an_encoder
    }

    assert running == {
        "bio_clinicalbert",
        "default",
        "frozen_minilm_lr",
        "frozen_mpnet_lr",
        "summary_mpnet_centred_joint_mtus",
        "summary_mpnet_centred_mtus",
        "summary_mpnet_stack",
        "summary_mpnet_stack_mtus",
    }


def test_default_config_is_the_offline_minilm() -> None:
    config = load_config(EXPERIMENTS / "default.yaml")

    assert isinstance(config.model, TransformerConfig)
    assert (config.model.kind, config.model.base_model) == ("transformer", OFFLINE_MINILM)
    assert config.explainer == "integrated_gradients"


def test_overrides_are_parsed_as_yaml_and_validated() -> None:
    config = load_config(
        EXPERIMENTS / "default.yaml",
        ["training.epochs=1.5", "training.windows_per_item=null", "data.split=dmhc"],
    )

    assert config.training.epochs == 1.5
    assert config.training.windows_per_item is None
    assert config.data.split == "dmhc"


def test_unknown_key_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  kind: transformer\n  layers: 3\n")

    with pytest.raises(InvalidInputError) as excinfo:
        load_config(path)

    assert excinfo.value.field == "config"
    assert excinfo.value.reason == "model.layers: Extra inputs are not permitted"


def test_contradictory_settings_are_rejected_with_the_flag_to_change() -> None:
    with pytest.raises(InvalidInputError, match=r"model\.stride \(200\) must be below half"):
        load_config(None, ["model.stride=200"])
    with pytest.raises(InvalidInputError, match=r"threshold\.cost_ratio is required"):
        load_config(None, ["threshold.objective=cost"])


def test_malformed_override_and_missing_file() -> None:
    with pytest.raises(InvalidInputError, match=r"expected section\.field=value, got 'epochs'"):
        load_config(None, ["epochs"])
    with pytest.raises(InvalidInputError, match=r"nope\.yaml does not exist"):
        load_config(Path("nope.yaml"))


def test_flatten_and_save_round_trip(tmp_path: Path) -> None:
    config = load_config(EXPERIMENTS / "tfidf_lr.yaml")

    flat = flatten(config)
    save_config(config, tmp_path / "config.yaml")

    assert flat["model.kind"] == "tfidf_lr"
    assert flat["training.windows_per_item"] == "1"
    assert all(isinstance(v, str) for v in flat.values())
    assert load_config(tmp_path / "config.yaml") == config


def test_an_explainer_that_does_not_fit_the_kind_names_both() -> None:
    with pytest.raises(InvalidInputError) as caught:
        load_config(EXPERIMENTS / "default.yaml", ["model=" + "{kind: tfidf_lr}"])

    assert "explainer 'integrated_gradients' does not fit model.kind 'tfidf_lr'" in str(
        caught.value
    )
    assert "['none', 'tfidf_coefficients']" in str(caught.value)


def test_each_kind_has_only_its_own_fields() -> None:
    with pytest.raises(InvalidInputError) as caught:
        load_config(EXPERIMENTS / "tfidf_lr.yaml", ["model.base_model=offline:minilm"])

    assert str(caught.value) == "config: model.base_model: Extra inputs are not permitted"


def test_the_window_check_does_not_fire_for_tfidf() -> None:
    config = load_config(EXPERIMENTS / "tfidf_lr.yaml")

    assert config.model.kind == "tfidf_lr"
    assert not hasattr(config.model, "stride")


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_configs_resolve_precision_per_machine(path: Path) -> None:
    assert load_config(path).training.precision == "auto"
