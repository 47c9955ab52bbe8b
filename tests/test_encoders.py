"""The label, multihot and bucket encoder plugins: index 0 = unknown, deterministic vocabularies, JSON round trip."""

import numpy as np
import pandas as pd
import pytest

import registry
from plugins.encoders.bucket import BucketEncoder
from plugins.encoders.label import LabelEncoder
from plugins.encoders.multihot import MultiHotEncoder


def test_entry_points_give_the_encoder_classes():
    for name, cls in [("label", LabelEncoder), ("multihot", MultiHotEncoder), ("bucket", BucketEncoder)]:
        assert registry.get("encoder", name) is cls
        assert cls.name == name


def test_label_sorted_indices_and_zero_for_unknown():
    enc = LabelEncoder().fit(pd.Series(["m", "f", "m", None, "x"]))
    assert enc.vocab_size == 4
    out = enc.transform(pd.Series(["f", "m", "x", "unseen", None]))
    assert out.dtype == np.int64
    assert out.tolist() == [1, 2, 3, 0, 0]


def test_label_mapping_does_not_depend_on_row_order():
    a = LabelEncoder().fit(pd.Series([30, 10, 20]))
    b = LabelEncoder().fit(pd.Series([20, 30, 10, 10]))
    probe = pd.Series([10, 20, 30])
    assert a.transform(probe).tolist() == b.transform(probe).tolist() == [1, 2, 3]


def test_label_round_trip(tmp_path):
    enc = LabelEncoder().fit(pd.Series([7, 3, 5]))
    enc.save(tmp_path / "label.json")
    back = LabelEncoder.load(tmp_path / "label.json")
    probe = pd.Series([3, 5, 7, 9])
    assert back.vocab_size == enc.vocab_size
    assert back.transform(probe).tolist() == enc.transform(probe).tolist() == [1, 2, 3, 0]


def test_load_rejects_a_file_of_another_encoder(tmp_path):
    LabelEncoder().fit(pd.Series(["a"])).save(tmp_path / "enc.json")
    with pytest.raises(ValueError, match="'label' encoder, not 'bucket'"):
        BucketEncoder.load(tmp_path / "enc.json")


def test_label_mixed_types_is_a_clear_error():
    with pytest.raises(TypeError, match="cannot be sorted"):
        LabelEncoder().fit(pd.Series(["a", 1], name="zip", dtype=object))


@pytest.mark.parametrize("make", [LabelEncoder, MultiHotEncoder, lambda: BucketEncoder(quantiles=4)])
def test_using_an_unfitted_encoder_is_an_error(make):
    encoder = make()
    for use in (lambda: encoder.transform(pd.Series(["1"])), lambda: encoder.vocab_size, encoder.state):
        with pytest.raises(RuntimeError, match=rf"{encoder.name} encoder: call fit\(\) before"):
            use()


def test_multihot_vocab_over_values_and_zero_padding():
    enc = MultiHotEncoder().fit(pd.Series(["Drama|Action", "", "Comedy|Action|Drama", None]))
    assert enc.vocab_size == 4  # Action, Comedy, Drama + 0
    assert enc.max_len == 3
    out = enc.transform(pd.Series(["Action|Drama", "", None, "Comedy|Action|Drama", "Drama"]))
    assert out.dtype == np.int64
    assert out.tolist() == [[1, 3, 0], [0, 0, 0], [0, 0, 0], [2, 1, 3], [3, 0, 0]]


def test_multihot_drops_unseen_and_repeated_values_and_cuts_at_max_len():
    enc = MultiHotEncoder(sep=",", max_len=2).fit(pd.Series(["a,b,c"]))
    out = enc.transform(pd.Series(["zz,c,c", "c,b,a", "a|b"]))
    # unseen 'zz' and the repeated 'c' leave no slot; third row has no ',' so 'a|b' is one unseen value
    assert out.tolist() == [[3, 0], [3, 2], [0, 0]]


def test_multihot_round_trip_keeps_sep_and_max_len(tmp_path):
    enc = MultiHotEncoder(sep=";").fit(pd.Series(["x;y", "y"]))
    enc.save(tmp_path / "m.json")
    back = MultiHotEncoder.load(tmp_path / "m.json")
    assert (back.sep, back.max_len, back.vocab_size) == (";", 2, 3)
    probe = pd.Series(["y;x", "x", ""])
    np.testing.assert_array_equal(back.transform(probe), enc.transform(probe))


def test_multihot_bad_options():
    with pytest.raises(ValueError, match="sep"):
        MultiHotEncoder(sep="")
    with pytest.raises(ValueError, match="max_len"):
        MultiHotEncoder(max_len=0)


def test_bucket_bins_are_right_open_and_out_of_range_is_zero():
    enc = BucketEncoder(bins=[0, 18, 25, 100]).fit(pd.Series([30]))
    assert enc.vocab_size == 4
    out = enc.transform(pd.Series([-1, 0, 17.5, 18, 24, 25, 99, 100, None]))
    assert out.tolist() == [0, 1, 1, 2, 2, 3, 3, 0, 0]


def test_bucket_quantiles_fit_equal_count_buckets_with_open_ends():
    enc = BucketEncoder(quantiles=4).fit(pd.Series(np.arange(1, 101)))
    assert enc.vocab_size == 5
    counts = np.bincount(enc.transform(pd.Series(np.arange(1, 101))), minlength=5)
    assert counts.tolist() == [0, 25, 25, 25, 25]
    assert enc.transform(pd.Series([-1000, 1000, np.nan])).tolist() == [1, 4, 0]


def test_bucket_quantiles_merge_repeated_edges():
    # quartile edges 1, 1, 1, 1.25, 3 -> distinct edges 1, 1.25, 3 -> two buckets
    enc = BucketEncoder(quantiles=4).fit(pd.Series([1, 1, 1, 1, 1, 1, 2, 3]))
    assert enc.vocab_size == 3
    assert enc.transform(pd.Series([1, 2, 3])).tolist() == [1, 2, 2]


def test_bucket_round_trip_both_modes(tmp_path):
    probe = pd.Series([3, 20, 40, 70, None])
    for enc in (BucketEncoder(bins=[0, 18, 50]), BucketEncoder(quantiles=3)):
        enc.fit(pd.Series([5, 10, 20, 30, 40, 60, 80]))
        enc.save(tmp_path / "b.json")
        back = BucketEncoder.load(tmp_path / "b.json")
        np.testing.assert_array_equal(back.transform(probe), enc.transform(probe))


def test_bucket_rejects_non_numbers_and_bad_options():
    with pytest.raises(ValueError, match="non-numeric value 'abc'"):
        BucketEncoder(bins=[0, 10]).fit(pd.Series([1])).transform(pd.Series([1, "abc"], name="age"))
    with pytest.raises(ValueError, match="exactly one"):
        BucketEncoder()
    with pytest.raises(ValueError, match="exactly one"):
        BucketEncoder(bins=[0, 1], quantiles=2)
    with pytest.raises(ValueError, match="strictly increasing"):
        BucketEncoder(bins=[0, 10, 10])
    with pytest.raises(ValueError, match=">= 2 distinct"):
        BucketEncoder(quantiles=3).fit(pd.Series([4, 4, 4]))
