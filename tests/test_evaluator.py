"""The evaluator's protocols on a hand-built dataset, with models whose scores are a fixed table."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.config import EvalConfig
from bench.data.eval_negatives import sample_eval_negatives
from bench.data.features import FeatureSpec
from bench.data.types import Csr, InteractionData, Pairs
from bench.eval.evaluator import EvalResult, evaluate
from bench.eval.metrics import metric_names
from bench.nn.model import FittedModel, RankingModel

N_USERS, N_ITEMS = 4, 25  # rows 1..3 are users, rows 1..24 the item pool; row 0 is padding
TRAIN = {1: [1, 2, 3], 2: [6, 7], 3: [10, 11, 12]}
VAL = {1: 4, 2: 8, 3: 13}
TEST = {1: 5, 2: 9, 3: 12}  # user 3's test item is also one of their training items (a duplicate)
DISTRACTORS = {1: [20, 21], 2: [20, 22], 3: [21, 23]}


def make_data() -> InteractionData:
    spec = FeatureSpec.build([
        {"name": "user_id", "side": "user", "vocab_size": N_USERS, "is_id": True},
        {"name": "item_id", "side": "item", "vocab_size": N_ITEMS, "is_id": True},
    ])
    train = Pairs(np.array([u for u, items in TRAIN.items() for _ in items]),
                  np.array([i for items in TRAIN.values() for i in items]))
    val = Pairs(np.array(list(VAL)), np.array(list(VAL.values())))
    test = Pairs(np.array(list(TEST)), np.array(list(TEST.values())))
    seen_users = np.concatenate([train.users, val.users, test.users])
    seen_items = np.concatenate([train.items, val.items, test.items])
    return InteractionData(
        spec=spec,
        user_features=torch.arange(N_USERS).view(-1, 1),
        item_features=torch.arange(N_ITEMS).view(-1, 1),
        train=train, val=val, test=test,
        train_csr=Csr.from_pairs(train.users, train.items, N_USERS, N_ITEMS),
        seen_csr=Csr.from_pairs(seen_users, seen_items, N_USERS, N_ITEMS),
        user_ids=np.arange(N_USERS), item_ids=np.arange(N_ITEMS), name="tiny",
    )


class TableModel(RankingModel):
    """Score of (user row, item row) read from a fixed table; records what it was asked."""

    def __init__(self, spec: FeatureSpec, table: torch.Tensor):
        super().__init__(spec)
        self.register_buffer("table", table)
        self.calls: list[dict] = []

    def _record(self, user_x: torch.Tensor, item_x: torch.Tensor) -> None:
        self.calls.append({"users": user_x[:, 0].clone(), "items": item_x[:, 0].clone(),
                           "training": self.training, "inference": torch.is_inference_mode_enabled()})

    def forward(self, user_x: torch.Tensor, item_x: torch.Tensor) -> torch.Tensor:
        self._record(user_x, item_x)
        return self.table[user_x[:, 0], item_x[:, 0]]

    def score_all(self, user_x: torch.Tensor, item_x: torch.Tensor) -> torch.Tensor:
        self._record(user_x, item_x)
        return self.table[user_x[:, 0]][:, item_x[:, 0]]


def table(train: float, val: float, test: float, distractor: float = 70.0) -> torch.Tensor:
    """Per-user scores; the padding row scores highest of all, other items 0."""
    t = torch.zeros(N_USERS, N_ITEMS)
    t[:, 0] = 1000.0
    for u, items in TRAIN.items():
        t[u, items] = train
        t[u, DISTRACTORS[u]] = distractor
        t[u, VAL[u]] = val
        t[u, TEST[u]] = test
    return t


def candidates_full(user: int, split: str) -> int:
    """Independent count: pool items minus known ones, the held-out item put back."""
    known = set(TRAIN[user]) | ({VAL[user]} if split == "test" else set())
    held_out = (TEST if split == "test" else VAL)[user]
    return (N_ITEMS - 1) - len(known - {held_out})


def reciprocal_ranks(result: EvalResult) -> list[float]:
    return pytest.approx(result.per_user["MRR"].tolist())


def test_full_test_masks_train_and_validation_items():
    data = make_data()
    # train 100 > val 90 > two distractors 70 > test 60; padding row 1000
    result = evaluate(TableModel(data.spec, table(100, 90, 60)), data, split="test", config=EvalConfig(ks=(1, 3)))
    # only the two distractors outrank the answer: the validation item and training items are masked
    assert reciprocal_ranks(result) == [1 / 3, 1 / 3, 1 / 3]
    assert result.per_user["HR@3"].tolist() == [1.0] * 3
    assert result.per_user["HR@1"].tolist() == [0.0] * 3


def test_full_validation_masks_train_only_so_the_test_item_competes():
    data = make_data()
    result = evaluate(TableModel(data.spec, table(100, 90, 95)), data, split="val")
    # the (future) test item outranks the val item; user 3's test item is also a training item: masked
    assert reciprocal_ranks(result) == [1 / 2, 1 / 2, 1.0]
    result = evaluate(TableModel(data.spec, table(100, 90, 60)), data, split="val")
    assert reciprocal_ranks(result) == [1.0] * 3


def test_held_out_item_stays_a_candidate_even_when_also_in_train():
    data = make_data()
    result = evaluate(TableModel(data.spec, table(100, 90, 60)), data, split="test", config=EvalConfig(ks=(1,)))
    user3 = list(result.users).index(3)
    assert result.per_user["MRR"][user3] == pytest.approx(1 / 3)  # item 12 was ranked, not masked away
    expected = np.mean([candidates_full(u, "test") for u in TEST])
    assert result.n_candidates == pytest.approx(expected)
    assert result.n_candidates == pytest.approx((20 + 21 + 21) / 3)


def test_constant_model_hr_is_k_over_each_users_candidates():
    data = make_data()
    result = evaluate(TableModel(data.spec, torch.zeros(N_USERS, N_ITEMS)), data, split="test",
                      config=EvalConfig(ks=(5, 10)))
    for pos, user in enumerate(result.users):
        n = candidates_full(int(user), "test")
        assert result.per_user["HR@10"][pos] == pytest.approx(10 / n)
        assert result.per_user["HR@5"][pos] == pytest.approx(5 / n)
    pessimistic = evaluate(TableModel(data.spec, torch.zeros(N_USERS, N_ITEMS)), data, split="test",
                           config=EvalConfig(ks=(10,), ties="pessimistic"))
    assert pessimistic.metrics["HR@10"] == 0.0


def test_chunking_does_not_change_results():
    data = make_data()
    scores = torch.randint(0, 4, (N_USERS, N_ITEMS), generator=torch.Generator().manual_seed(0)).float()
    for protocol in ("full", "sampled"):
        one = evaluate(TableModel(data.spec, scores), data, split="test",
                       config=EvalConfig(protocol=protocol, eval_negatives=7),
                       batch_users=1)
        auto = evaluate(TableModel(data.spec, scores), data, split="test",
                        config=EvalConfig(protocol=protocol, eval_negatives=7))
        for name in auto.per_user:
            np.testing.assert_array_equal(one.per_user[name], auto.per_user[name])
    model = TableModel(data.spec, scores)
    evaluate(model, data, split="test", batch_users=2)
    assert [len(c["users"]) for c in model.calls] == [2, 1]


class FittedTable(FittedModel):
    """A fitted model whose score of (state, item) is a fixed table; records the item rows it was asked."""

    def __init__(self, spec: FeatureSpec, table: torch.Tensor):
        super().__init__(spec)
        self.table, self.asked = table, []

    def score(self, states: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        self.asked.append(items.clone())
        return self.table[states][:, items]


def test_item_blocks_bound_a_row_wider_than_the_chunk_and_change_nothing(monkeypatch):
    """When one user's row of pairs would pass CHUNK_FLOATS, a trained model's items are scored in blocks:
    no call sees more than the budget, every item is scored once, and the ranks are those of one call."""
    import bench.eval.evaluator as evaluator

    data = make_data()
    scores = torch.randint(0, 4, (N_USERS, N_ITEMS), generator=torch.Generator().manual_seed(1)).float()
    whole = [evaluate(make(data.spec, scores), data, split=split) for make in (TableModel, FittedTable)
             for split in ("val", "test")]
    monkeypatch.setattr(evaluator, "CHUNK_FLOATS", 7 * len(data.spec) * 16)  # 7 pairs of F * D floats
    for make, expected in zip((TableModel, TableModel, FittedTable, FittedTable), whole, strict=True):
        model = make(data.spec, scores)
        blocked = evaluate(model, data, split=expected.split)
        for name in expected.per_user:
            np.testing.assert_array_equal(blocked.per_user[name], expected.per_user[name])
        if make is TableModel:
            widths = [len(c["items"]) for c in model.calls]
            assert max(widths) == 7 and sum(widths) == N_ITEMS * len(expected.users)
        else:  # a fitted model's x_u is a whole row whatever the block: it scores whole rows
            assert all(torch.equal(a, torch.arange(N_ITEMS)) for a in model.asked)


def test_model_scores_in_eval_and_inference_mode_and_mode_is_restored():
    data = make_data()
    model = TableModel(data.spec, table(100, 90, 60))
    model.train()
    evaluate(model, data, split="val")
    evaluate(model, data, split="val", config=EvalConfig(protocol="sampled", eval_negatives=3))
    assert model.training
    assert all(not c["training"] and c["inference"] for c in model.calls)
    model.eval()
    evaluate(model, data, split="val")
    assert not model.training


def test_sampled_protocol_ranks_against_unseen_negatives():
    data = make_data()
    n = 6
    scores = torch.arange(N_ITEMS, dtype=torch.float32).repeat(N_USERS, 1)  # score = item row
    model = TableModel(data.spec, scores)
    result = evaluate(model, data, split="test", config=EvalConfig(protocol="sampled", eval_negatives=n), seed=5)
    assert result.n_candidates == n + 1
    assert result.num_negatives == n
    users = torch.cat([c["users"] for c in model.calls]).view(len(TEST), n + 1)
    items = torch.cat([c["items"] for c in model.calls]).view(len(TEST), n + 1)
    assert (users == torch.tensor(list(TEST)).view(-1, 1)).all()
    assert items[:, 0].tolist() == list(TEST.values())
    negatives = items[:, 1:].numpy()
    assert not data.seen_csr.contains(np.repeat(list(TEST), n).reshape(-1, n), negatives).any()
    np.testing.assert_array_equal(negatives, sample_eval_negatives(data, np.array(list(TEST)), n=n, seed=5))
    # score = item row, so the answer's rank is the number of negatives with a larger row
    greater = (negatives > np.array(list(TEST.values()))[:, None]).sum(axis=1)
    np.testing.assert_allclose(result.per_user["MRR"], 1 / (greater + 1))


def test_sampled_protocol_is_deterministic_by_seed_and_fair_to_ties():
    data = make_data()
    model = TableModel(data.spec, torch.rand(N_USERS, N_ITEMS, generator=torch.Generator().manual_seed(0)))
    a = evaluate(model, data, split="val", config=EvalConfig(protocol="sampled", eval_negatives=10), seed=1)
    b = evaluate(model, data, split="val", config=EvalConfig(protocol="sampled", eval_negatives=10), seed=1)
    assert a.metrics == b.metrics
    constant = evaluate(TableModel(data.spec, torch.ones(N_USERS, N_ITEMS)), data, split="val",
                        config=EvalConfig(protocol="sampled", eval_negatives=10, ks=(1, 5)))
    assert constant.metrics["HR@1"] == pytest.approx(1 / 11)
    assert constant.metrics["HR@5"] == pytest.approx(5 / 11)


def test_eval_result_fields():
    data = make_data()
    result = evaluate(TableModel(data.spec, table(100, 90, 60)), data, split="test",
                      config=EvalConfig(ks=(10, 5), ties="optimistic"))
    assert isinstance(result, EvalResult)
    assert list(result.metrics) == metric_names((5, 10)) == list(result.per_user)
    assert all(isinstance(v, float) for v in result.metrics.values())
    assert result.metrics["MRR"] == pytest.approx(1 / 3)
    assert all(v.shape == (3,) and v.dtype == np.float64 for v in result.per_user.values())
    np.testing.assert_array_equal(result.users, data.test.users)
    assert (result.protocol, result.ties, result.split, result.num_negatives) == ("full", "optimistic", "test", None)
    assert result.seconds > 0 and result.users_per_s == pytest.approx(3 / result.seconds)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"split": "train"}, "split='train'; expected one of val, test"),
        ({"config": {"protocol": "loo"}}, "--protocol 'loo': expected one of full, sampled"),
        ({"config": {"ties": "random"}}, "--ties 'random': expected one of expected, pessimistic, optimistic"),
        ({"config": {"protocol": "sampled", "eval_negatives": 0}}, "--eval-negatives"),
        ({"batch_users": 0}, "batch_users"),
        ({"device": "meta"}, "model is on cpu"),
    ],
)
def test_bad_options_are_clear_errors(kwargs, message):
    data = make_data()
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        if "config" in kwargs:
            kwargs = {**kwargs, "config": EvalConfig(**kwargs["config"])}
        evaluate(TableModel(data.spec, table(100, 90, 60)), data, **kwargs)


def test_nan_scores_and_bad_held_out_rows_are_errors():
    data = make_data()
    scores = table(100, 90, 60)
    scores[2, 22] = float("nan")  # a candidate of user 2
    with pytest.raises(ValueError, match="NaN"):
        evaluate(TableModel(data.spec, scores), data, split="test")
    data.test = Pairs(np.array([1, 2]), np.array([5, N_ITEMS]))
    with pytest.raises(ValueError, match=r"data.test: item rows must be in 1..24"):
        evaluate(TableModel(data.spec, table(100, 90, 60)), data, split="test")


def test_a_bounded_validation_ranks_a_fixed_subset_and_test_always_ranks_everyone(small_data):
    from bench.config import ModelConfig
    from bench.runner import build_model

    model = build_model(ModelConfig("mostpop"), small_data)
    full = evaluate(model, small_data, split="val")
    some = evaluate(model, small_data, split="val", max_users=20)
    again = evaluate(model, small_data, split="val", max_users=20)
    assert len(some.users) == 20 and np.array_equal(some.users, again.users)
    assert set(some.users) < set(full.users) and np.array_equal(some.users, np.sort(some.users))
    for name, values in some.per_user.items():  # the same users' values as in the full ranking
        assert np.array_equal(values, full.per_user[name][np.searchsorted(full.users, some.users)])
    with pytest.raises(ValueError, match="test ranks every user"):
        evaluate(model, small_data, split="test", max_users=20)
