"""The control room: a Textual app over the ESS engine (``ess-tui`` with no arguments).

Importing this package imports Textual; the engine never does.
"""
