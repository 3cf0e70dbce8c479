"""Cohen's kappa, Fleiss' kappa and Krippendorff's alpha (nominal), against published and hand values."""

from __future__ import annotations

import pytest

from quantmedic.judge.metrics import cohen_kappa, fleiss_kappa, krippendorff_alpha_nominal


def test_cohen_textbook_2x2():
    # Wikipedia's 50 applicants: yes/yes 20, A yes/B no 5, A no/B yes 10, no/no 15.
    # po = 35/50 = 0.7; A says yes 25/50 = 0.5, B 30/50 = 0.6; pe = 0.5*0.6 + 0.5*0.4 = 0.5
    # kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4
    a = ["y"] * 20 + ["y"] * 5 + ["n"] * 10 + ["n"] * 15
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)


def test_cohen_missing_pairs_are_dropped():
    # kept pairs: (1,1) (1,2) (2,2) (1,1): po = 3/4; A: 1x3 2x1, B: 1x2 2x2
    # pe = (3*2 + 1*2) / 16 = 0.5; kappa = (0.75 - 0.5) / 0.5 = 0.5
    assert cohen_kappa([1, 1, None, 2, 2, 1], [1, 2, 2, None, 2, 1]) == pytest.approx(0.5)


def test_cohen_edge_cases():
    assert cohen_kappa(["a", "b", "c"], ["a", "b", "c"]) == 1.0
    # po = 0, pe = (1*1 + 1*1)/4 = 0.5 -> (0 - 0.5)/0.5 = -1
    assert cohen_kappa(["x", "y"], ["y", "x"]) == -1.0
    # one rater constant: po = 0.5, pe = 4*2/16 = 0.5 -> 0
    assert cohen_kappa(["x"] * 4, ["x", "x", "y", "y"]) == 0.0
    assert cohen_kappa(["x"] * 3, ["x"] * 3) is None  # single category: pe = 1, undefined
    assert cohen_kappa([None, "a"], ["b", None]) is None  # nothing pairable
    assert cohen_kappa([], []) is None
    with pytest.raises(ValueError):
        cohen_kappa(["a"], ["a", "b"])


def _expand(counts_rows):
    return [[category for category, k in enumerate(row) for _ in range(k)] for row in counts_rows]


def test_fleiss_wikipedia_example():
    # 10 subjects, 14 raters, 5 categories; P = 0.380, Pe = 0.213, kappa = 0.210
    rows = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
            [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(_expand(rows)) == pytest.approx(0.20993, abs=5e-5)


def test_fleiss_unequal_raters_and_missing():
    # items [a,a,a] [a,b] [b,b,b] (the None dropped): P_i = 1, 0, 1 -> P = 2/3
    # totals a=4, b=4 -> Pe = 0.5; kappa = (2/3 - 1/2) / (1/2) = 1/3; [c] alone is skipped
    ratings = [["a", "a", "a"], ["a", "b"], ["b", "b", "b", None], ["c"], [None, None]]
    assert fleiss_kappa(ratings) == pytest.approx(1 / 3)


def test_fleiss_edge_cases():
    assert fleiss_kappa([["a", "a"], ["b", "b", "b"]]) == 1.0
    # P = 0; Pe = 0.5 -> -1
    assert fleiss_kappa([["a", "b"], ["b", "a"]]) == pytest.approx(-1.0)
    assert fleiss_kappa([["a", "a"], ["a", "a", "a"]]) is None  # single category
    assert fleiss_kappa([["a"], [None, "b"]]) is None  # nothing with two ratings
    assert fleiss_kappa([]) is None


def test_krippendorff_published_example():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 observers, 12 units,
    # nominal alpha = 0.743 (unit 12 has one value and is unpairable; n = 40 pairable values).
    N = None
    a = [1, 2, 3, 3, 2, 1, 4, 1, 2, N, N, N]
    b = [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, N, 3]
    c = [N, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, N]
    d = [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, N]
    assert krippendorff_alpha_nominal(list(zip(a, b, c, d))) == pytest.approx(0.743, abs=5e-4)


def test_krippendorff_by_hand_with_missing():
    # unit 1 [a,a]: o_aa += 2/1; unit 2 [a,b,b]: ordered pairs ab 2, ba 2, bb 2, each /(3-1)
    # -> o_ab += 1, o_ba += 1, o_bb += 1; unit 3 [b] unpairable; unit 4 [c,c]: o_cc += 2
    # n_a = 3, n_b = 2, n_c = 2, n = 7; sum_{c!=k} o = 2; sum_{c!=k} n_c n_k = 49 - 9 - 4 - 4 = 32
    # alpha = 1 - (7 - 1) * 2 / 32 = 0.625
    ratings = [["a", "a", None], ["a", "b", "b"], ["b", None, None], [None, "c", "c"]]
    assert krippendorff_alpha_nominal(ratings) == pytest.approx(0.625)


def test_krippendorff_edge_cases():
    assert krippendorff_alpha_nominal([["a", "a"], ["b", "b", None]]) == 1.0
    assert krippendorff_alpha_nominal([["a", "a"], ["a", "a"]]) is None  # single category
    assert krippendorff_alpha_nominal([["a", None], [None, "b"]]) is None  # nothing pairable
    assert krippendorff_alpha_nominal([]) is None
    # two coders, two units, total disagreement: n_a = n_b = 2, n = 4, sum o_{c!=k} = 4,
    # sum n_c n_k (c != k) = 16 - 8 = 8 -> alpha = 1 - 3 * 4 / 8 = -0.5
    assert krippendorff_alpha_nominal([["a", "b"], ["b", "a"]]) == pytest.approx(-0.5)
