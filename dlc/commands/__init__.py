"""Command groups of the `dlc` CLI that live outside dlc/cli.py, one module per group.

Each module declares flags, calls one function of a stage module and prints; heavy modules
are imported inside the commands, so `dlc --help` stays instant.
"""

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
