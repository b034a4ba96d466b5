"""``lianfang keys mesh``: a gateway's key pair for signing the notices it sends other gateways."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(name="keys", help="Make the gateway's signing keys.", no_args_is_help=True)


@app.command("mesh")
def mesh(
    *,
    gateway: Annotated[
        str, typer.Option(help="The gateway's id, e.g. GW-001.", show_default=False)
    ],
    out: Annotated[Path, typer.Option(help="Folder for the keys.", show_default=False)],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key pair.")] = False,
) -> None:
    """Write OUT/ID.key (private, mode 600) and OUT/ID.pub (for the gateways next to it).

    The gateway signs its mesh notices with ID.key (gateway.mesh_key_file); each
    neighbouring gateway lists ID.pub under other_gateways (`lianfang init
    --mesh-keys OUT` writes both).
    """
    from gateway.config.model import GatewayIdentity  # noqa: PLC0415 - keep `--help` fast
    from protocols.mesh_message import new_key_pair  # noqa: PLC0415

    try:
        GatewayIdentity(id=gateway, large_grid="L")  # the id rules of lianfang.yaml
    except ValueError:
        typer.echo(
            f"keys mesh: {gateway!r} is not a gateway id ([A-Za-z0-9_.-], 40 at most)", err=True
        )
        raise typer.Exit(2) from None
    private_file, public_file = out / f"{gateway}.key", out / f"{gateway}.pub"
    if private_file.exists() and not force:
        typer.echo(f"keys mesh: {private_file} exists; --force replaces it", err=True)
        raise typer.Exit(1)
    private, public = new_key_pair()
    try:
        out.mkdir(parents=True, exist_ok=True)
        private_file.unlink(missing_ok=True)
        # Created owner-only: the private key is never readable by others, even briefly.
        fd = os.open(private_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private)
        public_file.write_bytes(public)
    except OSError as exc:
        typer.echo(f"keys mesh: {exc.filename or out}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Wrote {private_file} (mode 600, stays on {gateway}) and {public_file}")
