"""Ranking metrics against small hand-computed examples."""

import math

import numpy as np
import pytest

from hybridrec.training.metrics import top_k, user_metrics

SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.5])


def test_hand_computed_without_exclusions():
    m = user_metrics(SCORES, np.array([1, 4]), k=2)
    assert list(m.top) == [0, 1]
    assert m.precision == pytest.approx(0.5)
    assert m.recall == pytest.approx(0.5)
    # DCG = 1/log2(3); IDCG = 1 + 1/log2(3)
    assert m.ndcg == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    # pairs (pos, neg): 0.8 beats 0.7 and 0.6; 0.5 beats none -> 2 of 6
    assert m.auc == pytest.approx(2 / 6)


def test_excluded_items_are_neither_ranked_nor_negatives():
    m = user_metrics(SCORES, np.array([1, 4]), k=2, excluded=np.array([0]))
    assert list(m.top) == [1, 2]
    assert m.precision == pytest.approx(0.5)
    assert m.ndcg == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert m.auc == pytest.approx(2 / 4)


def test_perfect_ranking():
    m = user_metrics(SCORES, np.array([0, 1]), k=2)
    assert (m.precision, m.recall, m.ndcg, m.auc) == (1.0, 1.0, pytest.approx(1.0), 1.0)


def test_ties_count_one_half_in_auc():
    m = user_metrics(np.zeros(6), np.array([2]), k=3)
    assert m.auc == pytest.approx(0.5)


def test_precision_divides_by_k_even_when_fewer_positives():
    m = user_metrics(SCORES, np.array([0]), k=5)
    assert m.precision == pytest.approx(1 / 5)
    assert m.recall == pytest.approx(1.0)
    assert m.ndcg == pytest.approx(1.0)


def test_top_k_is_deterministic_on_ties_and_skips_excluded():
    scores = np.array([1.0, 3.0, 3.0, 3.0, 2.0])
    assert list(top_k(scores, 2)) == [1, 2]
    assert list(top_k(scores, 2, excluded=np.array([1]))) == [2, 3]
    assert list(top_k(scores, 10, excluded=np.array([0, 1]))) == [2, 3, 4]
    assert top_k(scores, 0).size == 0
