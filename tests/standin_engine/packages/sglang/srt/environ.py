from table import table as _table


class EnvField:
    def __init__(self, name):
        self.name = name


Envs = type("Envs", (), {name: EnvField(name) for name in _table("sglang")["env_vars"]})
