from table import table as _table


class ToolParserManager:
    @staticmethod
    def list_registered():
        return list(_table("vllm")["tool_call_parsers"])
