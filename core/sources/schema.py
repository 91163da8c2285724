"""Checking a JSON value read from a file against a JSON schema, with one sentence for what is wrong."""

from __future__ import annotations

from itertools import islice


def schema_problem(value, schema: dict, most: int = 20) -> str | None:
    """``"field.path: what is wrong"`` for the most telling of the first ``most`` errors of ``value`` against
    ``schema`` (looking no further keeps a file with millions of wrong entries cheap); None when it fits."""
    import jsonschema

    errors = jsonschema.Draft202012Validator(schema).iter_errors(value)
    error = jsonschema.exceptions.best_match(islice(errors, most))
    if error is None:
        return None
    where = ".".join(str(part) for part in error.absolute_path) or "the whole"
    message = error.message if len(error.message) <= 200 else error.message[:200] + "…"
    return f"{where}: {message}"
