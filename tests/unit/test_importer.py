"""Importing a community's units and households from YAML and CSV files."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import func, select

from bot.db import Database
from models import people
from models.importer import (
    ImportProblems,
    ImportReport,
    Problem,
    import_file,
    parse_csv,
    parse_file,
    parse_yaml,
)
from models.people import Community, Household, Unit
from tests.conftest import NOW

DEMO = Path(__file__).resolve().parents[2] / "bot" / "demo" / "community.yaml"

YAML = """\
community: {name: 幸福里社区, timezone: Asia/Shanghai, language: zh}
units:
  - kind: grid
    name: 第一网格
    children:
      - kind: building
        name: 3号楼
        children:
          - {kind: neighbourhood, name: 3-1小邻里}
      - {kind: building, name: 5号楼}
households:
  - {unit: 第一网格/3号楼/3-1小邻里, flat: 3-1-101, area: 89.50, code: hx7k-2mpa}
  - {unit: 第一网格/3号楼, flat: 3-2-501, area: 120}
  - {unit: 第一网格/5号楼, flat: 5-1-101}
"""

# The same register as YAML, plus a building at the root and one without households.
CSV = """\
community,grid,building,neighbourhood,flat,area,code
幸福里社区,第一网格,3号楼,3-1小邻里,3-1-101,89.50,HX7K2MPA
幸福里社区,第一网格,3号楼,,3-2-501,120,
幸福里社区,,7号楼,,7-1-101,,
幸福里社区,第一网格,5号楼,,,,
"""

EDITED = """\
community: {name: 幸福里社区, timezone: Asia/Shanghai, language: en}
units:
  - kind: grid
    name: 第一网格
    children:
      - kind: building
        name: 3号楼
        children:
          - {kind: neighbourhood, name: 3-1小邻里}
          - {kind: neighbourhood, name: 3-2小邻里}
      - {kind: building, name: 5号楼}
households:
  - {unit: 第一网格/3号楼/3-1小邻里, flat: 3-1-101, area: 92.00, code: HX7K2MPA}
  - {unit: 第一网格/3号楼/3-2小邻里, flat: 3-2-501, area: 120}
  - {unit: 第一网格/5号楼, flat: 5-1-101, code: T3GC8KZV}
  - {unit: 第一网格/5号楼, flat: 5-1-102, area: 98.65}
"""


def _file(tmp_path: Path, name: str, text: str, *, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding=encoding)
    return path


def _line_of(text: str, marker: str, *, nth: int = 0) -> int:
    return [i for i, line in enumerate(text.splitlines(), 1) if marker in line][nth]


async def _import(db: Database, path: Path) -> ImportReport:
    async with db.transaction() as s:
        return await import_file(s, path=path, now=NOW)


async def _problems(db: Database, path: Path) -> list[Problem]:
    with pytest.raises(ImportProblems) as caught:
        await _import(db, path)
    return caught.value.problems


async def _counts(db: Database) -> tuple[int, int, int]:
    async with db.transaction(write=False) as s:
        communities = (await s.exec(select(func.count()).select_from(Community))).one()
        units = (await s.exec(select(func.count()).select_from(Unit))).one()
        households = (await s.exec(select(func.count()).select_from(Household))).one()
        return communities, units, households


async def _households(db: Database) -> dict[str, Household]:
    async with db.transaction(write=False) as s:
        return {h.flat: h for h in (await s.exec(select(Household))).all()}


async def _where(db: Database, household: Household) -> list[str]:
    async with db.transaction(write=False) as s:
        return await people.lineage_names(s, await people.get_unit(s, household.unit_id))


def _is_generated(code: str) -> bool:
    return len(code) == people.CODE_LENGTH and set(code) <= set(people.CODE_ALPHABET)


async def test_yaml_import_creates_the_tree_and_the_register(db: Database, tmp_path: Path) -> None:
    report = await _import(db, _file(tmp_path, "c.yaml", YAML))
    assert report == ImportReport(communities_created=1, units_created=4, households_created=3)
    homes = await _households(db)
    assert await _where(db, homes["3-1-101"]) == ["第一网格", "3号楼", "3-1小邻里"]
    assert await _where(db, homes["3-2-501"]) == ["第一网格", "3号楼"]
    assert homes["3-1-101"].building_id == homes["3-2-501"].building_id
    assert homes["3-1-101"].area_centi_m2 == 8950 and homes["3-1-101"].code == "HX7K2MPA"
    assert homes["3-2-501"].area_centi_m2 == 12000
    assert homes["5-1-101"].area_centi_m2 is None and _is_generated(homes["5-1-101"].code)
    async with db.transaction(write=False) as s:
        (community,) = await people.communities(s)
        assert (community.name, community.timezone, community.language) == (
            "幸福里社区",
            "Asia/Shanghai",
            "zh",
        )


async def test_csv_import_with_bom_and_crlf(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes(CSV.replace("\n", "\r\n").encode("utf-8-sig"))
    report = await _import(db, path)
    assert report == ImportReport(communities_created=1, units_created=5, households_created=3)
    homes = await _households(db)
    assert await _where(db, homes["3-1-101"]) == ["第一网格", "3号楼", "3-1小邻里"]
    assert await _where(db, homes["7-1-101"]) == ["7号楼"]
    assert homes["3-1-101"].code == "HX7K2MPA" and _is_generated(homes["3-2-501"].code)
    async with db.transaction(write=False) as s:
        (community,) = await people.communities(s)
        assert community.id is not None
        assert [b.name for b in await people.buildings(s, community_id=community.id)] == [
            "3号楼",
            "5号楼",
            "7号楼",
        ]


@pytest.mark.parametrize(("name", "text"), [("c.yaml", YAML), ("c.csv", CSV)])
async def test_importing_again_changes_nothing(
    db: Database, tmp_path: Path, name: str, text: str
) -> None:
    path = _file(tmp_path, name, text)
    await _import(db, path)
    before, codes = await _counts(db), {f: h.code for f, h in (await _households(db)).items()}
    assert await _import(db, path) == ImportReport(unchanged=3)
    assert await _counts(db) == before
    assert {f: h.code for f, h in (await _households(db)).items()} == codes


async def test_edited_file_updates_and_adds(db: Database, tmp_path: Path) -> None:
    await _import(db, _file(tmp_path, "c.yaml", YAML))
    generated = (await _households(db))["3-2-501"].code
    report = await _import(db, _file(tmp_path, "edited.yaml", EDITED))
    assert report == ImportReport(
        communities_updated=1, units_created=1, households_created=1, households_updated=3
    )
    homes = await _households(db)
    assert homes["3-1-101"].area_centi_m2 == 9200
    assert await _where(db, homes["3-2-501"]) == ["第一网格", "3号楼", "3-2小邻里"]
    assert homes["3-2-501"].code == generated
    assert homes["5-1-101"].code == "T3GC8KZV"
    assert homes["5-1-102"].area_centi_m2 == 9865
    async with db.transaction(write=False) as s:
        (community,) = await people.communities(s)
        assert community.language == "en"


async def test_a_partial_file_deletes_nothing(db: Database, tmp_path: Path) -> None:
    await _import(db, _file(tmp_path, "c.yaml", YAML))
    partial = "community,grid,building,flat\n幸福里社区,第一网格,5号楼,5-1-101\n"
    assert await _import(db, _file(tmp_path, "p.csv", partial)) == ImportReport(unchanged=1)
    assert await _counts(db) == (1, 4, 3)


def _yaml(old: str, new: str) -> str:
    assert old in YAML
    return YAML.replace(old, new)


def _csv(old: str, new: str) -> str:
    assert old in CSV
    return CSV.replace(old, new)


BAD_FILES = [
    pytest.param("c.yaml", _yaml("kind: grid", "kind: tower"), "tower", "bad_unit_kind", id="kind"),
    pytest.param("c.yaml", _yaml("area: 120", "area: 12.345"), "12.345", "bad_area", id="area"),
    pytest.param(
        "c.yaml", _yaml("name: 3号楼", "name: 3/4号楼"), "3/4", "slash_in_name", id="slash"
    ),
    pytest.param("c.csv", _csv(",120,", ",12.345,"), "12.345", "bad_area", id="csv-area"),
    pytest.param(
        "c.yaml",
        _yaml("unit: 第一网格/5号楼,", "unit: 第一网格,"),
        "5-1-101",
        "not_in_a_building",
        id="under-grid",
    ),
    pytest.param(
        "c.csv",
        CSV + "幸福里社区,第一网格,,,9-9-9,,\n",
        "9-9-9",
        "not_in_a_building",
        id="csv-no-building",
    ),
    pytest.param(
        "c.yaml", _yaml("Asia/Shanghai", "Mars/Olympus"), "Mars", "bad_timezone", id="timezone"
    ),
    pytest.param("c.yaml", _yaml("language: zh", "language: fr"), "fr", "bad_language", id="lang"),
    pytest.param(
        "c.csv",
        _csv("neighbourhood,flat,", "neighbourhood,room,"),
        "room",
        "missing_column",
        id="no-flat",
    ),
    pytest.param(
        "c.yaml",
        _yaml("第一网格/5号楼", "第一网格/6号楼"),
        "6号楼",
        "unknown_unit",
        id="unknown-unit",
    ),
    pytest.param(
        "c.yaml",
        _yaml("flat: 5-1-101}", "flat: 5-1-101, aera: 70}"),
        "aera",
        "unknown_field",
        id="unknown-field",
    ),
    pytest.param(
        "c.yaml",
        _yaml("{kind: building, name: 5号楼}", "{kind: building}"),
        "{kind: building}",
        "missing_field",
        id="no-name",
    ),
    pytest.param(
        "c.yaml",
        _yaml("area: 89.50", "area: &a 89.50").replace("area: 120", "area: *a"),
        "*a",
        "yaml_syntax",
        id="alias",
    ),
    pytest.param(
        "c.yaml", _yaml("  - kind: grid", "  - kind: grid\n bad"), "bad", "yaml_syntax", id="syntax"
    ),
    pytest.param("c.csv", _csv("120,\n", "120,,\n"), "120", "field_count", id="csv-fields"),
    pytest.param(
        "c.csv",
        CSV + "幸福里社区,,第一网格,,,,\n",
        "幸福里社区,,第一网格",
        "unit_kind_clash",
        id="csv-kind-clash",
    ),
]


@pytest.mark.parametrize(("name", "text", "marker", "key"), BAD_FILES)
async def test_bad_rows_are_reported_by_line_and_nothing_is_written(
    db: Database, tmp_path: Path, name: str, text: str, marker: str, key: str
) -> None:
    problems = await _problems(db, _file(tmp_path, name, text))
    assert (_line_of(text, marker), key) in {(p.line, p.key) for p in problems}, problems
    assert await _counts(db) == (0, 0, 0)


@pytest.mark.parametrize(
    ("name", "text", "marker"),
    [
        ("c.yaml", _yaml("flat: 3-2-501", "flat: 3-1-101"), "flat: 3-1-101"),
        ("c.csv", CSV + "幸福里社区,第一网格,3号楼,,3-1-101,,\n", ",3-1-101,"),
        ("c.yaml", _yaml("flat: 5-1-101}", "flat: 5-1-102, code: HX7K2MPA}"), "code:"),
    ],
    ids=["flat", "csv-flat", "code"],
)
async def test_duplicates_name_both_lines(
    db: Database, tmp_path: Path, name: str, text: str, marker: str
) -> None:
    # A flat directly in 3号楼 clashes with the same flat in 3号楼's neighbourhood.
    (problem,) = await _problems(db, _file(tmp_path, name, text))
    first, second = _line_of(text, marker), _line_of(text, marker, nth=1)
    assert (problem.line, problem.other_line) == (second, first)
    assert f"lines {first} and {second}" in problem.message
    assert await _counts(db) == (0, 0, 0)


def test_every_problem_is_reported_at_once_in_line_order() -> None:
    text = (
        _yaml("Asia/Shanghai", "Mars/Olympus")
        .replace("      - kind: building", "      - kind: tower")
        .replace("area: 120", "area: -1")
    )
    with pytest.raises(ImportProblems) as caught:
        parse_yaml(text)
    assert [(p.line, p.key) for p in caught.value.problems] == [
        (1, "bad_timezone"),
        (6, "bad_unit_kind"),
        (13, "bad_area"),
    ]
    assert "line 13: area '-1'" in str(caught.value)


async def test_a_bad_edit_writes_nothing(db: Database, tmp_path: Path) -> None:
    await _import(db, _file(tmp_path, "c.yaml", YAML))
    bad = EDITED.replace("area: 98.65", "area: 98.655")
    (problem,) = await _problems(db, _file(tmp_path, "edited.yaml", bad))
    assert (problem.line, problem.key) == (_line_of(bad, "98.655"), "bad_area")
    assert await _counts(db) == (1, 4, 3)
    assert (await _households(db))["3-1-101"].area_centi_m2 == 8950


async def test_conflicts_with_the_database_write_nothing(db: Database, tmp_path: Path) -> None:
    await _import(db, _file(tmp_path, "c.yaml", YAML))
    kind = EDITED.replace("kind: neighbourhood, name: 3-1小邻里", "kind: entrance, name: 3-1小邻里")
    (problem,) = await _problems(db, _file(tmp_path, "kind.yaml", kind))
    assert (problem.line, problem.key) == (_line_of(kind, "entrance"), "unit_kind_differs")
    elsewhere = "community,building,flat,code\n和平里社区,1号楼,1-1-101,hx7k2mpa\n"
    (problem,) = await _problems(db, _file(tmp_path, "other.csv", elsewhere))
    assert (problem.line, problem.key) == (2, "code_taken")
    assert await _counts(db) == (1, 4, 3)
    assert (await _households(db))["3-1-101"].area_centi_m2 == 8950


def test_csv_lines_count_quoted_line_breaks() -> None:
    text = 'community,building,flat,area\n"幸福里\n社区",1号楼,101,12.345\n幸福里社区,1号楼,102,0\n'
    with pytest.raises(ImportProblems) as caught:
        parse_csv(text)
    assert [(p.line, p.key) for p in caught.value.problems] == [(2, "bad_area"), (4, "bad_area")]


def test_unreadable_files_are_problems_too(tmp_path: Path) -> None:
    cases = {
        _file(tmp_path, "c.txt", YAML): (0, "unknown_format"),
        tmp_path / "missing.yaml": (0, "unreadable"),
        _file(tmp_path, "empty.yaml", "# nothing yet\n"): (0, "empty_file"),
        _file(tmp_path, "gbk.csv", "community,building,flat\n幸福里,1号楼,101\n", encoding="gbk"): (
            2,
            "not_utf8",
        ),
    }
    for path, expected in cases.items():
        with pytest.raises(ImportProblems) as caught:
            parse_file(path)
        assert [(p.line, p.key) for p in caught.value.problems] == [expected], path


async def test_demo_community_imports(db: Database) -> None:
    plan = parse_file(DEMO)
    codes = [h.code for c in plan.communities for h in c.households]
    assert all(code is not None and _is_generated(code) for code in codes)
    async with db.transaction() as s:
        report = await import_file(s, path=DEMO, now=NOW)
    assert report == ImportReport(communities_created=1, units_created=5, households_created=12)
    async with db.transaction(write=False) as s:
        (community,) = await people.communities(s)
        assert community.id is not None and community.name == "幸福里社区"
        for building in await people.buildings(s, community_id=community.id):
            assert building.id is not None
            assert len(await people.households_in(s, building_id=building.id)) == 6


async def test_owner_column_groups_flats_for_owners_votes(db: Database, tmp_path: Path) -> None:
    from models.polls import Ownership

    text = (
        "community,building,flat,area,owner\n"
        "幸福里社区,3号楼,3-101,89.50,王某 0417\n"
        "幸福里社区,3号楼,3-102,60,王某  0417\n"
        "幸福里社区,3号楼,3-201,70,开发商\n"
        "幸福里社区,3号楼,3-202,70,\n"
    )
    path = _file(tmp_path, "owners.csv", text)
    assert await _import(db, path) == ImportReport(
        communities_created=1, units_created=1, households_created=4
    )
    homes = await _households(db)
    async with db.transaction(write=False) as s:
        keys = {o.household_id: o.owner_key for o in (await s.exec(select(Ownership))).all()}
    assert keys == {
        homes["3-101"].id: "王某 0417",
        homes["3-102"].id: "王某 0417",
        homes["3-201"].id: "developer",
    }
    assert await _import(db, path) == ImportReport(unchanged=4)
    path.write_text(text.replace("3-202,70,", "3-202,70,李某"))
    assert await _import(db, path) == ImportReport(households_updated=1, unchanged=3)
