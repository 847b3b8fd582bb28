"""The `vipfloat` command: wiring only, no logic of its own.

Every VipfloatError becomes one line per problem on stderr and its exit code
(2 for config errors, 1 for transient ones); nothing prints a traceback.
"""

from __future__ import annotations

import functools
from typing import Annotated, Callable, Optional, TypeVar

import typer

from . import __version__
from . import config as config_mod
from .errors import VipfloatError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Keep a virtual IP on the host Redis Sentinel has made master.")

ConfigOpt = Annotated[Optional[str], typer.Option(
    "--config", "-c", metavar="PATH",
    help="Config file (default: $VIPFLOAT_CONFIG, else /etc/vipfloat/vipfloat.toml).")]
MasterOpt = Annotated[str, typer.Option("--master", "-m", help="Sentinel master name.")]
T = TypeVar("T")


def _guard(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except VipfloatError as exc:
        if not exc.logged:
            for line in str(exc).splitlines():
                typer.echo(f"vipfloat: {line}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        typer.echo(f"vipfloat: internal error: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command("check-config")
def check_config(config: ConfigOpt = None) -> None:
    """Validate the config file; report every problem, one line each."""
    cfg = _guard(lambda: config_mod.load(config))
    typer.echo(f"{cfg.path}: ok, {len(cfg.sentinel.addresses)} Sentinel(s), "
               f"{len(cfg.vips)} VIP(s): " +
               ", ".join(f"{v.master}={v.address} on {v.interface}" for v in cfg.vips))


@app.command("is-configured")
def is_configured(config: ConfigOpt = None) -> None:
    """Exit 1 when the config names no [[vip]] yet (the Debian package's commented
    template), else 0: vipfloat.service's ExecCondition, so an unconfigured agent
    is skipped, not failed. A config it cannot read or parse exits 0: the agent
    then reports the real problem."""
    from .entry import is_configured as check

    raise typer.Exit(check(config))


@app.command()
def status(config: ConfigOpt = None,
           as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
           = False) -> None:
    """What holds each VIP, what each Sentinel says, and whether they agree.

    Exit 0 when every VIP is consistent, 1 when one is not, 2 on a config error."""
    from .status import gather, render_json, render_table

    cfg = _guard(lambda: config_mod.load(config))
    statuses = _guard(lambda: gather(cfg))
    typer.echo(render_json(statuses) if as_json else render_table(statuses))
    raise typer.Exit(0 if all(s.consistent for s in statuses) else 1)


@app.command()
def doctor(config: ConfigOpt = None,
           as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
           = False) -> None:
    """Check the running setup (Sentinels, Redis, this host) for the mistakes that
    make a failover fail; one line per check with its fix. Changes nothing.

    Exit 0 when no problem (warnings allowed), 1 when there is one, 2 on a config error."""
    from .doctor.checks import run_checks
    from .doctor.gather import gather
    from .doctor.render import exit_code, render_json, render_text

    cfg = _guard(lambda: config_mod.load(config))
    findings = run_checks(_guard(lambda: gather(cfg)))
    typer.echo(render_json(findings) if as_json else render_text(findings))
    raise typer.Exit(exit_code(findings))


def _order(config: str | None, master: str, verb_name: str) -> None:
    from . import logs
    from .apply import Event, run
    from .decide import Claim, Verb
    from .errors import UnknownMasterError

    logs.setup("vipfloat")
    cfg = config_mod.load(config)
    vip = cfg.vip_for(master)
    if vip is None:
        raise UnknownMasterError(f"master {master!r} has no [[vip]] block in {cfg.path}")
    run(cfg, vip, Claim(source=f"vipfloat {verb_name}", order=Verb(verb_name)),
        Event(role="operator"))


@app.command()
def acquire(master: MasterOpt, config: ConfigOpt = None) -> None:
    """Bind and announce a VIP here (maintenance; the hook's code path)."""
    _guard(lambda: _order(config, master, "acquire"))


@app.command()
def release(master: Annotated[Optional[str], typer.Option(
                "--master", "-m", help="Sentinel master name.")] = None,
            every: Annotated[bool, typer.Option(
                "--all", help="Every VIP in the config (the package's removal).")] = False,
            config: ConfigOpt = None) -> None:
    """Unbind a VIP here (maintenance; the hook's code path)."""
    if (master is None) == (not every):
        typer.echo("vipfloat: release needs --master NAME or --all", err=True)
        raise typer.Exit(2)
    if master is not None:
        _guard(lambda: _order(config, master, "release"))
        return
    cfg = _guard(lambda: config_mod.load(config))
    worst = 0
    for vip in cfg.vips:   # every one, whatever another's failure; not bound here: a no-op
        try:
            _guard(functools.partial(_order, config, vip.master, "release"))
        except typer.Exit as exc:
            worst = max(worst, exc.exit_code)
    raise typer.Exit(worst)


@app.command()
def switchover(master: MasterOpt, config: ConfigOpt = None,
               timeout: Annotated[float, typer.Option(
                   "--timeout", help="Seconds to wait for the failover to complete.",
                   min=1.0, max=600.0)] = 30.0) -> None:
    """A planned failover: check that the Sentinels agree and a replica is in
    sync, ask for SENTINEL FAILOVER, and print its timeline as it happens.

    Exit 0 when it completed (Sentinel switched, the VIP answers from the new
    master), 1 when refused, aborted or not done within --timeout, 2 on a config
    error or an unknown master."""
    from . import logs
    from .switchover import run as switch

    logs.setup("vipfloat")
    cfg = _guard(lambda: config_mod.load(config))
    raise typer.Exit(_guard(lambda: switch(cfg, master, timeout, typer.echo)))


@app.command()
def watch(config: ConfigOpt = None) -> None:
    """Run the agent: follow every Sentinel and keep each VIP where it belongs."""
    from .entry import watch as run_agent   # also the console script's own path

    raise typer.Exit(run_agent(config))


@app.command()
def version() -> None:
    """Print vipfloat's version."""
    typer.echo(__version__)


def main() -> None:
    app(prog_name="vipfloat")


if __name__ == "__main__":
    main()
