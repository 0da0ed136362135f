"""The host agent: registers the host's interfaces, follows the desired state into the kernel."""
