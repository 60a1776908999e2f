"""`qrpo`: the training side. The pipeline commands arrive with the pipeline; for now this
reports the version and what is installed, so the console script exists and is tested."""

from __future__ import annotations

import click

from . import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="qrpo")
def main() -> None:
    """Quantile Reward Policy Optimization for code models.

    \b
    Example:
      qrpo --version
    """


if __name__ == "__main__":
    main()
