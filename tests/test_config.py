"""Where requests go, and how settings reach the magics."""

import pytest
from traitlets.config import Config

from qwen_magics.options.config import REGIONS, QwenSettings
from qwen_magics.errors import InvalidInput
from qwen_magics.options.build import endpoint_for


@pytest.mark.parametrize("region, url", [
    ("singapore", "https://dashscope-intl.aliyuncs.com/compatible-mode/v1"),
    ("us", "https://dashscope-us.aliyuncs.com/compatible-mode/v1"),
    ("beijing", "https://dashscope.aliyuncs.com/compatible-mode/v1"),
    ("hongkong", "https://cn-hongkong.dashscope.aliyuncs.com/compatible-mode/v1"),
    ("ap-southeast-1", "https://dashscope-intl.aliyuncs.com/compatible-mode/v1"),
])
def test_each_region_has_its_documented_host(region, url, monkeypatch):
    monkeypatch.delenv("QWEN_MAGICS_DASHSCOPE_URL", raising=False)
    assert endpoint_for(QwenSettings(), region, None, None).base_url == url


def test_frankfurt_needs_a_workspace_host(monkeypatch):
    monkeypatch.delenv("QWEN_MAGICS_DASHSCOPE_URL", raising=False)
    with pytest.raises(InvalidInput, match="frankfurt region has no shared DashScope host"):
        endpoint_for(QwenSettings(), "frankfurt", None, None)
    settings = QwenSettings(workspace="ws-123")
    assert endpoint_for(settings, "frankfurt", None, None).base_url == \
        "https://ws-123.eu-central-1.maas.aliyuncs.com/compatible-mode/v1"
    assert set(REGIONS) == {"singapore", "us", "beijing", "hongkong", "frankfurt"}


def test_the_override_variable_replaces_scheme_and_host(monkeypatch):
    monkeypatch.setenv("QWEN_MAGICS_DASHSCOPE_URL", "http://127.0.0.1:9/")
    assert endpoint_for(QwenSettings(), "us", None, None).base_url == "http://127.0.0.1:9/compatible-mode/v1"


def test_a_base_url_needs_no_key_and_wins_over_the_region():
    endpoint = endpoint_for(QwenSettings(region="us"), None, "http://localhost:8000/v1/", None)
    assert (endpoint.base_url, endpoint.key_required) == ("http://localhost:8000/v1", False)


def test_the_key_comes_from_the_configured_variable_at_call_time(monkeypatch):
    endpoint = endpoint_for(QwenSettings(api_key_env="MY_QWEN_KEY"), None, None, None)
    monkeypatch.setenv("MY_QWEN_KEY", "sk-from-my-variable")
    assert endpoint.api_key() == "sk-from-my-variable"
    assert "sk-from-my-variable" not in repr(endpoint)


def test_ipython_config_sets_the_defaults(shell, dashscope):
    from IPython.core.interactiveshell import InteractiveShell

    config = Config()
    config.HistoryManager.enabled = False
    config.QwenMagics.model = "qwen-flash"
    config.QwenMagics.temperature = 0.25
    InteractiveShell.clear_instance()
    configured = InteractiveShell.instance(config=config)
    configured.run_line_magic("load_ext", "qwen_magics")
    configured.run_line_magic("config", "QwenMagics.display_mode = 'terminal'")
    configured.run_line_magic("qwen", "--no-thinking hi")
    body = dashscope.requests[-1].body
    assert (body["model"], body["temperature"]) == ("qwen-flash", 0.25)
