"""A dbt-duckdb plugin: `route_score` & co. and the LLM table in every connection dbt opens.

In `profiles.yml` (dbt-duckdb 1.11; `pip install "routerdb[dbt]"`):

    my_project:
      target: dev
      outputs:
        dev:
          type: duckdb
          path: warehouse.duckdb
          plugins:
            - module: routerdb.dbt
              config:
                bundle: "{{ env_var('ROUTERDB_BUNDLE') }}"   # the bundle directory
                prefix: ""                                   # optional: cand_ gives cand_route_score, ...

A model then calls `route_score(prompt, model)`, `route_best(prompt)`, `route_best_among(...)`,
`route_scores(prompt)` and reads the LLM table as `{{ source('routerdb', 'router_models') }}`
(declare the source with `database: routerdb`, `schema: main`) or `routerdb.router_models`.
The functions belong to the database, so each of dbt's threads and cursors sees them; the short
name `router_models` is added to every cursor too. `examples/dbt/` is a runnable project.
"""

from __future__ import annotations

import logging
from typing import Any

from dbt.adapters.duckdb.plugins import BasePlugin

from routerdb.duckdb import register

log = logging.getLogger(__name__)

KEYS = ("bundle", "prefix", "table")  # the plugin's config; `bundle` is required


class Plugin(BasePlugin):
    """Registers one bundle's functions and LLM table (`routerdb.register`) on each connection."""

    def initialize(self, plugin_config: dict[str, Any]) -> None:
        # dbt-duckdb merges the profile's `settings:` (DuckDB options) into every plugin's config
        settings = set((self.creds.settings or {}) if self.creds is not None else {})
        unknown = sorted(set(plugin_config) - set(KEYS) - settings)
        bundle = plugin_config.get("bundle")
        if unknown or not isinstance(bundle, str) or not bundle:
            raise ValueError(
                f"routerdb.dbt plugin config {dict(plugin_config)!r:.200}: "
                + (f"unknown key(s) {unknown}; " if unknown else "no 'bundle'; ")
                + f"allowed keys: {list(KEYS)} with 'bundle' required. In profiles.yml: plugins: "
                "[{module: routerdb.dbt, config: {bundle: \"{{ env_var('ROUTERDB_BUNDLE') }}\"}}]")
        self.bundle = bundle
        self.prefix = plugin_config.get("prefix") or ""
        self.table = plugin_config.get("table")

    def configure_connection(self, conn) -> None:
        router = register(conn, self.bundle, prefix=self.prefix, table=self.table)
        log.info("routerdb.dbt: %s serves %d LLMs as %sroute_score & co.", router.bundle.path,
                 len(router.models), self.prefix)

    def configure_cursor(self, cursor) -> None:
        # functions and routerdb.router_models are the database's; the short name is per cursor
        register(cursor, self.bundle, prefix=self.prefix, table=self.table)
