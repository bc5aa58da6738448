"""Entry point ``lmpbench``: a root group and thin subcommands over the library."""

from __future__ import annotations

import click

from lmpbench import __version__


@click.group()
@click.version_option(__version__, prog_name="lmpbench")
def cli():
    """Benchmark machine-learning force fields by running them in LAMMPS."""


@cli.group()
def plugin():
    """Build and locate the mlff pair-style plugin."""


@plugin.command("build")
@click.option("--lammps-headers", type=click.Path(exists=True, file_okay=False),
              help="Folder with LAMMPS headers (pair.h ...) of your own LAMMPS install.")
@click.option("--lammps-source", type=click.Path(exists=True, file_okay=False),
              help="A LAMMPS source tree to build against (uses its src/).")
@click.option("-j", "--jobs", type=click.IntRange(min=1), help="Parallel compile jobs.")
@click.option("--if-stale", is_flag=True, help="Do nothing when the plugin is newer than its sources.")
@click.option("-v", "--verbose", is_flag=True, help="Echo the CMake output.")
def plugin_build(lammps_headers, lammps_source, jobs, if_stale, verbose):
    """Compile pair style mlff against this environment's LAMMPS and torch."""
    from lmpbench import plugin as lib

    if lammps_headers and lammps_source:
        raise click.UsageError("give --lammps-headers or --lammps-source, not both")
    if if_stale and not (lammps_headers or lammps_source) and not lib.is_stale():
        click.echo(f"up to date: {lib.plugin_path()}")
        return
    try:
        path = lib.build(lammps_headers, lammps_source, jobs=jobs, echo=click.echo if verbose else None)
    except lib.PluginBuildError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"built {path}")


@plugin.command("path")
@click.option("--dir", "as_dir", is_flag=True, help="Print the folder to put on LAMMPS_PLUGIN_PATH.")
def plugin_path(as_dir):
    """Print where the built plugin is (for `plugin load` or LAMMPS_PLUGIN_PATH)."""
    from lmpbench import plugin as lib

    try:
        path = lib.plugin_path()
    except lib.PluginNotBuiltError as err:
        raise click.ClickException(str(err)) from None
    click.echo(path.parent if as_dir else path)


if __name__ == "__main__":
    cli()
