"""`linli import FILE`: create or update a community's unit tree and households from a file.

Importing is idempotent and additive: the file says what must exist, and whatever already
matches is left alone. Nothing is ever deleted; a household that leaves the file stays in the
register. The whole file is checked before anything is written: if any row is wrong the import
raises ImportProblems, listing every problem with its line number, and writes nothing.

Identity: a community by its name; a unit by (community, parent, name); a household by
(building, flat). Names are compared after collapsing runs of whitespace, as people does.
A household's area and code are only ever set, never cleared: leaving them out keeps what is
stored. A household without a code gets a generated one when it is created.

YAML (.yaml, .yml), one community per file:

    community:
      name: 幸福里社区
      timezone: Asia/Shanghai     # optional; default Asia/Shanghai
      language: zh                # optional; zh or en, default zh
    units:                        # a tree; kinds: estate, grid, building, entrance, neighbourhood
      - kind: grid
        name: 第一网格
        children:
          - kind: building
            name: 3号楼
            children:
              - {kind: neighbourhood, name: 3-1小邻里}
    households:                   # unit: names from the root, '/'-separated
      - {unit: 第一网格/3号楼/3-1小邻里, flat: 3-1-101, area: 89.50, code: HX7K2MPA,
         owner: 王某 0417}
      - {unit: 第一网格/3号楼, flat: 3-2-501}

`community` may also be just the name. Timezone and language, when given, are applied to an
existing community too. Every unit a household names must be declared under `units`, and a
household must sit in a building or in a unit below one. Unit names may not contain '/'.
YAML aliases (*name) are refused: a register is easier to check when every row is spelled out.

CSV (.csv), UTF-8 with or without a byte-order mark, header on line 1:

    community,grid,building,neighbourhood,flat,area,code,owner
    幸福里社区,第一网格,3号楼,3-1小邻里,3-1-101,89.50,HX7K2MPA,王某 0417
    幸福里社区,,7号楼,,7-1-101,,,开发商

Each row is one household; a row with an empty flat only creates its units. Units are created
grid → building → neighbourhood; grid and neighbourhood may be empty (a building without a grid
sits at the root). community, building and flat columns are required; grid, neighbourhood, area
and code may be left out of the header. A CSV file may name several communities; they are
created with the default timezone and language, and existing ones keep theirs.

`owner` (optional) records who owns the flat, for owners' votes (Civil Code Art. 278): flats
with the same owner text count as one owner, and `developer` (or 开发商) marks the developer's
unsold flats, which count as one owner together. Leaving it out keeps what is stored.

Areas are exact decimals in m² with at most two decimals. Codes are letters and digits
(spaces and dashes are dropped, letters upper-cased), 6 to 16 characters, unique across all
communities.
"""

from __future__ import annotations

import csv
import functools
import io
import zoneinfo
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import yaml
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from yaml.composer import ComposerError

from models import people
from models.errors import InvalidInput
from models.people import Community, Household, Unit, UnitKind
from models.polls import clean_owner_key, set_owner_key

DEFAULT_TIMEZONE = "Asia/Shanghai"
DEFAULT_LANGUAGE = "zh"
CSV_COLUMNS = ("community", "grid", "building", "neighbourhood", "flat", "area", "code", "owner")
CSV_REQUIRED = ("community", "building", "flat")
# Unit.path holds one id per level in 400 characters; real trees are 3 to 5 levels deep.
MAX_DEPTH = 10
# A code verifies a resident at once, so it must not be guessable.
CODE_MIN_LENGTH = 6
CODE_MAX_LENGTH = 16
# Bounds the IN (...) list well under SQLite's and asyncpg's parameter limits.
_QUERY_CHUNK = 500
_NULL_TAG = "tag:yaml.org,2002:null"

T = TypeVar("T")
_Path = tuple[str, ...]


# --- results and problems ----------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the file. line is 1-based; 0 means the file as a whole."""

    line: int
    key: str
    message: str
    other_line: int | None = None  # the earlier line a duplicate clashes with

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


class ImportProblems(InvalidInput):
    """The file cannot be imported; nothing was written."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: p.line)
        super().__init__("import_problems", count=len(self.problems))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


@dataclass
class ImportReport:
    communities_created: int = 0
    communities_updated: int = 0
    units_created: int = 0
    households_created: int = 0
    households_updated: int = 0
    unchanged: int = 0  # households the file names that already were as it says

    @property
    def changed(self) -> bool:
        return any(
            (
                self.communities_created,
                self.communities_updated,
                self.units_created,
                self.households_created,
                self.households_updated,
            )
        )


# --- the plan: what the file says, checked --------------------------------------------------


@dataclass(frozen=True)
class UnitSpec:
    path: _Path  # names from the root down to this unit
    kind: UnitKind
    line: int


@dataclass(frozen=True)
class HouseholdSpec:
    unit: _Path  # the unit it sits in
    building: _Path  # the nearest building on that path, which with flat identifies it
    flat: str
    area_centi_m2: int | None  # None: keep what is stored
    code: str | None  # None: generated on creation, kept afterwards
    line: int
    owner: str | None = None  # None: keep the recorded owner


@dataclass(frozen=True)
class CommunitySpec:
    name: str
    line: int
    timezone: str | None  # None: the default on creation, untouched afterwards
    language: str | None
    units: tuple[UnitSpec, ...]  # parents before children
    households: tuple[HouseholdSpec, ...]


@dataclass(frozen=True)
class Plan:
    communities: tuple[CommunitySpec, ...]

    @property
    def household_count(self) -> int:
        return sum(len(c.households) for c in self.communities)


class _Bad(Exception):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def _clean(text: str, *, what: str, limit: int) -> str:
    name = " ".join(text.split())
    if not name:
        raise _Bad("missing_field", f"{what} is empty")
    if len(name) > limit:
        raise _Bad("name_too_long", f"{what} is longer than {limit} characters")
    return name


def _community_name(text: str) -> str:
    return _clean(text, what="community name", limit=120)


def _unit_name(text: str) -> str:
    name = _clean(text, what="unit name", limit=80)
    if "/" in name:
        raise _Bad("slash_in_name", f"unit name {name!r} contains '/', which separates paths")
    return name


def _flat(text: str) -> str:
    return _clean(text, what="flat", limit=40)


def _kind(text: str) -> UnitKind:
    kind = text.strip().lower()
    if kind not in UnitKind.__members__:
        raise _Bad("bad_unit_kind", f"unknown unit kind {text!r} (use {', '.join(UnitKind)})")
    return UnitKind(kind)


def _area(text: str) -> int | None:
    try:
        return people.parse_area(text)
    except InvalidInput:
        raise _Bad(
            "bad_area", f"area {text!r} is not a positive number of m² with at most 2 decimals"
        ) from None


def _owner(text: str) -> str:
    try:
        return clean_owner_key(text)
    except InvalidInput:
        raise _Bad("bad_owner", "owner is empty") from None


def _code(text: str) -> str:
    code = people.normalise_code(text)
    if not (code.isascii() and code.isalnum()):
        raise _Bad("bad_code", f"code {text!r} must be letters and digits")
    if not CODE_MIN_LENGTH <= len(code) <= CODE_MAX_LENGTH:
        raise _Bad(
            "bad_code",
            f"code {text!r} must have {CODE_MIN_LENGTH} to {CODE_MAX_LENGTH} letters and digits",
        )
    return code


@functools.cache
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _timezone(text: str) -> str:
    name = text.strip()
    # available_timezones() leaves out the tz database's helper files that ZoneInfo would open.
    if name not in _timezones():
        raise _Bad("bad_timezone", f"unknown timezone {text!r} (e.g. Asia/Shanghai)")
    return name


def _language(text: str) -> str:
    language = text.strip().lower()
    if language not in people.LANGUAGES:
        raise _Bad(
            "bad_language", f"language {text!r} must be one of {', '.join(people.LANGUAGES)}"
        )
    return language


def _show(path: _Path) -> str:
    return "/".join(path)


@dataclass
class _Draft:
    name: str
    line: int
    timezone: str | None = None
    language: str | None = None
    units: dict[_Path, tuple[UnitKind | None, int]] = field(default_factory=dict)
    households: list[HouseholdSpec] = field(default_factory=list)
    flats: dict[tuple[_Path, str], int] = field(default_factory=dict)


class _Builder:
    """Collects what a file describes and every problem with it, whatever its format."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self._drafts: dict[str, _Draft] = {}
        self._codes: dict[str, int] = {}

    def problem(self, line: int, key: str, message: str, other_line: int | None = None) -> None:
        self.problems.append(Problem(line, key, message, other_line))

    def checked(self, line: int, parse: Callable[[str], T], text: str) -> T | None:
        """parse(text), or None with the problem recorded."""
        try:
            return parse(text)
        except _Bad as bad:
            self.problem(line, bad.key, bad.message)
            return None

    def community(self, name: str, line: int) -> _Draft:
        if name not in self._drafts:
            self._drafts[name] = _Draft(name=name, line=line)
        return self._drafts[name]

    def unit(
        self, draft: _Draft, path: _Path, kind: UnitKind | None, line: int, *, repeat_ok: bool
    ) -> None:
        """Declare a unit. kind None: its kind was wrong and has been reported already."""
        known = draft.units.get(path)
        if known is None:
            draft.units[path] = (kind, line)
        elif not repeat_ok:
            self.problem(
                line,
                "duplicate_unit",
                f"unit {_show(path)} is declared twice (lines {known[1]} and {line})",
                known[1],
            )
        elif kind is not None and known[0] is not None and kind != known[0]:
            self.problem(
                line,
                "unit_kind_clash",
                f"{_show(path)} is a {kind} here but a {known[0]} on line {known[1]}",
                known[1],
            )

    def household(
        self,
        draft: _Draft,
        *,
        unit: _Path,
        flat: str,
        area_centi_m2: int | None,
        code: str | None,
        line: int,
        owner: str | None = None,
    ) -> None:
        if unit not in draft.units:
            self.problem(line, "unknown_unit", f"unit {_show(unit)} is not declared under units")
            return
        kinds = [draft.units[unit[:i]][0] for i in range(1, len(unit) + 1)]
        if None in kinds:
            return  # a bad kind on the way, already reported, leaves no building to check
        buildings = [i for i, kind in enumerate(kinds, 1) if kind == UnitKind.building]
        if not buildings:
            self.problem(
                line,
                "not_in_a_building",
                f"household {flat} is in {_show(unit)}, which is not in a building",
            )
            return
        building = unit[: buildings[-1]]
        earlier = draft.flats.setdefault((building, flat), line)
        if earlier != line:
            self.problem(
                line,
                "duplicate_flat",
                f"flat {flat} in {_show(building)} appears twice (lines {earlier} and {line})",
                earlier,
            )
            return
        if code is not None:
            earlier = self._codes.setdefault(code, line)
            if earlier != line:
                self.problem(
                    line,
                    "duplicate_code",
                    f"code {code} is given twice (lines {earlier} and {line})",
                    earlier,
                )
                return
        draft.households.append(
            HouseholdSpec(
                unit=unit,
                building=building,
                flat=flat,
                area_centi_m2=area_centi_m2,
                code=code,
                line=line,
                owner=owner,
            )
        )

    def plan(self) -> Plan:
        if self.problems:
            raise ImportProblems(self.problems)
        return Plan(
            communities=tuple(
                CommunitySpec(
                    name=d.name,
                    line=d.line,
                    timezone=d.timezone,
                    language=d.language,
                    units=tuple(
                        UnitSpec(path=path, kind=kind, line=line)
                        for path, (kind, line) in d.units.items()
                        if kind is not None
                    ),
                    households=tuple(d.households),
                )
                for d in self._drafts.values()
            )
        )


# --- reading files -------------------------------------------------------------------------


def parse_file(path: Path) -> Plan:
    """Read and check a .yaml/.yml or .csv file without touching the database."""
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".csv"):
        raise ImportProblems(
            [Problem(0, "unknown_format", f"{path.name}: expected a .yaml, .yml or .csv file")]
        )
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ImportProblems(
            [Problem(0, "unreadable", f"cannot read {path}: {error.strerror or error}")]
        ) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ImportProblems(
            [Problem(line, "not_utf8", "the file is not UTF-8 text (save it as UTF-8)")]
        ) from None
    return parse_csv(text) if suffix == ".csv" else parse_yaml(text)


class _NoAliasLoader(yaml.SafeLoader):
    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            # check_event has just parsed the alias into current_event.
            mark = self.current_event.start_mark
            raise ComposerError(None, None, "aliases (*name) are not supported here", mark)
        return super().compose_node(parent, index)


@dataclass(frozen=True)
class _Field:
    line: int  # the key's line: an empty value's own mark may point past it
    node: yaml.Node


class _YamlReader:
    """Walks the composed node tree, which keeps a line for every mapping and field."""

    def __init__(self, builder: _Builder) -> None:
        self.b = builder

    @staticmethod
    def line(node: yaml.Node) -> int:
        return int(node.start_mark.line) + 1

    def fields(
        self, node: yaml.Node, allowed: Sequence[str], what: str
    ) -> dict[str, _Field] | None:
        """The mapping's fields by name, or None when it is not a mapping."""
        if not isinstance(node, yaml.MappingNode):
            self.b.problem(self.line(node), "expected_mapping", f"{what} must be a mapping")
            return None
        found: dict[str, _Field] = {}
        for key_node, value_node in node.value:
            line = self.line(key_node)
            if not isinstance(key_node, yaml.ScalarNode):
                self.b.problem(line, "unknown_field", f"{what}: a field name must be plain text")
                continue
            key = str(key_node.value)
            if key not in allowed:
                self.b.problem(
                    line,
                    "unknown_field",
                    f"{what}: unknown field {key!r} (expected {', '.join(allowed)})",
                )
            elif key in found:
                self.b.problem(
                    line,
                    "duplicate_field",
                    f"{what}: field {key!r} is given twice",
                    found[key].line,
                )
            else:
                found[key] = _Field(line, value_node)
        return found

    def text(self, f: _Field, what: str) -> str | None:
        """The field's text ('' when empty), or None when it is not a single value."""
        if not isinstance(f.node, yaml.ScalarNode):
            self.b.problem(f.line, "expected_text", f"{what} must be a single value")
            return None
        # The raw text, not the resolved value: 89.50 stays exact and flat 0501 is not octal.
        return "" if f.node.tag == _NULL_TAG else str(f.node.value)

    def required(
        self, fields: dict[str, _Field], key: str, line: int, what: str, parse: Callable[[str], T]
    ) -> T | None:
        """parse(the field's text), or None with the problem recorded (missing, empty, bad)."""
        f = fields.get(key)
        if f is None:
            self.b.problem(line, "missing_field", f"{what}: {key} is missing")
            return None
        text = self.text(f, f"{what}: {key}")
        if text is not None and not text.strip():
            self.b.problem(f.line, "missing_field", f"{what}: {key} is empty")
            return None
        return self.b.checked(f.line, parse, text) if text is not None else None

    def optional(
        self, fields: dict[str, _Field], key: str, what: str, parse: Callable[[str], T]
    ) -> T | None:
        """parse(the field's text); None when it is absent or blank, or (recorded) bad."""
        f = fields.get(key)
        if f is None:
            return None
        text = self.text(f, f"{what}: {key}")
        return self.b.checked(f.line, parse, text) if text is not None and text.strip() else None

    def items(self, f: _Field | None, what: str) -> list[yaml.Node]:
        if f is None or (isinstance(f.node, yaml.ScalarNode) and f.node.tag == _NULL_TAG):
            return []
        if not isinstance(f.node, yaml.SequenceNode):
            self.b.problem(f.line, "expected_list", f"{what} must be a list")
            return []
        return list(f.node.value)

    def read(self, root: yaml.Node) -> None:
        top = self.fields(root, ("community", "units", "households"), "the file")
        if top is None:
            return
        draft = self.community(top.get("community"), self.line(root))
        for node in self.items(top.get("units"), "units"):
            self.unit(draft, node, ())
        for node in self.items(top.get("households"), "households"):
            self.household(draft, node)

    def community(self, f: _Field | None, line: int) -> _Draft:
        # Carry on with a nameless draft so units and households are still checked.
        if f is None:
            self.b.problem(line, "missing_field", "community is missing")
            return self.b.community("", line)
        if isinstance(f.node, yaml.ScalarNode):
            name = self.required({"community": f}, "community", f.line, "the file", _community_name)
            return self.b.community(name or "", f.line)
        line = self.line(f.node)
        fields = self.fields(f.node, ("name", "timezone", "language"), "community")
        if fields is None:
            return self.b.community("", line)
        name = self.required(fields, "name", line, "community", _community_name)
        draft = self.b.community(name or "", line)
        draft.timezone = self.optional(fields, "timezone", "community", _timezone)
        draft.language = self.optional(fields, "language", "community", _language)
        return draft

    def unit(self, draft: _Draft, node: yaml.Node, parent: _Path) -> None:
        line = self.line(node)
        if len(parent) >= MAX_DEPTH:
            self.b.problem(line, "too_deep", f"units nest at most {MAX_DEPTH} levels deep")
            return
        fields = self.fields(node, ("kind", "name", "children"), "unit")
        if fields is None:
            return
        kind = self.required(fields, "kind", line, "unit", _kind)
        name = self.required(fields, "name", line, "unit", _unit_name)
        # A placeholder keeps a badly named unit's children checked; nothing gets written.
        path = (*parent, name or f"#{line}")
        self.b.unit(draft, path, kind, line, repeat_ok=False)
        for child in self.items(fields.get("children"), "children"):
            self.unit(draft, child, path)

    def household(self, draft: _Draft, node: yaml.Node) -> None:
        line = self.line(node)
        fields = self.fields(node, ("unit", "flat", "area", "code", "owner"), "household")
        if fields is None:
            return
        unit = self.required(fields, "unit", line, "household", _unit_path)
        flat = self.required(fields, "flat", line, "household", _flat)
        area = self.optional(fields, "area", "household", _area)
        code = self.optional(fields, "code", "household", _code)
        owner = self.optional(fields, "owner", "household", _owner)
        if unit is not None and flat is not None:
            self.b.household(
                draft, unit=unit, flat=flat, area_centi_m2=area, code=code, line=line, owner=owner
            )


def _unit_path(text: str) -> _Path:
    parts = text.strip().strip("/").split("/")
    try:
        return tuple(_unit_name(part) for part in parts)
    except _Bad:
        raise _Bad(
            "bad_unit_path", f"unit {text!r} must be unit names from the root, joined by '/'"
        ) from None


def parse_yaml(text: str) -> Plan:
    builder = _Builder()
    try:
        root = yaml.compose(text, Loader=_NoAliasLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else 0
        raise ImportProblems(
            [Problem(line, "yaml_syntax", f"not valid YAML: {error.problem or error}")]
        ) from None
    except yaml.YAMLError as error:
        raise ImportProblems([Problem(0, "yaml_syntax", f"not valid YAML: {error}")]) from None
    if root is None:
        raise ImportProblems([Problem(0, "empty_file", "the file is empty")])
    _YamlReader(builder).read(root)
    return builder.plan()


def parse_csv(text: str) -> Plan:
    builder = _Builder()
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    end = 0
    try:
        for row in reader:
            # A quoted field may span lines: a record starts after the previous one ended.
            start, end = end + 1, reader.line_num
            cells = [cell.strip() for cell in row]
            if not any(cells):
                continue
            if header is None:
                header = [cell.lower() for cell in cells]
                _check_header(builder, header, start)
                if builder.problems:
                    break
                continue
            _csv_row(builder, header, cells, start)
    except csv.Error as error:
        builder.problem(reader.line_num, "csv_syntax", f"not valid CSV: {error}")
    if header is None and not builder.problems:
        builder.problem(0, "empty_file", "the file is empty")
    return builder.plan()


def _check_header(builder: _Builder, header: list[str], line: int) -> None:
    seen: set[str] = set()
    for name in header:
        if name not in CSV_COLUMNS:
            builder.problem(
                line,
                "unknown_column",
                f"unknown column {name!r} (expected {', '.join(CSV_COLUMNS)})",
            )
        elif name in seen:
            builder.problem(line, "duplicate_column", f"column {name!r} appears twice")
        seen.add(name)
    for name in CSV_REQUIRED:
        if name not in seen:
            builder.problem(line, "missing_column", f"the header has no {name!r} column")


def _csv_row(builder: _Builder, header: list[str], cells: list[str], line: int) -> None:
    if len(cells) != len(header):
        builder.problem(
            line,
            "field_count",
            f"expected {len(header)} fields as in the header, found {len(cells)}",
        )
        return
    row = dict(zip(header, cells, strict=True))

    def value(column: str, parse: Callable[[str], T]) -> T | None:
        return builder.checked(line, parse, row[column]) if row.get(column) else None

    community = value("community", _community_name)
    names = [
        (value(column, _unit_name), bool(row.get(column)), kind)
        for column, kind in (
            ("grid", UnitKind.grid),
            ("building", UnitKind.building),
            ("neighbourhood", UnitKind.neighbourhood),
        )
    ]
    flat = value("flat", _flat)
    area = value("area", _area)
    code = value("code", _code)
    owner = value("owner", _owner)
    if not row["community"]:
        builder.problem(line, "missing_field", "community is empty")
        return
    if not row["building"] and (row.get("neighbourhood") or row["flat"]):
        builder.problem(
            line,
            "not_in_a_building",
            "building is empty: households and neighbourhoods must be in a building",
        )
        return
    if not row["flat"] and (row.get("area") or row.get("code") or row.get("owner")):
        builder.problem(line, "missing_field", "flat is empty but an area, code or owner is given")
    if community is None:
        return
    draft = builder.community(community, line)
    path: _Path = ()
    for name, given, kind in names:
        if not given:
            continue
        if name is None:
            return  # a bad name, reported; the path below it would be wrong
        path = (*path, name)
        builder.unit(draft, path, kind, line, repeat_ok=True)
    if flat is not None:
        builder.household(
            draft, unit=path, flat=flat, area_centi_m2=area, code=code, line=line, owner=owner
        )


# --- writing -------------------------------------------------------------------------------


@dataclass
class _Existing:
    """What the database already holds for one community of the plan."""

    spec: CommunitySpec
    community: Community | None
    units: dict[_Path, Unit]
    households: dict[tuple[int, str], Household]

    def household(self, spec: HouseholdSpec) -> Household | None:
        building = self.units.get(spec.building)
        if building is None or building.id is None:
            return None
        return self.households.get((building.id, spec.flat))


async def import_file(session: AsyncSession, *, path: Path, now: datetime) -> ImportReport:
    """Check the file, then create or update what it describes. Raises ImportProblems."""
    return await apply_plan(session, plan=parse_file(path), now=now)


async def apply_plan(session: AsyncSession, *, plan: Plan, now: datetime) -> ImportReport:
    """Check the plan against the database, then write it; on any problem write nothing."""
    existing = [await _load(session, spec) for spec in plan.communities]
    problems = [p for state in existing for p in _kind_problems(state)]
    problems += await _code_problems(session, existing)
    if problems:
        raise ImportProblems(problems)
    report = ImportReport()
    for state in existing:
        await _write(session, state, now=now, report=report)
    await session.flush()
    return report


async def _load(session: AsyncSession, spec: CommunitySpec) -> _Existing:
    community = (await session.exec(select(Community).where(Community.name == spec.name))).first()
    if community is None:
        return _Existing(spec, None, {}, {})
    units = (
        await session.exec(
            select(Unit).where(Unit.community_id == community.id).order_by(col(Unit.id))
        )
    ).all()
    by_id = {u.id: u for u in units}
    by_path: dict[_Path, Unit] = {}
    for unit in units:
        names = tuple(by_id[i].name for i in unit.lineage if i in by_id)
        # create_unit refuses twins, but a race could still make one: the older wins.
        by_path.setdefault(names, unit)
    households = (
        await session.exec(select(Household).where(Household.community_id == community.id))
    ).all()
    return _Existing(spec, community, by_path, {(h.building_id, h.flat): h for h in households})


def _kind_problems(state: _Existing) -> list[Problem]:
    problems = []
    for unit in state.spec.units:
        stored = state.units.get(unit.path)
        if stored is not None and stored.kind != unit.kind:
            problems.append(
                Problem(
                    unit.line,
                    "unit_kind_differs",
                    f"{_show(unit.path)} already exists as a {stored.kind}, not a {unit.kind}",
                )
            )
    return problems


async def _code_problems(session: AsyncSession, existing: list[_Existing]) -> list[Problem]:
    """Codes in the file that already belong to some other household, in any community.

    Handing a code from one household to another in the same import is refused too: the
    unique index would see both holders for a moment.
    """
    wanted = [(state, h) for state in existing for h in state.spec.households if h.code]
    codes = sorted({h.code for _, h in wanted if h.code})
    owners: dict[str, Household] = {}
    for i in range(0, len(codes), _QUERY_CHUNK):
        chunk = codes[i : i + _QUERY_CHUNK]
        rows = await session.exec(select(Household).where(col(Household.code).in_(chunk)))
        owners.update({h.code: h for h in rows.all()})
    problems = []
    for state, spec in wanted:
        owner = owners.get(spec.code or "")
        target = state.household(spec)
        if owner is not None and (target is None or owner.id != target.id):
            problems.append(
                Problem(
                    spec.line,
                    "code_taken",
                    f"code {spec.code} already belongs to another household",
                )
            )
    return problems


async def _write(
    session: AsyncSession, state: _Existing, *, now: datetime, report: ImportReport
) -> None:
    spec = state.spec
    community = state.community
    if community is None:
        community = await people.create_community(
            session,
            name=spec.name,
            timezone=spec.timezone or DEFAULT_TIMEZONE,
            language=spec.language or DEFAULT_LANGUAGE,
            now=now,
        )
        report.communities_created += 1
    else:
        timezone = spec.timezone or community.timezone
        language = spec.language or community.language
        if (timezone, language) != (community.timezone, community.language):
            community.timezone, community.language = timezone, language
            report.communities_updated += 1
    assert community.id is not None
    units = dict(state.units)
    for unit in spec.units:
        if unit.path in units:
            continue
        parent = units[unit.path[:-1]].id if len(unit.path) > 1 else None
        units[unit.path] = await people.create_unit(
            session,
            community_id=community.id,
            parent_id=parent,
            kind=unit.kind.value,
            name=unit.path[-1],
            now=now,
        )
        report.units_created += 1
    # Households bringing their own code go first, so codes generated for the rest are
    # checked against them as well.
    for household in sorted(spec.households, key=lambda h: h.code is None):
        unit_id = units[household.unit].id
        assert unit_id is not None
        stored = state.household(household)
        created = stored is None
        if stored is None:
            stored = await people.add_household(
                session,
                unit_id=unit_id,
                flat=household.flat,
                area_centi_m2=household.area_centi_m2,
                code=household.code,
                now=now,
            )
            report.households_created += 1
        changed = not created and _update(stored, household, unit_id=unit_id)
        if household.owner is not None:
            assert stored.id is not None
            owner_changed = await set_owner_key(
                session, household_id=stored.id, owner_key=household.owner, now=now
            )
            changed = changed or owner_changed
        if created:
            continue
        if changed:
            report.households_updated += 1
        else:
            report.unchanged += 1


def _update(stored: Household, spec: HouseholdSpec, *, unit_id: int) -> bool:
    """Bring a stored household in line with the file; whether anything changed."""
    wanted = (
        unit_id,
        stored.area_centi_m2 if spec.area_centi_m2 is None else spec.area_centi_m2,
        spec.code or stored.code,
    )
    if wanted == (stored.unit_id, stored.area_centi_m2, stored.code):
        return False
    stored.unit_id, stored.area_centi_m2, stored.code = wanted
    return True
