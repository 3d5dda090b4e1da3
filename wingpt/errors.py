"""Errors that name what is wrong with a request, so the server can answer INVALID_ARGUMENT."""


class InvalidRequest(ValueError):
    """A request the server will not run; the message names the offending field."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")
