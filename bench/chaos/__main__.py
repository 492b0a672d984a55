"""`python -m bench.chaos …`: the same as `gridbus chaos run …`."""

from bench.chaos.cli import chaos

if __name__ == "__main__":
    chaos(prog_name="python -m bench.chaos")
