"""Cycles, primary scenarios and data node scopes.

A scenario configuration with a frequency puts each scenario in the cycle (day, week,
month, quarter or year) that contains its creation date. Weeks start on Monday. A
cycle ends one microsecond before the next one starts.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from engine_fixtures import engine as engine_fixture  # noqa: F401 - fixture

import jupyter_scenarios as tp
from jupyter_scenarios import Config, Frequency, Scope
from jupyter_scenarios.entities.cycle import cycle_bounds
from jupyter_scenarios.exceptions import ConfigurationError

pytestmark = pytest.mark.usefixtures("engine")

ONE_MICROSECOND = timedelta(microseconds=1)


def double(value: int) -> int:
    return 2 * value


def add(left: int, right: int) -> int:
    return left + right


def scenario_config(frequency: Frequency | None) -> tp.Scenario:
    my_input = Config.configure_data_node("my_input", default_data=1)
    my_output = Config.configure_data_node("my_output")
    task = Config.configure_task("double", double, my_input, my_output)
    return Config.configure_scenario("periodic", [task], frequency=frequency)


# (frequency, creation date, expected start, expected first instant of the next cycle)
BOUNDS = [
    (
        Frequency.DAILY,
        datetime(2024, 12, 31, 23, 59),
        datetime(2024, 12, 31),
        datetime(2025, 1, 1),
    ),
    (
        Frequency.DAILY,
        datetime(2025, 1, 1, 0, 0),
        datetime(2025, 1, 1),
        datetime(2025, 1, 2),
    ),
    (
        Frequency.WEEKLY,
        datetime(2024, 12, 31, 12),
        datetime(2024, 12, 30),
        datetime(2025, 1, 6),
    ),
    (
        Frequency.WEEKLY,
        datetime(2025, 1, 5, 23, 59),
        datetime(2024, 12, 30),
        datetime(2025, 1, 6),
    ),
    (
        Frequency.WEEKLY,
        datetime(2025, 1, 6),
        datetime(2025, 1, 6),
        datetime(2025, 1, 13),
    ),
    (
        Frequency.MONTHLY,
        datetime(2024, 12, 15),
        datetime(2024, 12, 1),
        datetime(2025, 1, 1),
    ),
    (
        Frequency.MONTHLY,
        datetime(2024, 2, 29, 18),
        datetime(2024, 2, 1),
        datetime(2024, 3, 1),
    ),
    (
        Frequency.MONTHLY,
        datetime(2023, 2, 10),
        datetime(2023, 2, 1),
        datetime(2023, 3, 1),
    ),
    (
        Frequency.QUARTERLY,
        datetime(2024, 1, 1),
        datetime(2024, 1, 1),
        datetime(2024, 4, 1),
    ),
    (
        Frequency.QUARTERLY,
        datetime(2024, 5, 20),
        datetime(2024, 4, 1),
        datetime(2024, 7, 1),
    ),
    (
        Frequency.QUARTERLY,
        datetime(2024, 9, 30, 23),
        datetime(2024, 7, 1),
        datetime(2024, 10, 1),
    ),
    (
        Frequency.QUARTERLY,
        datetime(2024, 11, 15),
        datetime(2024, 10, 1),
        datetime(2025, 1, 1),
    ),
    (
        Frequency.QUARTERLY,
        datetime(2024, 12, 31, 23, 59),
        datetime(2024, 10, 1),
        datetime(2025, 1, 1),
    ),
    (
        Frequency.YEARLY,
        datetime(2024, 12, 31, 23, 59),
        datetime(2024, 1, 1),
        datetime(2025, 1, 1),
    ),
    (
        Frequency.YEARLY,
        datetime(2025, 1, 1),
        datetime(2025, 1, 1),
        datetime(2026, 1, 1),
    ),
]


@pytest.mark.parametrize(("frequency", "created", "start", "following"), BOUNDS)
def test_cycle_bounds(
    frequency: Frequency, created: datetime, start: datetime, following: datetime
) -> None:
    scenario = tp.create_scenario(scenario_config(frequency), creation_date=created)

    cycle = scenario.cycle
    assert cycle is not None
    assert cycle.frequency is frequency
    assert cycle.start_date == start
    assert cycle.end_date == following - ONE_MICROSECOND
    assert cycle.start_date < cycle.end_date
    assert cycle.start_date <= created <= cycle.end_date


@pytest.mark.parametrize("frequency", list(Frequency))
def test_consecutive_cycles_tile_time(frequency: Frequency) -> None:
    date = datetime(2023, 11, 17, 8, 30)
    for _ in range(30):
        start, end = cycle_bounds(frequency, date)
        next_start, next_end = cycle_bounds(frequency, end + ONE_MICROSECOND)
        assert start <= date <= end
        assert start < end
        assert next_start == end + ONE_MICROSECOND
        assert next_start < next_end
        date = next_start + timedelta(hours=5)


def test_same_period_shares_one_cycle() -> None:
    config = scenario_config(Frequency.MONTHLY)

    first = tp.create_scenario(config, creation_date=datetime(2024, 3, 2))
    second = tp.create_scenario(config, creation_date=datetime(2024, 3, 30))
    other = tp.create_scenario(config, creation_date=datetime(2024, 4, 1))

    assert first.cycle == second.cycle
    assert other.cycle != first.cycle
    assert len(tp.get_cycles()) == 2
    assert set(tp.get_scenarios(first.cycle)) == {first, second}


# -- primary scenarios -------------------------------------------------------------------


def test_first_scenario_of_cycle_is_primary() -> None:
    config = scenario_config(Frequency.DAILY)
    day = datetime(2024, 6, 3, 9)

    first = tp.create_scenario(config, creation_date=day)
    second = tp.create_scenario(config, creation_date=day + timedelta(hours=2))
    next_day = tp.create_scenario(config, creation_date=day + timedelta(days=1))

    assert first.is_primary is True
    assert second.is_primary is False
    assert next_day.is_primary is True
    assert tp.get_primary(first.cycle) == first
    assert set(tp.get_primary_scenarios()) == {first, next_day}


def test_set_primary_moves_the_flag() -> None:
    config = scenario_config(Frequency.WEEKLY)
    first = tp.create_scenario(config, creation_date=datetime(2024, 6, 3))
    second = tp.create_scenario(config, creation_date=datetime(2024, 6, 4))

    tp.set_primary(second)

    assert second.is_primary is True
    assert first.is_primary is False
    assert tp.get_primary(first.cycle) == second


def test_scenario_without_cycle_is_not_primary() -> None:
    scenario = tp.create_scenario(scenario_config(None))

    assert scenario.cycle is None
    assert scenario.is_primary is False
    with pytest.raises(ConfigurationError, match=scenario.id):
        tp.set_primary(scenario)


def test_primary_deletable_only_when_alone() -> None:
    config = scenario_config(Frequency.YEARLY)
    first = tp.create_scenario(config, creation_date=datetime(2024, 1, 5))
    second = tp.create_scenario(config, creation_date=datetime(2024, 2, 5))

    assert tp.is_deletable(first) is False
    assert tp.is_deletable(second) is True
    with pytest.raises(ConfigurationError, match=first.id):
        tp.delete(first.id)

    tp.delete(second.id)

    assert tp.is_deletable(first) is True
    tp.delete(first.id)
    assert tp.get_scenarios() == []


def test_tag_names_one_scenario_per_cycle() -> None:
    config = scenario_config(Frequency.MONTHLY)
    first = tp.create_scenario(config, creation_date=datetime(2024, 5, 1))
    second = tp.create_scenario(config, creation_date=datetime(2024, 5, 2))
    elsewhere = tp.create_scenario(config, creation_date=datetime(2024, 6, 2))

    tp.tag(first, "approved")
    tp.tag(elsewhere, "approved")
    tp.tag(second, "approved")

    assert first.has_tag("approved") is False
    assert second.has_tag("approved") is True
    assert elsewhere.has_tag("approved") is True


def test_deleting_cycle_deletes_its_scenarios() -> None:
    config = scenario_config(Frequency.DAILY)
    first = tp.create_scenario(config, creation_date=datetime(2024, 7, 1))
    second = tp.create_scenario(config, creation_date=datetime(2024, 7, 1, 12))
    kept = tp.create_scenario(config, creation_date=datetime(2024, 7, 2))

    tp.delete(first.cycle.id)

    assert tp.get(first.id) is None
    assert tp.get(second.id) is None
    assert tp.get_scenarios() == [kept]
    assert tp.get_cycles() == [kept.cycle]


# -- scopes ------------------------------------------------------------------------------


def scoped_config() -> tp.Scenario:
    """Return a scenario reading a GLOBAL and a CYCLE node into a SCENARIO node.

    rate (GLOBAL) -> scale_rate -> monthly_rate (CYCLE);
    (monthly_rate, amount) -> apply -> result (SCENARIO).
    """
    rate = Config.configure_data_node("rate", scope=Scope.GLOBAL, default_data=2)
    monthly_rate = Config.configure_data_node("monthly_rate", scope=Scope.CYCLE)
    amount = Config.configure_data_node("amount", default_data=10)
    result = Config.configure_data_node("result")
    scale = Config.configure_task("scale_rate", double, rate, monthly_rate)
    apply = Config.configure_task("apply", add, [monthly_rate, amount], result)
    return Config.configure_scenario(
        "scoped", [scale, apply], frequency=Frequency.MONTHLY
    )


def test_scopes_share_nodes_like_taipy() -> None:
    config = scoped_config()
    march_a = tp.create_scenario(config, creation_date=datetime(2024, 3, 1))
    march_b = tp.create_scenario(config, creation_date=datetime(2024, 3, 20))
    april = tp.create_scenario(config, creation_date=datetime(2024, 4, 1))

    assert march_a.monthly_rate.id == march_b.monthly_rate.id
    assert march_a.monthly_rate.id != april.monthly_rate.id
    assert march_a.monthly_rate.owner_id == march_a.cycle.id
    assert march_a.rate.id == march_b.rate.id == april.rate.id
    assert march_a.rate.owner_id is None
    assert len({s.amount.id for s in (march_a, march_b, april)}) == 3
    assert len({s.result.id for s in (march_a, march_b, april)}) == 3
    assert march_a.amount.owner_id == march_a.id


def test_tasks_of_shared_nodes_are_shared() -> None:
    config = scoped_config()
    march_a = tp.create_scenario(config, creation_date=datetime(2024, 3, 1))
    march_b = tp.create_scenario(config, creation_date=datetime(2024, 3, 20))
    april = tp.create_scenario(config, creation_date=datetime(2024, 4, 1))

    assert march_a.scale_rate.id == march_b.scale_rate.id
    assert march_a.scale_rate.id != april.scale_rate.id
    assert march_a.apply.id != march_b.apply.id


def test_cycle_node_written_once_read_by_siblings() -> None:
    config = scoped_config()
    march_a = tp.create_scenario(config, creation_date=datetime(2024, 3, 1))
    march_b = tp.create_scenario(config, creation_date=datetime(2024, 3, 20))
    april = tp.create_scenario(config, creation_date=datetime(2024, 4, 1))
    march_b.amount.write(100)

    march_a.submit()
    march_b.tasks["apply"].submit()

    assert march_a.result.read() == 14
    assert march_b.result.read() == 104
    assert april.monthly_rate.last_edit_date is None


def test_global_node_change_seen_everywhere() -> None:
    config = scoped_config()
    march = tp.create_scenario(config, creation_date=datetime(2024, 3, 1))
    april = tp.create_scenario(config, creation_date=datetime(2024, 4, 1))

    march.rate.write(5)
    april.submit()

    assert april.result.read() == 20
    assert march.rate.read() == 5


def test_deleting_scenario_keeps_shared_nodes() -> None:
    config = scoped_config()
    first = tp.create_scenario(config, creation_date=datetime(2024, 3, 1))
    second = tp.create_scenario(config, creation_date=datetime(2024, 3, 2))
    shared = (first.rate.id, first.monthly_rate.id)
    own = first.amount.id
    deleted = (second.amount.id, second.result.id, second.apply.id)

    tp.delete(second.id)

    assert tp.get(own) is not None
    for entity_id in shared:
        assert tp.get(entity_id) is not None, entity_id
    for entity_id in deleted:
        assert tp.get(entity_id) is None, entity_id
    assert tp.get(first.scale_rate.id) is not None
