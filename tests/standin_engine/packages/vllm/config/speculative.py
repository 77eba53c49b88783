from typing import Literal

from table import table as _table

SpeculativeMethod = Literal[tuple(_table("vllm")["speculative_methods"])]
