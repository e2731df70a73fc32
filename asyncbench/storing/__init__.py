"""Storing: the run directory, beside every stage; the only code that writes results. It
imports no other stage.

- ``store``: the versioned, self-describing run directory and its records.
- ``migrate``: one explicit migration per schema version.
- ``atomic``: atomic writes (a crash or a full disk leaves the old file or the new one).
- ``integrity``: damaged stored files named, with what to do.
- ``hlog``: the HdrHistogram interval log format.
"""
