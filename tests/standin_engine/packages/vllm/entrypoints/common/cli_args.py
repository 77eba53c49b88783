from table import add_options


def make_arg_parser(parser):
    return add_options("vllm", parser)
