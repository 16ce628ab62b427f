"""One typed config per run, loaded from ``experiments/<name>.yaml``.

The sections the encoder kinds are built from (and ``training``) are in
:mod:`imr_outcome.model.settings`; the scikit-learn kinds' sections and the ones only
training reads are here. Every
field is documented and validated; unknown keys are errors. Command-line
overrides use dot-keys (``--set training.epochs=2``). The whole config is saved beside
the model and logged to MLflow as flat dot-keys (:func:`flatten`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from imr_outcome.errors import InvalidInputError
from imr_outcome.model.attribution import EXPLAINERS
from imr_outcome.model.defaults import IG_STEPS, MIN_REQUEST_CLINICAL_TERMS, MIN_SUMMARY_WORDS
from imr_outcome.model.settings import (
    OFFLINE_MINILM,
    FrozenEncoderConfig,
    LogRegC,
    Section,
    TrainingConfig,
    TransformerConfig,
)


class TfidfConfig(LogRegC):
    """TF-IDF n-grams + logistic regression (``kind: tfidf_lr``)."""

    kind: Literal["tfidf_lr"] = Field("tfidf_lr", description="Classifier kind.")
    segments: Literal["joint", "separate", "summary"] = Field(
        "joint",
        description="joint: one vocabulary over request + newline + summary (5x1 AUROC 0.69 "
        "on the DWC items); separate: one per segment, each row L2-normalized on its own, "
        "which lets a few request words outweigh the summary (0.55 5x5); summary: the "
        "summary alone, one score per letter (two_stage's letter stage).",
    )
    normalize: bool = Field(
        True,
        description="Normalise house style, date formats and the patient's sex before "
        "tokenizing (data.counterfactuals.normalize_text), so those rewrites cannot move P.",
    )
    ngram_max: int = Field(2, ge=1, le=3, description="Longest word n-gram.")
    ngram_max_grid: list[int] = Field(
        default_factory=list,
        description="Candidate longest n-grams (1-3) tuned with c_grid by inner grouped CV on "
        "the training rows (GridSearchCV over every pair, best mean fold AUROC); empty: "
        "use ngram_max.",
    )
    min_df: int = Field(2, ge=1, description="Minimum document frequency.")
    weighting: Literal["tfidf", "nb"] = Field(
        "tfidf",
        description="tfidf: sublinear TF-IDF, rows L2-normalized; nb: binary n-grams scaled "
        "by their naive Bayes log-count ratio (NB-LR, Wang & Manning 2012).",
    )
    guideline_prior: bool = Field(
        False,
        description="Add one feature: the request names a drug of a class the MTUS chronic "
        "pain guidelines recommend only short-term, second-line or not at all (8 CCR "
        "9792.24.2; data.drugs.MTUS_RESTRICTED); the regression fits its weight.",
    )


class TwoStageConfig(TfidfConfig):
    """The TF-IDF letter stage stacked with a request-structure prior (``kind: two_stage``,
    :mod:`imr_outcome.model.two_stage`)."""

    kind: Literal["two_stage"] = Field("two_stage", description="Classifier kind.")  # type: ignore[assignment]
    request_c: float = Field(
        1.0, gt=0, description="Inverse L2 regularization of the request-structure stage."
    )
    stack_folds: int = Field(
        3,
        ge=2,
        description="Inner folds (grouped by case summary) whose out-of-fold stage scores fit "
        "the stacking regression.",
    )
    item_stage: Literal["request_features", "encoder"] = Field(
        "request_features",
        description="request_features: request category, drug class, relation to surgery; "
        "encoder: frozen sentence embeddings of request + summary (item_encoder).",
    )
    item_encoder: str = Field(
        OFFLINE_MINILM,
        description="The encoder stage's frozen encoder: a hub name, a local path or "
        "'offline:minilm'.",
    )
    item_max_length: int = Field(
        256, ge=16, le=512, description="Encoder stage: tokens per window."
    )
    item_stride: int = Field(64, ge=0, description="Encoder stage: window overlap in tokens.")
    item_centring: Literal["training", "letter"] = Field(
        "training",
        description="training: the item stage's log-odds less the training items' mean, so it "
        "also moves letters; letter: less the mean over the items of the same letter (same "
        "case summary) scored together, so it only orders a letter's items and a lone item "
        "gets the letter stage's score.",
    )
    item_weight: Literal["conditional", "joint"] = Field(
        "conditional",
        description="How the item stage's stacking weight is fitted. conditional: on the "
        "training folds' letters with mixed outcomes alone (conditional logistic regression); "
        "joint: with the letter weight, over all training items, the item score centred on "
        "its letter (needs item_centring: letter).",
    )

    @model_validator(mode="after")
    def _item_stride_fits(self) -> TwoStageConfig:
        if self.item_stride >= self.item_max_length // 2:
            raise ValueError(
                f"model.item_stride ({self.item_stride}) must be below half of "
                f"model.item_max_length ({self.item_max_length}); lower --set model.item_stride"
            )
        if self.item_weight == "joint" and self.item_centring != "letter":
            raise ValueError(
                "model.item_weight 'joint' fits the item weight on scores centred on their "
                "letter; set model.item_centring to 'letter' (or item_weight to 'conditional')"
            )
        return self


class MetadataConfig(LogRegC):
    """One-hot pre-filing metadata + logistic regression (``kind: metadata_lr``)."""

    kind: Literal["metadata_lr"] = Field("metadata_lr", description="Classifier kind.")


class MajorityConfig(Section):
    """The training prior for every item (``kind: majority``)."""

    kind: Literal["majority"] = Field("majority", description="Classifier kind.")


#: The classifier and its hyper-parameters: one section per kind, chosen by ``kind``.
ModelConfig = Annotated[
    TransformerConfig
    | FrozenEncoderConfig
    | TfidfConfig
    | TwoStageConfig
    | MetadataConfig
    | MajorityConfig,
    Field(discriminator="kind"),
]

#: The model section of each kind.
KIND_SECTIONS: dict[str, type[Section]] = {
    "transformer": TransformerConfig,
    "frozen_encoder_lr": FrozenEncoderConfig,
    "tfidf_lr": TfidfConfig,
    "two_stage": TwoStageConfig,
    "metadata_lr": MetadataConfig,
    "majority": MajorityConfig,
}


class DataConfig(Section):
    """Where the training data comes from."""

    dataset_dir: Path = Field(
        Path("artifacts/dataset"), description="Dataset written by `imr-outcome data build`."
    )
    sources: list[Path] = Field(
        default_factory=lambda: [Path("../shared/data")],
        description="Sources to build the dataset from when dataset_dir has none.",
    )
    split: Literal["dwc", "dmhc"] = Field(
        "dwc", description="Which source split to train on (one prediction task each)."
    )
    holdout_fold: int = Field(
        0, ge=0, description="Fold held out for the single train/evaluate run (`train`)."
    )


class CalibrationConfig(Section):
    """Probability calibration fitted on out-of-fold scores of the training rows."""

    method: Literal["temperature", "platt", "isotonic", "none"] = Field(
        "temperature",
        description="Calibrator (temperature for transformers, platt/isotonic for linear models).",
    )


class ThresholdConfig(Section):
    """Decision threshold chosen on out-of-fold training scores (never on test data)."""

    objective: Literal["bayes", "f1", "cost"] = Field(
        "bayes",
        description="bayes: the fixed threshold 1 / (1 + cost_ratio) on calibrated P "
        "(Elkan 2001), stable across refits; f1: maximize Overturned F1; cost: minimize "
        "expected cost empirically.",
    )
    cost_ratio: float | None = Field(
        None,
        gt=0,
        description="objective=cost (required) or bayes (default 1): cost of a missed "
        "Overturned in false alarms.",
    )

    @model_validator(mode="after")
    def _cost_needs_ratio(self) -> ThresholdConfig:
        if self.objective == "cost" and self.cost_ratio is None:
            raise ValueError("threshold.cost_ratio is required with objective=cost")
        if self.objective == "f1" and self.cost_ratio is not None:
            raise ValueError("threshold.cost_ratio applies to objective=cost or bayes only")
        return self


class DecisionConfig(Section):
    """The band a person reads and when to abstain (see ``imr_outcome.model.decision``).

    Band edges are set on out-of-fold calibrated scores of the training rows: "likely
    overturned" starts at the lowest P whose band {p >= edge} holds at least
    ``min_band_items`` items with an Overturned share >= ``overturned_precision``;
    "likely upheld" ends at the highest P whose band {p <= edge} holds at least
    ``min_band_items`` items with an Upheld share >= ``upheld_precision``.
    """

    upheld_precision: float = Field(
        0.96,
        gt=0.5,
        le=1,
        description="Upheld share required in the 'likely upheld' band on out-of-fold "
        "training scores. 0.96 so that held-out items get >= 0.95: the edge is picked on the "
        "scores it is judged on, which flatters it (tfidf_lr_fixed_c 5x5: 0.95 gave 94.1% "
        "held out, 0.96 gave 95.2%).",
    )
    overturned_precision: float = Field(
        0.5, gt=0, le=1, description="Overturned share required in 'likely overturned'."
    )
    min_band_items: int = Field(
        10, ge=1, description="Fewest out-of-fold items a band edge may rest on."
    )
    min_summary_words: int = Field(
        MIN_SUMMARY_WORDS, ge=0, description="Fewer summary words: band 'insufficient information'."
    )
    min_clinical_terms: int = Field(
        MIN_REQUEST_CLINICAL_TERMS,
        ge=0,
        description="Fewer clinical terms in request + summary: 'insufficient information'.",
    )


class EvaluationConfig(Section):
    """Cross-validation and confidence intervals."""

    folds: int = Field(5, ge=2, description="Grouped, stratified CV folds.")
    repeats: int = Field(5, ge=1, description="CV repeats with different fold seeds.")
    bootstrap: int = Field(1000, ge=100, description="Bootstrap resamples (by letter) for CIs.")
    time_split: bool = Field(False, description="Also evaluate on the dataset's time split.")
    subgroups: list[str] = Field(
        default_factory=lambda: ["reviewer_specialty", "request_category", "patient_sex"],
        description="Columns to report subgroup metrics by.",
    )
    invariance: bool = Field(
        True,
        description="Report |dP(Overturned)| under counterfactual rewrites (house style, "
        "sex, dates) on the held-out items of the first repeat.",
    )
    faithfulness_items: int = Field(
        0,
        ge=0,
        description="ERASER faithfulness of the explainer on this many held-out items per "
        "fold of the first repeat (0: skip; costly for transformers).",
    )


class TrackingConfig(Section):
    """MLflow experiment and registry names."""

    experiment: str = Field("imr-outcome", description="MLflow experiment name.")
    model_name: str = Field("imr-outcome", description="Registered model name.")


class PromotionConfig(Section):
    """When a retrained challenger replaces the champion (``imr-outcome retrain``).

    Both models are scored on the same held-out new letters that neither trained on. The
    challenger passes when its AUROC is higher with a one-sided paired cluster-bootstrap
    p-value (resampling letters; Efron & Tibshirani 1993, ch. 16) below ``max_p_value``
    and its ECE (Naeini et al. 2015) is not worse by more than ``max_ece_increase``.
    """

    metric: Literal["auroc"] = Field(
        "auroc", description="Ranking metric the challenger must beat the champion on."
    )
    max_p_value: float = Field(
        0.05,
        gt=0,
        le=1,
        description="Largest one-sided paired-bootstrap p-value of 'challenger not better'.",
    )
    max_ece_increase: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Largest allowed ECE(challenger) - ECE(champion), a probability gap.",
    )
    bootstrap: int = Field(
        1000, ge=100, description="Paired bootstrap resamples (by letter) for the p-value."
    )
    eval_fraction: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="Share of the new letters held out for the comparison (the rest are "
        "added to the challenger's training data).",
    )


class RunConfig(Section):
    """A complete run: data, model, training, calibration, threshold, evaluation, tracking,
    and the promotion rule of retraining."""

    name: str = Field(..., min_length=1, description="Run name, usually the config file stem.")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=TransformerConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    threshold: ThresholdConfig = Field(default_factory=ThresholdConfig)
    decision: DecisionConfig = Field(default_factory=DecisionConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    explainer: Literal["integrated_gradients", "tfidf_coefficients", "none"] = Field(
        "integrated_gradients", description="Evidence method used at prediction time."
    )
    ig_steps: int = Field(
        IG_STEPS,
        ge=1,
        description="Integrated-gradients quadrature points, for serving (saved with the "
        "model) and for the faithfulness evaluation.",
    )

    @property
    def runs_an_encoder(self) -> bool:
        """Whether the model reads text through a pretrained encoder on torch (the
        transformer and frozen-encoder kinds, and a two-stage encoder item stage), so that
        ``training.precision`` matters."""
        model = self.model
        return model.kind in ("transformer", "frozen_encoder_lr") or (
            isinstance(model, TwoStageConfig) and model.item_stage == "encoder"
        )

    @model_validator(mode="before")
    @classmethod
    def _default_kind(cls, data: Any) -> Any:
        model = data.get("model") if isinstance(data, dict) else None
        if isinstance(model, dict) and "kind" not in model:
            data = {**data, "model": {**model, "kind": "transformer"}}
        return data

    @model_validator(mode="after")
    def _explainer_fits_kind(self) -> RunConfig:
        explainer = EXPLAINERS[self.explainer]
        if not explainer.fits(self.model.kind):
            fitting = sorted(n for n, e in EXPLAINERS.items() if e.fits(self.model.kind))
            raise ValueError(
                f"explainer {self.explainer!r} does not fit model.kind {self.model.kind!r}; "
                f"set explainer to one of {fitting}"
            )
        return self


def _set_dotted(tree: dict[str, Any], key: str, raw: str) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise InvalidInputError("--set", f"{key}: {part} is not a section")
        node = child
    node[parts[-1]] = yaml.safe_load(raw)


def load_config(path: Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Load and validate a run config.

    Args:
        path: a YAML file (``experiments/<name>.yaml``); None starts from the defaults.
        overrides: ``"section.field=value"`` strings; values are parsed as YAML.

    Returns:
        The validated :class:`RunConfig`. ``name`` defaults to the file stem.

    Raises:
        InvalidInputError: for a missing file, malformed YAML, a malformed override, an
            unknown key or an invalid value, naming the field and the problem.
    """
    tree: dict[str, Any] = {}
    if path is not None:
        if not path.is_file():
            raise InvalidInputError("config", f"{path} does not exist; see experiments/*.yaml")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise InvalidInputError("config", f"{path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise InvalidInputError("config", f"{path} must hold a mapping of sections")
        tree = loaded
        tree.setdefault("name", path.stem)
    tree.setdefault("name", "default")
    for override in overrides or []:
        key, sep, raw = override.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError("--set", f"expected section.field=value, got {override!r}")
        _set_dotted(tree, key.strip(), raw)
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as exc:
        problems = "; ".join(f"{_location(err['loc'])}: {err['msg']}" for err in exc.errors())
        raise InvalidInputError("config", problems) from exc


def _location(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as dot-keys, without the union tag pydantic inserts
    after ``model`` (``model.transformer.layers`` -> ``model.layers``)."""
    parts = [str(part) for part in loc]
    if len(parts) > 2 and parts[0] == "model" and parts[1] in KIND_SECTIONS:
        del parts[1]
    return ".".join(parts)


def flatten(config: RunConfig) -> dict[str, str]:
    """The config as flat dot-keys with string values, e.g. ``{"model.kind": "transformer"}``.

    Used for MLflow params (which are strings) and for display.
    """
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, child in value.items():
                walk(f"{prefix}.{key}" if prefix else key, child)
        else:
            flat[prefix] = str(value)

    walk("", config.model_dump(mode="json"))
    return flat


def save_config(config: RunConfig, path: Path) -> None:
    """Write the config as YAML (the same form :func:`load_config` reads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), encoding="utf-8"
    )
