"""vxtap: self-hosted VPC traffic mirroring for Linux."""

__version__ = "0.1.0"
