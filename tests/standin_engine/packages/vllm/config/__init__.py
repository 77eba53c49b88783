import dataclasses

from table import table as _table

SpeculativeConfig = dataclasses.make_dataclass("SpeculativeConfig", list(_table("vllm")["speculative_config_keys"]))
