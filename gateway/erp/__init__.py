"""The ERP connector: the catalogue, stock levels and stores of the back office, kept in the
warehouse and the data mart.

    base.py   the Connector Protocol, the typed rows, row checking (no I/O)
    files.py  CSV and XML drops in a watched folder (and the embedded demo catalogue)
    sql.py    the ERP's own database (PostgreSQL, MariaDB/MySQL) read with mapping queries
    stock.py  the stock cache in Redis: in stock? levels per location, last sync, stale
    sync.py   one entity synced: read from the connector, load, update the cache, publish
    tryton.py a Tryton server over REST (an application key) or JSON-RPC, polled
    web.py    ``GET /v1/products/{sku}`` (admin)

The ``erp`` agent (``gateway.agents.erp``) runs the syncs on their intervals.
"""

from __future__ import annotations

from gateway.config import Config
from gateway.erp.base import Connector
from gateway.erp.files import FileConnector

__all__ = ["Connector", "open_connector"]


def open_connector(config: Config) -> Connector:
    """The connector ``erp.connector`` names (its drivers imported only when chosen)."""
    if config.erp.connector == "sql":
        from gateway.erp.sql import SqlConnector

        return SqlConnector.from_config(config)
    if config.erp.connector == "tryton":
        from gateway.erp.tryton import TrytonConnector

        return TrytonConnector.from_config(config)
    return FileConnector.from_config(config)
