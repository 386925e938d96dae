"""Generated docs stay in step with the code (run `make docs` after changing config models)."""

from __future__ import annotations

from config.reference import render_markdown
from tests.helpers.common import REPO_ROOT


def test_configuration_reference_is_current() -> None:
    doc = (REPO_ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert doc == render_markdown(), "docs/configuration.md is stale: run `make docs`"


def test_configuration_reference_lists_every_control_key() -> None:
    from config.control import ControlConfig

    text = render_markdown()
    for key in ControlConfig.model_fields:
        assert f"`control.{key}`" in text


def test_device_list_is_current() -> None:
    from interfaces.modbus.devices import render_markdown as devices_markdown

    doc = (REPO_ROOT / "docs" / "devices.md").read_text(encoding="utf-8")
    assert doc == devices_markdown(), "docs/devices.md is stale: run `make docs`"
