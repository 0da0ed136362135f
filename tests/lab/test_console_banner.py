"""`vxtap lab up` ends with how to open the web console (no namespaces needed here)."""

from __future__ import annotations

import json
from pathlib import Path

from vxtap.lab.control import console_banner, write_credentials
from vxtap.lab.runtime import LabDir


def test_the_banner_names_the_url_the_namespace_and_the_labs_key(tmp_path: Path) -> None:
    credentials = write_credentials(LabDir(tmp_path), ["ECS-source"])
    key = json.loads(credentials.read_text())[0]
    text = "\n".join(
        console_banner(
            "https://10.255.0.1:9696", "vxtap-lab-mgmt", credentials, tmp_path / "ca.pem"
        )
    )
    assert "https://10.255.0.1:9696/console" in text
    assert key["ak"] in text and key["sk"] in text
    assert "ip netns exec vxtap-lab-mgmt" in text
    assert str(tmp_path / "ca.pem") in text
