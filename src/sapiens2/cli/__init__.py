"""The ``sapiens2`` command line: one module per command, each thin (parse, call, report)."""
