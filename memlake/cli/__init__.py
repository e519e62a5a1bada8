"""The `memlake` command: one module per command group; each command parses its options, makes
one `memlake.pipeline` call and prints what it returns.

memlake suite corpus|train|register|replica|list   the embedded corpus and model suite, Hub suites
memlake ingest token-stats|extraction|import       scoring jobs over checkpoints, Hub imports
memlake query "SQL"                                read-only SQL over lake tables and marts
memlake build                                      dbt build (staging -> intermediate -> marts)
memlake profiles fit|figures                       DiD memorisation profiles into marts, and figures
memlake mia                                        membership-inference attacks per checkpoint, into marts
memlake cross                                      profiles x taxonomy, MIA x DiD, unlearning x taxonomy
memlake taxonomy features|fit|search               taxonomy features, marts, models and search
memlake mitigate sweep|oracle|study|landscape|figures  mitigation methods, the retrain oracle, figures
memlake publish | report                           Hub datasets, the static HTML report
memlake serve                                      the web explorer over the warehouse (read-only)
memlake demo                                       every stage on the embedded default
"""

from __future__ import annotations

import typer

from memlake.cli import ingest, mitigate, profiles, suite, taxonomy, warehouse
from memlake.cli._options import console
from memlake.cli.cross import cross_command
from memlake.cli.demo import demo_command
from memlake.cli.mia import mia_command
from memlake.cli.serve import serve_command
from memlake.core.errors import MemlakeError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="memlake: a lakehouse for studying memorisation in language models.",
)
app.add_typer(suite.app, name="suite")
app.add_typer(ingest.app, name="ingest")
app.command("query")(warehouse.query_command)
app.add_typer(profiles.app, name="profiles")
app.command("mia")(mia_command)
app.command("cross")(cross_command)
app.add_typer(mitigate.app, name="mitigate")
app.command("publish")(warehouse.publish_command)
app.command("report")(warehouse.report_command)
app.command("serve")(serve_command)
app.command("build", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(
    warehouse.build_command
)
app.command("demo")(demo_command)
app.add_typer(taxonomy.app, name="taxonomy")


def main() -> None:
    """The only place an error becomes a message and an exit code."""
    try:
        app(standalone_mode=False)
    except MemlakeError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
    except typer.Exit as e:
        raise SystemExit(e.exit_code) from None
    except (typer.Abort, KeyboardInterrupt):
        raise SystemExit(130) from None
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.ClickException):
            e.show()
            raise SystemExit(e.exit_code) from None
        raise
