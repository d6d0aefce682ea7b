"""Money: the shipped price table, tiers, thinking and cached prices, Batch at half, and costs shown without
configuration (footer, %qwen_log cost) over the loopback server."""

from __future__ import annotations

import json
import re
from importlib.resources import files
from pathlib import Path

import pytest
from conftest import outputs_text

import qwen_magics
from qwen_magics.tokens.prices import READ_ON, TABLE, Price, listed_price, price_for

M = 1_000_000


def test_every_entry_names_its_page_and_its_date_and_the_table_its_reading_date():
    assert READ_ON and all(re.fullmatch(r"https://\S+ \(.+; last updated (\d{4}-\d\d-\d\d|not shown)\)", p.source)
                           for region in TABLE.values() for p in region.values())
    assert {p.currency for p in TABLE["beijing"].values()} == {"CNY"}
    assert {p.currency for p in TABLE["singapore"].values()} == {"USD"}
    assert set(TABLE) == {"beijing", "singapore"}  # no page read gives prices for us, hongkong or frankfurt


def test_the_table_is_read_from_the_json_file_the_package_ships_in_the_pages_units():
    data = json.loads(files("qwen_magics.tokens").joinpath("prices.json").read_text(encoding="utf-8"))
    assert data["read_on"] == READ_ON
    assert {(r, m) for r, models in data["prices"].items() for m in models} == \
        {(r, m) for r, models in TABLE.items() for m in models}
    assert data["pages"]["ai-paas"]["per_tokens"] == 1000  # the Beijing page's CNY per 1,000 tokens
    assert data["prices"]["beijing"]["qwen-plus"]["tiers"][0]["input"] == 0.0008
    assert listed_price("qwen-plus", "beijing").tiers[0].input == pytest.approx(0.8)  # per million


def test_docs_prices_md_lists_every_entry_with_its_page_and_numbers():
    """docs/prices.md is where a reviewer checks each number against its page: it must list what the table holds."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "prices.md").read_text(encoding="utf-8")
    sections = dict(re.findall(r"^## (\w+) \(.*?\)\n(.*?)(?=^## |\Z)", doc, re.M | re.S))
    assert set(sections) == {region.capitalize() for region in TABLE}
    for region, models in TABLE.items():
        for model, price in models.items():
            assert price.source.split()[0] in doc
            rows = re.findall(rf"^\| {re.escape(model)} \|.*$", sections[region.capitalize()], re.M)
            assert len(rows) == len(price.tiers), (region, model)
            for row, tier in zip(rows, price.tiers):
                assert f"({tier.input:g})" in row and f"({tier.output:g})" in row, (region, model, row)


def test_singapore_prices_are_the_billing_pages_minimum_prices_with_cache_hits_at_40_percent():
    turbo = listed_price("qwen-turbo", "singapore")
    assert turbo.cost(1000, 1000) == pytest.approx((1000 * 0.05 + 1000 * 0.2) / M)
    assert turbo.cost(1000, 0, cached=500) == pytest.approx((500 * 0.05 + 500 * 0.05 * 0.4) / M)
    assert listed_price("qwen-max", "singapore").cost(40_000, 10) is None  # past the page's 32,768-token context
    assert "(prompts up to 1,008,192 tokens)" in turbo.describe()
    assert "(prompts up to 32K tokens)" in listed_price("qwen-max", "singapore").describe()


def test_qwen_plus_in_beijing_bills_input_by_tier_thinking_output_dearer_and_cache_hits_cheaper():
    plus = listed_price("qwen-plus", "beijing")
    assert plus.cost(M, 0) == pytest.approx(4.8)  # a million tokens is past 256K: the third tier
    assert plus.cost(1000, 1000) == pytest.approx((1000 * 0.8 + 1000 * 2) / M)
    assert plus.cost(1000, 1000, thinking=True) == pytest.approx((1000 * 0.8 + 1000 * 8) / M)
    assert plus.cost(1000, 0, cached=600) == pytest.approx((400 * 0.8 + 600 * 0.2) / M)
    assert plus.cost(200_000, 0) == pytest.approx(200_000 * 2.4 / M)
    assert plus.cost(2_000_000, 0) is None  # past the last tier: not known
    batch = plus.halved()
    assert batch.cost(1000, 1000, cached=600) == pytest.approx((1000 * 0.4 + 1000 * 1) / M)  # no cache discount


def test_an_unknown_price_is_none_never_zero_and_the_local_model_is_free():
    assert listed_price("qwen3.5-27b", "singapore") is None and price_for("qwen-plus", None) is None
    assert listed_price("qwen-plus", "us") is None and listed_price("qwen-plus-latest", "singapore") is None
    assert listed_price("qwen-plus", "singapore").cost(100, 100, thinking=True) is None  # thinking price not known
    assert price_for("local:0.5b", None, local=True).cost(100, 100) == 0.0
    assert price_for("qwen-plus", "singapore", {"qwen-plus": [1.0, 2.0]}) == Price.flat(1.0, 2.0)
    assert Price.from_json(listed_price("qwen-plus", "beijing").to_json()) == listed_price("qwen-plus", "beijing")


def test_a_qwen_plus_answer_has_a_cost_without_configuration_and_the_footer_shows_it(ip, dashscope):
    result = ip.run_cell_magic("qwen", "-m qwen-plus", "hello")
    u = result.usage
    assert result.cost == pytest.approx((u.input * 0.4 + u.output * 1.2) / M) and result.cost > 0
    assert f"cost ${result.cost:.4f}" in outputs_text(ip)


def test_thinking_output_is_priced_as_thinking(ip, dashscope):
    result = ip.run_cell_magic("qwen", "-m qwen-plus --region beijing --thinking", "why is the sky blue?")
    u = result.usage
    assert result.reasoning and u.output > 0
    assert result.cost == pytest.approx((u.input * 0.8 + u.output * 8) / M)
    assert f"cost ¥{result.cost:.4f}" in outputs_text(ip)


def test_an_unpriced_model_has_no_cost(ip, dashscope):
    result = ip.run_cell_magic("qwen", "-m qwen-flash", "hello")  # not in the singapore table
    assert result.cost is None and "cost" not in outputs_text(ip)


def test_the_default_model_has_no_price_in_the_default_region_and_its_answer_no_cost(
        ip, dashscope, run_log_in_a_temporary_folder):
    """No page read gives qwen3.5-plus a price in Singapore: a plain %%qwen answer shows no cost, and its run is
    logged with none, rather than with a guessed one."""
    result = ip.run_cell_magic("qwen", "", "hello")
    assert result.model == "qwen3.5-plus" and listed_price("qwen3.5-plus", "singapore") is None
    assert result.usage.input > 0 and result.cost is None and "cost" not in outputs_text(ip)
    log = qwen_magics.log()
    assert log.flush(10)  # the record is written off the cell's thread
    (run,) = log.recent(1)
    assert run.model == "qwen3.5-plus" and run.cost is None


def test_qwen_log_cost_shows_qwen_plus_unconfigured(ip, dashscope, run_log_in_a_temporary_folder):
    results = [ip.run_cell_magic("qwen", "-m qwen-plus", f"hello {i}") for i in range(2)]
    table = ip.run_line_magic("qwen_log", "cost")
    (row,) = [r for r in table.rows if r[1] == "qwen-plus"]
    assert row[6] == f"{sum(r.cost for r in results):.4f}"
    (total,) = [t for t in qwen_magics.log().cost() if t["model"] == "qwen-plus"]
    assert total["cost"] == pytest.approx(sum(r.cost for r in results)) and total["cost"] > 0
