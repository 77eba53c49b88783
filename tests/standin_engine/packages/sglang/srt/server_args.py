from table import add_options


class ServerArgs:
    @staticmethod
    def add_cli_args(parser):
        add_options("sglang", parser)
