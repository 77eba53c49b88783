from table import table as _table

environment_variables = {name: None for name in _table("vllm")["env_vars"]}
