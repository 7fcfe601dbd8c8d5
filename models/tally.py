"""Counting ballots: pure functions over the canonical ballot list, no database.

A ballot is one line of the canonical list: the weight it carries in area (hundredths of m²,
0 when the poll is not area-weighted) and its choices (option numbers from 1). The same list is
what `/export` gives and what the tally digest covers, so anyone can re-tally a poll from its
export and compare the digest (README, "Voting: the canonical ballot list").

Decision rules use exact fractions. "At least" (以上) includes the boundary; "more than"
(过半数) does not. Area and headcount are checked separately.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction


class Method(StrEnum):
    single = "single"  # one option
    multiple = "multiple"  # up to k options
    yesno = "yesno"  # options 1 yes, 2 no, 3 abstain
    ranking = "ranking"  # distinct 1st, 2nd, 3rd… weighted by position (5-3-1 by default)


class Rule(StrEnum):
    none = "none"  # a consultation: totals only
    custom = "custom"  # a quorum and an approval threshold chosen by the lead
    art278_ordinary = "art278_ordinary"  # Civil Code Art. 278, ordinary matter
    art278_major = "art278_major"  # Civil Code Art. 278, the listed major matters


YES, NO, ABSTAIN = 1, 2, 3
DEFAULT_WEIGHTS = (5, 3, 1)


@dataclass(frozen=True)
class Threshold:
    """`at least fraction` (strict=False) or `more than fraction` (strict=True)."""

    fraction: Fraction
    strict: bool = False

    def met(self, num: int, den: int) -> bool:
        if den <= 0:
            return False
        value = Fraction(num, den)
        return value > self.fraction if self.strict else value >= self.fraction


ART278_PARTICIPATION = Threshold(Fraction(2, 3))
ART278_ORDINARY = Threshold(Fraction(1, 2), strict=True)
ART278_MAJOR = Threshold(Fraction(3, 4))


@dataclass(frozen=True)
class DecisionRule:
    kind: Rule
    quorum: Threshold | None = None
    approval: Threshold | None = None
    area: bool = False  # also check by area (headcount is always checked)

    @classmethod
    def of(
        cls,
        kind: Rule | str,
        *,
        quorum: Fraction | None = None,
        threshold: Fraction | None = None,
        strict: bool = False,
        area: bool = False,
    ) -> DecisionRule:
        kind = Rule(kind)
        if kind is Rule.art278_ordinary:
            return cls(kind, ART278_PARTICIPATION, ART278_ORDINARY, area=True)
        if kind is Rule.art278_major:
            return cls(kind, ART278_PARTICIPATION, ART278_MAJOR, area=True)
        if kind is Rule.custom:
            return cls(
                kind,
                Threshold(quorum) if quorum else None,
                Threshold(threshold if threshold is not None else Fraction(1, 2), strict),
                area=area,
            )
        return cls(Rule.none)


@dataclass(frozen=True)
class Ballot:
    """One ballot, or `heads` identical ones (same choices) holding `area` together."""

    area: int
    choices: tuple[int, ...]
    heads: int = 1


@dataclass(frozen=True)
class Electorate:
    """Who could take part: headcount, total area, and households counted with no area."""

    heads: int
    area: int
    missing_area: int = 0


@dataclass(frozen=True)
class Check:
    stage: str  # "participation" or "approval"
    measure: str  # "heads" or "area"
    num: int
    den: int
    threshold: Threshold
    passed: bool


@dataclass(frozen=True)
class Verdict:
    rule: Rule
    checks: tuple[Check, ...]
    passed: bool
    tied: bool = False  # no single leading option, so nothing was approved


@dataclass
class OptionTotal:
    number: int
    heads: int = 0  # ballots (ranking: points by headcount)
    area: int = 0  # area of those ballots (ranking: points × area)
    places: list[int] = field(default_factory=list)  # ranking: ballots per place, by headcount
    places_area: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Result:
    options: tuple[OptionTotal, ...]  # in option order
    ranked: tuple[int, ...]  # option numbers, best first
    leader: int | None  # None when the top is tied after the tie-break
    tied: tuple[int, ...]  # the options sharing first place when leader is None
    tie_break: str | None  # "firsts" or "seconds" when that decided the lead
    heads: int  # ballots
    area: int
    electorate: Electorate
    verdict: Verdict | None
    by_area: bool


# --- the canonical list ----------------------------------------------------------------


def encode(method: Method | str, choices: Sequence[int]) -> str:
    """Choices as text: ranking `3>1>2` (in order of preference), multiple `1+4` (ascending)."""
    if Method(method) is Method.ranking:
        return ">".join(str(c) for c in choices)
    return "+".join(str(c) for c in sorted(choices))


def decode(text: str) -> tuple[int, ...]:
    if not text:
        return ()
    sep = ">" if ">" in text else "+"
    return tuple(int(part) for part in text.split(sep))


def canonical_text(
    *,
    poll_id: int,
    method: Method | str,
    weights: Sequence[int],
    options: int,
    area: bool,
    lines: Iterable[str],
) -> str:
    """The text the digest covers: a header line, then `area,choices` lines in byte order."""
    header = (
        f"linli-ballots/1 poll={poll_id} method={Method(method).value} "
        f"weights={'-'.join(str(w) for w in weights)} options={options} "
        f"area={'yes' if area else 'no'}"
    )
    body = sorted(lines)  # the lines are ASCII: code-point order is byte order
    return "\n".join([header, *body]) + "\n"


def line(ballot: Ballot, method: Method | str) -> str:
    return f"{ballot.area},{encode(method, ballot.choices)}"


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --- counting --------------------------------------------------------------------------


def count(
    *,
    method: Method | str,
    options: int,
    ballots: Iterable[Ballot],
    electorate: Electorate,
    rule: DecisionRule,
    weights: Sequence[int] = DEFAULT_WEIGHTS,
    by_area: bool = False,
) -> Result:
    """Totals per option, the order (with the ranking tie-break), and the rule's verdict."""
    method = Method(method)
    places = len(weights) if method is Method.ranking else 0
    heads_of = [0] * (options + 1)
    area_of = [0] * (options + 1)
    place_heads = [[0] * places for _ in range(options + 1)]
    place_area = [[0] * places for _ in range(options + 1)]
    kept: list[Ballot] = []
    total_heads = total_area = 0
    for ballot in ballots:
        kept.append(ballot)
        n, area = ballot.heads, ballot.area
        total_heads += n
        total_area += area
        if method is Method.ranking:
            for place, option in enumerate(ballot.choices):
                w = weights[place]
                heads_of[option] += w * n
                area_of[option] += w * area
                place_heads[option][place] += n
                place_area[option][place] += area
        else:
            for option in ballot.choices:
                heads_of[option] += n
                area_of[option] += area
    totals = tuple(
        OptionTotal(n, heads_of[n], area_of[n], place_heads[n], place_area[n])
        for n in range(1, options + 1)
    )
    ranked, leader, tied, tie_break = _order(method, totals, by_area)
    verdict = _verdict(method, rule, kept, leader, total_heads, total_area, electorate)
    return Result(
        options=totals,
        ranked=ranked,
        leader=leader,
        tied=tied,
        tie_break=tie_break,
        heads=total_heads,
        area=total_area,
        electorate=electorate,
        verdict=verdict,
        by_area=by_area,
    )


def _order(
    method: Method, totals: tuple[OptionTotal, ...], by_area: bool
) -> tuple[tuple[int, ...], int | None, tuple[int, ...], str | None]:
    def score(t: OptionTotal) -> int:
        return t.area if by_area else t.heads

    def place(t: OptionTotal, i: int) -> int:
        row = t.places_area if by_area else t.places
        return row[i] if i < len(row) else 0

    if method is Method.ranking:
        # Points, then more first places, then more second places; then a declared tie.
        def key(t: OptionTotal) -> tuple[int, ...]:
            return (score(t), place(t, 0), place(t, 1))
    else:

        def key(t: OptionTotal) -> tuple[int, ...]:
            return (score(t),)

    candidates = [t for t in totals if not (method is Method.yesno and t.number == ABSTAIN)]
    ordered = sorted(totals, key=lambda t: (tuple(-k for k in key(t)), t.number))
    ranked = tuple(t.number for t in ordered)
    if not candidates:
        return ranked, None, (), None
    best = max(key(t) for t in candidates)
    top = [t for t in candidates if key(t) == best]
    if len(top) > 1 or best[0] == 0:
        return ranked, None, tuple(t.number for t in top), None
    leader = top[0]
    tie_break = None
    if method is Method.ranking:
        same_points = [t for t in candidates if score(t) == score(leader)]
        if len(same_points) > 1:
            same_firsts = [t for t in same_points if place(t, 0) == place(leader, 0)]
            tie_break = "seconds" if len(same_firsts) > 1 else "firsts"
    return ranked, leader.number, (), tie_break


def approves(method: Method, choices: tuple[int, ...], leader: int | None) -> bool:
    """Whether a ballot approves the matter: yes; or the leading option (ranking: in 1st place)."""
    if method is Method.yesno:
        return choices == (YES,)
    if leader is None or not choices:
        return False
    if method is Method.ranking:
        return choices[0] == leader
    return leader in choices


def _verdict(
    method: Method,
    rule: DecisionRule,
    ballots: list[Ballot],
    leader: int | None,
    heads: int,
    area: int,
    electorate: Electorate,
) -> Verdict | None:
    if rule.kind is Rule.none:
        return None
    checks: list[Check] = []
    measures = ("heads", "area") if rule.area else ("heads",)
    if rule.quorum is not None:
        for measure in measures:
            num, den = (heads, electorate.heads) if measure == "heads" else (area, electorate.area)
            checks.append(
                Check("participation", measure, num, den, rule.quorum, rule.quorum.met(num, den))
            )
    yes_heads = yes_area = 0
    for ballot in ballots:
        if approves(method, ballot.choices, leader):
            yes_heads += ballot.heads
            yes_area += ballot.area
    assert rule.approval is not None
    for measure in measures:
        num, den = (yes_heads, heads) if measure == "heads" else (yes_area, area)
        checks.append(
            Check("approval", measure, num, den, rule.approval, rule.approval.met(num, den))
        )
    tied = method is not Method.yesno and leader is None
    return Verdict(rule.kind, tuple(checks), all(c.passed for c in checks) and not tied, tied)


def parse_fraction(text: str) -> Fraction:
    """`2/3`, `66.5%`, `0.75`: a fraction in [0, 1]; ValueError when not a number."""
    text = text.strip().replace("％", "%").replace(" ", "")
    return Fraction(text[:-1]) / 100 if text.endswith("%") else Fraction(text)
