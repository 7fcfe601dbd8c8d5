"""Counting on known ballots: positional weights, tie-breaks, Civil Code boundaries, the digest."""

from __future__ import annotations

import hashlib
from fractions import Fraction

import pytest

from models.tally import (
    ABSTAIN,
    NO,
    YES,
    Ballot,
    DecisionRule,
    Electorate,
    Method,
    Result,
    Rule,
    Threshold,
    canonical_text,
    count,
    encode,
    line,
    parse_fraction,
)

NONE = DecisionRule.of(Rule.none)


def ranking(
    *ballots: tuple[int, ...], weights: tuple[int, ...] = (5, 3, 1), options: int = 4
) -> Result:
    return count(
        method=Method.ranking,
        options=options,
        ballots=[Ballot(0, b) for b in ballots],
        electorate=Electorate(len(ballots), 0),
        rule=NONE,
        weights=weights,
    )


def test_531_points_and_places() -> None:
    result = ranking((1, 2, 3), (2, 1, 4), (1, 3, 2))
    points = {o.number: o.heads for o in result.options}
    assert points == {1: 5 + 3 + 5, 2: 3 + 5 + 1, 3: 1 + 3, 4: 1}
    assert result.options[0].places == [2, 1, 0]
    assert result.options[1].places == [1, 1, 1]
    assert result.ranked == (1, 2, 3, 4)
    assert result.leader == 1 and result.tie_break is None


def test_321_weights_change_the_winner() -> None:
    ballots = [(3, 2, 4), (3, 1, 4), (1, 2, 4), (2, 4, 1), (3, 4, 1), (4, 2, 1)]
    five = ranking(*ballots, options=4)
    three = ranking(*ballots, weights=(3, 2, 1), options=4)
    # 3 is first three times (5-3-1 rewards firsts); 4 is on every ballot (3-2-1 is flatter)
    assert {o.number: o.heads for o in five.options} == {1: 11, 2: 14, 3: 15, 4: 14}
    assert {o.number: o.heads for o in three.options} == {1: 8, 2: 9, 3: 9, 4: 10}
    assert five.leader == 3 and three.leader == 4


def points(result: Result) -> dict[int, int]:
    return {o.number: o.heads for o in result.options}


def test_531_equal_points_more_firsts_leads() -> None:
    # 1: 5+1+5 = 11 (2 firsts); 3: 3+5+3 = 11 (1 first); 2: 1+3+1 = 5
    result = ranking((1, 3, 2), (3, 2, 1), (1, 3, 2), options=3)
    assert points(result) == {1: 11, 2: 5, 3: 11}
    assert result.leader == 1 and result.tie_break == "firsts"
    assert result.ranked == (1, 3, 2)


def test_531_equal_points_and_firsts_more_seconds_leads() -> None:
    # 3: 5+3+5 = 13 (2 firsts, 1 second); 4: 5+1+5+1 = 13 (2 firsts, 0 seconds)
    result = ranking((4, 1, 2), (3, 2, 4), (4, 2, 1), (3, 2, 4), (1, 3, 4), options=4)
    assert points(result) == {1: 9, 2: 10, 3: 13, 4: 13}
    assert result.options[2].places == [2, 1, 0] and result.options[3].places == [2, 0, 3]
    assert result.leader == 3 and result.tie_break == "seconds"
    assert result.ranked == (3, 4, 2, 1)


def test_321_tally_and_tie_break() -> None:
    # 3-2-1: 1: 3+2 = 5 (1 first, 1 second); 2: 3+1+1 = 5 (1 first, 0 seconds)
    result = ranking((1, 4, 2), (2, 1, 3), (3, 4, 2), weights=(3, 2, 1), options=4)
    assert points(result) == {1: 5, 2: 5, 3: 4, 4: 4}
    assert result.leader == 1 and result.tie_break == "seconds"
    assert result.ranked == (1, 2, 3, 4)  # at 4 points, 3 (one first) before 4 (no first)


def test_equal_points_firsts_and_seconds_is_a_declared_tie() -> None:
    result = ranking((2, 3, 1), (3, 1, 2), (1, 2, 3), options=3)
    assert points(result) == {1: 9, 2: 9, 3: 9}
    assert result.leader is None and result.tied == (1, 2, 3) and result.tie_break is None


def test_fewer_options_than_places() -> None:
    result = ranking((2, 1), (1, 2), (2, 1), options=2)
    assert points(result) == {1: 3 + 5 + 3, 2: 5 + 3 + 5}
    assert result.leader == 2


def test_single_choice_tie_is_declared() -> None:
    result = count(
        method=Method.single,
        options=3,
        ballots=[Ballot(0, (1,)), Ballot(0, (2,))],
        electorate=Electorate(2, 0),
        rule=NONE,
    )
    assert result.leader is None and result.tied == (1, 2)


# --- Civil Code Art. 278 --------------------------------------------------------------


def yesno(votes: list[tuple[int, int]], electorate: Electorate, rule: Rule) -> Result:
    """votes: (area, choice)."""
    return count(
        method=Method.yesno,
        options=3,
        ballots=[Ballot(area, (choice,)) for area, choice in votes],
        electorate=electorate,
        rule=DecisionRule.of(rule),
        by_area=True,
    )


def passed(result: Result) -> bool:
    assert result.verdict is not None
    return result.verdict.passed


def checks(result: Result) -> dict[tuple[str, str], bool]:
    assert result.verdict is not None
    return {(c.stage, c.measure): c.passed for c in result.verdict.checks}


def test_participation_exactly_two_thirds_passes_one_fewer_fails() -> None:
    # 9 owners of 100 m² each; 6 take part (exactly 2/3 of heads and of area), all yes.
    e = Electorate(9, 900_00)
    six = yesno([(100_00, YES)] * 6, e, Rule.art278_ordinary)
    assert passed(six)
    assert checks(six)[("participation", "heads")] and checks(six)[("participation", "area")]
    five = yesno([(100_00, YES)] * 5, e, Rule.art278_ordinary)
    assert not passed(five)
    assert not checks(five)[("participation", "heads")]


def test_more_than_half_excludes_exactly_half() -> None:
    e = Electorate(6, 600)
    half = yesno([(100, YES)] * 2 + [(100, NO)] * 2, e, Rule.art278_ordinary)
    assert checks(half)[("participation", "heads")]
    assert not checks(half)[("approval", "heads")] and not checks(half)[("approval", "area")]
    assert not passed(half)
    more = yesno([(100, YES)] * 3 + [(100, NO)] * 1, e, Rule.art278_ordinary)
    assert passed(more)


def test_major_exactly_three_quarters_passes() -> None:
    e = Electorate(6, 600)
    exact = yesno([(100, YES)] * 3 + [(100, NO)], e, Rule.art278_major)
    assert passed(exact)
    below = yesno([(100, YES)] * 3 + [(100, NO), (100, ABSTAIN)], e, Rule.art278_major)
    assert not passed(below)  # 3/5 < 3/4; abstaining counts as taking part


def test_area_and_headcount_disagree_either_way() -> None:
    e = Electorate(6, 1000)
    # heads 3/4 yes, area 300/700 < 1/2: headcount passes, area fails
    heads_only = yesno([(100, YES)] * 3 + [(400, NO)], Electorate(4, 700), Rule.art278_ordinary)
    assert checks(heads_only)[("approval", "heads")]
    assert not checks(heads_only)[("approval", "area")]
    assert not passed(heads_only)
    # area 500/700 yes, heads 1/4: area passes, headcount fails
    area_only = yesno([(400, YES)] + [(100, NO)] * 3, Electorate(4, 700), Rule.art278_ordinary)
    assert checks(area_only)[("approval", "area")]
    assert not checks(area_only)[("approval", "heads")]
    assert not passed(area_only)
    # participation: 5 of 6 heads but 500/1000 area
    part = yesno([(100, YES)] * 5, e, Rule.art278_ordinary)
    assert checks(part)[("participation", "heads")] and not checks(part)[("participation", "area")]


def test_fractions_are_exact() -> None:
    # 2/3 of 3 * 10**18 + 1 units cannot be decided by floats; Fraction keeps it exact.
    big = 3 * 10**18
    assert Threshold(Fraction(2, 3)).met(2 * 10**18, big)
    assert not Threshold(Fraction(2, 3)).met(2 * 10**18 - 1, big)
    assert not Threshold(Fraction(1, 2), strict=True).met(big // 2, big)
    assert Threshold(Fraction(1, 2), strict=True).met(big // 2 + 1, big)


def test_custom_rule_quorum_and_threshold() -> None:
    rule = DecisionRule.of(Rule.custom, quorum=Fraction(1, 2), threshold=Fraction(3, 5))
    result = count(
        method=Method.single,
        options=2,
        ballots=[Ballot(0, (1,))] * 3 + [Ballot(0, (2,))] * 2,
        electorate=Electorate(10, 0),
        rule=rule,
    )
    assert result.verdict is not None and passed(result)  # 5/10 ≥ 1/2, 3/5 ≥ 3/5
    strict = DecisionRule.of(Rule.custom, quorum=None, threshold=Fraction(3, 5), strict=True)
    again = count(
        method=Method.single,
        options=2,
        ballots=[Ballot(0, (1,))] * 3 + [Ballot(0, (2,))] * 2,
        electorate=Electorate(10, 0),
        rule=strict,
    )
    assert again.verdict is not None and not passed(again)


def test_tied_lead_approves_nothing() -> None:
    rule = DecisionRule.of(Rule.custom, threshold=Fraction(0))
    result = count(
        method=Method.single,
        options=2,
        ballots=[Ballot(0, (1,)), Ballot(0, (2,))],
        electorate=Electorate(2, 0),
        rule=rule,
    )
    assert result.verdict is not None and result.verdict.tied and not passed(result)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2/3", Fraction(2, 3)),
        ("75%", Fraction(3, 4)),
        ("66.5％", Fraction(133, 200)),
        ("0.5", Fraction(1, 2)),
    ],
)
def test_parse_fraction(text: str, value: Fraction) -> None:
    assert parse_fraction(text) == value


def test_canonical_text_and_digest_do_not_depend_on_order() -> None:
    ballots = [Ballot(8950, (3, 1, 2)), Ballot(0, (1, 2, 3)), Ballot(12000, (2, 3, 1))]
    one = canonical_text(
        poll_id=7,
        method="ranking",
        weights=(5, 3, 1),
        options=3,
        area=True,
        lines=[line(b, "ranking") for b in ballots],
    )
    two = canonical_text(
        poll_id=7,
        method="ranking",
        weights=(5, 3, 1),
        options=3,
        area=True,
        lines=[line(b, "ranking") for b in reversed(ballots)],
    )
    assert one == two
    assert one.splitlines() == [
        "linli-ballots/1 poll=7 method=ranking weights=5-3-1 options=3 area=yes",
        "0,1>2>3",
        "12000,2>3>1",
        "8950,3>1>2",
    ]
    assert hashlib.sha256(one.encode()).hexdigest() == hashlib.sha256(two.encode()).hexdigest()
    assert encode("multiple", (4, 1)) == "1+4"
