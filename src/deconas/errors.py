"""The one exception type that the CLI turns into a one-line message and exit code 2, and the
one test of whether an exception means that memory ran out."""


class UserError(Exception):
    """Bad input from the user: a file, a value or a setting. The message names it and says what is wrong."""


def is_out_of_memory(e: BaseException) -> bool:
    """MemoryError, or an error whose text says so: torch (RuntimeError) and ONNX Runtime (its
    own exception types) both say it in words."""
    if isinstance(e, MemoryError):
        return True
    text = str(e).lower()
    return "alloc" in text or "out of memory" in text
