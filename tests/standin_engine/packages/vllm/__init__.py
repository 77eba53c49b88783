"""Stand-in `vllm` package (test double): what sparkstack's vLLM probe imports, from the declared table."""
from table import table as _table

__version__ = _table("vllm")["version"]
