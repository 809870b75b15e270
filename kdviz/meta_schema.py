"""The declared schema of a run's ``meta.json`` (pydantic): a run whose metadata breaks it is refused at open with a
`CorruptRunError` that lists every bad field, instead of failing later inside a view with a raw ``KeyError``.

Only the fields kdviz reads are declared; other keys (``capture``, ``extra``, ``created``, a model's
``feature_shapes``…) are kept as written.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, ValidationError, model_validator

from kdviz.errors import CorruptRunError


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ModelMeta(_Open):
    """One model of the pair."""

    name: str = Field(min_length=1)
    n_params: NonNegativeInt | None = None
    attention_layers: list[str] = []
    heads: list[NonNegativeInt] = []
    feature_names: list[str] = []
    spatial_names: list[str] = []
    token_stats: list[str] = []
    accuracy: float | None = Field(default=None, ge=0, le=1)
    perplexity: float | None = Field(default=None, ge=1)
    token_grid: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _heads_per_layer(self) -> ModelMeta:
        if self.heads and len(self.heads) != len(self.attention_layers):
            raise ValueError(f"heads lists {len(self.heads)} layers but attention_layers {len(self.attention_layers)}")
        return self


class LayerPair(BaseModel):
    student: NonNegativeInt
    teacher: NonNegativeInt


class LayerMap(_Open):
    pairs: list[LayerPair]


class RunMeta(_Open):
    """The whole ``meta.json``."""

    schema_version: int
    task: Literal["classification", "tokens"]
    n_samples: NonNegativeInt
    n_classes: NonNegativeInt | None = None
    teacher: ModelMeta
    student: ModelMeta
    layer_map: LayerMap
    class_names: list[str] | None = None
    tokens: list[list[str]] | None = None
    vocab: list[str] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> RunMeta:
        if self.class_names is not None and self.n_classes is not None and len(self.class_names) != self.n_classes:
            raise ValueError(f"class_names has {len(self.class_names)} names for {self.n_classes} classes")
        if self.tokens is not None and len(self.tokens) != self.n_samples:
            raise ValueError(f"tokens has {len(self.tokens)} rows for {self.n_samples} samples")
        return self


def validate_meta(meta: dict[str, Any], where: str) -> dict[str, Any]:
    """``meta`` when it follows `RunMeta`, else a `CorruptRunError` naming every bad field and the fix."""
    try:
        RunMeta.model_validate(meta)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'meta'}: {e['msg']}" for e in exc.errors()[:8])
        raise CorruptRunError(f"{where} does not follow the run schema ({problems}); the run is damaged or was not "
                              "written by kdviz: capture it again") from exc
    return meta
