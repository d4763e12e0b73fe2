"""semrec: semantic-ID generative recommendation with token-level collaborative alignment."""

__version__ = "0.1.0"
