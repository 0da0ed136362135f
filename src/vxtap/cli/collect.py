"""`vxtap collect`: receive, show, count and store mirrored traffic on the target."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import click

from vxtap.cli._api import (
    ENDPOINT_HELP,
    CliError,
    ca_bundle_option,
    check_endpoint,
    credential_from_file,
)
from vxtap.cli._config import config_option
from vxtap.client import VxtapClientError, tls_context
from vxtap.collector.counters import DEFAULT_MAX_SERIES
from vxtap.collector.decap import DecapError
from vxtap.collector.heartbeat import HeartbeatSettings
from vxtap.collector.pcap import DEFAULT_MAX_VNIS
from vxtap.collector.ring import parse_listen
from vxtap.collector.run import Collector, Options, Output
from vxtap.logs import LogFormat, log_options, setup_logging

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgKMG]?)i?[bB]?\s*$")


def parse_size(text: str) -> int:
    """`1000`, `500k`, `100M`, `2G` (powers of 1024) -> bytes; ValueError naming the problem."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a size (examples: 1000000, 500k, 100M, 2G)")
    power = " kmg".index((m.group(2) or " ").lower())
    return int(m.group(1)) * (1 << (10 * power))


def _listen(ctx: click.Context, param: click.Parameter, value: str) -> object:
    try:
        return parse_listen(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def _metrics(ctx: click.Context, param: click.Parameter, value: str | None) -> object:
    if value is None:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{value!r}: expected ADDR:PORT, e.g. 127.0.0.1:9477")
    return (host.strip("[]") or "0.0.0.0", int(port))


def heartbeat_settings(
    endpoint: str | None,
    credentials_file: Path | None,
    ca_bundle: Path | None,
    host_name: str | None,
    interface: str | None,
) -> HeartbeatSettings | None:
    """Heartbeats with --endpoint and --credentials, none with neither; CliError otherwise."""
    if endpoint is None and credentials_file is None:
        return None
    if endpoint is None:
        raise CliError("--credentials is for heartbeats: give --endpoint URL too")
    check_endpoint(endpoint, "--endpoint")
    if credentials_file is None:
        raise CliError("--endpoint needs --credentials FILE (the host's agent credential)")
    credential = credential_from_file(credentials_file, None, None)
    if credential.host is not None and host_name not in (None, credential.host):
        raise CliError(
            f"--host-name {host_name} is not the host of the credential in {credentials_file} "
            f"({credential.host}): an agent key serves its own host only"
        )
    if endpoint.startswith("https://"):
        try:
            tls_context(ca_bundle)  # a bad bundle is named before anything starts
        except VxtapClientError as error:
            raise CliError(str(error)) from None
    return HeartbeatSettings(
        endpoint=endpoint,
        credential=credential,
        host=credential.host or host_name or socket.gethostname(),
        devices=None if interface is None else (interface,),
        ca_bundle=ca_bundle,
    )


@click.command()
@config_option("collect")
@click.option(
    "--listen",
    default="*:4789",
    show_default=True,
    callback=_listen,
    help="ADDR:PORT the mirrors are sent to; ADDR `*` = any, 0.0.0.0 = any IPv4, [::] = any IPv6.",
)
@click.option("--interface", "-i", help="Receive on this interface only (default: all).")
@click.option(
    "--vni",
    "vnis",
    multiple=True,
    type=click.IntRange(0, 16777215),
    help="Show/store/decap only this VNI (repeatable). Counters always cover every VNI.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object per packet instead of a line."
)
@click.option("--quiet", "-q", is_flag=True, help="Print nothing per packet.")
@click.option(
    "--print", "force_print", is_flag=True, help="Print packets also when writing --pcap."
)
@click.option(
    "--pcap",
    "pcap_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write inner frames to DIR/vni<N>-<time>-<seq>.pcap (implies --quiet unless --print).",
)
@click.option(
    "--rotate-size", callback=_size, help="Start a new pcap file before this size (100M)."
)
@click.option(
    "--rotate-seconds",
    type=click.FloatRange(min=0, min_open=True),
    help="Start a new pcap file after this many seconds.",
)
@click.option(
    "--pcap-max-open",
    type=click.IntRange(min=1),
    help="pcap files open at once; the least recently written is closed and continued "
    "later (default: half the descriptor limit, at most 512).",
)
@click.option(
    "--pcap-max-vnis",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_VNIS,
    show_default=True,
    help="VNIs that get pcap files; frames of further VNIs are counted, not stored.",
)
@click.option(
    "--max-series",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_SERIES,
    show_default=True,
    help="(VNI, outer source) counter series kept apart; further ones are folded into 'other'.",
)
@click.option("--stats", is_flag=True, help="A live, refreshing table of the counters.")
@click.option("--metrics", callback=_metrics, help="Serve Prometheus /metrics on ADDR:PORT.")
@click.option(
    "--decap", is_flag=True, help="One interface per VNI (vxtap-vni<N>) with the inner frames."
)
@click.option(
    "--ring-mb",
    type=click.IntRange(2, 4096),
    default=64,
    show_default=True,
    help="Kernel receive ring size in MiB (absorbs bursts).",
)
@click.option(
    "--endpoint",
    envvar="VXTAP_ENDPOINT",
    help=f"{ENDPOINT_HELP[:-1]}: send it heartbeats, so that the target-group members "
    "this collector receives for are healthy (needs --credentials). Without it, no "
    "heartbeats.",
)
@click.option(
    "--credentials",
    "credentials_file",
    envvar="VXTAP_CREDENTIALS",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The host's agent credential file (as for `vxtap agent`), to sign the heartbeats.",
)
@ca_bundle_option
@click.option(
    "--host-name",
    help="Host the heartbeats speak for [default: the credential's host, else this "
    "machine's host name].",
)
@log_options
def collect(
    listen: object,
    interface: str | None,
    vnis: tuple[int, ...],
    as_json: bool,
    quiet: bool,
    force_print: bool,
    pcap_dir: Path | None,
    rotate_size: int | None,
    rotate_seconds: float | None,
    pcap_max_open: int | None,
    pcap_max_vnis: int,
    max_series: int,
    stats: bool,
    metrics: object,
    decap: bool,
    ring_mb: int,
    endpoint: str | None,
    credentials_file: Path | None,
    ca_bundle: Path | None,
    host_name: str | None,
    log_level: str,
    log_format: LogFormat,
) -> None:
    """Receive mirrored traffic (VXLAN, RFC 7348): show, count and store it.

    Prints one line per packet (like `tcpdump -nne`), or JSON, or nothing;
    a summary of the counters on exit (Ctrl-C, SIGTERM). With --endpoint and
    --credentials, tells the server every 0.5 s that it is receiving (target groups).
    """
    from dataclasses import replace

    setup_logging("vxtap-collect", log_level, log_format)

    from vxtap.collector.ring import Listen

    assert isinstance(listen, Listen)
    if interface is not None:
        listen = replace(listen, interface=interface)
    output: Output = "json" if as_json else "lines"
    if quiet or (pcap_dir is not None and not force_print and not as_json):
        output = "none"
    options = Options(
        listen=listen,
        vnis=frozenset(vnis) or None,
        output=output,
        pcap_dir=pcap_dir,
        rotate_size=rotate_size,
        rotate_seconds=rotate_seconds,
        pcap_max_open=pcap_max_open,
        pcap_max_vnis=pcap_max_vnis,
        max_series=max_series,
        metrics=metrics,  # type: ignore[arg-type]
        stats=stats,
        decap=decap,
        ring_blocks=ring_mb * 4,  # 256 KiB blocks
        heartbeat=heartbeat_settings(
            endpoint, credentials_file, ca_bundle, host_name, listen.interface
        ),
    )
    collector = Collector(options)
    try:
        snap = collector.run()
    except (ValueError, DecapError, OSError) as e:
        raise click.ClickException(str(e)) from None
    collector.summary(snap)
