"""The console's explain form: the same packet parsing and evaluator as `vxtap explain`."""

from __future__ import annotations

from dataclasses import dataclass

from vxtap.cli._api import CliError
from vxtap.cli.explain import build_packet, chosen_member, find_port, render
from vxtap.client import ApiError, VxtapClient
from vxtap.console.forms import FormState, optional, refused
from vxtap.evaluate import Verdict
from vxtap.evaluate import explain as evaluate
from vxtap.model import Direction

FIELDS = ("port", "direction", "protocol", "src", "dst", "sport", "dport")
Values = dict[str, str | list[str]]


@dataclass(frozen=True)
class Explained:
    verdict: Verdict
    text: str  # what `vxtap explain` prints for it


def _one(values: Values, name: str) -> str:
    value = values.get(name, "")
    return value if isinstance(value, str) else ""


def _port_number(values: Values, name: str) -> int | None:
    text = optional(_one(values, name).strip())
    if text is None:
        return None
    if not text.isdigit() or int(text) > 65535:
        raise CliError(f"{name}: must be a port number 0-65535, got {text!r}")
    return int(text)


def explain_form(client: VxtapClient, values: Values) -> tuple[Explained | None, FormState | None]:
    """(the verdict, None) or (None, the refusal to show next to the form)."""
    shown = {k: values.get(k, "") for k in FIELDS}
    try:
        direction = Direction(_one(values, "direction"))
    except ValueError:
        return None, FormState("explain", shown, errors={"direction": "choose ingress or egress"})
    try:
        packet = build_packet(
            None,
            optional(_one(values, "protocol")),
            optional(_one(values, "src")),
            optional(_one(values, "dst")),
            _port_number(values, "sport"),
            _port_number(values, "dport"),
        )
        name = _one(values, "port")
        _, port, state = find_port(client, name)
        if port is None:
            raise CliError(f"port {name!r} is not a port of its host's desired state")
    except CliError as error:
        return None, refused("explain", shown, error.format_message(), "")
    except ApiError as error:
        return None, refused("explain", shown, error.error_msg, error.error_code)
    verdict = evaluate(state, port.id, direction, packet)
    return Explained(verdict, render(verdict, port, chosen_member(state, verdict, packet))), None
