from table import table as _table

__version__ = _table("sglang")["version"]
