"""The commands around models and databases rather than training: `import-gguf` (a GGUF file into a
transformers folder) and `db copy` (a SQLite/DuckDB database into PostgreSQL). Registered on the main app by
cli.py; the work is in gguf.py and db_copy.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nl2sql_align import cli_options as o
from nl2sql_align.stdio import print_result, results_only_on_stdout

GgufFile = Annotated[Path, typer.Argument(help="The .gguf file to convert (e.g. SmolLM2-135M-Instruct.Q4_1.gguf).")]
GgufOutput = Annotated[Path, typer.Option(help="Folder for the converted model: safetensors, config, tokenizer.")]
DbSource = Annotated[Path, typer.Argument(help="SQLite or DuckDB database file.")]
Dsn = Annotated[str, typer.Argument(help="Target postgresql:// URI (a superuser or owner); created if missing.")]
Schema = Annotated[str, typer.Option(help="Target schema.")]
Replace = Annotated[bool, typer.Option("--replace", help="Drop and recreate tables that exist.")]
Reader = Annotated[str | None, typer.Option(help="Also create this SELECT-only login role for the sandbox.")]

db_app = typer.Typer(help="Database utilities.", no_args_is_help=True, **o.SUBAPP)


def import_gguf(file: GgufFile, output: GgufOutput, overwrite: o.Overwrite = False) -> None:
    """Convert a GGUF file into a plain transformers folder (float32 safetensors, config.json without
    quantization_config, tokenizer with its chat template). A recipe may also name the .gguf itself as
    model.name_or_path: it is then imported once into $NL2SQL_ALIGN_CACHE/gguf."""
    from nl2sql_align.gguf import import_gguf as convert

    with results_only_on_stdout():
        folder = convert(file, output, overwrite=overwrite)
    print_result(str(folder))


@db_app.command("copy")
def db_copy(
    src: DbSource, dsn: Dsn, schema: Schema = "public", replace: Replace = False, reader: Reader = None
) -> None:
    """Copy a SQLite/DuckDB database into PostgreSQL (names lower-cased, keys kept where the data allows)."""
    from nl2sql_align.db_copy import copy_database

    report = copy_database(src, dsn, schema=schema, replace=replace, reader=reader)
    for line in report.lines():
        typer.echo(line)


def register(app: typer.Typer) -> None:
    app.command("import-gguf", short_help=o.SHORT_HELP["import-gguf"])(import_gguf)
    app.add_typer(db_app, name="db", short_help=o.SHORT_HELP["db"])
