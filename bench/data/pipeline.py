"""prepare(): DatasetFrames -> InteractionData (encoded features, temporal split, CSR positives).

Users are the users with at least one positive and items (the candidate pool) the items with at least
one positive, in any split, as in the reference notebook: an item nobody liked is never a candidate.
Every feature column is encoded by its encoder plugin, fitted on the kept users' / items' rows. The id
field's encoder orders the rows: row r of a side's feature matrix is the entity whose id encodes to r,
so encoding a raw id *is* finding its row (row 0: all zeros, unknown).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

import registry
from bench.config import MIN_INTERACTIONS, THRESHOLD
from bench.data.audit import leakage_audit
from bench.data.encoding import Encoder
from bench.data.features import SIDES, FeatureSpec, FieldSpec
from bench.data.split import CUTOFFS, SPLITS, TEST, TRAIN, VAL, global_split, temporal_split
from bench.data.types import ColumnSchema, Csr, DatasetFrames, InteractionData, Pairs, UserStates, unique_ints

ID_COLUMNS = {"user": "user_id", "item": "item_id"}


@dataclass
class _EncodedSide:
    """One side's fitted encoders and the codes of its kept rows, ordered by the id field (row 1..n)."""

    columns: list[ColumnSchema]
    encoders: dict[str, Encoder]
    codes: dict[str, np.ndarray]  # field name -> (n, max_len) codes of rows 1..n
    raw_ids: np.ndarray  # raw id of rows 1..n


def prepare(frames: DatasetFrames, threshold: float = THRESHOLD, min_interactions: int = MIN_INTERACTIONS,
            field_dims: dict[str, int] | None = None, history: int = 0, history_encoder: str = "mean",
            history_options: dict[str, Any] | None = None, history_order: str = "time", split: str = "loo",
            split_options: dict[str, Any] | None = None) -> InteractionData:
    """Encode, split and index a dataset; see the module docstring for which users and items are kept.

    `split`: "loo", temporal leave-one-out (`bench.data.split.temporal_split`), or "global", two cutoffs on one
    timeline (`global_split`, `split_options` val / test); either way the leakage audit is in `info["audit"]`.

    `history` > 0 adds the user-side field `history`: the user's last `history` positives strictly earlier
    than the row's interaction, most recent last (with `history_order="shuffled"`: `history` of them in a
    seeded random order), embedded with the item id's table and read by the history encoder plugin
    `history_encoder` with its `history_options` (see `UserStates`, `bench.nn.history`)."""
    if isinstance(history, bool) or not isinstance(history, (int, np.integer)) or history < 0:
        raise ValueError(f"--history: expected a number of positives >= 0, got {history!r}")
    _check_schema(frames)
    if split == "loo":
        positives, summary = temporal_split(frames.interactions, threshold, min_interactions), {}
    elif split == "global":
        unknown = sorted(set(split_options or {}) - set(CUTOFFS))
        if unknown:
            raise ValueError(f"--split-opt: unknown option(s) {unknown}; --split global takes {', '.join(CUTOFFS)}")
        positives, summary = global_split(frames.interactions, threshold, **{**CUTOFFS, **(split_options or {})})
    else:
        raise ValueError(f"--split {split!r}: expected one of {', '.join(SPLITS)}")
    sides = {
        side: _encode_side(frames, side, np.asarray(pd.unique(positives[ID_COLUMNS[side]])))
        for side in SIDES
    }
    spec = _build_spec(sides, field_dims or {})
    user_enc = sides["user"].encoders[ID_COLUMNS["user"]]
    item_enc = sides["item"].encoders[ID_COLUMNS["item"]]
    n_users, n_items = user_enc.vocab_size, item_enc.vocab_size

    users = user_enc.transform(positives["user_id"])
    items = item_enc.transform(positives["item_id"])
    part = positives["split"].to_numpy()
    times = positives["timestamp"].to_numpy()
    states, state_of = user_states(users, items, times, n_users, history, history_order)
    if history:
        history = states.length = _history_window(states, history)
    train, val, test = (Pairs(users[part == s], items[part == s], state_of[part == s]) for s in (TRAIN, VAL, TEST))
    masks = None if split == "loo" else {  # what each target's user had shown us: every earlier positive
        name: Csr.from_pairs(rows.users[r], i, n_users, n_items) for name, rows in (("val", val), ("test", test))
        for r, i in [states.known(rows.states)]}
    audit = {name: leakage_audit(users[part == TRAIN], times[part == TRAIN], users[part == name],
                                 times[part == name], frames.seconds_per_unit) for name in (VAL, TEST)}

    all_users = user_enc.transform(frames.interactions["user_id"])
    all_items = item_enc.transform(frames.interactions["item_id"])
    kept = (all_users > 0) & (all_items > 0)
    seen_csr = Csr.from_pairs(all_users[kept], all_items[kept], n_users, n_items)

    ratings = pd.to_numeric(frames.interactions["rating"])
    info = {
        "encoders": {name: enc for s in sides.values() for name, enc in s.encoders.items()},
        "threshold": threshold,
        "min_interactions": min_interactions,
        "rating_range": (float(ratings.min()), float(ratings.max())),
        "n_interactions": len(frames.interactions),
        "n_positives": len(positives),
        "n_users": n_users - 1,
        "n_items": n_items - 1,
        "n_users_eval": len(test),
        "n_train": len(train),
        "n_val": len(val),
        "n_test": len(test),
        "n_seen": seen_csr.nnz,
        "n_states": len(states) - 1,
        "history": history,
        "history_order": history_order,
        "split": split,
        **summary,  # global: the cutoffs, and per split the users evaluated and the cold ones left out
        "audit": audit,
        "checksum": _checksum(users, items, times, part),
    }
    user_features = _feature_matrix(spec, "user", sides["user"])
    if history:
        spec = FeatureSpec([*spec.fields, FieldSpec(
            "history", "user", n_items, multi_valued=True, max_len=history, column=user_features.shape[1],
            shares=ID_COLUMNS["item"], pooling=history_encoder, options=tuple((history_options or {}).items()))])
    return InteractionData(
        spec=spec,
        user_features=user_features,
        item_features=_feature_matrix(spec, "item", sides["item"]),
        train=train, val=val, test=test,
        train_csr=Csr.from_pairs(train.users, train.items, n_users, n_items),
        seen_csr=seen_csr,
        user_ids=np.concatenate([[None], sides["user"].raw_ids.astype(object)]),
        item_ids=np.concatenate([[None], sides["item"].raw_ids.astype(object)]),
        name=frames.name,
        info=info,
        states=states,
        masks=masks,
    )


def _checksum(users: np.ndarray, items: np.ndarray, timestamps: np.ndarray, split: np.ndarray) -> str:
    """A short fingerprint of the positives and their split, recorded with each run: a re-run on data that
    differs (another file, another version) is noticed. Timestamps are hashed as float64 where that is exact
    (the fingerprints recorded so far stay valid), and as their exact integers where one is beyond
    2**53, so two nanosecond timestamps 100 ns apart never give the same fingerprint."""
    import hashlib

    digest = hashlib.sha256()
    timestamps = np.asarray(timestamps)
    if timestamps.dtype.kind in "iu" and ((timestamps > 2 ** 53) | (timestamps < -2 ** 53)).any():
        digest.update(f"exact {timestamps.dtype.str} timestamps".encode())
    else:
        timestamps = timestamps.astype(np.float64)
    for array in (users, items, timestamps, np.asarray(split == TRAIN)):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def _history_window(states: UserStates, history: int) -> int:
    """The history length actually used: `history`, or the longest past any row has when that is shorter
    (a window longer than every user's past only pads, and `--history 1000000` would allocate a million
    columns per row); said in a warning."""
    longest = int((states.end - states.begin[states.user]).max()) if len(states) > 1 else 0
    if history <= max(longest, 1):
        return history
    import warnings

    from bench.data.readers import DataWarning

    warnings.warn(f"--history {history}: the longest past of any row holds {longest} earlier positives; "
                  f"using a window of {max(longest, 1)}", DataWarning, stacklevel=3)
    return max(longest, 1)


def user_states(users: np.ndarray, items: np.ndarray, timestamps: np.ndarray, n_users: int,
                length: int, order: str = "time") -> tuple[UserStates, np.ndarray]:
    """The states of positives sorted by (user, time, file position), and each positive's state row.

    A positive's history ends (exclusive) at the first positive of its user in its second: positives in the
    same second are simultaneous, whatever their file order, so none is history to another. One state per
    distinct (user, end); state 0 is padding. Vectorised: one pass of run starts, one sort."""
    n = len(users)
    first = np.arange(n)
    new_user = np.ones(n, dtype=bool)
    new_user[1:] = users[1:] != users[:-1]
    new_moment = new_user.copy()
    new_moment[1:] |= timestamps[1:] != timestamps[:-1]
    end = np.maximum.accumulate(np.where(new_moment, first, 0))
    begin = np.zeros(n_users, dtype=np.int64)
    begin[users[new_user]] = first[new_user]
    keys, state_of = unique_ints(users.astype(np.int64) * (n + 1) + end, return_inverse=True)
    state_user, state_end = np.divmod(keys, n + 1)
    states = UserStates(
        user=torch.from_numpy(np.concatenate([[0], state_user]).astype(np.int64)),
        end=torch.from_numpy(np.concatenate([[0], state_end]).astype(np.int64)),
        sequence=torch.from_numpy(np.asarray(items, dtype=np.int64)),
        begin=torch.from_numpy(begin),
        length=int(length),
        order_keys=None if order == "time" else shuffle_keys(n),
    )
    return states, state_of.astype(np.int64) + 1


SHUFFLE_SEED = 0  # --history-order shuffled: the same random order in every run, whatever its seed


def shuffle_keys(n: int) -> torch.Tensor:
    """A fixed random key per positive: a shuffled window holds the strictly-earlier positives with the smallest
    keys, in key order (`UserStates.history`)."""
    if n and n > 0:
        return torch.rand(n, generator=torch.Generator().manual_seed(SHUFFLE_SEED))
    return torch.zeros(0)


def _check_schema(frames: DatasetFrames) -> None:
    """Each side has exactly one id column, named user_id / item_id, and every listed column exists."""
    for column in frames.schema:
        if column.side not in SIDES:
            raise ValueError(f"{frames.name}: schema column {column.name!r} has side {column.side!r}, "
                             f"expected one of {SIDES}")
    for side in SIDES:
        ids = [c.name for c in frames.schema if c.side == side and c.is_id]
        if ids != [ID_COLUMNS[side]]:
            raise ValueError(f"{frames.name}: the schema must mark exactly one {side} column as is_id, named "
                             f"{ID_COLUMNS[side]!r}; found {ids}")
        frame = frames.users if side == "user" else frames.items
        missing = [c.name for c in frames.schema if c.side == side and c.name not in frame.columns]
        if missing:
            raise ValueError(f"{frames.name}: the {side}s frame lacks schema columns {missing}; "
                             f"it has {list(frame.columns)}")


def _create_encoder(column: ColumnSchema) -> Encoder:
    try:
        return registry.create("encoder", column.encoder, **column.options)
    except TypeError as exc:
        raise TypeError(f"column {column.name!r}: encoder {column.encoder!r} rejects options "
                        f"{column.options}: {exc}") from exc


def _encode_side(frames: DatasetFrames, side: str, kept_ids: np.ndarray) -> _EncodedSide:
    """Fit every encoder of one side on the kept rows; order the rows by their id code."""
    id_column = ID_COLUMNS[side]
    frame = frames.users if side == "user" else frames.items
    duplicated = frame[id_column].duplicated()
    if duplicated.any():
        raise ValueError(f"{frames.name}: the {side}s frame repeats {id_column} "
                         f"{frame[id_column][duplicated].iloc[0]!r}; ids must be unique")
    position = pd.Index(frame[id_column]).get_indexer(kept_ids)
    if (position < 0).any():
        absent = kept_ids[position < 0]
        raise ValueError(f"{frames.name}: {len(absent)} {id_column}s of the interactions are absent from the "
                         f"{side}s frame, e.g. {absent[:5].tolist()}")
    rows = frame.iloc[position].reset_index(drop=True)
    columns = [c for c in frames.schema if c.side == side]
    encoders, codes = {}, {}
    for column in columns:
        encoder = _create_encoder(column)
        encoded = np.asarray(encoder.fit_transform(rows[column.name]), dtype=np.int64)
        codes[column.name] = encoded.reshape(len(rows), -1)
        encoders[column.name] = encoder
        if encoder.vocab_size < 2:
            raise ValueError(f"{frames.name}: column {column.name!r} ({column.encoder}) has no value among the "
                             f"kept {side}s; drop it from the schema")
    id_codes = codes[id_column][:, 0]
    if not np.array_equal(np.sort(id_codes), np.arange(1, len(rows) + 1)):
        raise ValueError(f"{frames.name}: encoder {encoders[id_column].name!r} of {id_column} must give each of "
                         f"the {len(rows)} kept {side}s a distinct index in 1..{len(rows)} (use 'label')")
    order = np.argsort(id_codes)
    return _EncodedSide(
        columns=columns,
        encoders=encoders,
        codes={name: c[order] for name, c in codes.items()},
        raw_ids=rows[id_column].to_numpy()[order],
    )


def _build_spec(sides: dict[str, _EncodedSide], field_dims: dict[str, int]) -> FeatureSpec:
    names = [c.name for s in sides.values() for c in s.columns]
    unknown = sorted(set(field_dims) - set(names))
    if unknown:
        raise ValueError(f"field_dims names unknown fields {unknown}; fields are {names}")
    fields = []
    for side, encoded in sides.items():
        for column in encoded.columns:
            encoder = encoded.encoders[column.name]
            fields.append({
                "name": column.name, "side": side, "vocab_size": encoder.vocab_size,
                "dim": field_dims.get(column.name), "multi_valued": encoder.multi_valued,
                "max_len": encoded.codes[column.name].shape[1], "is_id": column.is_id,
            })
    return FeatureSpec.build(fields)


def _feature_matrix(spec: FeatureSpec, side: str, encoded: _EncodedSide) -> torch.Tensor:
    """(n + 1, columns) int64; row 0 stays zero (unknown)."""
    n = len(encoded.raw_ids)
    matrix = np.zeros((n + 1, spec.num_columns(side)), dtype=np.int64)
    for field in spec.side(side):
        matrix[1:, field.columns] = encoded.codes[field.name]
    return torch.from_numpy(matrix)
