"""nl2sql-align: post-train language models to write SQL from natural-language questions."""

__version__ = "0.1.0"
