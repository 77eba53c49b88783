from table import table as _table


class ReasoningParserManager:
    @staticmethod
    def list_registered():
        return list(_table("vllm")["reasoning_parsers"])
