"""MkDocs hook: drop from the nav the pages listed under `extra.planned_pages` in mkdocs.yml while their
file does not exist yet (other branches add them), so the nav can name them before they land and the
strict build still fails on any other missing page."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("mkdocs.hooks.planned_pages")


def _prune(items, planned: set[str], docs_dir: Path):
    out = []
    for item in items:
        if isinstance(item, dict):
            (title, value), = item.items()
            if isinstance(value, list):
                value = _prune(value, planned, docs_dir)
                if value:
                    out.append({title: value})
                continue
            if isinstance(value, str) and value in planned and not (docs_dir / value).exists():
                log.info("nav: %s is planned and not written yet; left out", value)
                continue
        elif isinstance(item, str) and item in planned and not (docs_dir / item).exists():
            continue
        out.append(item)
    return out


def on_config(config, **kwargs):
    planned = set((config.get("extra") or {}).get("planned_pages") or [])
    if planned and config.get("nav"):
        config["nav"] = _prune(config["nav"], planned, Path(config["docs_dir"]))
    return config
