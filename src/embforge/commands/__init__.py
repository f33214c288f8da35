"""The command line's binding layer: one module per command, each giving its help text (``HELP``), the
engine's config class it fills (``Config``) and the engine function that runs it (``run``).

No logic lives here: the configs belong to the engines (``embforge.training.config`` and so on), and
the Python API (``embforge.api``) calls the same engine functions.
"""
