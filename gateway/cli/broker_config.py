"""``lianfang broker-config``: the block broker's logins and ACL, from ``lianfang.yaml``.

Writes Mosquitto's files (see ``gateway/config/broker_access.py``) and gives
the gateway its own login: ``broker.username`` and ``broker.password_file`` are
set in ``lianfang.yaml`` by a round-trip edit (comments kept, old file backed
up, replaced atomically), or printed with ``--no-edit``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Annotated

import typer

from gateway.cli.options import ConfigOption, config_path, fail, load_or_exit
from gateway.errors import ConfigError

app = typer.Typer()


def _listener_address(text: str | None, default_port: int) -> tuple[str | None, int]:
    """``HOST:PORT`` (or ``PORT``) as (host, port); no host means every interface."""
    if text is None:
        return None, default_port
    host, _, port = text.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise typer.BadParameter(f"expected HOST:PORT, got {text!r}", param_hint="--listen")
    return host.strip("[]") or None, int(port)


@app.command("broker-config")
def broker_config(
    *,
    out: Annotated[Path, typer.Option(help="Folder for the broker's files.", show_default=False)],
    config: ConfigOption = None,
    listen: Annotated[
        str | None,
        typer.Option(
            help="HOST:PORT the broker listens on; default: every interface, the port "
            "of broker.url.",
            show_default=False,
        ),
    ] = None,
    tls_ca: Annotated[
        Path | None, typer.Option(help="CA for client certificates (PEM).", show_default=False)
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(help="The broker's certificate (PEM).", show_default=False)
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="The broker's private key (PEM).", show_default=False)
    ] = None,
    rotate: Annotated[
        list[str] | None,
        typer.Option(help="Give this shop a new password (repeatable).", show_default=False),
    ] = None,
    no_edit: Annotated[
        bool,
        typer.Option("--no-edit", help="Print the broker lines for lianfang.yaml; edit nothing."),
    ] = False,
) -> None:
    """Write Mosquitto's config, password file and ACL so each shop may use only its own topics.

    Existing shops keep their passwords on a re-run; new shops get one, removed
    shops lose theirs. Reload the broker afterwards (systemctl reload mosquitto).
    """
    from gateway.config import broker_access as ba  # noqa: PLC0415 - keep `lianfang --help` fast

    path = config_path(config)
    cfg = load_or_exit(path)
    if (tls_cert is None) != (tls_key is None) or (tls_ca is not None and tls_cert is None):
        typer.echo(
            "broker-config: give --tls-cert and --tls-key together (--tls-ca with them)", err=True
        )
        raise typer.Exit(2)
    host, port = _listener_address(listen, cfg.broker.port)
    listener = ba.Listener(host, port, tls_ca, tls_cert, tls_key)
    user = ba.gateway_username(cfg)
    try:
        logins, previous = ba.generate(out, cfg, listener, rotate=frozenset(rotate or ()))
    except ba.BrokerAccessError as exc:
        typer.echo(f"broker-config: {exc}", err=True)
        raise typer.Exit(1) from None
    except (OSError, UnicodeDecodeError) as exc:
        where = getattr(exc, "filename", None) or out
        typer.echo(f"broker-config: {where}: {getattr(exc, 'strerror', None) or exc}", err=True)
        raise typer.Exit(1) from None
    shops = len(logins) - 1
    kept = sum(1 for login in logins[1:] if previous.get(login.username) == login.password)
    typer.echo(
        f"Wrote {out}/: {ba.CONF_FILE}, {ba.PASSWD_FILE}, {ba.ACL_FILE}, {ba.CREDENTIALS_FILE}, "
        f"{ba.GATEWAY_PASSWORD_FILE} ({shops} shops, {kept} kept their password, "
        f"{shops - kept} new)"
    )
    password_file = (out / ba.GATEWAY_PASSWORD_FILE).resolve()
    if no_edit:
        typer.echo("Set these under 'broker:' in lianfang.yaml (and remove any 'password'):")
        typer.echo(f"  username: {user}\n  password_file: {password_file}")
        return
    try:
        set_gateway_login(path, user, password_file)
    except ConfigError as exc:
        fail(exc)
    typer.echo(f"Set broker.username and broker.password_file in {path} (old file: {path}.bak)")


@app.command("police-acl")
def police_acl(
    *,
    config: ConfigOption = None,
    user: Annotated[
        str | None,
        typer.Option(
            help="The gateway's user on the police broker; default its id. With client "
            "certificates and use_identity_as_username, the certificate's CN.",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Write the lines to this file instead of printing them.", show_default=False
        ),
    ] = None,
) -> None:
    """Print the police broker's ACL lines for this gateway (Mosquitto acl_file syntax).

    The gateway may publish only its own events and status, read only its own
    commands and mesh notices, and send mesh notices to its neighbours' gateways.
    """
    from gateway.config import broker_access as ba  # noqa: PLC0415 - keep `lianfang --help` fast

    cfg = load_or_exit(config_path(config))
    try:
        text = ba.police_acl_text(cfg, user)
    except ba.BrokerAccessError as exc:
        typer.echo(f"police-acl: {exc}", err=True)
        raise typer.Exit(1) from None
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        typer.echo(f"police-acl: {out}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Wrote {out}: the police broker's ACL lines for gateway {cfg.gateway.id}")


def set_gateway_login(path: Path, user: str, password_file: Path) -> None:
    """Round-trip edit of ``broker:`` in ``path``: our user and password file, no inline password.

    Raises:
        ConfigError: the edited file would not be a valid config.
    """
    from ruamel.yaml import YAML  # noqa: PLC0415 - keep `lianfang --help` fast

    from gateway.cli.config_edit import replace_checked  # noqa: PLC0415

    yaml = YAML()  # round-trip: comments, order and quoting stay as the installer wrote them
    yaml.preserve_quotes = True
    data = yaml.load(path.read_text(encoding="utf-8"))
    broker = data["broker"]
    # Blank lines and comments after the section belong to its last key: they
    # move to whichever key ends the section once ours are in.
    trailing = broker.ca.items.pop(list(broker)[-1], None)
    broker.pop("password", None)
    broker["username"] = user
    broker["password_file"] = str(password_file)
    if trailing is not None:
        broker.ca.items[list(broker)[-1]] = trailing
    text = io.StringIO()
    yaml.dump(data, text)
    replace_checked(path, text.getvalue(), command="broker-config")
