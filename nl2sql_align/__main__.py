"""`python -m nl2sql_align` behaves exactly like the `nl2sql-align` console script."""

from nl2sql_align.cli import main

if __name__ == "__main__":
    main()
