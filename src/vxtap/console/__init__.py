"""The web console served by `vxtap server` at /console (docs/console.md)."""

from vxtap.console.app import PREFIX, create_console, mount_console

__all__ = ["PREFIX", "create_console", "mount_console"]
