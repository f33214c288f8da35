"""One module per CLI command: a typed ``Config`` dataclass and a ``run(config)`` function.

Config modules import nothing heavy at the top, so ``embforge --help`` stays fast; ``run`` imports
torch and friends when it is called. The Python API calls the same ``run`` functions.
"""
