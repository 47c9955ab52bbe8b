"""FieldSpec / FeatureSpec: what the encoders produced and the embedding layer needs to know.

A field lives on the user side or the item side and occupies one column (single-valued) or `max_len`
columns (multi-valued, a padded index list) of that side's feature matrix. Index 0 always means
unknown/padding and embeds to exactly zero. Field order is user fields, then item fields.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Iterable

SIDES = ("user", "item")


@dataclass(frozen=True)
class FieldSpec:
    name: str
    side: str  # "user" or "item"
    vocab_size: int  # number of indices including the reserved 0
    dim: int | None = None  # embedding dim; None -> the model's fm_dim
    multi_valued: bool = False
    max_len: int = 1  # columns taken in the side's feature matrix
    column: int = 0  # first column in the side's feature matrix
    is_id: bool = False  # the user id or item id field (NeuMF, MostPop use only these)
    shares: str | None = None  # embed with another field's table (history shares item_id's)
    pooling: str = "mean"  # multi-valued: the history encoder plugin that reads its values (mean, recency, ...)
    options: tuple[tuple[str, Any], ...] = ()  # that encoder's own options, as (name, value) pairs

    def __post_init__(self) -> None:
        if self.side not in SIDES:
            raise ValueError(f"field {self.name!r}: side must be one of {SIDES}, got {self.side!r}")
        if self.vocab_size < 2:
            raise ValueError(f"field {self.name!r}: vocab_size must count index 0 and >= 1 value")
        if self.max_len < 1 or (not self.multi_valued and self.max_len != 1):
            raise ValueError(f"field {self.name!r}: single-valued fields take exactly one column")
        if not isinstance(self.pooling, str) or not self.pooling:
            raise ValueError(f"field {self.name!r}: pooling must name a history encoder, got {self.pooling!r}")
        object.__setattr__(self, "options", tuple((str(k), v) for k, v in dict(self.options).items()))
        if self.shares is not None and not self.multi_valued:
            raise ValueError(f"field {self.name!r}: only a multi-valued field may share another's table")

    @property
    def columns(self) -> slice:
        return slice(self.column, self.column + self.max_len)


class FeatureSpec:
    """An ordered, validated set of fields (user side first)."""

    def __init__(self, fields: Iterable[FieldSpec]):
        fields = list(fields)
        self.fields: tuple[FieldSpec, ...] = tuple(
            [f for f in fields if f.side == "user"] + [f for f in fields if f.side == "item"]
        )
        names = [f.name for f in self.fields]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"duplicate field names: {sorted(dupes)}")
        for f in self.fields:
            if f.shares is not None:
                owner = next((o for o in self.fields if o.name == f.shares), None)
                if owner is None or owner.multi_valued or owner.shares is not None:
                    raise ValueError(f"field {f.name!r} shares {f.shares!r}, which is not a single-valued field "
                                     "with a table of its own")
                if f.vocab_size != owner.vocab_size:
                    raise ValueError(f"field {f.name!r} shares {f.shares!r} but has vocab_size {f.vocab_size}, "
                                     f"not {owner.vocab_size}")

    @classmethod
    def build(cls, fields: Iterable[dict]) -> "FeatureSpec":
        """Lay fields out column by column per side: [{'name', 'side', 'vocab_size', ...}, ...]."""
        next_col = {side: 0 for side in SIDES}
        laid = []
        for f in fields:
            spec = FieldSpec(**{**f, "column": next_col[f["side"]]})
            next_col[spec.side] += spec.max_len
            laid.append(spec)
        return cls(laid)

    def __len__(self) -> int:
        return len(self.fields)

    def __iter__(self):
        return iter(self.fields)

    def __repr__(self) -> str:
        return f"FeatureSpec({[f.name for f in self.fields]})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FeatureSpec) and self.fields == other.fields

    def side(self, side: str) -> tuple[FieldSpec, ...]:
        return tuple(f for f in self.fields if f.side == side)

    def num_columns(self, side: str) -> int:
        return max((f.column + f.max_len for f in self.side(side)), default=0)

    def field(self, name: str) -> FieldSpec:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"no field {name!r}; fields: {[f.name for f in self.fields]}")

    def id_field(self, side: str) -> FieldSpec:
        ids = [f for f in self.side(side) if f.is_id]
        if not ids:
            raise KeyError(f"no {side} id field in {self!r}")
        return ids[0]

    def select(self, names: Iterable[str]) -> "FeatureSpec":
        """A sub-spec; fields keep their columns, so it reads the same feature matrices."""
        return FeatureSpec(self.field(n) for n in names)

    def with_dims(self, dims: dict[str, int]) -> "FeatureSpec":
        return FeatureSpec(replace(f, dim=dims.get(f.name, f.dim)) for f in self.fields)

    def to_list(self) -> list[dict]:
        return [asdict(f) for f in self.fields]

    @classmethod
    def from_list(cls, rows: list[dict]) -> "FeatureSpec":
        return cls(FieldSpec(**r) for r in rows)
