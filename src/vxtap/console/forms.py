"""Pure helpers between HTML forms and the API: which field a refusal belongs to,
and form text as the API receives it.

The console checks nothing the API checks: it passes what was typed (numbers as
text; the API parses them) and shows the API's refusal next to the field it names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# "traffic_mirror_filter_rule.source_cidr_block: must be ..." names its field; a
# refusal such as "priority is already used by ..." starts with it.
_NAMED_FIELD = re.compile(r"^(?:[a-z_]+\.)?([a-z_]+): ")


def refusal_field(message: str, fields: Iterable[str]) -> str | None:
    """The form field a refusal is about, or None (then it is shown above the form)."""
    names = list(fields)
    for part in message.split("; "):
        named = _NAMED_FIELD.match(part)
        if named and named.group(1) in names:
            return named.group(1)
        for name in names:
            if part.startswith(f"{name} "):
                return name
    return None


@dataclass
class FormState:
    """A form shown again after a refusal: what was typed and where the refusal goes."""

    form: str  # which form of the page
    values: Mapping[str, str | list[str]]
    errors: dict[str, str] = field(default_factory=dict)  # field -> message
    message: str | None = None  # a refusal that names no field
    code: str | None = None

    def error(self, name: str) -> str | None:
        return self.errors.get(name)


def refused(form: str, values: Mapping[str, str | list[str]], message: str, code: str) -> FormState:
    where = refusal_field(message, values)
    if where is None:
        return FormState(form, values, message=message, code=code)
    return FormState(form, values, errors={where: message}, code=code)


def optional(text: str | None) -> str | None:
    """An empty optional field is left out (the API's default, or 'unchanged')."""
    return text if text else None


def port_label(host: str, device: str) -> str:
    return f"{host}/{device}"
