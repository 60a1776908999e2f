"""`sandbox doctor` and `sandbox image`: set a machine up for sandboxing before anything is graded.

These commands grade nothing a user gave: they say which isolation this machine offers (and so
what `--backend auto` will pick), and build and check the Apptainer image that the apptainer
backend runs. Kept apart from grading so the grading commands read as one flow.
"""

from __future__ import annotations

import subprocess

import click


@click.command()
def doctor() -> None:
    """Report what this machine offers for sandboxing and which backend `auto` picks.

    \b
    Example:
      sandbox doctor
    """
    from .backends import apptainer as app
    from .backends import describe_auto
    from .machine import probes

    for name, ok, detail in probes():
        click.echo(f"{name:<22} {'yes' if ok else 'no ':<4} {detail}")
    click.echo("")
    picked = None
    for name, ok, reason in describe_auto():
        click.echo(f"backend {name:<11} {'yes' if ok else 'no ':<4} {reason}")
        if ok and picked is None:
            picked = (name, reason)
    if picked:
        click.echo(f"auto picks: {picked[0]} ({picked[1]})")
    if app.find_apptainer() and not app.find_image():
        click.echo("hint: build the sandbox image with `sandbox image build` to enable the apptainer backend")


@click.group()
def image() -> None:
    """Build and check the Apptainer image the apptainer backend runs."""


@image.command("build")
@click.option("--recipe", type=click.Choice(["debian", "docker"]), default="debian", show_default=True,
              help="debian: debootstrap, needs only a Debian mirror; docker: python:3.12-slim, for clusters.")
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="Where to write the SIF (default ~/.cache/qrpo/sandbox-debian.sif).")
@click.option("--force", is_flag=True, help="Rebuild even if the output exists.")
def image_build(recipe: str, output: str | None, force: bool) -> None:
    """Build the sandbox image (a SIF) from containers/sandbox-*.def.

    \b
    Example:
      sandbox image build --recipe debian --output ~/.cache/qrpo/sandbox-debian.sif
    """
    from .backends.apptainer import containers_dir, find_apptainer

    script = containers_dir() / "build-image.sh"
    argv = ["bash", str(script), "--recipe", recipe]
    if output:
        argv += ["--output", output]
    if force:
        argv.append("--force")
    apptainer = find_apptainer()
    if apptainer:
        argv += ["--apptainer", apptainer]
    code = subprocess.call(argv)
    if code != 0:
        raise click.ClickException(f"image build failed (exit {code}); see the messages above")


@image.command("check")
@click.option("--image", "image_path", type=click.Path(exists=True), default=None,
              help="The image to check (default: the configured one).")
def image_check(image_path: str | None) -> None:
    """Verify that an image runs the judge: grade a known solution in it, check isolation.

    \b
    Example:
      sandbox image check --image ~/.cache/qrpo/sandbox-debian.sif
    """
    from .backends.apptainer import ApptainerBackend
    from .backends.base import BackendUnavailable
    from .pool import Job, Pool
    from .problem import Problem, Test

    backend = ApptainerBackend(image=image_path)
    try:
        backend.prepare()
    except BackendUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    probe = backend.run_in_container("python3", "-c", "import sys, sortedcontainers; print(sys.version.split()[0])")
    if probe.returncode != 0:
        raise click.ClickException(f"python3 with sortedcontainers does not run in the image: {probe.stderr.strip()[-300:]}")
    click.echo(f"python {probe.stdout.strip()} and sortedcontainers: ok")
    problem = Problem(task_id="check", prompt="", entry_point="f", tests=(Test("function", "assert candidate(2) == 4"),))
    with Pool(backend, workers=1) as pool:
        result = next(pool.grade(iter([Job(0, problem, "def f(x):\n    return x * x\n", "per_test")])))
    if result.pass_rate != 1.0:
        raise click.ClickException(f"the judge did not grade a correct solution as passed: {result.tests}")
    click.echo(f"judge: ok (containment {result.info.get('containment')}, limits via {backend.limits_via})")
    click.echo(f"image {backend.image} works (workers start from {backend.rootfs})")
